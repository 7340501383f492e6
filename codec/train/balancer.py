"""EnCodec's gradient balancer: loss weights set each term's share of the gradient, not its scale.

For the terms that depend on the generator output y_hat, the balancer takes each term's gradient
g_i = dL_i / dy_hat, tracks an EMA of its norm, and sends back

    sum_i  (w_i / sum_j w_j) * total_norm * g_i / ema(|g_i|)

so a term with weight 2 contributes twice the gradient of a term with weight 1, however large its raw
value. Norms are averaged over ranks so every rank rescales alike.
"""

from __future__ import annotations

import torch

from codec.dist import mean_over_ranks_


class Balancer:
    """Args:
    weights: name -> weight of each balanced term.
    total_norm: the gradient norm the balanced terms add up to (per batch item).
    decay: EMA decay of the gradient norms.
    """

    def __init__(self, weights: dict[str, float], *, total_norm: float = 1.0, decay: float = 0.999) -> None:
        self.weights = {k: w for k, w in weights.items() if w > 0}
        self.total_norm, self.decay = total_norm, decay
        self.ema: dict[str, float] = {}
        self.ema_weight = 0.0  # bias correction, as in Adam

    def gradient(self, losses: dict[str, torch.Tensor], y_hat: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The balanced gradient for y_hat [B, ...], and each term's raw gradient norm (for logging)."""
        names = [k for k in losses if k in self.weights]
        grads = {k: torch.autograd.grad(losses[k], y_hat, retain_graph=True)[0] for k in names}
        norms = torch.stack([grads[k].flatten(1).norm(dim=1).mean() for k in names]).float()
        mean_over_ranks_(norms)
        self.ema_weight = self.decay * self.ema_weight + 1
        for k, n in zip(names, norms.tolist(), strict=True):
            self.ema[k] = self.decay * self.ema.get(k, 0.0) + n
        total_weight = sum(self.weights[k] for k in names)
        out = torch.zeros_like(y_hat)
        for k in names:
            norm = self.ema[k] / self.ema_weight
            out = out + grads[k] * (self.weights[k] / total_weight * self.total_norm / (norm + 1e-12))
        return out, dict(zip(names, norms.tolist(), strict=True))

    def state_dict(self) -> dict:
        return {"ema": dict(self.ema), "ema_weight": self.ema_weight}

    def load_state_dict(self, state: dict) -> None:
        self.ema, self.ema_weight = dict(state["ema"]), float(state["ema_weight"])
