"""Group-residual vector quantization (GRVQ); plain RVQ is the one-group case.

The latent [B, D, F] is split along D into G groups; each group is quantized by its own residual
stack of L codebooks. Codes are laid out level-major, [B, L * G, F] with index l * G + g, so the
codes of the first n levels are a prefix and a lower bitrate is a truncation.

Codebooks learn by exponential moving averages of the residuals assigned to them (not by
gradients), start from k-means on the first training batch (or, with a warm start, on many batches of
latents from an encoder trained with the quantizer bypassed: `init_codebooks`), and codes that fall out of use are
restarted from random residuals of the current batch. Gradients reach the encoder through the
straight-through estimator. With `dropout`, each training item keeps a random prefix of levels, so
every prefix learns to decode on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codec.config import CODEBOOK_UPDATES, LEVEL_TYPES, QUANTIZER_GRADIENTS
from codec.dist import all_reduce_, broadcast_
from codec.quantization.codebook import kmeans, perplexity
from codec.quantization.fsq import FsqSearch
from codec.quantization.search import dequantize, rvq_search


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, D, F], straight-through in training
    codes: torch.Tensor  # [B, L * G, F], level-major
    commitment_loss: torch.Tensor  # scalar: mean squared distance of residuals to their codewords
    levels: torch.Tensor  # [B] levels each item used (all of them unless quantizer dropout chose fewer)


def rotation_trick(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The value of q [..., d] with a gradient to e [..., d] carried by the rotation and rescaling that map e
    onto q (Fifty et al., 2024, "Restructuring vector quantization with the rotation trick").

    With e_hat, q_hat the unit vectors and r = (e_hat + q_hat) / |e_hat + q_hat|, the rotation
    R = I - 2 r r^T + 2 q_hat e_hat^T takes e_hat to q_hat; the output is lambda R e with lambda = |q| / |e|,
    R and lambda held constant. So dL/de = lambda R^T dL/dq instead of the straight-through copy: the
    gradient keeps its angle to the codeword, and a latent far from its codeword gets a scaled one.
    """
    q = q.detach()
    e_norm = e.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    e_hat = e.detach() / e_norm
    q_hat = q / q_norm
    r = e_hat + q_hat
    r = r / r.norm(dim=-1, keepdim=True).clamp_min(eps)
    rotated = e - 2 * r * (r * e).sum(-1, keepdim=True) + 2 * q_hat * (e_hat * e).sum(-1, keepdim=True)
    scaled = rotated * (q_norm / e_norm)
    return scaled + (q - scaled).detach()  # exactly q's value; the gradient is the rotation's


class GroupResidualVQ(nn.Module):
    """Args:
    dim: latent dimension D (divisible by num_groups).
    num_groups: G. num_levels: L. codebook_size: K.
    factorized: project each group to `codebook_dim` and look codes up by cosine similarity.
    decay, epsilon: EMA decay and Laplace smoothing of cluster sizes.
    kmeans_iters: k-means iterations at initialisation (0 = random codewords from the batch).
    dead_code_threshold: a code whose EMA cluster size falls below this is restarted.
    dropout: probability that a training item keeps only a random prefix of levels.
    gradient: straight_through, or rotation (`rotation_trick`) for the path from decoder to encoder.
    codebook_update: ema (codebooks are moving averages of their residuals, dead codes restarted), or simvq
        (Zhu et al., 2024: codebooks = frozen basis @ learned linear map, trained by a codebook loss added to
        the commitment loss, so every code moves at every step and none falls out of use).
    level_type: vq (free codebooks) or fsq: each level a finite scalar quantizer, codebook = centre +
        (grid * step) @ directions^T with orthonormal directions [d, len(fsq_levels)], so the nearest codeword
        is the per-direction rounding of the projected residual; trained by the codebook loss, like simvq.
    fsq_levels: steps per FSQ direction (their product is codebook_size).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_groups: int,
        num_levels: int,
        codebook_size: int,
        factorized: bool = False,
        codebook_dim: int = 8,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 2.0,
        dropout: float = 1.0,
        gradient: str = "straight_through",
        codebook_update: str = "ema",
        level_type: str = "vq",
        fsq_levels: tuple[int, ...] = (4, 4, 4, 4, 4),
    ) -> None:
        super().__init__()
        G, L, K = num_groups, num_levels, codebook_size
        group_dim = dim // G
        d = codebook_dim if factorized else group_dim
        self.dim, self.num_groups, self.num_levels, self.codebook_size, self.codebook_dim = dim, G, L, K, d
        self.lookup = "cosine" if factorized else "euclidean"
        self.decay, self.epsilon, self.kmeans_iters = decay, epsilon, kmeans_iters
        self.dead_code_threshold, self.dropout = dead_code_threshold, dropout
        if gradient not in QUANTIZER_GRADIENTS:
            raise ValueError(f"gradient must be one of {QUANTIZER_GRADIENTS}, got {gradient!r}")
        self.gradient = gradient
        if codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {CODEBOOK_UPDATES}, got {codebook_update!r}")
        self.codebook_update = codebook_update
        if level_type not in LEVEL_TYPES:
            raise ValueError(f"level_type must be one of {LEVEL_TYPES}, got {level_type!r}")
        self.level_type = level_type
        if level_type == "fsq" and (math.prod(fsq_levels) != K or factorized or codebook_update != "ema"):
            raise ValueError(f"fsq_levels {fsq_levels} must multiply to {K}, without factorized or simvq")
        if factorized:
            self.in_proj = weight_norm(nn.Conv1d(dim, G * d, 1, groups=G))
            self.out_proj = weight_norm(nn.Conv1d(G * d, dim, 1, groups=G))
        else:
            self.in_proj = self.out_proj = nn.Identity()
        self.register_buffer("codebooks", torch.randn(G, L, K, d))
        self.register_buffer("cluster_size", torch.zeros(G, L, K))
        # Sums of assigned residuals. Not saved: codebooks * smoothed cluster sizes gives it back on load.
        self.register_buffer("embed_sum", torch.zeros(G, L, K, d), persistent=False)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if codebook_update == "simvq":
            # codebooks = basis @ transform per (group, level): a frozen basis (k-means centroids of the warm start,
            # random before) and a learned d x d map, so every gradient step moves every code. `codebooks` holds
            # the product for search and decoding; it is refreshed whenever `transform` has changed.
            self.register_buffer("basis", torch.randn(G, L, K, d))
            self.transform = nn.Parameter(torch.eye(d).repeat(G, L, 1, 1))
        if level_type == "fsq":
            steps = torch.tensor(fsq_levels)
            k = len(fsq_levels)
            # grid [K, k]: row i holds code i's mixed-radix digits (first direction fastest), centred on zero
            place = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), steps[:-1]]), 0)
            digits = (torch.arange(K)[:, None] // place[None]) % steps[None]
            self.register_buffer("fsq_grid", (digits - (steps - 1) / 2).float(), persistent=False)
            self.fsq_directions = nn.Parameter(torch.eye(d, k).repeat(G, L, 1, 1))  # orthonormalised on use
            self.fsq_log_step = nn.Parameter(torch.zeros(G, L, k))
            self.fsq_center = nn.Parameter(torch.zeros(G, L, d))
        self._synced: tuple | None = None
        self._fsq_searches: dict[int, tuple[tuple, FsqSearch]] = {}  # levels -> (parameter key, search)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        with torch.no_grad():
            self.embed_sum.copy_(self.codebooks * self._smoothed_sizes()[..., None])
        self._synced = None

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        self._sync_codebooks()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    @property
    def _learned_by_gradient(self) -> bool:
        """simvq and fsq: the codebooks are a function of parameters, trained by the codebook loss."""
        return self.codebook_update == "simvq" or self.level_type == "fsq"

    def _parameters_of_codebooks(self) -> tuple[torch.Tensor, ...]:
        if self.level_type == "fsq":
            return (self.fsq_directions, self.fsq_log_step, self.fsq_center)
        return (self.transform, self.basis)

    def _gradient_codebooks(self) -> torch.Tensor:
        """[G, L, K, d] (differentiable): simvq basis @ transform; fsq centre + (grid * step) @ directions^T."""
        if self.level_type == "fsq":
            directions = torch.linalg.qr(self.fsq_directions).Q  # [G, L, d, k], orthonormal columns
            scaled = self.fsq_grid[None, None] * self.fsq_log_step.exp()[:, :, None, :]  # [G, L, K, k]
            return self.fsq_center[:, :, None, :] + scaled @ directions.transpose(-1, -2)
        return torch.einsum("glkd,glde->glke", self.basis, self.transform)

    def _codebook_key(self) -> tuple:
        """What changes whenever the codebook parameters do (an optimizer step, an EMA update or a load bumps their
        version counters; a move to another device changes their storage)."""
        return tuple((t._version, t.data_ptr()) for t in self._parameters_of_codebooks())

    def _sync_codebooks(self) -> None:
        """simvq and fsq: recompute `codebooks` from their parameters if any changed since the last time (an
        optimizer step, an EMA update or a load bumps their version counters)."""
        if not self._learned_by_gradient:
            return
        key = self._codebook_key()
        if key != self._synced:
            with torch.no_grad():
                self.codebooks.copy_(self._gradient_codebooks())
            self._synced = key

    def _fsq_search(self, levels: int) -> FsqSearch:
        """The rounding search of the first `levels` FSQ levels (codec/quantization/fsq.py), built once per value of
        the FSQ parameters (`_codebook_key`, as `_sync_codebooks`): a streaming encode asks for it every
        frame, and building it costs a millisecond or two."""
        key = self._codebook_key()
        cached = self._fsq_searches.get(levels)
        if cached is None or cached[0] != key:
            cached = self._fsq_searches[levels] = (key, FsqSearch(self, levels))
        return cached[1]

    def _smoothed_sizes(self) -> torch.Tensor:
        """Laplace-smoothed cluster sizes [G, L, K]: the divisor that turns embed_sum into codebooks."""
        total = self.cluster_size.sum(-1, keepdim=True)
        K = self.codebook_size
        return ((self.cluster_size + self.epsilon) / (total + K * self.epsilon) * total).clamp_min(self.epsilon)

    # --- layout helpers -------------------------------------------------------------------------
    def _frames(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, F] latent -> [B * F, G, d] projected frames (fp32: the quantizer stays in full precision)."""
        if z.shape[-1] == 0:  # no frames (a flush with nothing pending): Conv1d refuses empty input
            return z.new_zeros(0, self.num_groups, self.codebook_dim, dtype=torch.float32)
        x = self.in_proj(z).float()
        B, _, F = x.shape
        return (
            x.view(B, self.num_groups, self.codebook_dim, F)
            .permute(0, 3, 1, 2)
            .reshape(B * F, self.num_groups, self.codebook_dim)
        )

    def _latent(self, frames: torch.Tensor, B: int) -> torch.Tensor:
        """[B * F, G, d] -> [B, D, F] through the output projection."""
        F = frames.shape[0] // B
        if F == 0:
            return frames.new_zeros(B, self.dim, 0)
        x = frames.view(B, F, -1).transpose(1, 2)
        return self.out_proj(x)

    @staticmethod
    def _pack_codes(codes: torch.Tensor, B: int) -> torch.Tensor:
        """[B * F, levels, G] -> level-major [B, levels * G, F]."""
        N, levels, G = codes.shape
        return codes.view(B, N // B, levels * G).transpose(1, 2)

    def _unpack_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Level-major [B, levels * G, F] -> [B * F, levels, G]."""
        B, NC, F = codes.shape
        G, L = self.num_groups, self.num_levels
        if NC % G or not 1 <= NC // G <= L:
            raise ValueError(f"got {NC} codebooks; expected a multiple of {G} up to {G * L}")
        return codes.transpose(1, 2).reshape(B * F, NC // self.num_groups, self.num_groups)

    # --- inference --------------------------------------------------------------------------------
    def encode(self, z: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Codes [B, levels * G, F] for latent z [B, D, F]."""
        self._sync_codebooks()  # the buffer `decode`, export and the tables read follows the parameters too
        if self.level_type == "fsq":  # rounding (FsqSearch), not a scan of every codeword: the training forward's
            L = levels or self.num_levels  # search and the ONNX graphs'; codes equal the scan's but at near-ties
            with torch.no_grad():
                codes = self._fsq_search(L)(self._frames(z).flatten(1)).view(-1, L, self.num_groups)
            return self._pack_codes(codes, z.shape[0])
        codes, _ = rvq_search(self._frames(z), self.codebooks, levels, lookup=self.lookup)  # None: every level
        return self._pack_codes(codes, z.shape[0])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent [B, D, F] from level-major codes [B, n * G, F] (any prefix of levels)."""
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        self._sync_codebooks()
        frames = dequantize(self._unpack_codes(codes.long()), self.codebooks)
        return self._latent(frames, codes.shape[0])

    # --- training ---------------------------------------------------------------------------------
    def forward(
        self, z: torch.Tensor, levels: int | None = None, *, bypass: bool = False, noise: float = 0.0
    ) -> QuantizerOutput:
        """Quantize z [B, D, F]; in training mode also update the codebooks and apply level dropout.

        bypass: pass the (projected) latent through unquantized, with no codes, no commitment loss and no
        codebook update: the warm start that lets encoder and decoder learn to reconstruct first.
        noise: while bypassed in training, add Gaussian noise of this many standard deviations (per dimension,
        over the batch's frames), so the decoder learns to expect an imprecise latent and the switch to codes
        does not collapse it.
        """
        if torch.is_autocast_enabled(z.device.type):  # codebook search and EMA statistics stay in fp32
            with torch.autocast(z.device.type, enabled=False):
                return self.forward(z.float(), levels, bypass=bypass, noise=noise)
        B, _, F = z.shape
        L = levels or self.num_levels
        x = self._frames(z)  # [N, G, d]
        if bypass:
            if noise > 0 and self.training:
                x = x + noise * x.detach().std(dim=0, keepdim=True) * torch.randn_like(x)
            return QuantizerOutput(
                quantized=self._latent(x, B),
                codes=torch.zeros(B, 0, F, dtype=torch.long, device=z.device),
                commitment_loss=x.new_zeros(()),
                levels=torch.zeros(B, dtype=torch.long, device=z.device),
            )
        if self.training and not bool(self.initialized):
            self._init_kmeans(x.detach())
        simvq = self._learned_by_gradient and self.training and torch.is_grad_enabled()
        if simvq:  # a differentiable codebook, its value also written to the buffer the search reads
            books = self._gradient_codebooks()
            with torch.no_grad():
                self.codebooks.copy_(books)
        else:
            self._sync_codebooks()
            books = self.codebooks
        if self.level_type == "fsq":  # rounding, not a scan of K codewords (a tenth of a CPU training step)
            with torch.no_grad():
                codes = self._fsq_search(L)(x.detach().flatten(1)).view(-1, L, self.num_groups)  # [N, L, G]
        else:
            codes, _ = rvq_search(x.detach(), self.codebooks, L, lookup=self.lookup, backend="torch")  # [N, L, G]
        level_index = torch.arange(L, device=z.device)[None, :, None]
        group_index = torch.arange(self.num_groups, device=z.device)[None, None, :]
        chosen = books[group_index, level_index, codes]  # [N, L, G, d]
        before = (chosen.cumsum(1) - chosen).detach()  # sum of the levels before each level
        residuals = x.detach()[:, None] - before  # what enters each level [N, L, G, d]
        keep = self._level_mask(B, L, z.device)  # [B, L]
        keep_frames = keep.repeat_interleave(F, dim=0)  # [N, L]
        per_level = ((x[:, None] - before - chosen.detach()) ** 2).mean(-1)  # [N, L, G]; gradient reaches the encoder
        if simvq:  # the codebook loss: each level's codeword towards the residual it quantizes
            per_level = per_level + ((residuals - chosen) ** 2).mean(-1)
        commitment = (per_level * keep_frames[..., None]).sum(1).mean()
        q_sum = (chosen.detach() * keep_frames[..., None, None]).sum(1)  # [N, G, d]
        if self.gradient == "rotation":
            quantized = rotation_trick(x, q_sum)
        else:
            quantized = x + (q_sum - x).detach()
        if self.training:
            self._ema_update(residuals, codes)
        return QuantizerOutput(
            quantized=self._latent(quantized, B),
            codes=self._pack_codes(codes, B),
            commitment_loss=commitment,
            levels=keep.sum(1),
        )

    def _level_mask(self, B: int, L: int, device: torch.device) -> torch.Tensor:
        keep = torch.ones(B, L, device=device)
        if self.training and self.dropout > 0 and L > 1:
            n = torch.randint(1, L + 1, (B,), device=device)
            drop = torch.rand(B, device=device) < self.dropout
            n = torch.where(drop, n, torch.full_like(n, L))
            keep = (torch.arange(L, device=device)[None] < n[:, None]).float()
        return keep

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor) -> None:
        """Start every level's codebooks from k-means on latent z [B, D, F]: level 1 on the frames, each later
        level on the residuals the levels before it leave (rank 0's result, broadcast to every rank)."""
        self._init_kmeans(self._frames(z).float())

    @torch.no_grad()
    def _init_kmeans(self, x: torch.Tensor) -> None:
        """Initialise every level's codebooks by k-means on the residuals of the levels before it (rank 0)."""
        x = x[torch.randperm(x.shape[0], device=x.device)[:65536]]
        residual = x.clone()
        if self.level_type == "fsq":
            self._init_fsq(residual)
            return
        for level in range(self.num_levels):
            for g in range(self.num_groups):
                centroids, counts = kmeans(residual[:, g], self.codebook_size, self.kmeans_iters)
                self.codebooks[g, level] = centroids
                self.cluster_size[g, level] = counts
            _, q = rvq_search(residual, self.codebooks[:, level : level + 1], 1, lookup=self.lookup, backend="torch")
            residual = residual - q
        for buffer in (self.codebooks, self.cluster_size):
            broadcast_(buffer)
        self.embed_sum.copy_(self.codebooks * self._smoothed_sizes()[..., None])
        if self.codebook_update == "simvq":  # the centroids become the frozen basis, the transform starts at identity
            self.basis.copy_(self.codebooks)
            self.transform.copy_(torch.eye(self.codebook_dim, device=self.transform.device).expand_as(self.transform))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _init_fsq(self, residual: torch.Tensor) -> None:
        """Every level's FSQ from a PCA of the residuals [N, G, d] the levels before it leave: centre = their mean,
        directions = the leading principal axes, steps spanning about two standard deviations per side."""
        k = self.fsq_grid.shape[1]
        steps = self.fsq_grid.max(0).values * 2 + 1  # steps per direction
        for level in range(self.num_levels):
            for g in range(self.num_groups):
                r = residual[:, g].double()
                center = r.mean(0)
                cov = (r - center).T @ (r - center) / max(1, r.shape[0] - 1)
                eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
                top = eigenvectors[:, -k:].flip(-1)
                std = eigenvalues[-k:].flip(-1).clamp_min(1e-12).sqrt()
                self.fsq_center[g, level] = center.float()
                self.fsq_directions[g, level] = top.float()
                self.fsq_log_step[g, level] = (std * 4.0 / steps.double()).log().float()
            for p in self._parameters_of_codebooks():
                broadcast_(p.data)
            self._synced = None
            self._sync_codebooks()
            _, q = rvq_search(residual, self.codebooks[:, level : level + 1], 1, backend="torch")
            residual = residual - q
        self.cluster_size.fill_(1.0)
        self.embed_sum.copy_(self.codebooks * self._smoothed_sizes()[..., None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, residuals: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of cluster sizes and sums from residuals [N, L, G, d] and codes [N, L, G], summed over ranks."""
        G, K, d = self.num_groups, self.codebook_size, self.codebook_dim
        L = codes.shape[1]
        slot = (torch.arange(G, device=codes.device) * self.num_levels)[None, None, :]
        slot = (slot + torch.arange(L, device=codes.device)[None, :, None]) * K + codes  # [N, L, G]
        counts = torch.zeros(G * self.num_levels * K, device=codes.device)
        counts.index_add_(0, slot.flatten(), torch.ones(slot.numel(), device=codes.device))
        all_reduce_(counts)
        counts = counts.view(G, self.num_levels, K)[:, :L]
        self.cluster_size[:, :L].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self._learned_by_gradient:  # usage statistics only: the codebooks learn by gradient
            return
        sums = torch.zeros(G * self.num_levels * K, d, device=codes.device)
        sums.index_add_(0, slot.flatten(), residuals.reshape(-1, d))
        all_reduce_(sums)
        sums = sums.view(G, self.num_levels, K, d)[:, :L]
        self.embed_sum[:, :L].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebooks.copy_(self.embed_sum / self._smoothed_sizes()[..., None])
        self._restart_dead(residuals)

    @torch.no_grad()
    def _restart_dead(self, residuals: torch.Tensor) -> None:
        """Replace codes used less than `dead_code_threshold` by random residuals of their own level."""
        L = residuals.shape[1]
        dead = self.cluster_size[:, :L] < self.dead_code_threshold  # identical on all ranks (reduced stats)
        if not bool(dead.any()):
            return
        G, K = self.num_groups, self.codebook_size
        pick = torch.randint(residuals.shape[0], (G, L, K), device=residuals.device)
        level_index = torch.arange(L, device=residuals.device)[None, :, None]
        group_index = torch.arange(G, device=residuals.device)[:, None, None]
        fresh = residuals[pick, level_index, group_index].contiguous()  # [G, L, K, d]
        broadcast_(fresh)
        self.codebooks[:, :L] = torch.where(dead[..., None], fresh, self.codebooks[:, :L])
        self.cluster_size[:, :L].masked_fill_(dead, self.dead_code_threshold)
        self.embed_sum.copy_(self.codebooks * self._smoothed_sizes()[..., None])

    # --- statistics -------------------------------------------------------------------------------
    def codebook_stats(self) -> dict[str, torch.Tensor]:
        """Per codebook [G, L]: perplexity of EMA usage, dead codes; and the usage distribution [G, L, K]."""
        usage = self.cluster_size / self.cluster_size.sum(-1, keepdim=True).clamp_min(1e-12)
        return {
            "usage": usage,
            "perplexity": perplexity(self.cluster_size),
            "dead_codes": (self.cluster_size < self.dead_code_threshold).sum(-1),
        }
