"""Token storage, writing side: crash-safe per-rank parts while extracting, and the merged outputs.

Reading them back is `readers.py` (`open_tokens`); batching them for an LM trainer is `dataset.py`.

Every utterance's tokens are a grid [S, T] (streams x steps, see `patterns.py`) of integers below
`pattern.max_token + 1`, stored as uint16 when that fits (else int32). Formats of the merged output in OUT:

    npy     npy/<id>.npy, one [S, T] array per utterance (id percent-encoded into a file name), and
            tokens.scp (`utt-id /abs/path/npy/<id>.npy`)
    ark     tokens.ark, Kaldi binary float32 matrices [T, S] (Kaldi's rows are time; integers are exact in
            float32 up to 2^24), and tokens.scp (`utt-id /abs/path/tokens.ark:offset`) for kaldiio / Kaldi
    packed  tokens.bin, every utterance's tokens time-major (step t of all streams, then step t+1), one after
            another in id order, as one flat little-endian array; tokens.idx.npy: int64 [U, 2] (offset in
            tokens, steps) per utterance, in the manifest's order

While extracting, each rank appends to its own part under OUT/.work and commits a batch by syncing the data
and then appending one JSON line per utterance to its journal (`rank<r>.jsonl`). What the journal does not
record does not exist: on restart a part is cut back to its last committed byte and a torn journal line is
dropped, so a crash at any moment leaves a consistent state. Only the merge writes OUT's final files, each
through a temporary file and a rename.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

from codec.atomic import atomic_output
from codec.errors import CodecError

FORMATS = ("npy", "ark", "packed")
WORK = ".work"
ARK_EXACT = 2**24  # float32 holds every integer below this exactly


def storage_dtype(max_token: int) -> np.dtype:
    """uint16 when every token fits, else int32."""
    return np.dtype("<u2") if max_token < 2**16 else np.dtype("<i4")


def npy_name(utt: str) -> str:
    """A file name for an utterance id: reversible, no '/' and no collisions (percent-encoding)."""
    return quote(utt, safe="") + ".npy"


def publish(path: Path) -> None:
    """Give a finished file the usual mode (rw-r--r-- under umask 022): temporary files are created private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


# --- journal --------------------------------------------------------------------------------------------
def read_journals(work: Path) -> list[dict]:
    """All committed records of all ranks' journals (a torn last line is ignored)."""
    records = []
    for path in sorted(work.glob("rank*.jsonl")):
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            records.append(json.loads(line))
    return records


class Journal:
    """One rank's append-only log of committed utterances (and skipped ones)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes() if path.exists() else b""
        keep = data.rfind(b"\n") + 1
        with open(path, "ab") as f:
            f.truncate(keep)  # drop a line torn by a crash
        self._file = open(path, "ab")  # noqa: SIM115 (closed by close())

    def commit(self, records: list[dict]) -> None:
        if records:
            self._file.write(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records))
            _fsync(self._file)

    def close(self) -> None:
        self._file.close()


# --- per-rank parts ----------------------------------------------------------------------------------------
class PartWriter:
    """Append one rank's tokens; `add` returns the location fields recorded in the journal."""

    def __init__(self, out: Path, work: Path, name: str, dtype: np.dtype, committed: list[dict]) -> None:
        self.out, self.work, self.name, self.dtype = out, work, name, dtype

    def add(self, utt: str, tokens: np.ndarray) -> dict:
        raise NotImplementedError

    def sync(self) -> None:
        """Make everything added so far durable (called before the journal commit)."""

    def close(self) -> None:
        pass


class NpyPart(PartWriter):
    def __init__(self, out, work, name, dtype, committed) -> None:
        super().__init__(out, work, name, dtype, committed)
        (out / "npy").mkdir(exist_ok=True)

    def add(self, utt: str, tokens: np.ndarray) -> dict:
        path = self.out / "npy" / npy_name(utt)
        with atomic_output(path) as tmp:
            np.save(tmp, tokens.astype(self.dtype))
        publish(path)
        return {}


class _AppendPart(PartWriter):
    """A data file only ever appended to; restarting cuts it back to the end of its last committed record."""

    suffix = ""

    def __init__(self, out, work, name, dtype, committed) -> None:
        super().__init__(out, work, name, dtype, committed)
        self.path = work / f"{name}{self.suffix}"
        end = max((r["offset"] + r["nbytes"] for r in committed if r.get("part") == self.path.name), default=0)
        with open(self.path, "ab") as f:
            f.truncate(end)
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed by close())

    def _append(self, payload: bytes) -> dict:
        offset = self._file.tell()
        self._file.write(payload)
        return {"part": self.path.name, "offset": offset, "nbytes": len(payload)}

    def sync(self) -> None:
        _fsync(self._file)

    def close(self) -> None:
        self._file.close()


class ArkPart(_AppendPart):
    suffix = ".ark"

    def add(self, utt: str, tokens: np.ndarray) -> dict:
        import io

        import kaldiio

        buffer = io.BytesIO()
        kaldiio.save_ark(buffer, {utt: np.ascontiguousarray(tokens.T, dtype=np.float32)})
        return self._append(buffer.getvalue())


class PackedPart(_AppendPart):
    suffix = ".bin"

    def add(self, utt: str, tokens: np.ndarray) -> dict:
        return self._append(np.ascontiguousarray(tokens.T, dtype=self.dtype).tobytes())


PARTS = {"npy": NpyPart, "ark": ArkPart, "packed": PackedPart}


def check_format(fmt: str, max_token: int) -> None:
    if fmt not in FORMATS:
        raise CodecError(f"--format {fmt} is not one of {', '.join(FORMATS)}")
    if fmt == "ark":
        try:
            import kaldiio  # noqa: F401
        except ImportError:
            raise CodecError("--format ark needs kaldiio: pip install kaldiio (or the 'recipes' extra)") from None
        if max_token >= ARK_EXACT:
            raise CodecError(f"tokens up to {max_token} are not exact in Kaldi float matrices; use --format packed")


# --- merge -------------------------------------------------------------------------------------------------
def merge(fmt: str, out: Path, work: Path, records: list[dict]) -> list[str]:
    """Write OUT's final token files from the committed `records` (in output order); returns their names."""
    if fmt == "npy":
        for stale in (out / "npy").glob(".*.tmp.npy"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        lines = [f"{r['id']} {(out / 'npy' / npy_name(r['id'])).resolve()}\n" for r in records]
        _write_text(out / "tokens.scp", lines)
        return ["tokens.scp", "npy/"]
    sources: dict[str, object] = {}
    try:
        if fmt == "ark":
            ark = (out / "tokens.ark").resolve()
            lines = []
            with atomic_output(ark) as tmp, open(tmp, "wb") as dst:
                for r in records:
                    lines.append(f"{r['id']} {ark}:{dst.tell() + len(r['id'].encode()) + 1}\n")
                    dst.write(_read_part(sources, work / r["part"], r["offset"], r["nbytes"]))
            publish(ark)
            _write_text(out / "tokens.scp", lines)
            return ["tokens.ark", "tokens.scp"]
        index = np.zeros((len(records), 2), np.int64)
        position = 0
        with atomic_output(out / "tokens.bin") as tmp, open(tmp, "wb") as dst:
            for u, r in enumerate(records):
                dst.write(_read_part(sources, work / r["part"], r["offset"], r["nbytes"]))
                index[u] = position, r["shape"][1]
                position += r["shape"][0] * r["shape"][1]
        with atomic_output(out / "tokens.idx.npy") as tmp:
            np.save(tmp, index)
        publish(out / "tokens.bin")
        publish(out / "tokens.idx.npy")
        return ["tokens.bin", "tokens.idx.npy"]
    finally:
        for f in sources.values():
            f.close()


def _read_part(open_files: dict, path: Path, offset: int, nbytes: int) -> bytes:
    f = open_files.get(path.name)
    if f is None:
        f = open_files[path.name] = open(path, "rb")  # noqa: SIM115 (closed by merge)
    f.seek(offset)
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise CodecError(f"{path} is shorter than its journal says; delete {path.parent} and extract again")
    return data


def write_text(path: Path, text: str) -> None:
    """Write a final text output atomically, with the usual file mode."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    publish(path)


def _write_text(path: Path, lines: list[str]) -> None:
    write_text(path, "".join(lines))
