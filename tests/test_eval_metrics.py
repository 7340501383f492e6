"""Metrics against known values and their reference implementations; skip rules; codebook statistics."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from codec.audio import resample
from codec.errors import CodecError
from codec.eval import metrics as M
from tests.conftest import tone

FAST = [m for m in M.METRICS.values() if m.name != "dnsmos"]  # DNSMOS (~1 s a call) has its own test


def speech_like(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """`tone` gated on and off every 250 ms: PESQ's voice activity detector needs pauses to find utterances."""
    x = tone(seconds, sample_rate, seed=seed)[0]
    t = np.arange(x.size) / sample_rate
    return (x * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)


def noisy(x: np.ndarray, level: float, seed: int = 1) -> np.ndarray:
    return (x + level * np.random.default_rng(seed).standard_normal(x.size)).astype(np.float32)


def test_identity_is_perfect():
    x = speech_like(2.0, 16000)
    values, skipped = M.score(x, x.copy(), 16000, FAST)
    assert skipped == {}
    assert values["pesq_wb"] == pytest.approx(4.644, abs=1e-3)  # P.862.2's ceiling
    assert values["pesq_nb"] == pytest.approx(4.549, abs=1e-3)  # P.862's ceiling (MOS-LQO mapping)
    assert values["stoi"] == pytest.approx(1.0, abs=1e-9)
    assert values["estoi"] == pytest.approx(1.0, abs=1e-9)
    assert values["si_sdr"] == M.SI_SDR_MAX
    assert values["mel_distance"] == 0.0
    assert values["stft_distance"] == 0.0


def test_si_sdr_of_a_scaled_copy_plus_orthogonal_noise_is_known():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(16000)
    ref -= ref.mean()
    n = rng.standard_normal(16000)
    n -= n.mean()
    n -= np.dot(n, ref) / np.dot(ref, ref) * ref  # orthogonal to ref, zero mean
    a, b = 0.5, 0.1
    expected = 10 * math.log10(a**2 * np.dot(ref, ref) / (b**2 * np.dot(n, n)))
    assert M.si_sdr(ref, a * ref + b * n)["si_sdr"] == pytest.approx(expected, abs=1e-9)
    # scale invariance: any gain on the output leaves it unchanged, and a scaled copy is perfect
    assert M.si_sdr(ref, 3.0 * (a * ref + b * n))["si_sdr"] == pytest.approx(expected, abs=1e-9)
    assert M.si_sdr(ref, -0.25 * ref)["si_sdr"] == M.SI_SDR_MAX


def test_pesq_and_stoi_match_the_reference_calls():
    from pesq import pesq
    from pystoi import stoi

    ref = speech_like(2.0, 16000)
    deg = noisy(ref, 0.02)
    values, _ = M.score(ref, deg, 16000, M.select_metrics("pesq_wb,pesq_nb,stoi,estoi"))
    assert values["pesq_wb"] == pesq(16000, ref, deg, "wb")
    ref8, deg8 = (resample(x[None], 16000, 8000)[0] for x in (ref, deg))
    assert values["pesq_nb"] == pesq(8000, ref8, deg8, "nb")
    ref10, deg10 = (resample(x[None], 16000, 10000)[0] for x in (ref, deg))
    assert values["stoi"] == pytest.approx(stoi(ref10, deg10, 10000), abs=1e-12)
    assert values["estoi"] == pytest.approx(stoi(ref10, deg10, 10000, extended=True), abs=1e-12)
    assert 1.0 < values["pesq_wb"] < 4.0 and 0.5 < values["stoi"] < 1.0


def test_distances_grow_with_the_noise():
    ref = speech_like(1.0, 16000)
    low, _ = M.score(ref, noisy(ref, 0.003), 16000, M.select_metrics("si_sdr,mel_distance,stft_distance"))
    high, _ = M.score(ref, noisy(ref, 0.03), 16000, M.select_metrics("si_sdr,mel_distance,stft_distance"))
    assert high["si_sdr"] < low["si_sdr"]
    assert 0 < low["mel_distance"] < high["mel_distance"]
    assert 0 < low["stft_distance"] < high["stft_distance"]


def test_dnsmos_runs_offline_on_the_output_alone():
    ref = speech_like(1.2, 16000)  # speechmos doubles a short clip until >= 9.01 s: 9.6 s is one window
    clean, skipped = M.score(ref, None, 16000, M.select_metrics("dnsmos,si_sdr"))
    assert skipped == {} and set(clean) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}  # si_sdr needs an output
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    degraded, _ = M.score(ref, noisy(ref, 0.1), 16000, M.select_metrics("dnsmos"))
    assert degraded["dnsmos_bak"] < clean["dnsmos_bak"]  # loud white noise is background noise


def test_skips_name_the_reason():
    short = speech_like(0.1, 16000)
    values, skipped = M.score(short, short, 16000, FAST)
    assert "too short" in skipped["pesq_wb"] and "too short" in skipped["stoi"]
    assert "shorter than 2048 samples" in skipped["mel_distance"]
    assert "si_sdr" in values

    silent = np.zeros(16000, dtype=np.float32)
    values, skipped = M.score(silent, noisy(silent, 0.01), 16000, FAST)
    assert all("silent" in skipped[m] for m in ("pesq_wb", "stoi", "si_sdr", "stft_distance"))
    assert values["mel_distance"] > 0  # defined for a silent reference: the output is not silent

    music = tone(1.0, 16000)[0]
    values, skipped = M.score(music, music, 16000, FAST, content="music")
    assert skipped["pesq_wb"] == "speech-only metric on music" and "estoi" in skipped
    assert set(values) == {"si_sdr", "mel_distance", "stft_distance", "level_db"}


def test_level_db_is_the_output_level_against_the_input():
    x = speech_like(1.0, 16000)
    values, _ = M.score(x, 0.5 * x, 16000, M.select_metrics("level_db"))
    assert abs(values["level_db"] - 20 * np.log10(0.5)) < 1e-6
    values, skipped = M.score(np.zeros_like(x), x, 16000, M.select_metrics("level_db"))
    assert "level_db" not in values and "silent" in skipped["level_db"]


def test_stoi_on_too_little_speech_is_a_skip_not_a_number():
    x = np.zeros(16000, dtype=np.float32)
    x[:3000] = speech_like(3000 / 16000, 16000)  # 0.19 s of sound in 1 s: under STOI's 30 frames
    _, skipped = M.score(x, x, 16000, M.select_metrics("stoi"))
    assert "384 ms" in skipped["stoi"]


def test_a_failing_metric_is_recorded_not_raised():
    x = speech_like(1.0, 16000)
    bad = x.copy()
    bad[100] = np.nan
    _, skipped = M.score(x, bad, 16000, M.select_metrics("pesq_wb,si_sdr"))
    assert skipped["si_sdr"].startswith("error:")


def test_metric_selection_and_missing_packages(monkeypatch):
    assert [m.name for m in M.select_metrics("si_sdr,pesq_wb")] == ["pesq_wb", "si_sdr"]
    with pytest.raises(CodecError, match="unknown metric.*choose from"):
        M.select_metrics("pesq,si_sdr")
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` fail
    with pytest.raises(CodecError, match=r"pesq_wb needs the Python package pesq.*pip install"):
        M.check_available(M.select_metrics("pesq_wb"))
    # training validation asks the same question and leaves the metric out instead
    assert [m.name for m in M.check_available(M.select_metrics("pesq_wb,si_sdr"), required=False)] == ["si_sdr"]


def test_bitrate_spent_and_codebook_usage():
    assert M.bitrate_spent(1000, 2.0) == 4000.0
    K, frames = 16, 1600
    codes = np.stack([np.arange(frames) % K, np.zeros(frames, dtype=int), np.arange(frames) % 2], axis=1)
    usage = M.codebook_usage(M.codebook_counts(codes, K), frame_rate=50.0)
    assert usage["usage"] == [1.0, 1 / 16, 2 / 16]
    assert usage["entropy_bits"] == [4.0, 0.0, 1.0]
    assert usage["fixed_bps"] == 50.0 * 3 * 4
    assert usage["entropy_bound_bps"] == pytest.approx(50.0 * 5.0)
