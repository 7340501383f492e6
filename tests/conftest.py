"""Shared fixtures: tiny models and generated audio (the suite never reads ../shared/data)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.checkpoint import save_model
from codec.config import builtin_config_path, load_model_config
from codec.models.codec import build_model

# `--runtime auto` picks ONNX Runtime when a model's graphs sit in the user's cache: the suite gets its own,
# empty cache, so no test depends on what the machine's user exported before (tests that want the cache
# set CODEC_CACHE_DIR themselves)
os.environ["CODEC_CACHE_DIR"] = tempfile.mkdtemp(prefix="codec-test-cache-")

torch.set_num_threads(1)


def make_tiny(**overrides) -> torch.nn.Module:
    """A tiny random model (8 kHz, hop 12, 2 groups x 4 levels of 16 codes); `overrides` are dotted config keys."""
    items = [f"model.{k}={v}" for k, v in overrides.items()]
    torch.manual_seed(0)
    return build_model(load_model_config(builtin_config_path("tiny"), items)).eval()


def make_spectral(level_type: str = "vq", **overrides) -> torch.nn.Module:
    """A tiny random spectral-family model (tiny_spectral.yaml: 8 kHz, hop 16, 2 groups x 4 levels of 16 codes;
    `level_type` vq or fsq) whose levels are warm-started on a test tone, as training starts them (k-means for vq,
    a PCA per level for fsq), so that every level's codes spread over the codebook."""
    name = "tiny_spectral" if level_type == "vq" else "tiny_spectral_fsq"
    items = [f"model.{k}={v}" for k, v in overrides.items()]
    torch.manual_seed(0)
    model = build_model(load_model_config(builtin_config_path(name), items)).eval()
    x = torch.from_numpy(tone(1.0, model.sample_rate, channels=4, seed=11))[:, None]
    with torch.no_grad():
        model.quantizer.init_codebooks(model.encoder(model._pad_to_frames(x)))
    return model


def tone(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A speech-like test signal [C, T]: harmonic tones with vibrato plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for c in range(channels):
        f0 = 140 + 40 * c + 20 * np.sin(2 * np.pi * 3 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2)
        out.append(0.3 * x + 0.01 * rng.standard_normal(t.size))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(tiny_model, path, {"recipe": "tests (random init)"})
    return path


@pytest.fixture
def wav_file(tmp_path):
    """A 1.3 s mono 8 kHz wav."""
    path = tmp_path / "in.wav"
    sf.write(path, tone(1.3, 8000).T, 8000)
    return path


def start_server(model, bounds=None, access=None) -> str:
    """Run `codec.server.serve.serve(model)` on a free loopback port in a daemon thread; returns its ws:// URL."""
    import asyncio
    import socket
    import threading

    from codec.server.serve import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    ready = asyncio.Event()
    serving = serve(model, "127.0.0.1", port, ready, bounds, access)
    thread = threading.Thread(target=lambda: loop.run_until_complete(serving))
    thread.daemon = True
    thread.start()
    for _ in range(1200):  # a loaded machine takes seconds to warm the model up
        if ready.is_set():
            break
        threading.Event().wait(0.05)
    return f"ws://127.0.0.1:{port}"
