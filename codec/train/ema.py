"""Exponential moving average of the generator's weights (buffers such as codebooks are copied as is)."""

from __future__ import annotations

import torch

from codec.models.codec import CodecModel, build_model
from codec.train.checkpoints import extra_buffers, load_extra_buffers


class GeneratorEMA:
    """Holds `model`, an eval-mode copy whose parameters trail the trained generator's by `decay` per step."""

    def __init__(self, source: CodecModel, decay: float) -> None:
        self.decay = decay
        self.model = build_model(source.config).to(next(source.parameters()).device)
        self.model.load_state_dict(source.state_dict())
        load_extra_buffers(self.model, extra_buffers(source))
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, source: CodecModel) -> None:
        for mine, theirs in zip(self.model.parameters(), source.parameters(), strict=True):
            mine.lerp_(theirs.detach(), 1 - self.decay)
        for mine, theirs in zip(self.model.buffers(), source.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "extra": extra_buffers(self.model)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        load_extra_buffers(self.model, state["extra"])
