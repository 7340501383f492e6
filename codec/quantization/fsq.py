"""FSQ levels searched by rounding: the nearest codeword of a finite-scalar-quantizer level without scoring every
codeword. One home for the training forward (codec/quantization/grvq.py) and the ONNX encoder graphs
(codec/runtimes/export_onnx.py), whose MatMul/Ceil/Clip form it is written in."""

from __future__ import annotations

import torch
from torch import nn


class FsqSearch(nn.Module):
    """The residual search of FSQ levels (`level_type: fsq`) as rounding. Each level's codebook is centre + (grid *
    step) @ directions^T with orthonormal directions, so the nearest codeword takes, per direction, the step nearest
    to the projected residual (ties to the lower step, i.e. the lower code, as the reference search). Per level: one
    Gemm projects both groups (a block-diagonal constant) into units of steps, Ceil and Clip give the digits, one
    Gemm maps the digits back to the chosen codeword, which is subtracted; one MatMul at the end turns every level's
    digits into codes. In exact arithmetic these are the reference search's codes; in fp32 they may part from them
    only where two codewords score within rounding of each other (near-ties, as for any runtime: tests/test_onnx.py).
    Each row is computed on its own (MatMuls against constants), so codes do not depend on the batch."""

    def __init__(self, q, levels: int) -> None:
        super().__init__()
        G, d = q.num_groups, q.codebook_dim
        directions = torch.linalg.qr(q.fsq_directions.detach()).Q[:, :levels].double()  # [G, levels, d, k], as q's
        step = q.fsq_log_step.detach()[:, :levels].exp().double()  # [G, levels, k]
        centre = q.fsq_center.detach()[:, :levels].double()  # [G, levels, d]
        steps = (q.fsq_grid.max(0).values * 2 + 1).double()  # [k]: steps per direction
        k = steps.numel()
        low = -(steps - 1) / 2  # grid value of digit 0
        to_steps = directions / step[:, :, None, :]  # residual @ to_steps: the projection in steps
        shift = -low - 0.5 - (centre[:, :, None, :] @ to_steps)[:, :, 0]  # ceil(projection + shift) = nearest digit
        to_codeword = step[..., None] * directions.transpose(-1, -2)  # digits @ to_codeword + base = the codeword
        base = centre + (low * step)[:, :, None, :].matmul(directions.transpose(-1, -2))[:, :, 0]
        device = directions.device  # the quantizer's: the training forward builds this on the GPU it trains on
        project = torch.zeros(levels, G * d, G * k, dtype=torch.float64, device=device)
        back = torch.zeros(levels, G * k, G * d, dtype=torch.float64, device=device)
        for g in range(G):
            project[:, g * d : (g + 1) * d, g * k : (g + 1) * k] = to_steps[g]
            back[:, g * k : (g + 1) * k, g * d : (g + 1) * d] = to_codeword[g]
        places = torch.cumprod(torch.cat([steps.new_ones(1), steps[:-1]]), 0)  # as q's grid: first direction fastest
        place = torch.block_diag(*[places[:, None]] * (levels * G))  # [levels * G * k, levels * G]
        self.register_buffer("project", project.float())
        self.register_buffer("shift", shift.transpose(0, 1).reshape(levels, G * k).float())
        self.register_buffer("back", back.float())
        self.register_buffer("base", base.transpose(0, 1).reshape(levels, G * d).float())
        self.register_buffer("place", place.float())
        self.uniform = bool((steps == steps[0]).all())
        self.top = float(steps[0] - 1)
        self.register_buffer("tops", (steps - 1).repeat(G).float())
        self.levels = levels

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """residual rows [N, G * d] -> codes [N, levels * G] (level-major)."""
        r, digits = residual, []
        for level in range(self.levels):
            t = torch.ceil(r @ self.project[level] + self.shift[level])
            digits.append(t.clamp(0.0, self.top) if self.uniform else torch.minimum(t.clamp(min=0.0), self.tops))
            if level + 1 < self.levels:
                r = r - (digits[-1] @ self.back[level] + self.base[level])
        return (torch.cat(digits, 1) @ self.place).long()
