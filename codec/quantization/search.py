"""Residual codebook search: the one hot loop of inference, with interchangeable backends.

One function shape for every backend:
    residual  [N, G, D]     one D-dim vector per frame and group
    codebooks [G, L, K, D]  K codewords for each group and level
    -> codes  [N, levels, G] (int64) and the quantized sum [N, G, D] over the first `levels` levels.

For each frame and group, level l picks the codeword nearest to what levels < l left over, and
subtracts it. "Nearest" is squared euclidean distance, or, with lookup='cosine', the largest cosine
similarity (the l2-normalised lookup of factorized codes); in both cases the codeword itself is
subtracted. Ties go to the lowest index.

Backends: 'torch' (this file, the reference). `CODEC_RVQ_BACKEND` forces one by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from codec.errors import CodecError

LOOKUPS = ("euclidean", "cosine")

SearchFn = Callable[[torch.Tensor, torch.Tensor, int, str], tuple[torch.Tensor, torch.Tensor]]


def search_torch(
    residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference search: one batched matmul, argmin, gather and subtract per level."""
    N, G, D = residual.shape
    r = residual.transpose(0, 1).contiguous()  # [G, N, D]
    codes = torch.empty(levels, G, N, dtype=torch.long, device=residual.device)
    group_index = torch.arange(G, device=residual.device)[:, None]
    for level in range(levels):
        book = codebooks[:, level]  # [G, K, D]
        dots = torch.bmm(r, book.transpose(1, 2))  # [G, N, K]
        if lookup == "euclidean":
            score = (book * book).sum(-1)[:, None, :] - 2 * dots
        else:
            score = -dots / book.norm(dim=-1).clamp_min(1e-12)[:, None, :]
        index = score.argmin(-1)  # [G, N]; first minimum on ties
        codes[level] = index
        r = r - book[group_index, index]
    quantized = residual - r.transpose(0, 1)
    return codes.permute(2, 0, 1), quantized


_BACKENDS: dict[str, SearchFn] = {"torch": search_torch}


def available_backends() -> list[str]:
    return list(_BACKENDS)


def register_backend(name: str, fn: SearchFn) -> None:
    _BACKENDS[name] = fn


def select_backend(device: torch.device) -> str:
    """The backend to use on `device`: `CODEC_RVQ_BACKEND` if set, else the fastest available."""
    forced = os.environ.get("CODEC_RVQ_BACKEND")
    if forced:
        if forced not in _BACKENDS:
            raise CodecError(
                f"CODEC_RVQ_BACKEND={forced} is not available here; choose one of: {', '.join(_BACKENDS)}"
            )
        return forced
    return "torch"


def rvq_search(
    residual: torch.Tensor,
    codebooks: torch.Tensor,
    levels: int | None = None,
    *,
    lookup: str = "euclidean",
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, levels, G] and quantized sum [N, G, D] of `residual` [N, G, D] under `codebooks` [G, L, K, D]."""
    if residual.dim() != 3 or codebooks.dim() != 4 or residual.shape[1:] != (codebooks.shape[0], codebooks.shape[3]):
        raise ValueError(
            f"residual [N, G, D] and codebooks [G, L, K, D] disagree: {tuple(residual.shape)} vs {tuple(codebooks.shape)}"
        )
    if lookup not in LOOKUPS:
        raise ValueError(f"lookup must be one of {LOOKUPS}, got {lookup!r}")
    levels = codebooks.shape[1] if levels is None else levels
    if not 1 <= levels <= codebooks.shape[1]:
        raise ValueError(f"levels must be in 1..{codebooks.shape[1]}, got {levels}")
    name = backend or select_backend(residual.device)
    if residual.shape[0] == 0:
        return residual.new_zeros(0, levels, residual.shape[1], dtype=torch.long), torch.zeros_like(residual)
    with torch.no_grad():
        return _BACKENDS[name](residual.float(), codebooks.float(), levels, lookup)


def dequantize(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Sum of the codewords named by `codes` [N, levels, G]: [N, G, D]."""
    levels, G = codes.shape[1], codes.shape[2]
    level_index = torch.arange(levels, device=codes.device)[None, :, None]
    group_index = torch.arange(G, device=codes.device)[None, None, :]
    return codebooks[group_index, level_index, codes].sum(1)
