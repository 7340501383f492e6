"""Residual codebook search: the one hot loop of inference, with interchangeable backends.

One function shape for every backend:
    residual  [N, G, D]     one D-dim vector per frame and group
    codebooks [G, L, K, D]  K codewords for each group and level
    -> codes  [N, levels, G] (int64) and the quantized sum [N, G, D] over the first `levels` levels.

For each frame and group, level l picks the codeword nearest to what levels < l left over, and
subtracts it. "Nearest" is squared euclidean distance, or, with lookup='cosine', the largest cosine
similarity (the l2-normalised lookup of factorized codes); in both cases the codeword itself is
subtracted. Ties go to the lowest index.

Backends: 'torch' (this file, the reference); 'numba' (CPU: groups and levels fused, frames in
parallel; codec/kernels/numba_search.py); 'cuda' (one kernel launch for all groups and levels,
built on first use and cached; codec/kernels/cuda_search.py). `select_backend` picks 'cuda' for
CUDA tensors when the kernel builds, else 'numba' on CPU when numba imports, else 'torch';
`CODEC_RVQ_BACKEND` forces one by name (a CodecError if it cannot run here).

Near-ties. The backends add the same fp32 numbers in different orders (BLAS blocking, SIMD lanes,
GPU tiles), so when two codewords score almost the same, the winner may differ. The policy: every
backend returns the reference's codes, except where, at the first level on which a frame's codes
differ, the reference's code and the backend's code score within
    TIE_RTOL x scale,   scale = |r|^2 + max(|c_ref|^2, |c_other|^2)  (euclidean),  |r|  (cosine)
of each other (in float64, from the fp32 residual r that entered that level). That
bounds the gap between the reference's best and second-best scores by the same amount. The
levels after such a tie search a different residual and are not compared with the reference;
instead, every code a backend returns must be the best for its own residual up to the same
tolerance. tests/test_search.py checks both.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

import torch

from codec.errors import CodecError
from codec.rates import levels_or_all

LOOKUPS = ("euclidean", "cosine")
TIE_RTOL = 1e-5  # about 100 fp32 ulps of the score's scale; see "Near-ties" above

SearchFn = Callable[[torch.Tensor, torch.Tensor, int, str], tuple[torch.Tensor, torch.Tensor]]


def book_terms(book: torch.Tensor, lookup: str) -> torch.Tensor:
    """The per-codeword term of `level_scores` for codebooks [G, K, D]: [G, K] squared norms (euclidean) or
    norms (cosine). It depends on the codebooks only, so the ONNX encoder graph holds it as a constant."""
    if lookup == "euclidean":
        return (book * book).sum(-1)
    return book.norm(dim=-1).clamp_min(1e-12)


def scores_from(dots: torch.Tensor, terms: torch.Tensor, lookup: str) -> torch.Tensor:
    """Scores [G, N, K] from the dot products [G, N, K] of residuals and codewords and `book_terms` [G, K]."""
    if lookup == "euclidean":
        # dots + dots is 2 * dots exactly; written as a sum so that ONNX Runtime does not fold the factor into the
        # MatMul (its scaled MatMul does not pack the constant codebook once and runs 3x slower)
        return terms[:, None, :] - (dots + dots)
    return -dots / terms[:, None, :]


def level_scores(r: torch.Tensor, book: torch.Tensor, lookup: str) -> torch.Tensor:
    """Scores [G, N, K] of residuals r [G, N, D] against one level's codebooks [G, K, D]; the best code is the
    lowest score. The one definition of the reference search's rule (the ONNX encoder graph computes the same
    `scores_from`, with the codebooks stored transposed and `book_terms` precomputed)."""
    return scores_from(torch.bmm(r, book.transpose(1, 2)), book_terms(book, lookup), lookup)


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
        index = level_scores(r, book, lookup).argmin(-1)  # [G, N]; first minimum on ties
        codes[level] = index
        r = r - book[group_index, index]
    quantized = residual - r.transpose(0, 1)
    return codes.permute(2, 0, 1), quantized


def _load_numba() -> SearchFn:
    try:
        from codec.kernels.numba_search import search_numba
    except ImportError as e:
        raise CodecError(f"the numba backend needs numba ({e}); install it with `pip install numba`") from e
    return search_numba


def _load_cuda() -> SearchFn:
    from codec.kernels.cuda_search import load_search

    return load_search()  # builds (or loads the cached build of) the extension; CodecError if it cannot


_BACKENDS: dict[str, SearchFn] = {"torch": search_torch}
_LOADERS: dict[str, Callable[[], SearchFn]] = {"numba": _load_numba, "cuda": _load_cuda}
_UNAVAILABLE: dict[str, str] = {}  # backend name -> why it cannot run here (tried once per process)
_PREFERRED: str | None = None  # the automatic choice on CPU, when set (`preferred_backend`)
_NOTIFIED: set[str] = set()  # backends whose fallback notice was given
_log = logging.getLogger(__name__)


def _backend(name: str) -> SearchFn | None:
    """The backend's function, loading it on first use; None (with the reason kept) if it cannot run here."""
    if name not in _BACKENDS and name in _LOADERS and name not in _UNAVAILABLE:
        try:
            _BACKENDS[name] = _LOADERS[name]()
        except CodecError as e:
            _UNAVAILABLE[name] = str(e)
    return _BACKENDS.get(name)


def available_backends() -> list[str]:
    """Backends that run here (loading, and for 'cuda' building, the compiled ones)."""
    return [name for name in [*_BACKENDS, *_LOADERS] if _backend(name) is not None]


def register_backend(name: str, fn: SearchFn) -> None:
    _BACKENDS[name] = fn
    _UNAVAILABLE.pop(name, None)


@contextlib.contextmanager
def preferred_backend(name: str) -> Iterator[None]:
    """Inside this context `name` is the automatic choice on CPU (`CODEC_RVQ_BACKEND` still wins). `codec encode`
    of a short file prefers 'torch': loading numba (its import and registries, about 0.8 s of CPU) costs more than
    its faster search saves on less than about ten minutes of audio."""
    global _PREFERRED
    if name not in {*_BACKENDS, *_LOADERS}:
        raise ValueError(f"unknown search backend {name!r}")
    before, _PREFERRED = _PREFERRED, name
    try:
        yield
    finally:
        _PREFERRED = before


def select_backend(device: torch.device) -> str:
    """The backend to use on `device`: `CODEC_RVQ_BACKEND` if set, else on CPU the one `preferred_backend` names,
    else the fastest available."""
    device = torch.device(device)
    forced = os.environ.get("CODEC_RVQ_BACKEND")
    if forced:
        known = sorted({*_BACKENDS, *_LOADERS})
        if forced not in known:
            raise CodecError(f"CODEC_RVQ_BACKEND={forced} is not a search backend; choose one of: {', '.join(known)}")
        if forced == "cuda" and device.type != "cuda":
            raise CodecError(f"CODEC_RVQ_BACKEND=cuda needs CUDA tensors, got {device.type}; unset it or run on cuda")
        if _backend(forced) is None:
            raise CodecError(f"CODEC_RVQ_BACKEND={forced} cannot run here: {_UNAVAILABLE[forced]}; unset it")
        return forced
    if device.type == "cuda":
        if _backend("cuda") is not None:
            return "cuda"
        if "cuda" not in _NOTIFIED:  # one line per process, not per call
            _NOTIFIED.add("cuda")
            _log.warning("codec: CUDA residual search unavailable (%s); using torch", _UNAVAILABLE["cuda"])
        return "torch"
    if device.type == "cpu" and _PREFERRED is not None and _backend(_PREFERRED) is not None:
        return _PREFERRED
    if device.type == "cpu" and _backend("numba") is not None:
        return "numba"
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
            "residual [N, G, D] and codebooks [G, L, K, D] disagree: "
            f"{tuple(residual.shape)} vs {tuple(codebooks.shape)}"
        )
    if lookup not in LOOKUPS:
        raise ValueError(f"lookup must be one of {LOOKUPS}, got {lookup!r}")
    levels = levels_or_all(levels, codebooks.shape[1])
    name = backend or select_backend(residual.device)
    if residual.shape[0] == 0:
        return residual.new_zeros(0, levels, residual.shape[1], dtype=torch.long), torch.zeros_like(residual)
    fn = _backend(name)
    if fn is None:
        reason = _UNAVAILABLE.get(name, f"choose one of: {', '.join(available_backends())}")
        raise CodecError(f"residual-search backend {name!r} cannot run here: {reason}")
    with torch.no_grad():
        return fn(residual.float(), codebooks.float(), levels, lookup)


def dequantize(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Sum of the codewords named by `codes` [N, levels, G]: [N, G, D]."""
    levels, G = codes.shape[1], codes.shape[2]
    level_index = torch.arange(levels, device=codes.device)[None, :, None]
    group_index = torch.arange(G, device=codes.device)[None, None, :]
    return codebooks[group_index, level_index, codes].sum(1)
