"""SEANet-style causal encoder and decoder composed from streaming convolutions."""

from __future__ import annotations

import math

import torch
from torch import nn

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


def _residual_stack(channels: int, *, num_layers: int, kernel_size: int, dilation_base: int, compress: int) -> list:
    return [
        ResidualUnit(channels, kernel_size=kernel_size, dilation=dilation_base**j, compress=compress)
        for j in range(num_layers)
    ]


class SEANetEncoder(nn.Module):
    """Waveform to latent frames.

    Args:
        audio_channels: input channels C.
        latent_dim: output dimension D.
        channels: width after the first convolution, doubled at every downsampling (capped at max_channels).
        ratios: downsampling strides in order; hop_length is their product.
        kernel_size, last_kernel_size, residual_kernel_size, num_residual_layers, dilation_base, compress,
        lstm_layers, max_channels, patch_size, linear_skip: see `SEANetConfig`.

    Shapes: x [B, C, T] -> [B, D, T // hop_length] from a fresh state.
    """

    def __init__(
        self,
        *,
        audio_channels: int,
        latent_dim: int,
        channels: int,
        ratios: tuple[int, ...],
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        num_residual_layers: int = 1,
        dilation_base: int = 2,
        compress: int = 2,
        lstm_layers: int = 0,
        max_channels: int = 1024,
        patch_size: int = 1,
        linear_skip: bool = False,
    ) -> None:
        super().__init__()
        hop = patch_size * math.prod(ratios)
        # the lapped linear path sees the current frame and the one before it (causal): z_f += W [x_{f-1}; x_f]
        self.skip = StreamingConv1d(audio_channels, latent_dim, 2 * hop, stride=hop) if linear_skip else None
        width = channels
        layers: list[nn.Module] = [Patchify(patch_size)] if patch_size > 1 else []
        layers.append(StreamingConv1d(audio_channels * patch_size, width, kernel_size))
        for ratio in ratios:
            layers += _residual_stack(
                width,
                num_layers=num_residual_layers,
                kernel_size=residual_kernel_size,
                dilation_base=dilation_base,
                compress=compress,
            )
            wider = min(width * 2, max_channels)
            layers += [nn.ELU(), StreamingConv1d(width, wider, 2 * ratio, stride=ratio)]
            width = wider
        if lstm_layers:
            layers.append(StreamingLSTM(width, num_layers=lstm_layers))
        layers += [nn.ELU(), StreamingConv1d(width, latent_dim, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z if self.skip is None else z + self.skip(x)


class SEANetDecoder(nn.Module):
    """Latent frames to waveform; the mirror image of `SEANetEncoder`.

    `ratios` are given in encoder order and applied reversed. Shapes: z [B, D, F] -> [B, C, F * hop_length];
    with patch_size P the last convolution emits C * P channels that are unfolded into P samples each.

    head="istft" ends the network after the first `istft_stage` upsampling stages with an `ISTFTHead`
    (hop = hop_length / the upsampling left, `istft_n_fft` = 4 x hop when none); the later stages, the last
    convolution and the unpatching are not built. Either head emits hop_length samples per latent frame, causally.
    """

    def __init__(
        self,
        *,
        audio_channels: int,
        latent_dim: int,
        channels: int,
        ratios: tuple[int, ...],
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 3,
        num_residual_layers: int = 1,
        dilation_base: int = 2,
        compress: int = 2,
        lstm_layers: int = 0,
        max_channels: int = 1024,
        patch_size: int = 1,
        linear_skip: bool = False,
        head: str = "waveform",
        istft_stage: int = 1,
        istft_n_fft: int | None = None,
    ) -> None:
        super().__init__()
        if head not in ("waveform", "istft"):
            raise ValueError(f"unknown head {head!r} (use 'waveform' or 'istft')")
        hop = patch_size * math.prod(ratios)
        # the lapped linear path: each latent frame spreads over its own frame and the next (overlap-add in state)
        self.skip = StreamingConvTranspose1d(latent_dim, audio_channels, 2 * hop, stride=hop) if linear_skip else None
        widths = [channels]
        for _ in ratios:
            widths.append(min(widths[-1] * 2, max_channels))
        width = widths[-1]
        layers: list[nn.Module] = [StreamingConv1d(latent_dim, width, kernel_size)]
        if lstm_layers:
            layers.append(StreamingLSTM(width, num_layers=lstm_layers))
        stages = reversed(list(enumerate(ratios)))
        if head == "istft":
            stages = list(stages)[:istft_stage]
        for i, ratio in stages:
            narrower = widths[i]
            layers += [nn.ELU(), StreamingConvTranspose1d(width, narrower, 2 * ratio, stride=ratio)]
            width = narrower
            layers += _residual_stack(
                width,
                num_layers=num_residual_layers,
                kernel_size=residual_kernel_size,
                dilation_base=dilation_base,
                compress=compress,
            )
        if head == "istft":
            istft_hop = patch_size * math.prod(ratios[: len(ratios) - istft_stage])
            n_fft = istft_n_fft or 4 * istft_hop
            layers += [nn.ELU(), ISTFTHead(width, audio_channels=audio_channels, hop=istft_hop, n_fft=n_fft)]
        else:
            layers += [nn.ELU(), StreamingConv1d(width, audio_channels * patch_size, last_kernel_size)]
            if patch_size > 1:
                layers.append(Unpatchify(patch_size))
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.model(z)
        return y if self.skip is None else y + self.skip(z)
