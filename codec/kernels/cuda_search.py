"""Loader of the fused CUDA residual search (rvq_search.cu + rvq_search_binding.cpp).

The extension is compiled on first use with torch.utils.cpp_extension and cached under
$XDG_CACHE_HOME/codec/kernels (default ~/.cache/codec/kernels), in a folder named after a hash of
the sources and the torch/CUDA versions, so an edit or an upgrade rebuilds and a rerun does not.
`load_search` raises CodecError, with the reason, when it cannot run here (CPU-only torch, no
device, no nvcc, a failed build); codec.quantization.search then falls back and says so once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from codec.errors import CodecError
from codec.kernels import CodebookCache

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "rvq_search.cu", HERE / "rvq_search_binding.cpp")


def build_directory() -> Path:
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(f"{torch.__version__}|{torch.version.cuda}".encode())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "codec" / "kernels" / f"rvq_search-{digest.hexdigest()[:16]}"


def unavailable_reason() -> str | None:
    """Why the kernel cannot be built or run here, or None if it can be tried."""
    if torch.version.cuda is None:
        return "this torch is a CPU build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME) / "bin" / "nvcc" if CUDA_HOME else None
    if not (nvcc and nvcc.exists()) and shutil.which("nvcc") is None:
        return "no CUDA toolchain found (install nvcc or set CUDA_HOME)"
    return None


def _build():
    from torch.utils.cpp_extension import load

    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return load(
            name="codec_rvq_search",
            sources=[str(s) for s in SOURCES],
            build_directory=str(directory),
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-std=c++17"],
            verbose=False,
        )
    except Exception as e:  # compiler errors arrive as RuntimeError/OSError/CalledProcessError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CodecError(f"building the CUDA residual search failed ({first}); build files in {directory}") from e


def _prepare(codebooks: torch.Tensor, levels: int, cosine: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codebooks [G, L, K, D], their used levels transposed [G, levels, D, K], per-codeword terms [G, levels, K]."""
    books = codebooks.contiguous()
    used = books[:, :levels]
    books_t = used.transpose(2, 3).contiguous()
    # The reference's own norm expressions (cosine then multiplies by 1/|c| where it divides by |c|).
    terms = used.norm(dim=-1).clamp_min(1e-12).reciprocal() if cosine else (used * used).sum(-1)
    return books, books_t, terms.contiguous()


def load_search() -> Callable[[torch.Tensor, torch.Tensor, int, str], tuple[torch.Tensor, torch.Tensor]]:
    """The 'cuda' backend's search function; builds the extension on first use. CodecError if it cannot run here."""
    reason = unavailable_reason()
    if reason is not None:
        raise CodecError(f"the CUDA residual search cannot run: {reason}")
    module = _build()
    prepared = CodebookCache(_prepare)

    def search_cuda(
        residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not (residual.is_cuda and codebooks.is_cuda):
            raise CodecError("the 'cuda' residual search needs CUDA tensors; move the model to cuda or pick another")
        cosine = lookup == "cosine"
        books, books_t, terms = prepared.get(codebooks, levels, cosine)
        codes, quantized = module.search(residual.contiguous(), books, books_t, terms, levels, cosine)
        return codes, quantized

    return search_cuda
