"""The frame-coding core: one way to code whole frames from an explicit state, whatever runs the model.

Every path that codes audio (the file path `coding/compress.py`, the live streams `coding/streaming.py`, the server's
frame batcher `codec.server.batching`) is the same three steps, written once here:

    input PCM --EncoderInput--> whole frames --FrameCoder.encode--> codes
                (resample, buffer,             (torch or ONNX Runtime,
                 pad the last frame)            from a CodingState)

    codes --FrameCoder.decode--> audio --DecoderOutput--> output PCM
                                           (drop the synthesis delay,
                                            resample)

- `FrameCoder` (a Protocol) codes one or many whole frames of a group of streams from their `CodingState`
  (`encode`, `decode`: coded as that runtime codes a stream alone), or one frame of many groups in one model
  call (`encode_batch`, `decode_batch`: the batcher's tick). One implementation per runtime: `TorchCoder` here
  (torch imported on first use) and `codec.runtimes.onnx_runtime.OnnxCoder`; a model gives its own with
  `model.frame_coder(live=...)` (`codec.runtimes.runtime.RunnableCodec`).
- `CodingState` is the declared state of one group of streams on one side; only its coder reads its `values`.
- `FrameBuffer` holds the samples that do not make a whole frame yet, and pads the last one (`last_frame_padding`,
  also what the torch model's own streaming `encode` pads with).
- `EncoderInput` and `DecoderOutput` are the one resample-and-pad step of each direction.

A frame is `hop_length` samples at the model's rate; audio is float32 [rows, T], codes int64 [rows, n * G, F],
level-major (a lower bitrate is a prefix). This module needs only numpy at import time (soxr when a stream is
resampled, torch for `TorchCoder`), so `codec.runtimes.onnx_runtime` still runs on numpy and onnxruntime alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from codec.models.codec import CodecModel

SIDES = ("encoder", "decoder")


@dataclass
class CodingState:
    """The state of `rows` streams on one `side` ('encoder' or 'decoder') between two calls of their coder.

    `values` is in the coder's own form, read and written only by it: for torch the layers' state tensors
    ({layer path: {key: tensor [rows, ...]}}), for ONNX Runtime one `onnx_runtime.OnnxSide` per row (its state
    arrays and the bound arrays of its one-frame calls)."""

    side: str
    rows: int
    values: object


class FrameCoder(Protocol):
    """Codes whole frames from explicit state (see the module docstring)."""

    def new_state(self, side: str, rows: int) -> CodingState:
        """A fresh state of `rows` streams for `side`."""
        ...

    def encode(self, state: CodingState, audio: np.ndarray, levels: int) -> np.ndarray:
        """Audio [rows, F * hop] (whole frames, F may be 0) -> codes [rows, levels * G, F]."""
        ...

    def decode(self, state: CodingState, codes: np.ndarray) -> np.ndarray:
        """Codes [rows, n * G, F] -> audio [rows, F * hop] (`model.delay` samples late: `DecoderOutput`)."""
        ...

    def encode_batch(self, states: list[CodingState], audio: list[np.ndarray], levels: int) -> list[np.ndarray]:
        """One frame of each group [rows_i, hop] in one model call -> codes [rows_i, levels * G, 1] each."""
        ...

    def decode_batch(self, states: list[CodingState], codes: list[np.ndarray]) -> list[np.ndarray]:
        """One frame of each group's codes [rows_i, n_i * G, 1] in one model call -> audio [rows_i, hop] each."""
        ...

    def reset(self, state: CodingState, mask: np.ndarray | None = None) -> None:
        """Start the rows selected by boolean `mask` [rows] (all if None) afresh, at a frame boundary."""
        ...


def last_frame_padding(length: int, hop: int) -> int:
    """Zero samples that make `length` samples whole frames of `hop` (the last partial frame's padding)."""
    return -length % hop


class FrameBuffer:
    """Samples [rows, n] that do not make a whole frame yet: `push` returns the whole frames, `flush` the last
    partial frame zero-padded (empty if nothing waits)."""

    def __init__(self, rows: int, hop: int) -> None:
        self.rows, self.hop = rows, hop
        self.reset()

    def reset(self) -> None:
        self.pending = np.zeros((self.rows, 0), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        pending = np.concatenate([self.pending, x], -1) if self.pending.shape[-1] else x
        whole = pending.shape[-1] - pending.shape[-1] % self.hop
        self.pending = pending[:, whole:]
        return np.ascontiguousarray(pending[:, :whole], np.float32)

    def flush(self) -> np.ndarray:
        pending, self.pending = self.pending, self.pending[:, :0]
        return np.pad(pending, ((0, 0), (0, last_frame_padding(pending.shape[-1], self.hop))))


class Resampler:
    """Streaming soxr resampling of `rows` float32 streams [rows, T] (output identical to one-shot resampling)."""

    def __init__(self, from_rate: int, to_rate: int, rows: int) -> None:
        import soxr

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
    from codec.audio import resampled_length

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


class EncoderInput:
    """PCM [rows, T] at `from_rate` -> whole frames at the model's `to_rate`: the encoder's resample-and-pad step.

    `push(pcm)` returns the whole frames the chunk completes; `finish()` returns the whole frames of the
    resampler's tail (padded to the length offline resampling gives) and then the last partial frame, zero-padded
    (empty when nothing waits): two blocks, coded in that order."""

    def __init__(self, from_rate: int, to_rate: int, rows: int, hop: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self.resampler = Resampler(from_rate, to_rate, rows) if from_rate != to_rate else None
        self.buffer = FrameBuffer(rows, hop)
        self.samples_in = self.fed = 0  # per stream: at the input's rate, and given to the buffer

    def push(self, pcm: np.ndarray) -> np.ndarray:
        self.samples_in += pcm.shape[1]
        x = pcm if self.resampler is None else self.resampler(pcm)
        self.fed += x.shape[1]
        return self.buffer.push(x)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        tail = np.zeros((self.buffer.rows, 0), np.float32)
        if self.resampler is not None:
            tail = self.resampler(tail, last=True)
            missing = tail_padding(self.samples_in, self.from_rate, self.to_rate, self.fed, tail.shape[1])
            tail = np.pad(tail, ((0, 0), (0, missing)))
        self.fed += tail.shape[1]
        return self.buffer.push(tail), self.buffer.flush()

    def reset(self) -> None:
        """Start afresh: nothing pending, the resampler cleared, the counters at zero."""
        self.buffer.reset()
        if self.resampler is not None:
            self.resampler.clear()
        self.samples_in = self.fed = 0


class DecoderOutput:
    """Decoded audio [rows, T] at the model's rate -> PCM at `to_rate`: the decoder's align-and-resample step
    (`DelayAlign`, then the resampler). `finish()` returns the delay's silence and the resampler's tail."""

    def __init__(self, delay: int, from_rate: int, to_rate: int, rows: int) -> None:
        self.align = DelayAlign(delay, rows)
        self.resampler = Resampler(from_rate, to_rate, rows) if from_rate != to_rate else None

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = self.align(audio)
        return audio if self.resampler is None else self.resampler(audio)

    def finish(self) -> np.ndarray:
        tail = self.align.tail()
        return tail if self.resampler is None else self.resampler(tail, last=True)


class TorchCoder:
    """`FrameCoder` of the torch model (any device): a group of streams is one batch of the model's own layers,
    each call from the group's state (`CodecModel.streaming_with`)."""

    def __init__(self, model: CodecModel) -> None:
        import torch  # here, not at the top: the ONNX Runtime paths never import it

        self.torch, self.model = torch, model
        self.device = next(model.parameters()).device
        self.layers = list(model.new_streaming_state(1))
        self.side_layers = {side: [n for n in self.layers if n.startswith(side + ".")] for side in SIDES}

    def new_state(self, side: str, rows: int) -> CodingState:
        full = self.model.new_streaming_state(rows)
        return CodingState(side, rows, {name: full[name] for name in self.side_layers[side]})

    def _bound(self, values: dict) -> dict:
        return {n: values.get(n, {}) for n in self.layers}  # layers of the other side are not called

    def encode(self, state: CodingState, audio: np.ndarray, levels: int) -> np.ndarray:
        if audio.shape[-1] == 0:
            return np.zeros((state.rows, levels * self.model.num_groups, 0), np.int64)
        return self._encode(state.values, audio, levels)

    def decode(self, state: CodingState, codes: np.ndarray) -> np.ndarray:
        if codes.shape[-1] == 0:
            return np.zeros((state.rows, 0), np.float32)
        return self._decode(state.values, [codes])

    def encode_batch(self, states: list[CodingState], audio: list[np.ndarray], levels: int) -> list[np.ndarray]:
        return self._batched(states, lambda values: self._encode(values, np.concatenate(audio), levels))

    def decode_batch(self, states: list[CodingState], codes: list[np.ndarray]) -> list[np.ndarray]:
        return self._batched(states, lambda values: self._decode(values, codes))

    def reset(self, state: CodingState, mask: np.ndarray | None = None) -> None:
        torch = self.torch
        with self.model.streaming_with(self._bound(state.values)):
            self.model.reset_streaming(None if mask is None else torch.as_tensor(mask, dtype=torch.bool))

    def _encode(self, values: dict, audio: np.ndarray, levels: int) -> np.ndarray:
        torch, model = self.torch, self.model
        x = torch.from_numpy(np.ascontiguousarray(audio))[:, None].to(self.device)
        with torch.no_grad(), model.streaming_with(self._bound(values)):
            return model.quantizer.encode(model.encoder(x), levels).cpu().numpy()

    def _decode(self, values: dict, codes: list[np.ndarray]) -> np.ndarray:
        torch, model = self.torch, self.model
        q = model.quantizer
        with torch.no_grad(), model.streaming_with(self._bound(values)):
            latent = [q.decode(torch.as_tensor(c, dtype=torch.long).to(self.device)) for c in codes]
            audio = model.decoder(latent[0] if len(latent) == 1 else torch.cat(latent))[:, 0]
            levels = torch.cat([torch.full((c.shape[0],), c.shape[1] // model.num_groups) for c in codes])
            return model.apply_level_gain(audio, levels.to(audio.device)).cpu().numpy()

    def _batched(self, states: list[CodingState], call) -> list[np.ndarray]:
        """`call(values)` on the states stacked along the batch axis; each state gets its rows of the next state."""
        torch = self.torch
        rows = [s.rows for s in states]
        first = states[0].values
        stacked = {n: {k: torch.cat([s.values[n][k] for s in states]) for k in first[n]} for n in first}
        out = call(stacked)
        for n, layer in stacked.items():
            for k, value in layer.items():
                for s, part in zip(states, torch.split(value, rows), strict=True):
                    s.values[n][k] = part
        return np.split(out, np.cumsum(rows)[:-1])
