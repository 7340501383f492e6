"""`torchrun --nproc_per_node 2 -m codec tokens` (gloo, CPU) writes exactly what one process writes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from codec.tokens import extract_tokens, open_tokens
from tests.conftest import tone

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_equals_one_process(tmp_path, tiny_model, tiny_model_file):
    beside = Path(sys.executable).parent / "torchrun"  # the torchrun of this interpreter's torch
    torchrun = str(beside) if beside.is_file() else shutil.which("torchrun") or pytest.skip("no torchrun on PATH")
    data = tmp_path / "audio"
    data.mkdir()
    for i, seconds in enumerate([0.21, 0.05, 0.33, 0.12, 0.27, 0.02, 0.4]):
        sf.write(data / f"u{i}.wav", tone(seconds, 8000, seed=i).T, 8000)
    (data / "broken.flac").write_bytes(b"fLaC and then nothing")
    extract_tokens(tiny_model, data, tmp_path / "one", levels=3, fmt="packed", pattern="delay", num_workers=0,
                   progress=False)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "codec", "tokens",
           "--data", str(data), "--out", str(tmp_path / "two"), "-m", str(tiny_model_file), "--levels", "3",
           "--format", "packed", "--pattern", "delay", "--num-workers", "1", "--batch-size", "2", "-q"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7 of 8 utterances" in result.stdout  # rank 0 reports once, for both
    for name in ("manifest.json", "utt2num_frames", "failed.list", "tokens.bin", "tokens.idx.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert open_tokens(tmp_path / "two").ids == [f"u{i}" for i in range(7)]
    assert (tmp_path / "two" / "failed.list").read_text().startswith("broken unreadable:")
