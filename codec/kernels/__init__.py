"""Compiled residual-search backends (numba on CPU, a CUDA kernel) for codec.quantization.search.

Nothing here imports from the rest of the package except codec.errors; the backends register
themselves through codec.quantization.search, which imports them lazily.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch


class CodebookCache:
    """Per-codebook derived data (norms, transposed copies), rebuilt when the codebooks change.

    Inference searches the same codebook buffer call after call; deriving its norms each time costs
    as much as searching one frame. An entry is reused only for the very same tensor object at the
    same in-place version (`Tensor._version`), so an EMA update or a different model rebuilds it.
    """

    def __init__(self, build: Callable[[torch.Tensor, int, bool], Any], size: int = 8) -> None:
        self._build, self._size = build, size
        self._entries: list[tuple[weakref.ref, int, int, bool, Any]] = []

    def get(self, codebooks: torch.Tensor, levels: int, cosine: bool) -> Any:
        version = codebooks._version
        self._entries = [e for e in self._entries if e[0]() is not None]
        for ref, v, lv, cos, value in self._entries:
            if ref() is codebooks and v == version and lv == levels and cos == cosine:
                return value
        value = self._build(codebooks, levels, cosine)
        self._entries = [*self._entries[-(self._size - 1) :], (weakref.ref(codebooks), version, levels, cosine, value)]
        return value
