"""Codebook interleaving patterns: how codes [N, F] become the token grid [S, T] a language model reads.

N = num_codebooks (levels x G, level-major), F = frames, S = streams the LM predicts in parallel at each
step, T = steps. Every pattern is one *layout*: an integer grid [S, T] whose cell holds `n * F + f` when it
carries codebook n of frame f, or -1 when it is a special (pad) cell. Applying a pattern gathers codes
through the layout and inverting it scatters them back, so the inverse is exact by construction; the
validity mask is `layout >= 0`.

Patterns, drawn for N = 3 codebooks (a, b, c), F = 4 frames (0..3); `.` is the pad token:

    parallel [N, F]         flatten [1, N*F]            delay [N, F+N-1] (MusicGen)
      a0 a1 a2 a3             a0 b0 c0 a1 b1 c1 ...       a0 a1 a2 a3 .  .
      b0 b1 b2 b3                                         .  b0 b1 b2 b3 .
      c0 c1 c2 c3                                         .  .  c0 c1 c2 c3

    coarse-first [1, N*F] (coarse = 1 codebook)         stack-delay [S=N, T] (streams=3, delay=1)
      a0 a1 a2 a3 | b0 c0 b1 c1 b2 c2 b3 c3               a0 b0 c0 a3 b3 c3
                                                          .  a1 b1 c1 .  .
                                                          .  .  a2 b2 c2 .

Stack-and-delay (Le Lan et al., 2023, "Stack-and-Delay: a new codebook pattern for music generation"),
as we read it: each frame's codebooks are *stacked* (flattened coarse to fine, as in the flat pattern, so
a fine code is predicted after the coarse ones of its own frame), frames are dealt round-robin to `streams`
parallel streams, and stream j starts `j * delay` steps late, so the streams decode different frames at
once. Frame f = m * streams + j sits in stream j at steps `j * delay + m * N + k` for codebook k. With
streams = N and delay = 1, codebook k of frame f lands at step f + k: as many steps as the delay pattern.

Vocabulary offsets (`offsets=True`): codebook n's codes become `n * K + code`, so all codebooks share one
LM vocabulary of N * K tokens; the pad token is then N * K (without offsets: K), and `invert` subtracts the
offsets again. Arrays may be numpy or torch, with any leading batch dimensions; outputs match the input's
kind.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import torch

PATTERNS = ("parallel", "flatten", "delay", "stack-delay", "coarse-first")


class Pattern:
    """Base class: subclasses define `_layout(F) -> [S, T]` (numpy int64, -1 = pad) and `num_streams`.

    Args:
        num_codebooks: N, codebooks per frame (levels x G, level-major).
        codebook_size: K, codes per codebook.
        offsets: shift codebook n's codes by n * K (one shared vocabulary).
        pad_id: token of the special cells (default: the first id past the codes, K or N * K).
    """

    name = ""

    def __init__(self, num_codebooks: int, codebook_size: int, *, offsets: bool = False, pad_id: int | None = None):
        if num_codebooks < 1 or codebook_size < 1:
            raise ValueError("num_codebooks and codebook_size must be positive")
        self.num_codebooks, self.codebook_size, self.offsets = num_codebooks, codebook_size, offsets
        self.code_vocab = num_codebooks * codebook_size if offsets else codebook_size
        self.pad_id = self.code_vocab if pad_id is None else int(pad_id)
        if 0 <= self.pad_id < self.code_vocab:
            raise ValueError(f"pad_id {self.pad_id} collides with code tokens [0, {self.code_vocab})")

    # --- description ------------------------------------------------------------------------------
    @property
    def num_streams(self) -> int:
        raise NotImplementedError

    def _layout(self, num_frames: int) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        """Pattern-specific parameters (recorded in manifests; `make_pattern(**to_json())` rebuilds)."""
        return {}

    def to_json(self) -> dict:
        return {
            "name": self.name, "num_codebooks": self.num_codebooks, "codebook_size": self.codebook_size,
            "offsets": self.offsets, "pad_id": self.pad_id, "num_streams": self.num_streams,
            "has_pad": self.has_pad, "vocab_size": self.vocab_size, **self.params(),
        }  # fmt: skip

    @property
    def has_pad(self) -> bool:
        """Whether the pad token can appear in a single utterance's tokens (not only in batch padding)."""
        return any((self.layout(f) < 0).any() for f in (1, 2, self.num_streams + 1))

    @property
    def vocab_size(self) -> int:
        """One past the largest token: codes, then the pad token."""
        return max(self.code_vocab, self.pad_id + 1)

    @property
    def max_token(self) -> int:
        """Largest token stored for an utterance (decides uint16 or int32 storage)."""
        return max(self.code_vocab - 1, self.pad_id if self.has_pad else -1)

    def layout(self, num_frames: int) -> np.ndarray:
        """[S, T] grid of `n * F + f` (codebook n, frame f) or -1 (pad). Read-only, cached."""
        return _cached_layout(self, num_frames)

    def num_steps(self, num_frames: int) -> int:
        return self.layout(num_frames).shape[1]

    def num_frames(self, num_steps: int) -> int:
        """The F whose layout has `num_steps` steps (ValueError if none or several)."""
        lo, hi = 0, max(num_steps, 1)
        while self.num_steps(hi) < num_steps:
            hi *= 2
        while lo < hi:  # num_steps grows with F: find the first F reaching num_steps
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self.num_steps(mid) < num_steps else (lo, mid)
        if self.num_steps(lo) != num_steps or self.num_steps(lo + 1) == num_steps:
            raise ValueError(f"{num_steps} steps do not identify a frame count for {self.name}; pass num_frames")
        return lo

    def mask(self, num_frames: int) -> np.ndarray:
        """Validity mask [S, T]: True where a cell carries a code."""
        return self.layout(num_frames) >= 0

    # --- transforms ---------------------------------------------------------------------------------
    def apply(self, codes):
        """Tokens [..., S, T] (int64) for codes [..., N, F] (numpy or torch, integer)."""
        N, F = codes.shape[-2:]
        if N != self.num_codebooks:
            raise ValueError(f"codes have {N} codebooks, the pattern expects {self.num_codebooks}")
        idx = self.layout(F)
        lead = codes.shape[:-2]
        if isinstance(codes, torch.Tensor):
            if N * F == 0:
                return torch.full((*lead, *idx.shape), self.pad_id, dtype=torch.long, device=codes.device)
            dev = codes.device
            flat = codes.reshape(*lead, N * F).long()
            out = flat[..., torch.from_numpy(idx.clip(min=0)).to(dev)] + torch.from_numpy(self._shift(idx, F)).to(dev)
            return torch.where(torch.from_numpy(idx >= 0).to(dev), out, torch.full_like(out, self.pad_id))
        if N * F == 0:
            return np.full((*lead, *idx.shape), self.pad_id, dtype=np.int64)
        flat = np.asarray(codes).reshape(*lead, N * F).astype(np.int64, copy=False)
        return np.where(idx >= 0, flat[..., idx.clip(min=0)] + self._shift(idx, F), np.int64(self.pad_id))

    def invert(self, tokens, num_frames: int | None = None, *, check: bool = True):
        """Codes [..., N, F] (int64) from tokens [..., S, T]; `check` verifies ranges and pad cells (ValueError)."""
        S, T = tokens.shape[-2:]
        if S != self.num_streams:
            raise ValueError(f"tokens have {S} streams, the {self.name} pattern has {self.num_streams}")
        F = self.num_frames(T) if num_frames is None else num_frames
        idx = self.layout(F)
        if idx.shape[1] != T:
            raise ValueError(f"{F} frames make {idx.shape[1]} steps in the {self.name} pattern, got {T}")
        valid = idx >= 0
        cells, sources = idx[valid], self._shift(idx, F)[valid]
        lead = tokens.shape[:-2]
        torch_in = isinstance(tokens, torch.Tensor)
        flat = tokens.reshape(*lead, S * T)
        picked_at = np.flatnonzero(valid)
        if torch_in:
            dev = tokens.device
            picked = flat[..., torch.from_numpy(picked_at).to(dev)].long() - torch.from_numpy(sources).to(dev)
            codes = picked.new_empty(*lead, self.num_codebooks * F)
            codes[..., torch.from_numpy(cells).to(dev)] = picked
        else:
            picked = np.asarray(flat)[..., picked_at].astype(np.int64) - sources
            codes = np.empty((*lead, self.num_codebooks * F), dtype=np.int64)
            codes[..., cells] = picked
        if check:
            self._check(flat, picked, ~valid.reshape(-1))
        return codes.reshape(*lead, self.num_codebooks, F)

    def apply_batch(self, codes: list, pad_to: int | None = None):
        """Pad a list of codes [N, F_b] into tokens [B, S, T_max] and mask [B, S, T_max] (same kind as input)."""
        parts = [self.apply(c) for c in codes]
        T = max([p.shape[-1] for p in parts] + [pad_to or 0])
        if codes and isinstance(codes[0], torch.Tensor):
            out = torch.full((len(parts), self.num_streams, T), self.pad_id, dtype=codes[0].dtype)
            mask = torch.zeros(out.shape, dtype=torch.bool)
            for b, (p, c) in enumerate(zip(parts, codes, strict=True)):
                out[b, :, : p.shape[-1]] = p
                mask[b, :, : p.shape[-1]] = torch.from_numpy(self.mask(c.shape[-1]))
            return out, mask
        dtype = codes[0].dtype if codes else np.int64
        out = np.full((len(parts), self.num_streams, T), self.pad_id, dtype=dtype)
        mask = np.zeros(out.shape, dtype=bool)
        for b, (p, c) in enumerate(zip(parts, codes, strict=True)):
            out[b, :, : p.shape[-1]] = p
            mask[b, :, : p.shape[-1]] = self.mask(c.shape[-1])
        return out, mask

    # --- helpers ------------------------------------------------------------------------------------
    def _shift(self, idx: np.ndarray, F: int) -> np.ndarray:
        """Per-cell vocabulary offset: codebook * K where offsets are on (0 on pad cells)."""
        if not self.offsets or F == 0:
            return np.zeros(idx.shape, np.int64)
        return np.where(idx >= 0, (idx // F) * self.codebook_size, 0)

    def _check(self, flat, picked, pad_cells: np.ndarray) -> None:
        lib = torch if isinstance(flat, torch.Tensor) else np
        if picked.numel() if lib is torch else picked.size:
            if bool((picked < 0).any()) or bool((picked >= self.codebook_size).any()):
                raise ValueError(f"a token lies outside its codebook's range for the {self.name} pattern")
        if pad_cells.any():
            pads = flat[..., torch.from_numpy(np.flatnonzero(pad_cells))] if lib is torch else flat[..., pad_cells]
            if bool((pads != self.pad_id).any()):
                raise ValueError(f"a pad cell of the {self.name} pattern holds a token other than {self.pad_id}")

    def __repr__(self) -> str:
        args = "".join(f", {k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}(N={self.num_codebooks}, K={self.codebook_size}, offsets={self.offsets}{args})"

    def _key(self) -> tuple:
        """What the layout depends on (not K, offsets or the pad token)."""
        return (self.name, self.num_codebooks, json.dumps(self.params(), sort_keys=True))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Pattern)
            and self._key() == other._key()
            and ((self.codebook_size, self.offsets, self.pad_id) == (other.codebook_size, other.offsets, other.pad_id))
        )

    def __hash__(self) -> int:
        return hash(self._key())


_LAYOUTS: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (pattern key, F) -> layout, least recently used first
_CACHE_ENTRIES, _CACHE_CELLS = 256, 1 << 18  # at most 256 x 2 MiB


def _cached_layout(pattern: Pattern, num_frames: int) -> np.ndarray:
    if num_frames < 0:
        raise ValueError("num_frames must be >= 0")
    key = (pattern._key(), num_frames)
    idx = _LAYOUTS.get(key)
    if idx is None:
        idx = np.ascontiguousarray(pattern._layout(num_frames), dtype=np.int64)
        idx.setflags(write=False)
        if idx.size <= _CACHE_CELLS:  # one layout per utterance length: keep the small, frequent ones
            _LAYOUTS[key] = idx
            if len(_LAYOUTS) > _CACHE_ENTRIES:
                _LAYOUTS.popitem(last=False)
    else:
        _LAYOUTS.move_to_end(key)
    return idx


def _grid(N: int, F: int) -> np.ndarray:
    """[N, F] grid of cell ids n * F + f."""
    return np.arange(N)[:, None] * F + np.arange(F)[None, :]


class ParallelPattern(Pattern):
    """All N codebooks of a frame at one step: tokens [N, F]."""

    name = "parallel"

    @property
    def num_streams(self) -> int:
        return self.num_codebooks

    def _layout(self, F: int) -> np.ndarray:
        return _grid(self.num_codebooks, F)


class FlattenPattern(Pattern):
    """One stream, frame by frame, each frame's codebooks in level-major order: tokens [1, N * F]."""

    name = "flatten"

    @property
    def num_streams(self) -> int:
        return 1

    def _layout(self, F: int) -> np.ndarray:
        return _grid(self.num_codebooks, F).T.reshape(1, -1)


class DelayPattern(Pattern):
    """MusicGen's delay: codebook n shifted right by `delays[n]` steps (default n): tokens [N, F + max delay]."""

    name = "delay"

    def __init__(self, num_codebooks: int, codebook_size: int, *, delays=None, **kw):
        super().__init__(num_codebooks, codebook_size, **kw)
        self.delays = tuple(range(num_codebooks)) if delays is None else tuple(int(d) for d in delays)
        if len(self.delays) != num_codebooks or min(self.delays) < 0:
            raise ValueError(f"delays must be {num_codebooks} non-negative integers, got {self.delays}")

    @property
    def num_streams(self) -> int:
        return self.num_codebooks

    def params(self) -> dict:
        return {"delays": list(self.delays)}

    def _layout(self, F: int) -> np.ndarray:
        idx = np.full((self.num_codebooks, F + max(self.delays)), -1, np.int64)
        for n, d in enumerate(self.delays):
            idx[n, d : d + F] = n * F + np.arange(F)
        return idx


class StackDelayPattern(Pattern):
    """Stack-and-delay: frames dealt round-robin to `streams` streams, each frame's N codebooks stacked over N
    steps, stream j delayed by `j * delay` steps (defaults: streams = N, delay = 1). See the module docstring."""

    name = "stack-delay"

    def __init__(self, num_codebooks: int, codebook_size: int, *, streams: int | None = None, delay: int = 1, **kw):
        super().__init__(num_codebooks, codebook_size, **kw)
        self.streams, self.delay = int(streams or num_codebooks), int(delay)
        if self.streams < 1 or self.delay < 0:
            raise ValueError("stack-delay needs streams >= 1 and delay >= 0")

    @property
    def num_streams(self) -> int:
        return self.streams

    def params(self) -> dict:
        return {"streams": self.streams, "delay": self.delay}

    def _layout(self, F: int) -> np.ndarray:
        N, S = self.num_codebooks, self.streams
        f = np.arange(F)[:, None]
        k = np.arange(N)[None, :]
        stream, step = np.broadcast_to(f % S, (F, N)), (f % S) * self.delay + (f // S) * N + k
        T = int(step.max()) + 1 if F else 0
        idx = np.full((S, T), -1, np.int64)
        idx[stream, step] = k * F + f
        return idx


class CoarseFirstPattern(Pattern):
    """One stream: the first `coarse` codebooks of every frame, then the remaining ones, each part frame by
    frame (default coarse = 1; pass G to put the whole first level first): tokens [1, N * F]."""

    name = "coarse-first"

    def __init__(self, num_codebooks: int, codebook_size: int, *, coarse: int = 1, **kw):
        super().__init__(num_codebooks, codebook_size, **kw)
        self.coarse = int(coarse)
        if not 1 <= self.coarse <= num_codebooks:
            raise ValueError(f"coarse must be in 1..{num_codebooks}, got {coarse}")

    @property
    def num_streams(self) -> int:
        return 1

    def params(self) -> dict:
        return {"coarse": self.coarse}

    def _layout(self, F: int) -> np.ndarray:
        grid = _grid(self.num_codebooks, F)
        return np.concatenate([grid[: self.coarse].T.reshape(-1), grid[self.coarse :].T.reshape(-1)])[None]


_CLASSES = {c.name: c for c in (ParallelPattern, FlattenPattern, DelayPattern, StackDelayPattern, CoarseFirstPattern)}


def make_pattern(name: str, num_codebooks: int, codebook_size: int, **kw) -> Pattern:
    """A pattern by name (one of PATTERNS); extra keywords are the pattern's parameters, `offsets`, `pad_id`.

    Unknown keys from `to_json()` that only describe the pattern (`num_streams`, `vocab_size`, ...) are ignored.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown pattern '{name}'; choose one of {', '.join(PATTERNS)}")
    for derived in ("name", "num_streams", "has_pad", "vocab_size"):
        kw.pop(derived, None)
    return _CLASSES[name](num_codebooks, codebook_size, **kw)


def pattern_from_json(info: dict) -> Pattern:
    """Rebuild a pattern from `Pattern.to_json()` (as stored in a tokens manifest)."""
    info = dict(info)
    return make_pattern(info.pop("name"), info.pop("num_codebooks"), info.pop("codebook_size"), **info)
