"""Shared model calls for many live streams: the frame batcher behind `codec serve`.

Each live stream (`EncodeStream`, `DecodeStream`) holds its own `codec.frames.CodingState` (one row per channel)
and hands its frames, one at a time, to a `FrameBatcher`. On every tick the batcher takes the one frame
each waiting stream has ready, stacks them and their states along the batch axis, codes them in one model call
on a worker thread (so the event loop keeps receiving and sending meanwhile), and gives every stream its codes
(or audio) and its next state back. Streams join and leave at any tick; under load the batches grow by
themselves, since everything that arrived while one tick was being coded goes into the next.

Equal codes. Every frame of a stream is coded by a one-frame call from the stream's own state, whatever else is
in the batch:
- ONNX Runtime (`--runtime onnx`): each row of a batch is computed with the arithmetic of the one-frame graph
  (docs/STREAMING.md says how the graphs ensure it), so a stream's codes are bitwise those of the same audio coded
  alone frame by frame (`codec stream-encode --runtime onnx`, `OnnxEncoder`): tested in tests/test_batching.py.
- torch: convolution kernels depend on the batch size, so a frame's latent differs from the alone-coded one in
  the last bits (about 3e-6 measured); codes are equal except where the residual search meets a near-tie, as for
  chunking on the torch path (docs/STREAMING.md).
A stream's levels are a prefix of the batch's deepest search (the search is level by level), so streams at
different bitrates share a call. Decoded audio equals the alone-decoded audio to float rounding.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from codec.frames import SIDES, DecoderOutput, EncoderInput
from codec.rates import check_levels

MAX_ROWS = 64  # rows (stream channels) per model call; more waiting go into the next tick


class FrameBatcher:
    """Codes one frame of every waiting stream per tick, in one model call on a worker thread.

    `model`: a `CodecModel` or a `codec.runtimes.runtime.OnnxCodec`. Make streams with `encoder()` / `decoder()` and use
    them from coroutines on one event loop; the batcher starts its tick task on first use.
    `ticks` and `rows_coded` count the work done (rows_coded / ticks is the mean batch).
    """

    def __init__(self, model, *, max_rows: int = MAX_ROWS) -> None:
        self.model = model
        self.coder = model.frame_coder(live=True)  # codec.frames: one frame of many streams per call
        self.max_rows = max_rows
        self.ticks = self.rows_coded = 0
        self._queue: list[tuple[str, object, np.ndarray, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="codec-frames")

    def encoder(self, *, levels: int, rows: int = 1, sample_rate: int | None = None) -> EncodeStream:
        levels = check_levels(levels, self.model.num_levels, "levels")
        return EncodeStream(self, levels=levels, rows=rows, sample_rate=sample_rate or self.model.sample_rate)

    def decoder(self, *, rows: int = 1, sample_rate: int | None = None) -> DecodeStream:
        return DecodeStream(self, rows=rows, sample_rate=sample_rate or self.model.sample_rate)

    def warm_up(self) -> None:
        """Code one frame of silence each way now, alone and as a batch of two (first calls load kernels and, on
        ONNX Runtime, the one-frame and the batched graphs' sessions: about a second)."""
        silence = np.zeros((1, self.model.hop_length), np.float32)
        for n in (1, 2):
            encoders, decoders = [self.encoder(levels=1) for _ in range(n)], [self.decoder() for _ in range(n)]
            codes = self._code([("encoder", e, silence) for e in encoders])
            self._code([("decoder", d, c) for d, c in zip(decoders, codes, strict=True)])
        self.ticks = self.rows_coded = 0  # the counters are of the streams' work

    async def submit(self, side: str, stream, data: np.ndarray) -> np.ndarray:
        """Code one frame of `stream` in the next tick: audio [rows, hop] -> codes [rows, levels * G, 1], or codes
        [rows, n * G, 1] -> audio [rows, hop]."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        self._queue.append((side, stream, data, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # frames made ready in this turn of the loop join this tick
            jobs, rows = [], 0
            while self._queue and (not jobs or rows + self._queue[0][1].rows <= self.max_rows):
                job = self._queue.pop(0)
                if not job[3].done():  # its connection went away while it waited
                    jobs.append(job)
                    rows += job[1].rows
            if self._queue:
                self._wake.set()
            if not jobs:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._code, [job[:3] for job in jobs])
            except Exception as e:  # noqa: BLE001 - every stream of the tick hears of it; the batcher goes on
                for job in jobs:
                    if not job[3].done():
                        job[3].set_exception(e)
                continue
            for job, result in zip(jobs, results, strict=True):
                if not job[3].done():
                    job[3].set_result(result)

    def _code(self, jobs: list) -> list[np.ndarray]:
        """On the worker thread: one model call per side for the frames of `jobs`, results in their order."""
        results: list = [None] * len(jobs)
        for side in SIDES:
            index = [i for i, job in enumerate(jobs) if job[0] == side]
            if index:
                streams, inputs = [jobs[i][1] for i in index], [jobs[i][2] for i in index]
                states = [stream.state for stream in streams]
                if side == "encoder":  # a stream's levels are a prefix of the deepest search of the tick
                    outs = self.coder.encode_batch(states, inputs, max(stream.levels for stream in streams))
                else:
                    outs = self.coder.decode_batch(states, inputs)
                for i, out in zip(index, outs, strict=True):
                    results[i] = out
        self.ticks += 1
        self.rows_coded += sum(job[1].rows for job in jobs)
        return results

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False)


class EncodeStream:
    """One live encode stream of `rows` channels (float PCM [rows, T] at `sample_rate`) coded through a batcher.

    `await push(pcm)` -> codes [rows, levels * G, F] (numpy int64) of the frames this chunk completes;
    `await flush()` -> codes of the rest, the last partial frame zero-padded as offline encoding does.
    """

    def __init__(self, batcher: FrameBatcher, *, levels: int, rows: int, sample_rate: int) -> None:
        model = batcher.model
        self.batcher, self.levels, self.rows, self.sample_rate = batcher, levels, rows, sample_rate
        self.width, self.hop = levels * model.num_groups, model.hop_length
        self.input = EncoderInput(sample_rate, model.sample_rate, rows, model.hop_length)
        self.state = batcher.coder.new_state("encoder", rows)

    async def push(self, pcm: np.ndarray) -> np.ndarray:
        return await self._frames(self.input.push(np.asarray(pcm, np.float32)))

    async def flush(self) -> np.ndarray:
        whole, last = self.input.finish()
        return np.concatenate([await self._frames(whole), await self._frames(last)], -1)

    async def _frames(self, x: np.ndarray) -> np.ndarray:
        """Codes of whole frames [rows, F * hop], submitted one frame at a time."""
        codes = []
        for i in range(0, x.shape[1], self.hop):
            frame = np.ascontiguousarray(x[:, i : i + self.hop])
            codes.append((await self.batcher.submit("encoder", self, frame))[:, : self.width])
        if not codes:
            return np.zeros((self.rows, self.width, 0), np.int64)
        return np.concatenate(codes, -1).astype(np.int64, copy=False)


class DecodeStream:
    """One live decode stream of `rows` channels coded through a batcher.

    `await push(codes [rows, n * G, F])` -> float PCM [rows, T] at `sample_rate` (F frames at the model's rate,
    fewer or more while a resampler fills or drains, `model.delay` fewer on the first); `flush()` -> the
    resampler's tail and the delay's silence (`codec.frames.DecoderOutput`).
    """

    def __init__(self, batcher: FrameBatcher, *, rows: int, sample_rate: int) -> None:
        self.batcher, self.rows = batcher, rows
        model = batcher.model
        self.output = DecoderOutput(model.delay, model.sample_rate, sample_rate, rows)
        self.state = batcher.coder.new_state("decoder", rows)

    async def push(self, codes) -> np.ndarray:
        codes = np.asarray(codes, np.int64)
        frames = [
            await self.batcher.submit("decoder", self, np.ascontiguousarray(codes[..., f : f + 1]))
            for f in range(codes.shape[-1])
        ]
        return self.output.push(np.concatenate(frames, 1) if frames else np.zeros((self.rows, 0), np.float32))

    def flush(self) -> np.ndarray:
        return self.output.finish()
