"""Causal streaming convolutions.

A causal strided convolution sees, for output frame t, the inputs that end at the frame's last
sample. We keep `context = (kernel_size - 1) * dilation + 1 - stride` past samples in the state
(zeros for a fresh stream, which is exactly the left padding an offline causal convolution uses):

    stride 2, kernel 4, context 2 (x = input, . = state zeros)

      . . x0 x1 x2 x3 x4 x5
      [ frame 0 ]
          [ frame 1   ]
                [ frame 2   ]

Input that does not yet fill a window waits in the state, so chunks of any length give the same
output as one call over the whole signal.

The transposed convolution works the other way: each input frame spreads `kernel_size` samples,
of which the first `stride` are final once that frame is seen; the remaining
`kernel_size - stride` samples overlap the next frame and are kept (without bias) in the state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from codec.modules.streaming import State, StreamingModule

# True only inside `exporting()` (runtimes/export_onnx.py, while it traces): a few layers then take the forms the ONNX
# exporter handles best. A module flag, not torch.onnx.is_in_onnx_export(): that call imports torch.onnx (seconds of
# cold start) and costs a Python call per layer per frame on the torch path.
_exporting = False


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    global _exporting
    _exporting = True
    try:
        yield
    finally:
        _exporting = False


class NormedWeight(nn.Module):
    """A convolution weight, optionally weight-normalised (w = g * v / |v|, norm over all but dim 0).

    In inference (no autograd), the normalised weight is cached and recomputed only when a parameter
    changes (their version counters move on every in-place update: optimizer steps, load_state_dict),
    so frame-by-frame streaming does not pay for the normalisation on every call.
    """

    def __init__(self, weight: torch.Tensor, norm: str) -> None:
        super().__init__()
        if norm not in ("weight_norm", "none"):
            raise ValueError(f"unknown norm '{norm}' (use 'weight_norm' or 'none')")
        self.normalized = norm == "weight_norm"
        self.v = nn.Parameter(weight)
        if self.normalized:
            self.g = nn.Parameter(weight.norm(dim=tuple(range(1, weight.dim())), keepdim=True))
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def forward(self) -> torch.Tensor:
        if not self.normalized:
            return self.v
        if torch.is_grad_enabled():
            self._cache = None
            return self._compute()
        key = (self.g._version, self.v._version, self.g.data_ptr(), self.v.data_ptr(), self.v.device)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute())
        return self._cache[1]

    def _compute(self) -> torch.Tensor:
        return self.g * self.v / self.v.norm(dim=tuple(range(1, self.v.dim())), keepdim=True).clamp_min(1e-12)


class StreamingConv1d(StreamingModule):
    """Causal 1-d convolution.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as `nn.Conv1d`.
        norm: 'weight_norm' or 'none'.

    Shapes: x [B, C_in, T] -> [B, C_out, T_out] where, from a fresh state, T_out = T // stride
    (input past the last whole stride waits in the state).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        norm: str = "weight_norm",
    ) -> None:
        super().__init__()
        init = nn.Conv1d(in_channels, out_channels, kernel_size, groups=groups)  # for PyTorch's default init
        self.weight = NormedWeight(init.weight.data, norm)
        self.bias = nn.Parameter(init.bias.data) if bias else None
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = kernel_size, stride, dilation, groups
        self.window = (kernel_size - 1) * dilation + 1
        self.context = self.window - stride
        if self.context < 0:
            raise ValueError(f"kernel span {self.window} is shorter than stride {stride}: samples would be skipped")

    @property
    def pointwise(self) -> bool:
        """Kernel 1, stride 1: every input sample is used at once, so the layer keeps no state."""
        return self.window == 1 and self.stride == 1

    def _init_streaming_state(self, batch_size: int) -> State:
        if self.pointwise:
            return {}
        return {"buffer": self.weight.v.new_zeros(batch_size, self.in_channels, self.context)}

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight()
        if _exporting:
            # As a 2-d convolution over [B, C, 1, T]: ONNX Runtime runs those in its blocked-channel (NCHWc) kernels,
            # 1.5-2.5x faster than its 1-d Conv for this codec's layers (docs/BENCHMARKS.md).
            y = F.conv2d(
                x[:, :, None], weight[:, :, None], self.bias, stride=(1, self.stride), dilation=(1, self.dilation),
                groups=self.groups,
            )  # fmt: skip
            return y.squeeze(2)
        if not self._uses_matmul():
            return F.conv1d(x, weight, self.bias, stride=self.stride, dilation=self.dilation, groups=self.groups)
        # Strided and single-input-channel convolutions as one matmul over unfolded windows: PyTorch's CPU
        # conv1d takes a slow path for these (10x slower for a single frame of a large strided kernel, 3x
        # slower offline for the 1-channel input layer); the choice depends only on the layer's shape, so
        # offline and streaming calls run the same arithmetic.
        B = x.shape[0]
        windows = x.unfold(-1, self.window, self.stride)  # [B, C_in, T_out, window]
        if self.dilation > 1:
            windows = windows[..., :: self.dilation]
        columns = windows.transpose(1, 2).reshape(B, windows.shape[2], -1)  # [B, T_out, C_in * k]
        y = columns @ weight.reshape(self.out_channels, -1).t()
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)

    def _uses_matmul(self) -> bool:
        # not while exporting: ONNX Runtime's Conv has no such slow path, and an exported unfold is not one op
        return self.groups == 1 and (self.stride > 1 or self.in_channels == 1) and not _exporting

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.pointwise:
            return self._conv(x) if x.shape[-1] else x.new_zeros(B, self.out_channels, 0)
        if not self.is_streaming and not self._uses_matmul():
            # A fresh state is `context` zeros: let the convolution pad instead of copying the whole input
            # (it pads both ends; the outputs that see the right padding are dropped).
            frames = (x.shape[-1] + self.context - self.window) // self.stride + 1
            if frames <= 0:
                return x.new_zeros(B, self.out_channels, 0)
            y = F.conv1d(
                x, self.weight(), self.bias, stride=self.stride, dilation=self.dilation, groups=self.groups,
                padding=self.context,
            )  # fmt: skip
            return y[..., :frames]
        state = self._state(B)
        x = torch.cat([state["buffer"], x], dim=-1)
        frames = (x.shape[-1] - self.window) // self.stride + 1 if x.shape[-1] >= self.window else 0
        if frames > 0:
            used = (frames - 1) * self.stride + self.window  # all of x when whole strides came in (no copy then)
            y = self._conv(x if used == x.shape[-1] else x[..., :used])
        else:
            y = x.new_zeros(B, self.out_channels, 0)
        if self.is_streaming:
            state["buffer"] = x[..., frames * self.stride :]
        return y


class StreamingConvTranspose1d(StreamingModule):
    """Causal transposed 1-d convolution (upsampling by `stride`).

    Shapes: x [B, C_in, F] -> [B, C_out, F * stride]; the `kernel_size - stride` samples that still
    await the next frame are held in the state (and dropped at the end of an offline call, as a
    causal decoder must).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, norm: str = "weight_norm"
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be at least stride {stride}")
        init = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.weight = NormedWeight(init.weight.data, norm)
        self.bias = nn.Parameter(init.bias.data)
        self.out_channels = out_channels
        self.stride = stride
        self.overlap = kernel_size - stride

    def _init_streaming_state(self, batch_size: int) -> State:
        return {"partial": self.weight.v.new_zeros(batch_size, self.out_channels, self.overlap)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, frames = x.shape
        state = self._state(B)
        if frames == 0:
            return x.new_zeros(B, self.out_channels, 0)
        weight = self.weight()
        if self.overlap == self.stride:
            out, partial = self._two_phase(x, weight, state["partial"])
        else:
            y = F.conv_transpose1d(x, weight, None, stride=self.stride)
            y = torch.cat([y[..., : self.overlap] + state["partial"], y[..., self.overlap :]], dim=-1)
            out, partial = y[..., : frames * self.stride], y[..., frames * self.stride :]
        if self.is_streaming:
            state["partial"] = partial
        return out + self.bias[:, None]

    def _two_phase(self, x: torch.Tensor, weight: torch.Tensor, partial: torch.Tensor):
        """kernel_size == 2 * stride: every output sample is the first half of its own frame's spread plus the
        second half of the previous frame's, so one matmul and one shifted add replace PyTorch's CPU transposed
        convolution, which takes a slow path (several times slower per frame)."""
        B, C_in, frames = x.shape
        s = self.stride
        if _exporting:  # the same sum for the exporter's tracer: the two halves as two matmuls, no in-place writes
            halves = weight.view(C_in, self.out_channels, 2, s)
            rows = x.transpose(1, 2)  # [B, F, C_in]
            own = (rows @ halves[:, :, 0].reshape(C_in, -1)).view(B, frames, self.out_channels, s)
            spill = (rows @ halves[:, :, 1].reshape(C_in, -1)).view(B, frames, self.out_channels, s)
            before = partial.view(B, 1, self.out_channels, s)
            if frames == 1:  # the one-frame graphs: no concatenation, no copies
                return (own + before).view(B, self.out_channels, s), spill.view(B, self.out_channels, s)
            before = torch.cat([before, spill[:, : frames - 1]], dim=1)
            out = (own + before).permute(0, 2, 1, 3).reshape(B, self.out_channels, frames * s)
            return out, spill[:, frames - 1]
        spread = (x.transpose(1, 2) @ weight.reshape(C_in, -1)).view(B, frames, self.out_channels, 2, s)
        out = spread[..., 0, :].clone()  # [B, F, C_out, s]: each frame's own first half ...
        out[:, 1:] += spread[:, :-1, :, 1, :]  # ... plus the previous frame's second half
        out[:, 0] += partial.view(B, self.out_channels, s)
        out = out.permute(0, 2, 1, 3).reshape(B, self.out_channels, frames * s)
        return out, spread[:, -1, :, 1, :]


class StreamingLSTM(StreamingModule):
    """LSTM over time with a skip connection; hidden and cell states persist while streaming.

    Shapes: x [B, C, T] -> [B, C, T].
    """

    def __init__(self, channels: int, *, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers)
        self.channels = channels
        self.num_layers = num_layers

    def _init_streaming_state(self, batch_size: int) -> State:
        w = self.lstm.weight_ih_l0
        zeros = w.new_zeros(batch_size, self.num_layers, self.channels)
        return {"h": zeros, "c": zeros.clone()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self._state(x.shape[0])
        if x.shape[-1] == 0:
            return x
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        if torch.is_autocast_enabled(x.device.type):
            # The LSTM runs in fp32 under autocast: oneDNN has no bf16 LSTM on CPUs without AVX-512
            # ("could not create a primitive descriptor"), and the recurrence is a small share of the cost.
            with torch.autocast(x.device.type, enabled=False):
                y, (h, c) = self.lstm(x.float().permute(2, 0, 1), (hc[0].float(), hc[1].float()))
            y = y.to(x.dtype)
        else:
            y, (h, c) = self.lstm(x.permute(2, 0, 1), hc)
        if self.is_streaming:
            state["h"], state["c"] = h.transpose(0, 1), c.transpose(0, 1)
        return y.permute(1, 2, 0) + x
