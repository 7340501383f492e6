"""A causal inverse-STFT output head: per frame a log-magnitude and a phase per bin, then overlap-add.

The decoder's last layers stop at a frame rate of sample_rate / hop; this head turns each frame into
`n_fft` windowed samples through a fixed inverse real DFT (one matmul, no complex tensors, so it
exports to ONNX and is cheap on a CPU) and overlap-adds them causally. Frame j is laid at samples
[j * hop, j * hop + n_fft); its first `hop` samples complete output block j, the rest wait in the
state for the next frames (the pattern of `StreamingConvTranspose1d`, with a fixed kernel):

    hop h, n_fft 4h (. = samples still awaiting later frames, kept in the state)

      frame j-3  [ a  . . . ]
      frame j-2     [ b  . .  . ]
      frame j-1        [ c  .  . . ]
      frame j             [ d  . . . ]
      block j             |<-h->|          = last quarter of j-3 + third of j-2 + second of j-1 + first of j

So output block j depends on frames up to j only: the head adds no latency, and from a fresh state
it emits exactly `hop` samples per frame, like the waveform head it replaces. The first n_fft - hop
samples of a stream sum fewer frames (a gentle fade-in, the same offline and streaming).
"""

from __future__ import annotations

import math

import torch

from codec.modules.conv import StreamingConv1d
from codec.modules.streaming import State, StreamingModule


def hann_window(n_fft: int) -> torch.Tensor:
    """The periodic Hann window (squared, its shifts by n_fft / r sum to a constant for any whole r >= 3)."""
    n = torch.arange(n_fft, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)


def inverse_dft_basis(n_fft: int, hop: int) -> torch.Tensor:
    """[2 * (n_fft // 2 + 1), n_fft]: [Re; Im] of a one-sided spectrum @ basis = windowed frame.

    Rows 0..K-1 hold the real parts' cosines, rows K..2K-1 the imaginary parts' negated sines, scaled
    like an inverse real FFT (the interior bins count twice; DC's and Nyquist's imaginary parts count
    zero) and multiplied by the synthesis window over the steady-state sum of squared windows, so the
    spectra of Hann-windowed frames [j * hop, j * hop + n_fft) of a signal give that signal back.
    """
    window = hann_window(n_fft)
    envelope = (window**2).reshape(n_fft // hop, hop).sum(0)  # the same at every position for 3 or more hops
    return inverse_rdft_rows(n_fft) * (window / (n_fft * envelope.mean()))


def inverse_rdft_rows(length: int) -> torch.Tensor:
    """[2 * (length // 2 + 1), length] float64: [Re; Im] of a one-sided spectrum @ rows = its inverse real DFT
    times `length` (cosines for the real parts, negated sines for the imaginary ones; the interior bins count
    twice, DC and an even length's Nyquist once). The synthesis bases scale it by their windows."""
    bins = length // 2 + 1
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    n = torch.arange(length, dtype=torch.float64)[None, :]
    angle = 2 * math.pi * k * n / length
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0  # Nyquist counts once
    return torch.cat([weight * torch.cos(angle), -weight * torch.sin(angle)])


class ISTFTHead(StreamingModule):
    """Features at the frame rate to waveform: log-magnitude and phase per bin, inverse DFT, overlap-add.

    Args:
        in_channels: feature channels C_in.
        audio_channels: output channels C.
        hop: samples per input frame (the STFT hop).
        n_fft: DFT size: even, a multiple of hop and at least 3 * hop (the Hann overlap is then flat).

    Shapes: x [B, C_in, F] -> [B, C, F * hop] (causal; see the module docstring).
    """

    def __init__(self, in_channels: int, *, audio_channels: int, hop: int, n_fft: int) -> None:
        super().__init__()
        if n_fft % hop or n_fft < 3 * hop or n_fft % 2:
            raise ValueError(f"n_fft {n_fft} must be even, a multiple of hop {hop} and at least 3 * hop")
        self.audio_channels, self.hop, self.n_fft = audio_channels, hop, n_fft
        self.bins = n_fft // 2 + 1
        # a per-frame linear map to [log-magnitude; phase] per audio channel (the frames' context comes from the
        # layers before; a wider kernel here would cost more than the rest of a CPU decoder at these widths)
        self.proj = StreamingConv1d(in_channels, audio_channels * 2 * self.bins, 1)
        self.register_buffer("basis", inverse_dft_basis(n_fft, hop).float(), persistent=False)
        # magnitudes above n_fft (a sinusoid of amplitude 4 under the Hann window) are clamped, so exp stays finite
        self.max_log_magnitude = math.log(n_fft)

    def _init_streaming_state(self, batch_size: int) -> State:
        return {"tail": self.basis.new_zeros(batch_size, self.audio_channels, self.n_fft - self.hop)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, frames = x.shape
        state = self._state(B)
        C, K, h = self.audio_channels, self.bins, self.hop
        p = self.proj(x)
        if frames == 0:
            return p.new_zeros(B, C, 0)
        dtype = p.dtype
        # exp, cos/sin and the sum of n_fft / hop overlapping frames run in fp32 even under autocast
        with torch.autocast(p.device.type, enabled=False):
            p = p.float().view(B, C, 2, K, frames)
            magnitude = p[:, :, 0].clamp(max=self.max_log_magnitude).exp()
            phase = p[:, :, 1]
            spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=2)  # [B, C, 2K, F]
            pieces = (spectrum.transpose(2, 3) @ self.basis).view(B, C, frames, -1, h)  # [B, C, F, n_fft/h, h]
            out, tail = self._overlap_add(pieces, state["tail"].float())
        if self.is_streaming:
            state["tail"] = tail
        return out.to(dtype)

    def _overlap_add(self, pieces: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pieces [B, C, F, r, h] (frame f's r-th hop of samples) -> blocks [B, C, F * h] and the new tail."""
        B, C, frames, r, h = pieces.shape
        blocks = pieces.new_zeros(B, C, frames + r - 1, h)
        for i in range(r):  # r = n_fft / hop shifted adds, each over all frames at once
            blocks[:, :, i : i + frames] += pieces[:, :, :, i]
        blocks = blocks.reshape(B, C, -1)
        blocks[..., : tail.shape[-1]] += tail
        return blocks[..., : frames * h], blocks[..., frames * h :]
