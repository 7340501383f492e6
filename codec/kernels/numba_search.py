"""Residual search on CPU with numba: all groups and levels fused, frames in parallel.

Same contract as codec.quantization.search.search_torch. Each worker takes a tile of four frames
and carries their residuals through every group and level without leaving the core: for one
(group, level) it streams the K codewords once, scoring all four frames against each codeword
(four dot products share one load of the codeword), keeps the running best per frame, then
subtracts the chosen codewords. The reference instead writes an [N, K] score matrix per level and
reads it back for the argmin, which is what makes it memory-bound for large N.

Scores use precomputed per-codeword terms: |c|^2 for euclidean (score = |c|^2 - 2 r.c) and 1/|c|
for cosine (score = -r.c / |c|); a codeword replaces the best only on a strictly lower score, so
ties go to the lowest index. Threads: numba's own pool (`numba.set_num_threads`, NUMBA_NUM_THREADS,
NUMBA_THREADING_LAYER), not torch's; searches too small to pay for waking it run on the caller's thread.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange

from codec.kernels import CodebookCache

# numba's OpenMP layer brings a second OpenMP runtime beside torch's, and the two pools' spinning
# workers starve each other when cores are scarce: on a busy 2-core machine every torch op after a
# parallel search ran ~100x slower. TBB and numba's own workqueue sleep instead, so they go first,
# unless the user chose a layer. The workqueue is not thread-safe: parallel searches take _POOL.
if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & os.environ.keys():
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
_POOL = threading.Lock()

# Reassociation lets LLVM vectorise the dot products; no-NaN/no-inf assumptions are left out.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
TILE = 4  # frames scored together against each codeword
PARALLEL_MIN_WORK = 1 << 22  # multiply-adds (about 0.1 ms on one core) below which the search runs serially


@njit(cache=True)
def _codeword_terms(codebooks: np.ndarray, levels: int, cosine: bool) -> np.ndarray:
    """[G, levels, K]: |c|^2 (euclidean) or 1 / max(|c|, 1e-12) (cosine), as the reference clamps."""
    G, _, K, D = codebooks.shape
    out = np.empty((G, levels, K), np.float32)
    for gl in range(G * levels):
        g, level = gl // levels, gl % levels
        for k in range(K):
            s = 0.0
            for d in range(D):
                x = np.float64(codebooks[g, level, k, d])
                s += x * x
            out[g, level, k] = 1.0 / max(np.sqrt(s), 1e-12) if cosine else s
    return out


@njit(fastmath=_FASTMATH, cache=True)
def _score(dot: np.float32, term: np.float32, cosine: bool) -> np.float32:
    return -dot * term if cosine else term - np.float32(2.0) * dot


@njit(fastmath=_FASTMATH, cache=True)
def _nearest4(r: np.ndarray, book: np.ndarray, terms: np.ndarray, cosine: bool) -> tuple[int, int, int, int]:
    """Index of the best codeword in `book` [K, D] for each of the four rows of `r` [4, D]."""
    K, D = book.shape
    b0 = b1 = b2 = b3 = np.float32(np.inf)
    i0 = i1 = i2 = i3 = 0
    for k in range(K):
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for d in range(D):
            c = book[k, d]
            a0 += r[0, d] * c
            a1 += r[1, d] * c
            a2 += r[2, d] * c
            a3 += r[3, d] * c
        t = terms[k]
        s0, s1, s2, s3 = _score(a0, t, cosine), _score(a1, t, cosine), _score(a2, t, cosine), _score(a3, t, cosine)
        if s0 < b0:
            b0, i0 = s0, k
        if s1 < b1:
            b1, i1 = s1, k
        if s2 < b2:
            b2, i2 = s2, k
        if s3 < b3:
            b3, i3 = s3, k
    return i0, i1, i2, i3


@njit(fastmath=_FASTMATH, cache=True)
def _nearest1(r: np.ndarray, book: np.ndarray, terms: np.ndarray, cosine: bool) -> int:
    K, D = book.shape
    best, index = np.float32(np.inf), 0
    for k in range(K):
        a = np.float32(0.0)
        for d in range(D):
            a += r[d] * book[k, d]
        s = _score(a, terms[k], cosine)
        if s < best:
            best, index = s, k
    return index


@njit(fastmath=_FASTMATH, cache=True)
def _search_tile(
    tile: int,
    residual: np.ndarray,
    codebooks: np.ndarray,
    terms: np.ndarray,
    levels: int,
    cosine: bool,
    codes: np.ndarray,
    quantized: np.ndarray,
) -> None:
    """Frames tile*TILE .. tile*TILE + TILE - 1 (fewer at the end) through every group and level."""
    N, G, D = residual.shape
    start = tile * TILE
    count = min(TILE, N - start)
    r = np.empty((TILE, D), np.float32)
    for g in range(G):
        for i in range(count):
            for d in range(D):
                r[i, d] = residual[start + i, g, d]
        for level in range(levels):
            book = codebooks[g, level]
            if count == TILE:
                chosen = _nearest4(r, book, terms[g, level], cosine)
                for i in range(TILE):
                    codes[start + i, level, g] = chosen[i]
                    for d in range(D):
                        r[i, d] -= book[chosen[i], d]
            else:  # the last, partial tile: one frame at a time rather than scoring padding
                for i in range(count):
                    k = _nearest1(r[i], book, terms[g, level], cosine)
                    codes[start + i, level, g] = k
                    for d in range(D):
                        r[i, d] -= book[k, d]
        for i in range(count):
            for d in range(D):
                quantized[start + i, g, d] = residual[start + i, g, d] - r[i, d]


@njit(parallel=True, cache=True)
def _search_parallel(residual, codebooks, terms, levels, cosine, codes, quantized) -> None:
    for tile in prange((residual.shape[0] + TILE - 1) // TILE):
        _search_tile(tile, residual, codebooks, terms, levels, cosine, codes, quantized)


@njit(cache=True)
def _search_serial(residual, codebooks, terms, levels, cosine, codes, quantized) -> None:
    for tile in range((residual.shape[0] + TILE - 1) // TILE):
        _search_tile(tile, residual, codebooks, terms, levels, cosine, codes, quantized)


def _prepare(codebooks: torch.Tensor, levels: int, cosine: bool) -> tuple[np.ndarray, np.ndarray]:
    books = np.ascontiguousarray(codebooks.detach().cpu().numpy(), dtype=np.float32)
    return books, _codeword_terms(books, levels, cosine)


_prepared = CodebookCache(_prepare)


def search_numba(
    residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, levels, G] (int64) and quantized sum [N, G, D]; inputs on another device go through the CPU."""
    cosine = lookup == "cosine"
    books, terms = _prepared.get(codebooks, levels, cosine)
    x = np.ascontiguousarray(residual.detach().cpu().numpy(), dtype=np.float32)
    N, G, D = x.shape
    codes = np.empty((N, levels, G), np.int64)
    quantized = np.empty_like(x)
    # Waking the thread pool costs tens of microseconds (and, with the OpenMP layer, leaves workers
    # spinning beside torch's own pool): small searches (streaming, one frame at a time) stay serial.
    parallel = N >= 4 * TILE * numba.get_num_threads() and N * G * levels * books.shape[2] * D >= PARALLEL_MIN_WORK
    if parallel:
        with _POOL:
            _search_parallel(x, books, terms, levels, cosine, codes, quantized)
    else:
        _search_serial(x, books, terms, levels, cosine, codes, quantized)
    device = residual.device
    return torch.from_numpy(codes).to(device), torch.from_numpy(quantized).to(device)
