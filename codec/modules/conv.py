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

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from codec.modules.streaming import State, StreamingModule


def _norm(module: nn.Module, norm: str) -> nn.Module:
    if norm == "weight_norm":
        return weight_norm(module)
    if norm == "none":
        return module
    raise ValueError(f"unknown norm '{norm}' (use 'weight_norm' or 'none')")


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
        self.conv = _norm(
            nn.Conv1d(
                in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias
            ),
            norm,
        )
        self.in_channels = in_channels
        self.stride = stride
        self.window = (kernel_size - 1) * dilation + 1
        self.context = self.window - stride
        if self.context < 0:
            raise ValueError(f"kernel span {self.window} is shorter than stride {stride}: samples would be skipped")

    def _init_streaming_state(self, batch_size: int) -> State:
        weight = self.conv.weight
        return {"buffer": weight.new_zeros(batch_size, self.in_channels, self.context)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        state = self._state(B)
        x = torch.cat([state["buffer"], x], dim=-1)
        frames = (x.shape[-1] - self.window) // self.stride + 1 if x.shape[-1] >= self.window else 0
        if frames > 0:
            y = self.conv(x[..., : (frames - 1) * self.stride + self.window])
        else:
            y = x.new_zeros(B, self.conv.out_channels, 0)
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
        self.convtr = _norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride), norm)
        self.out_channels = out_channels
        self.stride = stride
        self.overlap = kernel_size - stride

    def _init_streaming_state(self, batch_size: int) -> State:
        weight = self.convtr.weight
        return {"partial": weight.new_zeros(batch_size, self.out_channels, self.overlap)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, frames = x.shape
        state = self._state(B)
        if frames == 0:
            return x.new_zeros(B, self.out_channels, 0)
        y = F.conv_transpose1d(x, self.convtr.weight, None, stride=self.stride)
        y = torch.cat([y[..., : self.overlap] + state["partial"], y[..., self.overlap :]], dim=-1)
        out = y[..., : frames * self.stride]
        if self.is_streaming:
            state["partial"] = y[..., frames * self.stride :]
        bias = self.convtr.bias
        return out if bias is None else out + bias[:, None]


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
        y, (h, c) = self.lstm(x.permute(2, 0, 1), hc)
        if self.is_streaming:
            state["h"], state["c"] = h.transpose(0, 1), c.transpose(0, 1)
        return y.permute(1, 2, 0) + x
