"""Where a batch's councils run: ``local`` (this process and its helper processes, ``council.batch.runner``)
or ``ray`` (Ray actors on one machine or a cluster, ``ray_engine``; ``pip install "council[ray]"``)."""
