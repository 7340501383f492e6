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

Both classes also take a `codec.runtime.OnnxCodec` in place of the model: the frames then run in ONNX
Runtime (one graph call per frame and stream, sessions shared by all streams) and codes are numpy arrays, not
tensors; everything else (resampling, padding, the codes' layout) is the same code. That path never imports
torch (this module does not either), so a CLI process on cached graphs starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import soxr

from codec.audio import resampled_length

if TYPE_CHECKING:
    import torch

    from codec.models.codec import CodecModel
    from codec.modules.streaming import State


class Resampler:
    """Streaming soxr resampling of `rows` float32 streams [rows, T] (output identical to one-shot resampling)."""

    def __init__(self, from_rate: int, to_rate: int, rows: int) -> None:
        self.rows = rows
        self._soxr = soxr.ResampleStream(from_rate, to_rate, rows, dtype="float32", quality="HQ")

    def __call__(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        out = self._soxr.resample_chunk(np.ascontiguousarray(pcm.T), last=last)
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, self.rows).T)

    def clear(self) -> None:
        self._soxr.clear()


def tail_padding(samples_in: int, from_rate: int, to_rate: int, fed: int, tail: int) -> int:
    """Zero samples to add after a resampler's last output `tail` so that a stream of `samples_in` input samples,
    `fed` of them already given to the model, reaches the rounded-up length offline resampling gives (soxr may
    emit a sample less)."""
    return max(resampled_length(samples_in, from_rate, to_rate) - fed - tail, 0)


class DelayAlign:
    """Line up a decoded stream [rows, T] (at the model's rate) with its input: drop the first `delay` samples,
    and `tail()` ends it with `delay` samples of silence (none if no frame was decoded). The last `delay` samples
    of a stream are the part of the last frame that the next frame would have cross-faded; silence stands in.
    With `delay` 0 both are no-ops."""

    def __init__(self, delay: int, rows: int) -> None:
        self.delay, self.rows, self._skip, self._started = delay, rows, delay, False

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if audio.shape[-1]:
            self._started = True
        if self._skip and audio.shape[-1]:
            n = min(self._skip, audio.shape[-1])
            self._skip -= n
            audio = audio[..., n:]
        return audio

    def tail(self) -> np.ndarray:
        n = self.delay if self._started else 0
        self._started = False
        return np.zeros((self.rows, n), np.float32)


class _Streams:
    """Shared plumbing: a model, B streams, their saved state, and an optional resampler."""

    def __init__(self, model: CodecModel, batch_size: int, from_rate: int, to_rate: int) -> None:
        if model.audio_channels != 1:
            raise ValueError("streaming codes one mono stream per batch item; this model takes multichannel audio")
        self.model, self.batch_size = model, batch_size
        self._onnx = model if model.runtime == "onnx" else None  # a codec.runtime.OnnxCodec
        self._frames: list = []  # ONNX: one codec.onnx_runtime encoder or decoder per stream
        self._state: dict[str, State] | None = None  # per layer, bound to the model for each call
        self._device = None if self._onnx is not None else next(model.parameters()).device
        self._resampler = Resampler(from_rate, to_rate, batch_size) if from_rate != to_rate else None

    def _run(self, fn):
        """Call fn() with this object's state bound to the model's layers (updated in place)."""
        if self._state is None:
            self._state = self.model.new_streaming_state(self.batch_size)
        with self.model.streaming_with(self._state):
            return fn()

    def _resample(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        return pcm if self._resampler is None else self._resampler(pcm, last)

    def reset(self, mask: torch.Tensor | np.ndarray | None = None) -> None:
        """Start the streams selected by boolean `mask` [B] (all if None) afresh, at a frame boundary."""
        if mask is None:
            self._state = None
            for frames in self._frames:
                frames.reset()
            if self._resampler is not None:
                self._resampler.clear()
            return
        if self._resampler is not None:
            raise ValueError("per-stream reset needs input at the model's sample rate (no resampler in front)")
        if self._onnx is not None:
            for frames, chosen in zip(self._frames, np.asarray(mask, dtype=bool).tolist(), strict=True):
                if chosen:
                    frames.reset()
            return
        import torch

        mask = torch.as_tensor(mask, dtype=torch.bool)
        self._run(lambda: self.model.reset_streaming(mask))


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

    def __init__(
        self,
        model: CodecModel,
        *,
        levels: int | None = None,
        bitrate_kbps: float | None = None,
        batch_size: int = 1,
        sample_rate: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate or model.sample_rate
        super().__init__(model, batch_size, self.sample_rate, model.sample_rate)
        self.levels, self.notice = model.levels_for(bitrate_kbps=bitrate_kbps, levels=levels)
        if self._onnx is not None:
            from codec.onnx_runtime import OnnxEncoder

            onnx, per_call = self._onnx, self._onnx.frames_per_call
            self._frames = [
                OnnxEncoder(onnx.onnx_dir, levels=self.levels, sessions=onnx.sessions, frames_per_call=per_call)
                for _ in range(batch_size)
            ]
        self.samples_in = 0  # per stream, at the input rate
        self._model_samples = 0  # per stream, fed to the model

    def push(self, pcm) -> torch.Tensor | np.ndarray:
        pcm = _as_batch(pcm, self.batch_size)
        self.samples_in += pcm.shape[1]
        return self._encode(self._resample(pcm))

    def flush(self) -> torch.Tensor | np.ndarray:
        """Codes for whatever is left, the last partial frame zero-padded; the streams then start afresh."""
        tail = self._resample(np.zeros((self.batch_size, 0), np.float32), last=True)
        missing = tail_padding(self.samples_in, self.sample_rate, self.model.sample_rate, self._model_samples,
                               tail.shape[1])  # fmt: skip
        tail = np.pad(tail, ((0, 0), (0, missing)))
        tail_codes = self._encode(tail)  # first: the flush below pads what is left after the tail
        if self._onnx is not None:
            codes = np.concatenate([tail_codes, np.concatenate([frames.flush() for frames in self._frames])], -1)
        else:
            import torch

            codes = torch.cat([tail_codes, self._run(lambda: self.model.flush(self.levels)).cpu()], dim=-1)
        self.reset()
        return codes

    def reset(self, mask: torch.Tensor | np.ndarray | None = None) -> None:
        super().reset(mask)
        if mask is None:  # all streams start afresh: so do the length counters the flush padding relies on
            self.samples_in = self._model_samples = 0

    def _encode(self, x: np.ndarray) -> torch.Tensor | np.ndarray:
        self._model_samples += x.shape[1]
        if self._onnx is not None:
            return np.concatenate([frames.push(row) for frames, row in zip(self._frames, x, strict=True)])
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(self._device)
        return self._run(lambda: self.model.encode(tensor, self.levels)).cpu()


class StreamingDecoder(_Streams):
    """Decode `batch_size` live streams of codes back to float PCM.

    `push(codes [B, n * G, F]) -> pcm [B, T]` at `sample_rate` (default: the model's): F * hop_length
    samples at the model rate, fewer or more while a resampler is filling or draining (or, for a model with a
    `delay`, `delay` fewer on the first frame); `flush()` returns the resampler's tail and the delay's silence
    (empty at the model rate without a delay).
    """

    def __init__(self, model: CodecModel, *, batch_size: int = 1, sample_rate: int | None = None) -> None:
        self.sample_rate = sample_rate or model.sample_rate
        super().__init__(model, batch_size, model.sample_rate, self.sample_rate)
        self._align = DelayAlign(model.delay, batch_size)
        if self._onnx is not None:
            from codec.onnx_runtime import OnnxDecoder

            onnx = self._onnx
            self._frames = [
                OnnxDecoder(onnx.onnx_dir, sessions=onnx.sessions, frames_per_call=onnx.frames_per_call)
                for _ in range(batch_size)
            ]

    def push(self, codes) -> np.ndarray:
        """codes [B, n * G, F] (a torch tensor or a numpy array) -> pcm [B, T]."""
        if len(codes.shape) != 3 or codes.shape[0] != self.batch_size:
            raise ValueError(f"codes must be [{self.batch_size}, levels * G, F], got {tuple(codes.shape)}")
        if codes.shape[-1] == 0:  # no frame completed yet (an encoder's push may return none)
            audio = np.zeros((self.batch_size, 0), np.float32)
        elif self._onnx is not None:
            rows = codes.cpu().numpy() if hasattr(codes, "cpu") else np.asarray(codes, dtype=np.int64)
            audio = np.concatenate(
                [frames.push(row[None])[:, 0] for frames, row in zip(self._frames, rows, strict=True)]
            )
        else:
            import torch

            codes = torch.as_tensor(codes, dtype=torch.long).to(self._device)
            audio = self._run(lambda: self.model.decode(codes))[:, 0].cpu().numpy()
        return self._resample(self._align(audio))

    def flush(self) -> np.ndarray:
        return self._resample(self._align.tail(), last=True)
