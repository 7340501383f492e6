"""Run graphs written by `codec export-onnx` with ONNX Runtime: one frame per call, state held as numpy arrays.

This module needs only numpy and onnxruntime (the package's `__init__` still imports torch; the standalone
example in docs/ONNX.md does not).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codec.errors import CodecError


def load_manifest(onnx_dir: str | Path) -> dict:
    path = Path(onnx_dir) / "manifest.json"
    if not path.is_file():
        raise CodecError(f"{onnx_dir} holds no manifest.json; write one with `codec export-onnx MODEL {onnx_dir}`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "codec-onnx" or manifest.get("format_version") != 1:
        raise CodecError(f"{path} is not a codec ONNX manifest of format version 1; export the model again")
    return manifest


class OnnxSide:
    """One direction (encoder or decoder) of one stream: `step(x)` codes one frame and keeps the state.

    Args:
        onnx_dir: a folder written by `codec export-onnx`. side: 'encoder' or 'decoder'.
        threads: ONNX Runtime intra-op threads (1 = one core). The graphs code one stream (batch 1).
    """

    def __init__(self, onnx_dir: str | Path, side: str, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CodecError("the ONNX runtime path needs the onnx extra: pip install -e '.[onnx]'") from None
        self.manifest = load_manifest(onnx_dir)
        self.spec = self.manifest[side]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        path = Path(onnx_dir) / self.spec["file"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for missing and damaged files
            raise CodecError(f"cannot load {path} ({e}); export the model again with `codec export-onnx`") from None
        self.reset()

    def reset(self) -> None:
        """Every stream starts afresh (zero state)."""
        self.state = {s["name"]: np.zeros(s["shape"], np.float32) for s in self.spec["states"]}

    def step(self, x: np.ndarray) -> np.ndarray:
        """Encoder: audio [B, C, hop] float32 -> codes [B, levels * G, 1]. Decoder: codes [B, L * G, 1] -> audio."""
        outputs = self.session.run(None, {self.spec["input"]: x, **self.state})
        for s, value in zip(self.spec["states"], outputs[1:], strict=True):
            self.state[s["name"]] = value
        return outputs[0]


def pad_levels(codes: np.ndarray, manifest: dict) -> np.ndarray:
    """Codes [B, n * G, F] of any n levels -> [B, num_levels * G, F] for the decoder graph (missing = pad_code)."""
    B, NC, F = codes.shape
    full = manifest["num_levels"] * manifest["num_groups"]
    return np.concatenate([codes, np.full((B, full - NC, F), manifest["pad_code"], np.int64)], axis=1)
