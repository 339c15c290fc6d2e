import sys

from council.batch.cli import main

sys.exit(main())
