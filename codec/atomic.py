"""Write files atomically: a failure never leaves a half-written output behind."""

import contextlib
import os
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=directory)
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
            os.replace(tmp_path, path)
        except OSError as e:
            raise CodecError(f"cannot write {path} ({e.strerror}); choose an output path you can write") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
