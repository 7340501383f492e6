"""Shared model calls for many live streams: the frame batcher behind `codec serve`.

Each live stream (`EncodeStream`, `DecodeStream`) holds its own state (plain tensors or arrays, one row per
channel) and hands its frames, one at a time, to a `FrameBatcher`. On every tick the batcher takes the one frame
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

from codec.onnx_runtime import pad_levels
from codec.rates import check_levels
from codec.streaming import DelayAlign, Resampler, tail_padding

SIDES = ("encoder", "decoder")
MAX_ROWS = 64  # rows (stream channels) per model call; more waiting go into the next tick


class _TorchFrames:
    """One-frame model calls on stacked rows, for the torch model (any device)."""

    def __init__(self, model) -> None:
        import torch  # here, not at the top: an ONNX Runtime server never imports it

        self.torch, self.model = torch, model
        self.device = next(model.parameters()).device
        self.layers = list(model.new_streaming_state(1))
        self.side_layers = {side: [n for n in self.layers if n.startswith(side + ".")] for side in SIDES}

    def new_state(self, side: str, rows: int) -> dict:
        full = self.model.new_streaming_state(rows)
        return {name: full[name] for name in self.side_layers[side]}

    def run(self, side: str, streams: list, inputs: list) -> list[np.ndarray]:
        torch = self.torch
        rows = [s.rows for s in streams]
        names = self.side_layers[side]
        stacked = {n: {k: torch.cat([s.state[n][k] for s in streams]) for k in streams[0].state[n]} for n in names}
        bound = {n: stacked.get(n, {}) for n in self.layers}  # layers of the other side are not called
        with torch.no_grad(), self.model.streaming_with(bound):
            if side == "encoder":
                x = torch.from_numpy(np.concatenate(inputs))[:, None].to(self.device)
                levels = max(s.levels for s in streams)
                out = self.model.quantizer.encode(self.model.encoder(x), levels).cpu().numpy()
            else:
                q = self.model.quantizer
                latent = torch.cat([q.decode(torch.from_numpy(c).to(self.device)) for c in inputs])
                out = self.model.decoder(latent)[:, 0].cpu().numpy()
        for n in names:
            for k, value in stacked[n].items():
                for s, part in zip(streams, torch.split(value, rows), strict=True):
                    s.state[n][k] = part
        return np.split(out, np.cumsum(rows)[:-1])


class _OnnxFrames:
    """One-frame graph calls on stacked rows, for a `codec.runtime.OnnxCodec` (graphs with a batch axis; graphs
    exported before the axis existed are called once per stream)."""

    def __init__(self, codec) -> None:
        self.manifest, self.sessions = codec.manifest, codec.sessions
        self.batched = self.manifest.get("batch") == "any"

    def new_state(self, side: str, rows: int) -> dict:
        return {s["name"]: np.zeros([rows, *s["shape"][1:]], np.float32) for s in self.manifest[side]["states"]}

    def run(self, side: str, streams: list, inputs: list) -> list[np.ndarray]:
        if not self.batched:
            return [self._call(side, [s], [x])[0] for s, x in zip(streams, inputs, strict=True)]
        return self._call(side, streams, inputs)

    def _call(self, side: str, streams: list, inputs: list) -> list[np.ndarray]:
        spec = self.manifest[side]
        if side == "encoder":
            x = np.concatenate(inputs)[:, None]
        else:
            x = np.concatenate([pad_levels(c, self.manifest) for c in inputs])
        feed = {s["name"]: np.concatenate([st.state[s["name"]] for st in streams]) for s in spec["states"]}
        alone = x.shape[0] == 1  # one row: the one-frame graph, bitwise the same and faster (codec.onnx_runtime)
        outputs = self.sessions.get(side, frame=alone).run(None, {spec["input"]: x, **feed})
        rows = np.cumsum([s.rows for s in streams])[:-1]
        for s, value in zip(spec["states"], outputs[1:], strict=True):
            for st, part in zip(streams, np.split(value, rows), strict=True):
                st.state[s["name"]] = part
        out = outputs[0] if side == "encoder" else outputs[0][:, 0]
        return np.split(out, rows)


class FrameBatcher:
    """Codes one frame of every waiting stream per tick, in one model call on a worker thread.

    `model`: a `CodecModel` or a `codec.runtime.OnnxCodec`. Make streams with `encoder()` / `decoder()` and use
    them from coroutines on one event loop; the batcher starts its tick task on first use.
    `ticks` and `rows_coded` count the work done (rows_coded / ticks is the mean batch).
    """

    def __init__(self, model, *, max_rows: int = MAX_ROWS) -> None:
        self.model = model
        self.frames = _OnnxFrames(model) if model.runtime == "onnx" else _TorchFrames(model)
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
                for i, out in zip(index, self.frames.run(side, streams, inputs), strict=True):
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
        rate = model.sample_rate
        self._resampler = Resampler(sample_rate, rate, rows) if sample_rate != rate else None
        self.state = batcher.frames.new_state("encoder", rows)
        self.pending = np.zeros((rows, 0), np.float32)
        self.samples_in = self._fed = 0

    async def push(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm, np.float32)
        self.samples_in += pcm.shape[1]
        return await self._frames(pcm if self._resampler is None else self._resampler(pcm))

    async def flush(self) -> np.ndarray:
        tail = np.zeros((self.rows, 0), np.float32)
        if self._resampler is not None:
            tail = self._resampler(tail, last=True)
            missing = tail_padding(self.samples_in, self.sample_rate, self.batcher.model.sample_rate, self._fed,
                                   tail.shape[1])  # fmt: skip
            tail = np.pad(tail, ((0, 0), (0, missing)))
        tail = np.concatenate([self.pending, tail], 1)
        self.pending = self.pending[:, :0]
        return await self._frames(np.pad(tail, ((0, 0), (0, -tail.shape[1] % self.hop))))

    async def _frames(self, x: np.ndarray) -> np.ndarray:
        self._fed += x.shape[1]
        pending = np.concatenate([self.pending, x], 1)
        whole = pending.shape[1] - pending.shape[1] % self.hop
        self.pending = pending[:, whole:]
        codes = []
        for i in range(0, whole, self.hop):
            frame = np.ascontiguousarray(pending[:, i : i + self.hop])
            codes.append((await self.batcher.submit("encoder", self, frame))[:, : self.width])
        if not codes:
            return np.zeros((self.rows, self.width, 0), np.int64)
        return np.concatenate(codes, -1).astype(np.int64, copy=False)


class DecodeStream:
    """One live decode stream of `rows` channels coded through a batcher.

    `await push(codes [rows, n * G, F])` -> float PCM [rows, T] at `sample_rate` (F frames at the model's rate,
    fewer or more while a resampler fills or drains, `model.delay` fewer on the first); `flush()` -> the
    resampler's tail and the delay's silence (`codec.streaming.DelayAlign`).
    """

    def __init__(self, batcher: FrameBatcher, *, rows: int, sample_rate: int) -> None:
        self.batcher, self.rows = batcher, rows
        rate = batcher.model.sample_rate
        self._resampler = Resampler(rate, sample_rate, rows) if sample_rate != rate else None
        self._align = DelayAlign(batcher.model.delay, rows)
        self.state = batcher.frames.new_state("decoder", rows)

    async def push(self, codes) -> np.ndarray:
        codes = np.asarray(codes, np.int64)
        frames = [
            await self.batcher.submit("decoder", self, np.ascontiguousarray(codes[..., f : f + 1]))
            for f in range(codes.shape[-1])
        ]
        audio = self._align(np.concatenate(frames, 1) if frames else np.zeros((self.rows, 0), np.float32))
        return audio if self._resampler is None else self._resampler(audio)

    def flush(self) -> np.ndarray:
        tail = self._align.tail()
        return tail if self._resampler is None else self._resampler(tail, last=True)
