"""Codes from two paths whose latents differ only by float rounding: equal, except at near-ties of the search.

Torch offline against torch streaming (other call shapes, so other rounding in the last bits of the latent), or
torch against ONNX Runtime (other kernels), compute the same latent up to rounding. The residual search then
picks the same codes wherever a frame's best codeword wins by more than that rounding; where two codewords
score within it of each other (a near-tie), either may win, and the later levels of that group search another
residual. `parting_gaps` finds, for every frame whose codes differ from `model.encode`'s, the first level where
they part and how far apart the two codes score there on the reference's residual (the scale of
codec/quantization/search.py, "Near-ties"); a real disagreement (not a tie) shows as a large gap.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.quantization.search import TIE_RTOL

# ONNX Runtime against torch: other convolution, matmul and LSTM kernels round the latent differently by up to a
# few 1e-6 relative, more than the orders of summation the backends' TIE_RTOL covers; ties within ten times that.
ONNX_TIE_RTOL = 10 * TIE_RTOL


@torch.no_grad()
def parting_gaps(model, x: torch.Tensor, codes, levels: int | None = None) -> tuple[int, int, float]:
    """(frames that differ, frames, largest relative score gap where they part) of `codes` [B, levels * G, F]
    against `model.encode(x, levels)` for audio x [B, C, T]."""
    q = model.quantizer
    levels = levels or model.num_levels
    residual = q._frames(model.encoder(model._pad_to_frames(x))).double()  # [N, G, d]: the reference's latent
    ref = q._unpack_codes(model.encode(x, levels))  # [N, levels, G]
    got = q._unpack_codes(torch.as_tensor(np.asarray(codes)))
    assert got.shape == ref.shape, f"codes {tuple(got.shape)} against the reference's {tuple(ref.shape)}"
    differ = (got != ref).flatten(1).any(1)
    r, a, b = residual[differ], got[differ], ref[differ]  # [n, G, d], [n, levels, G] x 2
    books = q.codebooks.double()
    groups = torch.arange(q.num_groups)[None, :]
    parted = torch.zeros(a.shape[0], q.num_groups, dtype=torch.bool)
    worst = 0.0
    for level in range(levels):
        book = books[:, level]  # [G, K, d]
        dots = torch.einsum("ngd,gkd->ngk", r, book)
        sq = (book * book).sum(-1)  # [G, K]
        ca, cb = a[:, level], b[:, level]  # [n, G]
        if q.lookup == "euclidean":
            score = sq[None] - 2 * dots
            scale = (r * r).sum(-1) + torch.maximum(sq[groups, ca], sq[groups, cb])
        else:
            score = -dots / sq.sqrt().clamp_min(1e-12)[None]
            scale = r.norm(dim=-1)
        gap = (score.gather(-1, ca[..., None]) - score.gather(-1, cb[..., None]))[..., 0].abs() / scale.clamp_min(1e-30)
        first = (ca != cb) & ~parted
        if first.any():
            worst = max(worst, gap[first].max().item())
        parted |= first
        r = r - book[groups, cb]  # follow the reference's path (the groups already parted are not compared again)
    return int(differ.sum()), differ.numel(), worst
