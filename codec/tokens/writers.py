"""Token storage: crash-safe per-rank parts while extracting, merged outputs, and readers for LM trainers.

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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

from codec.atomic import atomic_output
from codec.errors import CodecError
from codec.tokens.patterns import Pattern, pattern_from_json

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


# --- readers -----------------------------------------------------------------------------------------------
class TokenReader:
    """Random access (by index or id) and iteration over an extraction's tokens, whatever its format.

    `reader[key]` -> tokens [S, T] (numpy, stored dtype); `reader.codes(key)` -> codes [N, F] (int64, the
    pattern inverted); `reader.ids`, `reader.num_frames(key)`, `reader.pattern`, `reader.manifest`.
    Open one with `open_tokens(out_dir)`.
    """

    def __init__(self, out: str | Path, manifest: dict) -> None:
        self.out, self.manifest = Path(out), manifest
        self.pattern: Pattern = pattern_from_json(manifest["pattern"])
        self.dtype = np.dtype(manifest["dtype"])
        self.ids = [u["id"] for u in manifest["utterances"]]
        self._frames = [u["num_frames"] for u in manifest["utterances"]]
        self._shapes = [tuple(u["shape"]) for u in manifest["utterances"]]
        self._position = {u: i for i, u in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, utt: str) -> bool:
        return utt in self._position

    def index(self, key: int | str) -> int:
        if isinstance(key, str):
            if key not in self._position:
                raise KeyError(f"no utterance {key} in {self.out}")
            return self._position[key]
        if not -len(self) <= key < len(self):
            raise IndexError(f"index {key} out of range for {len(self)} utterances")
        return key % len(self)

    def num_frames(self, key: int | str) -> int:
        return self._frames[self.index(key)]

    def __getitem__(self, key: int | str) -> np.ndarray:
        return self._load(self.index(key))

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for i, utt in enumerate(self.ids):
            yield utt, self._load(i)

    def codes(self, key: int | str) -> np.ndarray:
        i = self.index(key)
        return self.pattern.invert(self._load(i), self._frames[i])

    def _load(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _local(self, path: str, fallback: Path) -> Path:
        """scp paths are absolute; if the output folder was moved, find the file beside the scp."""
        p = Path(path)
        return p if p.exists() else fallback / p.name


def _scp(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())


class NpyTokens(TokenReader):
    def __init__(self, out, manifest) -> None:
        super().__init__(out, manifest)
        self._paths = _scp(self.out / "tokens.scp")

    def _load(self, i: int) -> np.ndarray:
        return np.load(self._local(self._paths[self.ids[i]], self.out / "npy"))


class ArkTokens(TokenReader):
    def __init__(self, out, manifest) -> None:
        super().__init__(out, manifest)
        self._where = _scp(self.out / "tokens.scp")

    def _load(self, i: int) -> np.ndarray:
        import kaldiio

        path, offset = self._where[self.ids[i]].rsplit(":", 1)
        matrix = kaldiio.load_mat(f"{self._local(path, self.out)}:{offset}")
        return np.ascontiguousarray(matrix.T).astype(self.dtype)


class PackedTokens(TokenReader):
    """The packed format, memory-mapped: `reader[key]` is a zero-copy view, `window` a contiguous slice of steps."""

    def __init__(self, out, manifest) -> None:
        super().__init__(out, manifest)
        self.index_array = np.load(self.out / "tokens.idx.npy")
        self.num_streams = self.pattern.num_streams
        self._data: np.memmap | None = None  # opened lazily, so the reader pickles cheaply into DataLoader workers

    @property
    def data(self) -> np.ndarray:
        """The whole token stream, flat [sum of S * T]."""
        if self._data is None:
            path = self.out / "tokens.bin"
            self._data = np.memmap(path, dtype=self.dtype, mode="r") if path.stat().st_size else np.zeros(0, self.dtype)
        return self._data

    def __getstate__(self):
        return {**self.__dict__, "_data": None}

    def _load(self, i: int) -> np.ndarray:
        return self.window(i, 0, int(self.index_array[i, 1]))

    def window(self, key: int | str, start: int, length: int) -> np.ndarray:
        """Tokens [S, length] of steps start .. start + length of one utterance (a view into the map)."""
        i = self.index(key)
        offset, steps = (int(v) for v in self.index_array[i])
        if not (0 <= start and start + length <= steps and length >= 0):
            raise IndexError(f"steps {start}..{start + length} out of range for {self.ids[i]} ({steps} steps)")
        S = self.num_streams
        return self.data[offset + start * S : offset + (start + length) * S].reshape(length, S).T


READERS = {"npy": NpyTokens, "ark": ArkTokens, "packed": PackedTokens}


def open_tokens(out: str | Path) -> TokenReader:
    """A reader for the extraction in `out` (any format), from its manifest.json."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise CodecError(f"{out} has no manifest.json; it is not a finished `codec tokens` output")
    manifest = json.loads(path.read_text())
    return READERS[manifest["format"]](out, manifest)


class TokenDataset(torch.utils.data.Dataset):
    """Utterances of an extraction for an LM trainer's DataLoader: item i is {'id', 'tokens' [S, T] int64}.

    With `codes=True` the pattern is inverted and 'tokens' holds codes [N, F]. `collate` pads a batch with the
    pattern's pad token: {'ids', 'tokens' [B, S, T_max], 'mask' [B, S, T_max] (True where a code is)}.
    """

    def __init__(self, reader: TokenReader | str | Path, *, codes: bool = False) -> None:
        self.reader = reader if isinstance(reader, TokenReader) else open_tokens(reader)
        self.codes = codes

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        values = self.reader.codes(i) if self.codes else self.reader[i]
        return {"id": self.reader.ids[i], "tokens": torch.from_numpy(np.array(values, dtype=np.int64))}

    def collate(self, items: list[dict]) -> dict:
        pattern = self.reader.pattern
        if self.codes:
            return {"ids": [it["id"] for it in items], **_pad([it["tokens"] for it in items], 0)}
        frames = [self.reader.num_frames(it["id"]) for it in items]
        T = max(it["tokens"].shape[-1] for it in items)
        batch = _pad([it["tokens"] for it in items], pattern.pad_id)
        batch["mask"] = torch.stack(
            [torch.nn.functional.pad(torch.from_numpy(pattern.mask(f)), (0, T - pattern.num_steps(f))) for f in frames]
        )
        return {"ids": [it["id"] for it in items], **batch}


def _pad(arrays: list[torch.Tensor], value: int) -> dict:
    T = max(a.shape[-1] for a in arrays)
    tokens = torch.stack([torch.nn.functional.pad(a, (0, T - a.shape[-1]), value=value) for a in arrays])
    mask = torch.stack([torch.arange(T) < a.shape[-1] for a in arrays])[:, None].expand(-1, tokens.shape[1], -1)
    return {"tokens": tokens, "mask": mask}
