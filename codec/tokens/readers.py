"""Token storage, reading side: random access to a finished `codec tokens` output, whatever its format.

The formats are described in `writers.py`; `open_tokens(out_dir)` picks the reader from manifest.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from codec.errors import CodecError
from codec.tokens.patterns import Pattern, pattern_from_json


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
