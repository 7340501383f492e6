"""Write files atomically: a failure never leaves a half-written output behind.

An output is written to a temporary file beside it (`.NAME.XXXXXXXX.tmpSUFFIX`), flushed to disk (fsync) and
renamed over its final name, and the folder is flushed too: whatever stops the writer, an error or `kill -9` or a
power cut, the final name holds either the old file or the whole new one. A process killed outright leaves its
temporary file behind; `partial_outputs` finds those of an output, so that a rerun can remove them.
"""

import contextlib
import glob
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from codec.errors import CodecError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.

    The temporary file lives in the destination directory so the final rename is atomic on POSIX.
    Its name keeps the destination's suffix so libraries that pick a format by extension still work.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise CodecError(f"output directory {directory} does not exist; create it first")
    if path.is_dir():
        raise CodecError(f"output {path} is a directory; give a file name (e.g. {path / 'out'}{path.suffix})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_PREFIX.format(path.name), suffix=_SUFFIX.format(path.suffix), dir=directory)
    except OSError as e:
        raise CodecError(f"cannot write into {directory} ({e.strerror}); choose an output path you can write") from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        try:
            _fsync(tmp_path)
            os.replace(tmp_path, path)
        except OSError as e:
            raise CodecError(f"cannot write {path} ({e.strerror}); choose an output path you can write") from None
        with contextlib.suppress(OSError):  # not every file system syncs a folder; the rename is done either way
            _fsync(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


_PREFIX, _SUFFIX = ".{}.", ".tmp{}"  # a temporary file's name: `.NAME.` + 8 random characters + `.tmpSUFFIX`


def is_partial_output(path: str | os.PathLike) -> bool:
    """Whether `path` is named like a temporary file of `atomic_output` (what a killed writer leaves behind)."""
    found = re.fullmatch(r"\.(.+)\.[a-z0-9_]{8}\.tmp(.*)", Path(path).name)
    return found is not None and Path(found[1]).suffix == found[2]


def partial_outputs(path: str | os.PathLike) -> list[Path]:
    """The temporary files `atomic_output(path)` left beside `path` when its writer was killed before the rename."""
    path = Path(path)
    pattern = glob.escape(_PREFIX.format(path.name)) + "*" + glob.escape(_SUFFIX.format(path.suffix))
    return sorted(path.parent.glob(pattern)) if path.parent.is_dir() else []


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
