"""The streaming protocol shared by every stateful layer.

A layer that carries context across calls subclasses `StreamingModule` and implements
`_init_streaming_state(batch_size)`, returning a dict of tensors whose first dimension is the batch.
`with model.streaming(batch_size):` gives every such layer a fresh state; outside the context each
`forward` starts from a fresh state and throws it away, so offline processing *is* streaming over
one chunk and the two cannot drift apart.

State is plain tensors: it can be read (`get_streaming_state`), restored (`set_streaming_state`)
and reset for chosen batch items (`reset_streaming(mask)`) with a branch-free `torch.where`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

State = dict[str, torch.Tensor]


class StreamingModule(nn.Module):
    """Base class for layers with streaming state. Containers need not subclass it."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: State | None = None

    def _init_streaming_state(self, batch_size: int) -> State:
        """The state of a stream that has seen no input. Override in stateful layers."""
        return {}

    @property
    def is_streaming(self) -> bool:
        return self._streaming_state is not None

    def _state(self, batch_size: int) -> State:
        """The live state while streaming, else a fresh one that the caller may discard."""
        if self._streaming_state is None:
            return self._init_streaming_state(batch_size)
        return self._streaming_state

    def _stateful(self) -> list[tuple[str, StreamingModule]]:
        """Every StreamingModule in this tree (itself included), found once: walking the tree on every
        streaming call would cost more than a frame's convolutions."""
        cached = self.__dict__.get("_stateful_cache")
        if cached is None:
            cached = [(n, m) for n, m in self.named_modules() if isinstance(m, StreamingModule)]
            self.__dict__["_stateful_cache"] = cached
        return cached

    @contextlib.contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[None]:
        """Keep state across `forward` calls for `batch_size` independent streams."""
        with self.streaming_with(self.new_streaming_state(batch_size)):
            yield

    def new_streaming_state(self, batch_size: int) -> dict[str, State]:
        """A fresh state for every stateful layer, keyed by layer path: hold it and pass it to `streaming_with`."""
        return {name: module._init_streaming_state(batch_size) for name, module in self._stateful()}

    @contextlib.contextmanager
    def streaming_with(self, states: dict[str, State]) -> Iterator[None]:
        """Stream with externally held state (from `new_streaming_state`), updated in place, without copies.

        This is how several independent streams share one model: each keeps its own `states` and enters
        this context for each call.
        """
        if self.is_streaming:
            raise RuntimeError("already streaming; leave the current `streaming()` context first")
        modules = self._stateful()
        for name, module in modules:  # plain attribute writes: nn.Module.__setattr__ costs more than a conv here
            module.__dict__["_streaming_state"] = states[name]
        try:
            yield
        finally:
            for _, module in modules:
                module.__dict__["_streaming_state"] = None

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        """Return the streams selected by the boolean `mask` [B] (all if None) to a fresh state."""
        for _, module in self._stateful():
            state = module._streaming_state
            if state is None:
                raise RuntimeError("reset_streaming() called outside a `streaming()` context")
            batch_size = next(iter(state.values())).shape[0] if state else 0
            fresh = module._init_streaming_state(batch_size)
            for key, value in state.items():
                if mask is None:
                    state[key] = fresh[key]
                    continue
                if fresh[key].shape != value.shape:
                    raise RuntimeError(
                        f"cannot reset part of a batch while layer state '{key}' holds a partial frame; "
                        "reset at frame boundaries"
                    )
                m = mask.to(value.device).view(-1, *([1] * (value.dim() - 1)))
                state[key] = torch.where(m, fresh[key], value)

    def get_streaming_state(self) -> State:
        """A flat copy of every layer's state, keyed `layer.path:key`."""
        out = {}
        for name, module in self._stateful():
            for key, value in (module._streaming_state or {}).items():
                out[f"{name}:{key}"] = value.clone()
        return out

    def set_streaming_state(self, state: State) -> None:
        """Restore a state taken with `get_streaming_state` (inside a `streaming()` context)."""
        for name, module in self._stateful():
            if module._streaming_state is None:
                raise RuntimeError("set_streaming_state() called outside a `streaming()` context")
            for key in list(module._streaming_state):
                module._streaming_state[key] = state[f"{name}:{key}"].clone()
