"""The frame-rate spectral family: a causal STFT in, causal ConvNeXt blocks over frames, an inverse DFT out.

Everything after the analysis transform runs at the frame rate (50 Hz for hop 320 at 16 kHz), with the
frequency bins as channels, so a layer costs one small matmul per 20 ms frame instead of a convolution at
kilohertz rates: a CPU-hour buys several times the training steps of the waveform (SEANet) family.

Analysis (encoder). Frame j is the DFT of the `n_fft` samples that end with its own hop, so it sees no sample of
later frames (no lookahead). The window is asymmetric: a sin^2 rise over the samples before the hop, then flat over
the hop itself, so the frame's newest samples, the ones its decoded block must reproduce, weigh fully (a symmetric
Hann window peaks at the hop's first sample and fades its last ones to nothing, leaving the block's end to be
guessed; that design reached 1.2 PESQ-WB where this one learns):

    hop h = 320, n_fft = 640          samples  [j*h - h ............ j*h + h)
                                                 rise (context)  |  flat: frame j's hop

Its real and imaginary parts are power-law compressed, X |X|^(p - 1), and stacked as 2 * (n_fft/2 + 1)
channels.

Synthesis (decoder). Each frame becomes the compressed complex spectrum of a segment of h + o samples that
starts at the frame's own first sample and runs o samples into the next frame; it is decompressed, taken
back to samples by a fixed inverse real DFT (one matmul) and shaped by a flat-top window whose first and last
o samples are complementary sin^2 / cos^2 ramps. Overlap-add: the o samples that spill into the next frame
wait in the state and are cross-faded with that frame's first o samples:

    o = overlap        frame j-1  [........ flat ........\\\\]
                       frame j                 [////........ flat ........\\\\]
                       block j                 |<------------ h ------------>|

So block j is final as soon as frame j is decoded: the family adds no latency beyond the frame that the
encoder has to wait for (algorithmic latency = h samples, 20 ms), and only the first o samples of a block
lean, with a falling weight, on the previous frame's continuation. Offline is streaming from a fresh state.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from codec.config import SpectralConfig
from codec.modules.conv import StreamingConv1d
from codec.modules.istft import inverse_rdft_rows
from codec.modules.streaming import State, StreamingModule


def _rise(length: int) -> torch.Tensor:
    """[length] float64: sin^2 from near 0 to near 1, sampled at half-sample offsets (its flip is 1 - it)."""
    return torch.sin(0.5 * math.pi * (torch.arange(length, dtype=torch.float64) + 0.5) / length) ** 2


def analysis_window(n_fft: int, hop_length: int) -> torch.Tensor:
    """[n_fft]: a sin^2 rise over the first n_fft - hop_length samples (the context before the frame's hop), then 1
    over the hop."""
    window = torch.ones(n_fft, dtype=torch.float64)
    rise = n_fft - hop_length
    if rise:
        window[:rise] = _rise(rise)
    return window


def analysis_basis(n_fft: int, hop_length: int) -> torch.Tensor:
    """[2 * (n_fft // 2 + 1), 1, n_fft] conv weights: the windowed (`analysis_window`) DFT's real and imaginary rows,
    scaled by 1 / sqrt(sum of the squared window) so a white signal keeps its power per bin."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    window = analysis_window(n_fft, hop_length)
    angle = 2 * math.pi * k * n[None] / n_fft
    scale = window / window.square().sum().sqrt()
    return torch.cat([torch.cos(angle) * scale, -torch.sin(angle) * scale])[:, None].float()


def crossfade_window(length: int, overlap: int) -> torch.Tensor:
    """[length]: sin^2 rise over the first `overlap` samples, 1, cos^2 fall over the last `overlap` (the rise of
    one segment and the fall of the one before it sum to exactly 1)."""
    window = torch.ones(length, dtype=torch.float64)
    if overlap:
        ramp = _rise(overlap)
        window[:overlap] = ramp
        window[length - overlap :] = ramp.flip(0)
    return window


def synthesis_basis(length: int, overlap: int) -> torch.Tensor:
    """[2 * (length // 2 + 1), length]: [Re; Im] of a one-sided spectrum @ basis = the windowed segment (an
    inverse real DFT of size `length`, scaled like `analysis_basis`'s inverse, times `crossfade_window`)."""
    return (inverse_rdft_rows(length) * (crossfade_window(length, overlap) / math.sqrt(length))).float()


def compress(x: torch.Tensor, power: float, eps: float = 1e-6) -> torch.Tensor:
    """[B, 2K, F] stacked [Re; Im] -> the same with magnitudes raised to `power` (phase kept)."""
    re, im = x.chunk(2, dim=1)
    gain = (re.square() + im.square() + eps * eps).pow(0.5 * (power - 1))
    return x * torch.cat([gain, gain], dim=1)


class _FixedWeight(nn.Module):
    """A convolution weight that is a constant of the model (a transform), not a parameter or saved tensor."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("v", weight, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.v


class ChannelNorm(nn.Module):
    """LayerNorm over channels of [B, C, F] (each frame on its own, so it keeps no state)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class CausalConvNeXtBlock(nn.Module):
    """x + scale * MLP(norm(depthwise causal conv over frames(x))).

    Args:
        channels: C. kernel_size: frames the depthwise convolution sees (the current one and kernel_size - 1
        before it). mlp_ratio: hidden width of the pointwise MLP as a multiple of C.

    Shapes: x [B, C, F] -> [B, C, F].
    """

    def __init__(self, channels: int, *, kernel_size: int = 7, mlp_ratio: float = 3.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.depthwise = StreamingConv1d(channels, channels, kernel_size, groups=channels, norm="none")
        self.norm = ChannelNorm(channels)
        self.up = StreamingConv1d(channels, hidden, 1, norm="none")
        self.down = StreamingConv1d(hidden, channels, 1, norm="none")
        self.scale = nn.Parameter(torch.full((channels, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.down(F.gelu(self.up(self.norm(self.depthwise(x)))))


class SpectralEncoder(nn.Module):
    """Waveform -> latent at the frame rate: causal STFT, power-law compression, ConvNeXt blocks over frames.

    Args:
        audio_channels: C of the audio. latent_dim: D.
        config: the architecture, declared once in `SpectralConfig`: hop_length (the STFT hop), n_fft (the
            analysis window), power (magnitude compression), encoder_channels and encoder_blocks (the ConvNeXt
            stack), kernel_size, mlp_ratio.

    Shapes: x [B, C, F * hop] -> z [B, D, F] (input past the last whole hop waits in the state).
    """

    def __init__(self, *, audio_channels: int, latent_dim: int, config: SpectralConfig) -> None:
        super().__init__()
        c, channels = config, config.encoder_channels
        self.power = c.power
        basis = analysis_basis(c.n_fft, c.hop_length)
        if audio_channels > 1:  # every audio channel through the same transform, side by side
            basis = basis.repeat(audio_channels, 1, 1)
        self.stft = StreamingConv1d(
            audio_channels, basis.shape[0], c.n_fft, stride=c.hop_length, groups=audio_channels, bias=False, norm="none"
        )
        self.stft.weight = _FixedWeight(basis)
        self.bins = c.n_fft // 2 + 1
        self.audio_channels = audio_channels
        self.proj_in = StreamingConv1d(basis.shape[0], channels, 1, norm="none")
        self.blocks = nn.Sequential(
            *[
                CausalConvNeXtBlock(channels, kernel_size=c.kernel_size, mlp_ratio=c.mlp_ratio)
                for _ in range(c.encoder_blocks)
            ]
        )
        self.norm = ChannelNorm(channels)
        self.proj_out = StreamingConv1d(channels, latent_dim, 1, norm="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = self.stft(x)  # [B, C * 2K, F]: per audio channel [Re; Im]
        B, _, frames = spectrum.shape
        per_channel = spectrum.view(B * self.audio_channels, 2 * self.bins, frames)
        features = compress(per_channel, self.power).view(B, self.audio_channels * 2 * self.bins, frames)
        return self.proj_out(self.norm(self.blocks(self.proj_in(features))))


class SpectralSynthesis(StreamingModule):
    """Features at the frame rate -> waveform: compressed complex spectrum per frame, inverse DFT, cross-fade.

    Args:
        in_channels: feature channels. audio_channels: C. hop_length: h. overlap: o, the cross-fade (0 <= o <= h).
        power: the compression exponent the spectrum is predicted under (decompressed by |Y|^(1/p - 1)).

    Shapes: x [B, C_in, F] -> [B, C, F * h] (see the module docstring for the layout).
    """

    def __init__(self, in_channels: int, *, audio_channels: int, hop_length: int, overlap: int, power: float) -> None:
        super().__init__()
        if not 0 <= overlap <= hop_length:
            raise ValueError(f"overlap {overlap} must lie in 0..hop_length ({hop_length})")
        self.audio_channels, self.hop, self.overlap, self.power = audio_channels, hop_length, overlap, power
        self.length = hop_length + overlap
        self.bins = self.length // 2 + 1
        self.proj = StreamingConv1d(in_channels, audio_channels * 2 * self.bins, 1, norm="none")
        self.register_buffer("basis", synthesis_basis(self.length, overlap), persistent=False)
        # compressed magnitudes are capped (a full-scale sinusoid compresses to about 4.6 here), so the
        # decompression's large power stays finite on any input
        self.max_magnitude = 16.0

    def _init_streaming_state(self, batch_size: int) -> State:
        return {"tail": self.basis.new_zeros(batch_size, self.audio_channels, self.overlap)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, frames = x.shape
        state = self._state(B)
        C, K = self.audio_channels, self.bins
        y = self.proj(x)
        if frames == 0:
            return y.new_zeros(B, C, 0)
        dtype = y.dtype
        with torch.autocast(y.device.type, enabled=False):  # the decompression's power runs in fp32
            y = y.float().view(B * C, 2 * K, frames)
            re, im = y.chunk(2, dim=1)
            magnitude2 = re.square() + im.square() + 1e-12
            gain = magnitude2.clamp(max=self.max_magnitude**2).pow(0.5 / self.power - 0.5)
            gain = gain * (self.max_magnitude**2 / magnitude2).clamp(max=1.0).sqrt()  # the cap, phase kept
            spectrum = torch.cat([re * gain, im * gain], dim=1).view(B, C, 2 * K, frames)
            segments = spectrum.transpose(2, 3) @ self.basis  # [B, C, F, h + o]
            out, tail = self._overlap_add(segments, state["tail"].float())
        if self.is_streaming:
            state["tail"] = tail
        return out.to(dtype)

    def _overlap_add(self, segments: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """segments [B, C, F, h + o] -> blocks [B, C, F * h] and the last segment's spill [B, C, o]."""
        B, C, frames, _ = segments.shape
        h, o = self.hop, self.overlap
        own = segments[..., :h]  # [B, C, F, h]
        if o == 0:
            return own.reshape(B, C, frames * h), tail
        spill = segments[..., h:]  # [B, C, F, o]: each segment's run into the next block
        before = torch.cat([tail[:, :, None], spill[:, :, : frames - 1]], dim=2)  # what each block's start receives
        head = own[..., :o] + before
        out = torch.cat([head, own[..., o:]], dim=-1).reshape(B, C, frames * h)
        return out, spill[:, :, frames - 1]


class SpectralDecoder(nn.Module):
    """Latent at the frame rate -> waveform: ConvNeXt blocks over frames, then `SpectralSynthesis`.

    Args:
        audio_channels: C of the audio. latent_dim: D.
        config: the architecture (`SpectralConfig`): decoder_channels and decoder_blocks, overlap (the synthesis
            cross-fade in samples), and hop_length, kernel_size, mlp_ratio, power as the encoder's.

    Shapes: z [B, D, F] -> x [B, C, F * hop].
    """

    def __init__(self, *, audio_channels: int, latent_dim: int, config: SpectralConfig) -> None:
        super().__init__()
        c, channels = config, config.decoder_channels
        self.proj_in = StreamingConv1d(latent_dim, channels, 1, norm="none")
        self.blocks = nn.Sequential(
            *[
                CausalConvNeXtBlock(channels, kernel_size=c.kernel_size, mlp_ratio=c.mlp_ratio)
                for _ in range(c.decoder_blocks)
            ]
        )
        self.norm = ChannelNorm(channels)
        self.head = SpectralSynthesis(
            channels, audio_channels=audio_channels, hop_length=c.hop_length, overlap=c.overlap, power=c.power
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.proj_in(z))))
