"""SEANet-style causal encoder and decoder composed from streaming convolutions."""

from __future__ import annotations

import torch
from torch import nn

from codec.config import SEANetConfig
from codec.modules.conv import StreamingConv1d, StreamingConvTranspose1d, StreamingLSTM
from codec.modules.istft import ISTFTHead


class ResidualUnit(nn.Module):
    """ELU -> dilated conv (squeezing channels) -> ELU -> 1x1 conv, plus the identity.

    Shapes: x [B, C, T] -> [B, C, T].
    """

    def __init__(self, channels: int, *, kernel_size: int, dilation: int, compress: int) -> None:
        super().__init__()
        hidden = max(channels // compress, 1)
        self.block = nn.Sequential(
            nn.ELU(),
            StreamingConv1d(channels, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            StreamingConv1d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Patchify(nn.Module):
    """Fold every `size` consecutive samples into channels: [B, C, T] -> [B, C * size, T // size].

    Stateless: the encoder is only ever given whole frames, and a frame is a whole number of patches. Running
    the rest of the network at 1/size of the sample rate is what makes a patched model cheap on a CPU.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        return x.reshape(B, C, T // self.size, self.size).transpose(2, 3).reshape(B, C * self.size, T // self.size)


class Unpatchify(nn.Module):
    """Inverse of `Patchify`: [B, C * size, F] -> [B, C, F * size]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, CP, F = x.shape
        C = CP // self.size
        return x.reshape(B, C, self.size, F).transpose(2, 3).reshape(B, C, F * self.size)


def _residual_stack(channels: int, c: SEANetConfig) -> list:
    return [
        ResidualUnit(channels, kernel_size=c.residual_kernel_size, dilation=c.dilation_base**j, compress=c.compress)
        for j in range(c.num_residual_layers)
    ]


class SEANetEncoder(nn.Module):
    """Waveform to latent frames.

    Args:
        audio_channels: input channels C.
        latent_dim: output dimension D.
        config: the architecture, declared once in `SEANetConfig` (widths, strides, kernels, residual blocks,
            LSTM, patching, linear skip path); its decoder-only fields (head, istft_*) are not read.

    Shapes: x [B, C, T] -> [B, D, T // hop_length] from a fresh state.
    """

    def __init__(self, *, audio_channels: int, latent_dim: int, config: SEANetConfig) -> None:
        super().__init__()
        c, hop = config, config.hop_length
        # the lapped linear path sees the current frame and the one before it (causal): z_f += W [x_{f-1}; x_f]
        self.skip = StreamingConv1d(audio_channels, latent_dim, 2 * hop, stride=hop) if c.linear_skip else None
        width = c.channels
        layers: list[nn.Module] = [Patchify(c.patch_size)] if c.patch_size > 1 else []
        layers.append(StreamingConv1d(audio_channels * c.patch_size, width, c.kernel_size))
        for ratio in c.ratios:
            layers += _residual_stack(width, c)
            wider = min(width * 2, c.max_channels)
            layers += [nn.ELU(), StreamingConv1d(width, wider, 2 * ratio, stride=ratio)]
            width = wider
        if c.lstm_layers:
            layers.append(StreamingLSTM(width, num_layers=c.lstm_layers))
        layers += [nn.ELU(), StreamingConv1d(width, latent_dim, c.last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z if self.skip is None else z + self.skip(x)


class SEANetDecoder(nn.Module):
    """Latent frames to waveform; the mirror image of `SEANetEncoder`.

    Args:
        audio_channels: output channels C.
        latent_dim: input dimension D.
        config: the architecture, declared once in `SEANetConfig`; `ratios` are given in encoder order and
            applied reversed.

    Shapes: z [B, D, F] -> [B, C, F * hop_length]; with patch_size P the last convolution emits C * P channels that
    are unfolded into P samples each.

    head="istft" ends the network after the first `istft_stage` upsampling stages with an `ISTFTHead`
    (hop = `config.istft_hop`, the upsampling left; `config.istft_window` samples); the later stages, the last
    convolution and the unpatching are not built. Either head emits hop_length samples per latent frame, causally.
    """

    def __init__(self, *, audio_channels: int, latent_dim: int, config: SEANetConfig) -> None:
        super().__init__()
        c, hop = config, config.hop_length
        # the lapped linear path: each latent frame spreads over its own frame and the next (overlap-add in state)
        self.skip = StreamingConvTranspose1d(latent_dim, audio_channels, 2 * hop, stride=hop) if c.linear_skip else None
        widths = [c.channels]
        for _ in c.ratios:
            widths.append(min(widths[-1] * 2, c.max_channels))
        width = widths[-1]
        layers: list[nn.Module] = [StreamingConv1d(latent_dim, width, c.kernel_size)]
        if c.lstm_layers:
            layers.append(StreamingLSTM(width, num_layers=c.lstm_layers))
        stages = reversed(list(enumerate(c.ratios)))
        if c.head == "istft":
            stages = list(stages)[: c.istft_stage]
        for i, ratio in stages:
            narrower = widths[i]
            layers += [nn.ELU(), StreamingConvTranspose1d(width, narrower, 2 * ratio, stride=ratio)]
            width = narrower
            layers += _residual_stack(width, c)
        if c.head == "istft":
            head = ISTFTHead(width, audio_channels=audio_channels, hop=c.istft_hop, n_fft=c.istft_window)
            layers += [nn.ELU(), head]
        else:
            layers += [nn.ELU(), StreamingConv1d(width, audio_channels * c.patch_size, c.last_kernel_size)]
            if c.patch_size > 1:
                layers.append(Unpatchify(c.patch_size))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.model(z)
        return y if self.skip is None else y + self.skip(z)
