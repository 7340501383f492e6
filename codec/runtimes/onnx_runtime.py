"""Run graphs written by `codec export-onnx` with ONNX Runtime: one frame per call, state held as numpy arrays.

This module needs only numpy and onnxruntime (`import codec` does not import torch; tests/test_onnx.py checks
that this module runs with torch unimportable).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codec.errors import CodecError
from codec.frames import CodingState, FrameBuffer
from codec.rates import check_levels

# The exporter's revision (manifest "graph_revision"; cached graphs live in a folder named with it). 2: one-frame
# graphs beside the general ones, 2-d convolutions, constant pre-transposed codebooks, a search whose rows do not
# depend on the batch. 3: the spectral family over rows (channels last: MatMuls, LayerNormalization, the STFT and
# inverse DFT as one MatMul each, depthwise buffers frames-first) and FSQ levels searched by rounding. Graphs of an
# older revision still run, slower.
GRAPH_REVISION = 3


# what every manifest of format version 1 holds (per side: `SIDE_KEYS`)
MANIFEST_KEYS = ("model", "model_id", "sample_rate", "channels", "hop_length", "num_groups", "num_levels",
                 "codebook_size", "bits_per_code", "levels", "pad_code", "encoder", "decoder")  # fmt: skip
SIDE_KEYS = ("file", "input", "output", "states")


def load_manifest(onnx_dir: str | Path) -> dict:
    path = Path(onnx_dir) / "manifest.json"
    if not path.is_file():
        raise CodecError(f"{onnx_dir} holds no manifest.json; write one with `codec export-onnx MODEL {onnx_dir}`")
    again = f"delete {onnx_dir} and export the model again (`codec export-onnx`, or a --runtime onnx run)"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CodecError(f"{path} cannot be read ({e}); {again}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "codec-onnx" or manifest.get("format_version") != 1:
        raise CodecError(f"{path} is not a codec ONNX manifest of format version 1; {again}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    missing += [f"{side}.{k}" for side in ("encoder", "decoder") if isinstance(manifest.get(side), dict)
                for k in SIDE_KEYS if k not in manifest[side]]  # fmt: skip
    if missing or not all(isinstance(manifest.get(side), dict) for side in ("encoder", "decoder")):
        raise CodecError(f"{path} lacks {', '.join(missing) or 'its encoder and decoder entries'}; {again}")
    return manifest


def new_session(onnx_dir: str | Path, file: str, *, threads: int = 1):
    """An ONNX Runtime CPU session of one graph; `threads` intra-op threads (1 = one core)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CodecError(
            "the ONNX Runtime path needs onnxruntime (a dependency of codec): pip install onnxruntime"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads > 1:  # waiting threads sleep: a spinning one steals the core its partner (or another process) needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = Path(onnx_dir) / file
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for missing and damaged files
        raise CodecError(f"cannot load {path} ({e}); export the model again with `codec export-onnx`") from None


class Sessions:
    """The ONNX Runtime sessions of one exported folder, made on first use and shared by every stream that is
    given this object: per side ('encoder', 'decoder') the graph of any batch and frame count, and the one-frame
    graph of one stream (`frame=True`; manifest `frame_file`, since graph revision 2: fixed shapes, which ONNX
    Runtime runs about 1.5x faster per live frame; folders without one use the general graph).

    `damaged`: the advice of the error raised when a graph cannot be loaded (default: export it again)."""

    def __init__(
        self, onnx_dir: str | Path, manifest: dict | None = None, *, threads: int = 1, damaged: str | None = None
    ) -> None:
        self.onnx_dir, self.threads, self.damaged = Path(onnx_dir), threads, damaged
        self.manifest = manifest or load_manifest(onnx_dir)
        self._made: dict[str, object] = {}

    def get(self, side: str, *, frame: bool = False):
        spec = self.manifest[side]
        file = spec["frame_file"] if frame and "frame_file" in spec else spec["file"]
        if file not in self._made:
            try:
                self._made[file] = new_session(self.onnx_dir, file, threads=self.threads)
            except CodecError:
                if self.damaged is None:
                    raise
                raise CodecError(f"the ONNX graphs in {self.onnx_dir} are damaged; {self.damaged}") from None
        return self._made[file]

    def __getstate__(self) -> dict:  # worker processes make their own sessions
        return {**self.__dict__, "_made": {}}


class OnnxSide:
    """One direction (encoder or decoder) of one stream: `step(x)` codes one frame and keeps the state.

    Args:
        onnx_dir: a folder written by `codec export-onnx`. side: 'encoder' or 'decoder'.
        threads: ONNX Runtime intra-op threads (1 = one core). This object holds one stream's state (batch 1;
        the graphs take any batch, which `codec.server.batching` uses to code many streams per call).
        sessions: a `Sessions` of this folder to share with other streams (then `threads` is unused).
        manifest: the folder's manifest, already read (streams that share sessions share it too).
        frame: whether calls will be mostly one frame (a live stream); that graph is loaded now (a damaged one is
        reported here).

    With `frame`, a call of one frame runs the one-frame graph (where the folder has one), a block of frames the
    general graph; without it (files: blocks of frames) every call runs the general graph, so a file's last
    single frame costs no second session (about 0.1 s of a short file's start). The encoder's two graphs give
    bitwise the same codes and states for one frame (tests/test_onnx.py).
    """

    def __init__(
        self, onnx_dir: str | Path, side: str, *, threads: int = 1, sessions: Sessions | None = None,
        manifest: dict | None = None, frame: bool = True,
    ) -> None:  # fmt: skip
        self.sessions = sessions or Sessions(onnx_dir, manifest, threads=threads)
        self.manifest = self.sessions.manifest
        self.side, self.spec, self.frame = side, self.manifest[side], frame
        self.sessions.get(side, frame=frame)
        self.frame_length = self.manifest["hop_length"] if side == "encoder" else 1  # of the input's last axis
        # two sets of state arrays: a one-frame call reads one set and writes the next state into the other (ONNX
        # Runtime writes straight into them: no arrays allocated per call), then they swap
        self._buffers = [{s["name"]: np.zeros(s["shape"], np.float32) for s in self.spec["states"]} for _ in "ab"]
        self._bindings: list | None = None  # made on the first one-frame call
        self.reset()

    def reset(self) -> None:
        """Every stream starts afresh (zero state)."""
        for buffer in self._buffers:
            for array in buffer.values():
                array.fill(0)
        self._turn = 0
        self.state = self._buffers[0]  # the current state, name -> array

    def step(self, x: np.ndarray) -> np.ndarray:
        """Encoder: audio [B, C, F * hop] float32 -> codes [B, levels * G, F]. Decoder: codes [B, L * G, F] -> audio.

        F is 1, or any number when the manifest says `"frames_per_call": "any"` (graphs exported since then)."""
        if self.frame and x.shape[0] == 1 and x.shape[-1] == self.frame_length:
            return self._frame(x)
        outputs = self.sessions.get(self.side).run(None, {self.spec["input"]: x, **self.state})
        for s, value in zip(self.spec["states"], outputs[1:], strict=True):
            np.copyto(self.state[s["name"]], value)
        return outputs[0]

    def _frame(self, x: np.ndarray) -> np.ndarray:
        """One frame of one stream through the one-frame graph, inputs and outputs bound to fixed arrays (about
        0.04 ms less per call than `run`, which converts and allocates every state on every call)."""
        if self._bindings is None:
            self._bind(x)
        np.copyto(self._input, x.reshape(self._input.shape), casting="same_kind")
        self.sessions.get(self.side, frame=True).run_with_iobinding(self._bindings[self._turn])
        self._turn ^= 1
        self.state = self._buffers[self._turn]
        return self._output.copy()

    def _bind(self, x: np.ndarray) -> None:
        session = self.sessions.get(self.side, frame=True)
        m = self.manifest
        self._input = np.zeros(x.shape, x.dtype)
        if self.side == "encoder":
            self._output = np.zeros((1, m["levels"] * m["num_groups"], 1), np.int64)
        else:
            self._output = np.zeros((1, m["channels"], m["hop_length"]), np.float32)
        self._bindings = []
        for turn in (0, 1):
            binding = session.io_binding()
            binding.bind_cpu_input(self.spec["input"], self._input)
            read, write = self._buffers[turn], self._buffers[1 - turn]
            for s in self.spec["states"]:
                binding.bind_cpu_input(s["name"], read[s["name"]])
                out = write[s["name"]]
                binding.bind_output(f"{s['name']}_next", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            out = self._output
            binding.bind_output(self.spec["output"], "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
            self._bindings.append(binding)


def pad_levels(codes: np.ndarray, manifest: dict) -> np.ndarray:
    """Codes [B, n * G, F] of any n levels -> [B, num_levels * G, F] for the decoder graph (missing = pad_code)."""
    B, NC, F = codes.shape
    full = manifest["num_levels"] * manifest["num_groups"]
    return np.concatenate([codes, np.full((B, full - NC, F), manifest["pad_code"], np.int64)], axis=1)


def blocks_of(manifest: dict, frames_per_call: int) -> int:
    """How many frames one graph call may take: `frames_per_call`, or 1 for graphs that take one frame only."""
    if frames_per_call < 1:
        raise ValueError("frames_per_call must be at least 1")
    return frames_per_call if manifest.get("frames_per_call") == "any" else 1


class OnnxCoder:
    """The `codec.frames.FrameCoder` of ONNX Runtime: every row of a group is a stream of its own, an `OnnxSide`
    (its state arrays; the rows of a `CodingState`'s `values`), sharing `sessions`.

    `encode` / `decode` (a group coded alone: the files, the live streams) call the graphs row by row, on blocks of
    up to `frames_per_call` frames: with 1 (live) every frame is the same one-frame call on same-shaped arrays, so
    the codes are bitwise the same however the audio is chunked; more (files) is far cheaper, and equals the
    frame-by-frame codes except where rounding flips a near-tie of the search. `encode_batch` / `decode_batch`
    (the server's ticks) stack one frame of every row of every group into one call of the graph with a batch axis
    (the one-frame graph when it is one row: bitwise the same); graphs exported before that axis existed are
    called once per group."""

    def __init__(self, sessions: Sessions, *, frames_per_call: int = 1) -> None:
        self.sessions, self.manifest = sessions, sessions.manifest
        self.frame, self.block = frames_per_call == 1, blocks_of(self.manifest, frames_per_call)
        self.batched = self.manifest.get("batch") == "any"
        self.hop, self.groups = self.manifest["hop_length"], self.manifest["num_groups"]

    def new_state(self, side: str, rows: int) -> CodingState:
        lanes = [OnnxSide(self.sessions.onnx_dir, side, sessions=self.sessions, frame=self.frame) for _ in range(rows)]
        return CodingState(side, rows, lanes)

    def reset(self, state: CodingState, mask: np.ndarray | None = None) -> None:
        for lane, chosen in zip(state.values, [True] * state.rows if mask is None else np.asarray(mask, bool).tolist(),
                                strict=True):  # fmt: skip
            if chosen:
                lane.reset()

    def encode(self, state: CodingState, audio: np.ndarray, levels: int) -> np.ndarray:
        width, size = levels * self.groups, self.block * self.hop
        rows = []
        for lane, x in zip(state.values, audio, strict=True):
            x = x[None, None]  # [1, 1, F * hop]: one stream
            codes = [
                lane.step(np.ascontiguousarray(x[..., i : i + size]))[:, :width] for i in range(0, x.shape[-1], size)
            ]
            rows.append(np.concatenate(codes, -1) if codes else np.zeros((1, width, 0), np.int64))
        return np.concatenate(rows)

    def decode(self, state: CodingState, codes: np.ndarray) -> np.ndarray:
        full = pad_levels(np.asarray(codes, np.int64), self.manifest)
        rows = []
        for lane, c in zip(state.values, full, strict=True):
            audio = [lane.step(c[None, :, i : i + self.block]) for i in range(0, c.shape[-1], self.block)]
            rows.append(np.concatenate(audio, -1)[:, 0] if audio else np.zeros((1, 0), np.float32))
        return np.concatenate(rows)

    def encode_batch(self, states: list[CodingState], audio: list[np.ndarray], levels: int) -> list[np.ndarray]:
        return [codes[:, : levels * self.groups] for codes in self._batched("encoder", states, audio)]

    def decode_batch(self, states: list[CodingState], codes: list[np.ndarray]) -> list[np.ndarray]:
        return self._batched("decoder", states, [pad_levels(np.asarray(c, np.int64), self.manifest) for c in codes])

    def _batched(self, side: str, states: list[CodingState], inputs: list[np.ndarray]) -> list[np.ndarray]:
        if not self.batched:
            return [self._call(side, [s], [x])[0] for s, x in zip(states, inputs, strict=True)]
        return self._call(side, states, inputs)

    def _call(self, side: str, states: list[CodingState], inputs: list[np.ndarray]) -> list[np.ndarray]:
        spec = self.manifest[side]
        x = np.concatenate(inputs)[:, None] if side == "encoder" else np.concatenate(inputs)
        lanes = [lane for s in states for lane in s.values]
        feed = {s["name"]: np.concatenate([lane.state[s["name"]] for lane in lanes]) for s in spec["states"]}
        alone = x.shape[0] == 1  # one row: the one-frame graph, bitwise the same and faster
        outputs = self.sessions.get(side, frame=alone).run(None, {spec["input"]: x, **feed})
        for s, value in zip(spec["states"], outputs[1:], strict=True):
            for lane, part in zip(lanes, value, strict=True):
                np.copyto(lane.state[s["name"]], part[None])
        out = outputs[0] if side == "encoder" else outputs[0][:, 0]
        return np.split(out, np.cumsum([s.rows for s in states])[:-1])


class OnnxEncoder:
    """Audio chunks of any length -> codes of the frames they complete: one stream (batch 1) of the graphs in
    `onnx_dir`, audio [1, T] float32 at the model's rate (mono graphs).

    Samples wait in a `codec.frames.FrameBuffer` until a frame is whole, and are coded by an `OnnxCoder` on blocks
    of up to `frames_per_call` frames (1, the default: codes bitwise the same however the audio is chunked)."""

    def __init__(
        self,
        onnx_dir: str | Path,
        *,
        levels: int | None = None,
        threads: int = 1,
        sessions: Sessions | None = None,
        frames_per_call: int = 1,
        manifest: dict | None = None,
    ) -> None:
        sessions = sessions or Sessions(onnx_dir, manifest, threads=threads)
        self.coder = OnnxCoder(sessions, frames_per_call=frames_per_call)
        m = self.manifest = sessions.manifest
        fix = f"the graphs in {onnx_dir} search {m['levels']} levels: export them again with more"
        self.levels = m["levels"] if levels is None else check_levels(levels, m["levels"], "levels", fix)
        self.state = self.coder.new_state("encoder", 1)
        self.buffer = FrameBuffer(1, m["hop_length"])

    def reset(self) -> None:
        self.coder.reset(self.state)
        self.buffer.reset()

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Codes [1, levels * G, F] (int64) of the frames this chunk completes (F may be 0)."""
        return self.coder.encode(
            self.state, self.buffer.push(np.asarray(audio, np.float32).reshape(1, -1)), self.levels
        )

    def flush(self) -> np.ndarray:
        """Codes of the last partial frame, zero-padded (empty if nothing is pending); the stream may go on."""
        return self.coder.encode(self.state, self.buffer.flush(), self.levels)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Offline: codes [1, levels * G, ceil(T / hop)] of a whole signal [1, T] from a fresh state."""
        self.reset()
        codes = np.concatenate([self.push(audio), self.flush()], -1)
        self.reset()
        return codes


class OnnxDecoder:
    """Codes [1, n * G, F] of any level count n -> audio [1, 1, F * hop]: one decoder-graph call per frame, or per
    block of up to `frames_per_call` frames (cheaper; the audio then agrees with frame-by-frame decoding to float
    rounding). One stream, through an `OnnxCoder`."""

    def __init__(
        self, onnx_dir: str | Path, *, threads: int = 1, sessions: Sessions | None = None, frames_per_call: int = 1,
        manifest: dict | None = None,
    ) -> None:  # fmt: skip
        sessions = sessions or Sessions(onnx_dir, manifest, threads=threads)
        self.coder, self.manifest = OnnxCoder(sessions, frames_per_call=frames_per_call), sessions.manifest
        self.state = self.coder.new_state("decoder", 1)

    def reset(self) -> None:
        self.coder.reset(self.state)

    def push(self, codes: np.ndarray) -> np.ndarray:
        return self.coder.decode(self.state, np.asarray(codes, np.int64))[:, None]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Offline: audio of whole codes from a fresh state."""
        self.reset()
        audio = self.push(codes)
        self.reset()
        return audio
