"""Frame-by-frame compression of live audio: `StreamingEncoder` and `StreamingDecoder`.

Each object owns the streaming state of its streams (plain tensors), so any number of them can share
one model: on every call the state is loaded into the model's layers, the new input is processed and
the state is taken back out. Codes equal offline encoding of the whole signal, for any chunking.

Frame contract: the model consumes `hop_length` samples per frame at `model.sample_rate`. Push any number
of samples; samples that do not complete a frame wait inside the encoder, and `flush()` pads the last
partial frame with zeros as offline encoding does. When the input rate differs from the model's, a
streaming soxr resampler (identical output to one-shot resampling) sits in front of the encoder and
behind the decoder, adding its filter delay to the latency. A model whose decoded stream lags its input
(`model.delay` samples: the spectral family's synthesis delay) is lined up again by `DelayAlign`: the decoder
drops the first `delay` samples it makes and ends the stream with `delay` samples of silence, so decoded audio
keeps the input's timing and length (F * hop_length samples for F frames) on every path.

Both classes take any `codec.runtime.RunnableCodec`: the torch model, or a `codec.runtime.OnnxCodec` (the frames
then run in ONNX Runtime, one graph call per frame and stream, sessions shared by all streams, and codes are numpy
arrays, not tensors). Either way the work is the frame-coding core of `codec.frames`: `EncoderInput` (resample,
buffer, pad), the model's `FrameCoder` from an explicit `CodingState`, and `DecoderOutput` (delay, resample); no
line here depends on the runtime but the type the codes are handed back in. The ONNX path never imports torch
(this module does not either), so a CLI process on cached graphs starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from codec.frames import DecoderOutput, DelayAlign, EncoderInput, Resampler, tail_padding  # noqa: F401 - public here

if TYPE_CHECKING:
    import torch

    from codec.runtimes.runtime import RunnableCodec


class _Streams:
    """Shared plumbing: a model, its frame coder, and the coding state of B streams on one side."""

    side = "encoder"

    def __init__(self, model: RunnableCodec, batch_size: int) -> None:
        if model.audio_channels != 1:
            raise ValueError("streaming codes one mono stream per batch item; this model takes multichannel audio")
        self.model, self.batch_size = model, batch_size
        self.coder = model.frame_coder()
        self.state = self.coder.new_state(self.side, batch_size)

    def _reset_state(self, mask: torch.Tensor | np.ndarray | None, resampled: bool) -> None:
        if mask is None:
            self.coder.reset(self.state)
            return
        if resampled:
            raise ValueError("per-stream reset needs input at the model's sample rate (no resampler in front)")
        mask = mask.cpu().numpy() if hasattr(mask, "cpu") else mask
        self.coder.reset(self.state, np.asarray(mask, dtype=bool))


def _as_batch(pcm, batch_size: int) -> np.ndarray:
    array = pcm.detach().cpu().numpy() if hasattr(pcm, "detach") else np.asarray(pcm)  # a torch tensor, or numpy
    array = array.astype(np.float32, copy=False)
    if array.ndim == 1 and batch_size == 1:
        array = array[None]
    if array.ndim == 3 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 2 or array.shape[0] != batch_size:
        raise ValueError(f"pcm must be [{batch_size}, T] (one row per stream), got {array.shape}")
    return array


class StreamingEncoder(_Streams):
    """Encode `batch_size` live streams of float PCM.

    Args:
        model: the codec. levels / bitrate_kbps: run-time bitrate (as `CodecModel.levels_for`).
        batch_size: number of independent streams pushed together. sample_rate: rate of the pushed PCM
        (default: the model's).

    `push(pcm [B, T]) -> codes [B, levels * G, F]` for the frames completed by this chunk (F may be 0);
    `flush() -> codes` of the last partial frame. `notice` holds a message if the bitrate was rounded down.
    Codes are int64 torch tensors (on the CPU) for a `CodecModel`, numpy arrays for an `OnnxCodec`.
    """

    side = "encoder"

    def __init__(
        self,
        model: RunnableCodec,
        *,
        levels: int | None = None,
        bitrate_kbps: float | None = None,
        batch_size: int = 1,
        sample_rate: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate or model.sample_rate
        super().__init__(model, batch_size)
        self.levels, self.notice = model.levels_for(bitrate_kbps=bitrate_kbps, levels=levels)
        self.input = EncoderInput(self.sample_rate, model.sample_rate, batch_size, model.hop_length)

    @property
    def samples_in(self) -> int:
        """Samples pushed per stream since the streams started, at the input's rate."""
        return self.input.samples_in

    def push(self, pcm) -> torch.Tensor | np.ndarray:
        return self._codes(self.coder.encode(self.state, self.input.push(_as_batch(pcm, self.batch_size)), self.levels))

    def flush(self) -> torch.Tensor | np.ndarray:
        """Codes for whatever is left, the last partial frame zero-padded; the streams then start afresh."""
        codes = np.concatenate([self.coder.encode(self.state, x, self.levels) for x in self.input.finish()], -1)
        self.reset()
        return self._codes(codes)

    def reset(self, mask: torch.Tensor | np.ndarray | None = None) -> None:
        """Start the streams selected by boolean `mask` [B] (all if None) afresh, at a frame boundary."""
        if mask is not None and self.input.buffer.pending.shape[-1]:
            raise RuntimeError(
                "cannot reset part of a batch while a partial frame is pending; reset at frame boundaries"
            )
        self._reset_state(mask, self.input.resampler is not None)
        if mask is None:  # all streams start afresh: so do the buffer and the counters the flush padding relies on
            self.input.reset()

    def _codes(self, codes: np.ndarray) -> torch.Tensor | np.ndarray:
        """Codes as this model's users get them: numpy on ONNX Runtime, a CPU tensor from the torch model."""
        if self.model.runtime != "torch":
            return codes
        import torch

        return torch.from_numpy(codes)


class StreamingDecoder(_Streams):
    """Decode `batch_size` live streams of codes back to float PCM.

    `push(codes [B, n * G, F]) -> pcm [B, T]` at `sample_rate` (default: the model's): F * hop_length
    samples at the model rate, fewer or more while a resampler is filling or draining (or, for a model with a
    `delay`, `delay` fewer on the first frame); `flush()` returns the resampler's tail and the delay's silence
    (empty at the model rate without a delay).
    """

    side = "decoder"

    def __init__(self, model: RunnableCodec, *, batch_size: int = 1, sample_rate: int | None = None) -> None:
        self.sample_rate = sample_rate or model.sample_rate
        super().__init__(model, batch_size)
        self.output = DecoderOutput(model.delay, model.sample_rate, self.sample_rate, batch_size)

    def push(self, codes) -> np.ndarray:
        """codes [B, n * G, F] (a torch tensor or a numpy array) -> pcm [B, T]."""
        if len(codes.shape) != 3 or codes.shape[0] != self.batch_size:
            raise ValueError(f"codes must be [{self.batch_size}, levels * G, F], got {tuple(codes.shape)}")
        codes = np.asarray(codes.cpu().numpy() if hasattr(codes, "cpu") else codes, np.int64)
        return self.output.push(self.coder.decode(self.state, codes))

    def flush(self) -> np.ndarray:
        return self.output.finish()

    def reset(self, mask: torch.Tensor | np.ndarray | None = None) -> None:
        """Start the streams selected by boolean `mask` [B] (all if None) afresh, at a frame boundary."""
        self._reset_state(mask, self.output.resampler is not None)
        if mask is None and self.output.resampler is not None:
            self.output.resampler.clear()
