"""Classical baselines round-trip real encoders (opus-tools' opusenc/opusdec, pycodec2's libcodec2)."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

from codec.errors import CodecError
from codec.eval import baselines as B
from codec.eval.metrics import si_sdr
from tests.test_eval_metrics import speech_like


def require(available: bool, what: str) -> None:
    """CI installs the real tools, so there a missing one fails; on a developer machine it skips."""
    if not available:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{what} is not installed")


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


@pytest.mark.parametrize("content", ["speech", "music"])
def test_opus_round_trip(content):
    require(shutil.which("opusenc") is not None, "opus-tools (apt-get install opus-tools)")
    x = speech_like(1.0, 16000)
    results = {kbps: B.Opus(kbps).run(x, 16000, content) for kbps in B.OPUS_KBPS}
    for kbps, coded in results.items():
        assert coded.audio.shape == x.shape and coded.audio.dtype == np.float32
        assert f"--bitrate {kbps} --hard-cbr --{content}" in coded.how
        payload = kbps * 1000 * 1.0  # 1 s of hard CBR
        assert payload <= coded.num_bits <= payload + 8 * 500  # plus Ogg pages and the Opus headers
        assert abs(rms_db(coded.audio) - rms_db(x)) < 3
    assert si_sdr(x, results[12].audio)["si_sdr"] > 5  # a waveform codec: the output lines up with the input


def test_opus_decodes_at_a_rate_opus_does_not_support():
    require(shutil.which("opusenc") is not None, "opus-tools (apt-get install opus-tools)")
    x = speech_like(0.5, 22050)
    coded = B.Opus(12).run(x, 22050, "speech")
    assert coded.audio.shape == x.shape and "--rate 48000" in coded.how and "48000 -> 22050" in coded.how


def test_codec2_round_trip():
    try:
        import pycodec2  # noqa: F401
    except ImportError:
        require(False, "pycodec2 (pip install pycodec2)")
    x = speech_like(1.0, 16000)
    for bps in B.CODEC2_BPS:
        coded = B.Codec2(bps).run(x, 16000, "speech")
        assert coded.audio.shape == x.shape and np.isfinite(coded.audio).all()
        assert coded.num_bits == pytest.approx(bps * 1.0, rel=0.05)  # whole frames of 20 or 40 ms
        assert abs(rms_db(coded.audio) - rms_db(x)) < 10  # a parametric vocoder: level kept, waveform not
        assert "16000 -> 8000" in coded.how and f"Codec2({bps})" in coded.how


def test_missing_tools_name_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CodecError, match=r"opus-tools \(apt-get install opus-tools\)"):
        B.make_baselines("opus")
    monkeypatch.setitem(sys.modules, "pycodec2", None)
    with pytest.raises(CodecError, match="pip install pycodec2"):
        B.make_baselines("codec2")
    with pytest.raises(CodecError, match="unknown baseline.*choose from opus, codec2"):
        B.make_baselines("mp3")
    assert B.make_baselines("none") == ([], [])
    # a recipe skips them instead, naming what to install, one entry per rate it would have run
    systems, not_run = B.make_baselines("opus,codec2", skip_missing=True)
    assert systems == [] and [e["label"] for e in not_run] == [
        *(f"opus {k:g} kbps" for k in B.OPUS_KBPS),
        *(f"codec2 {b / 1000:g} kbps" for b in B.CODEC2_BPS),
    ]
    assert "opus-tools" in not_run[0]["why"] and "pip install pycodec2" in not_run[-1]["why"]
