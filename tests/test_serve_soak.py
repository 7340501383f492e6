"""`codec serve` over time and under fuzz: tools/soak_serve.py for two minutes and tools/fuzz_serve.py on a few
hundred cases, each against a server in its own process (the long runs and their figures: docs/ROBUSTNESS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import child_env

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("websockets")


def _tool(name: str, *args: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == (0 if summary["ok"] else 1)
    return summary


@pytest.mark.slow
def test_two_minute_soak_with_misbehaving_clients(tiny_model_file):
    summary = _tool("soak_serve.py", "--minutes", "2", "--sessions", "16", "--every", "10", "--model",
                    str(tiny_model_file), "--runtime", "onnx", "--clips", "4", timeout=600)  # fmt: skip
    assert summary["ok"], summary["failures"]
    counts = summary["counts"]
    assert counts["good"] >= 50 and sum(counts.get(k, 0) for k in ("abrupt", "garbage", "slow_reader")) >= 5
    assert summary["restarts"] == 0 and summary["rss_growth_mib"] <= 64


@pytest.mark.slow
def test_fuzzed_protocol_messages_leave_the_server_up_and_a_bystander_exact(tiny_model_file):
    summary = _tool("fuzz_serve.py", "--cases", "400", "--seed", "3", "--model", str(tiny_model_file), "--runtime",
                    "onnx", "--bystander-every", "100", timeout=900)  # fmt: skip
    assert summary["ok"], summary["failures"]
    assert summary["cases"] == 400 and summary["bystanders_exact"] == summary["bystanders"] == 5
    outcomes = summary["outcomes"]
    assert outcomes.get("closed 1008", 0) > 100 and outcomes.get("closed 1009", 0) > 0  # both refusals exercised
