"""Quality metrics of decoded audio against its reference, and what a .codes stream spends.

Every signal metric takes mono float arrays already at the rate it needs (`Metric.sample_rate`; None
means the clip's own rate) and returns a dict of named values. `score` does the resampling, checks
each metric's preconditions (length, a non-silent reference, speech content) and reports a skipped
metric with its reason instead of a number.

    metric         columns                               rate      speech only  better
    pesq_wb        pesq_wb  (ITU-T P.862.2)              16 kHz    yes          higher (-0.5..4.64)
    pesq_nb        pesq_nb  (ITU-T P.862)                 8 kHz    yes          higher (-0.5..4.55)
    stoi, estoi    stoi, estoi                           10 kHz    yes          higher (0..1)
    si_sdr         si_sdr (dB, capped at 100)            clip's    no           higher
    mel_distance   mel_distance                          clip's    no           lower (0 = identical)
    stft_distance  stft_distance                         clip's    no           lower (0 = identical)
    dnsmos         dnsmos_sig, dnsmos_bak, dnsmos_ovrl   16 kHz    yes          higher (1..5), no reference
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from codec.audio import resample
from codec.errors import CodecError

SILENCE_DBFS = -60.0  # a reference whose RMS is below this is "silent"
SI_SDR_MAX = 100.0  # dB; the value for a perfect (or perfectly scaled) copy, which would be +inf


class Skip(Exception):
    """A metric does not apply to this clip; the message says why."""


# --- signal metrics ------------------------------------------------------------------------------------
def si_sdr(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 0) -> dict[str, float]:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first.

    deg is projected on ref: target = a * ref with a = <deg, ref> / <ref, ref>; SI-SDR = 10 log10(|target|^2 /
    |deg - target|^2), capped at SI_SDR_MAX.
    """
    r = ref.astype(np.float64) - ref.mean()
    d = deg.astype(np.float64) - deg.mean()
    scale = np.dot(d, r) / np.dot(r, r)
    target = scale * r
    target_energy = float(np.dot(target, target))
    noise = d - target
    noise_energy = max(float(np.dot(noise, noise)), target_energy * 10 ** (-SI_SDR_MAX / 10))
    if target_energy == 0.0:
        return {"si_sdr": -SI_SDR_MAX}  # deg is orthogonal to ref (e.g. silent output)
    return {"si_sdr": 10 * math.log10(target_energy / noise_energy)}


def level_db(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 0) -> dict[str, float]:
    """Output level against the input's, in dB (0 = the same RMS; below 0 = the codec answers too quietly)."""
    return {"level_db": rms_dbfs(deg) - rms_dbfs(ref)}


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {"pesq_wb": _pesq(ref, deg, sample_rate, "wb")}


def pesq_nb(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {"pesq_nb": _pesq(ref, deg, sample_rate, "nb")}


def _pesq(ref: np.ndarray, deg: np.ndarray, sample_rate: int, mode: str) -> float:
    from pesq import NoUtterancesError, pesq

    try:
        return float(pesq(sample_rate, ref, deg, mode))
    except NoUtterancesError:
        raise Skip("PESQ detects no speech in the reference") from None


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {"stoi": _stoi(ref, deg, sample_rate, extended=False)}


def estoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    return {"estoi": _stoi(ref, deg, sample_rate, extended=True)}


def _stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int, extended: bool) -> float:
    from pystoi import stoi as pystoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi(ref, deg, sample_rate, extended=extended))
    # pystoi warns and returns 1e-5 when fewer than 30 frames (384 ms) are left after dropping silent ones
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise Skip("fewer than 384 ms of non-silent speech (STOI needs 30 frames)")
    return value


MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (fft size = window, hop)


@contextlib.contextmanager
def _one_torch_thread():
    """Small FFTs gain nothing from threads, and on a busy machine torch's thread pool makes them ~20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _magnitudes(x: np.ndarray, n_fft: int, hop: int):
    import torch

    signal = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    window = torch.hann_window(n_fft)
    spec = torch.stft(signal, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return spec.abs()  # [n_fft // 2 + 1, frames]


@functools.lru_cache(maxsize=64)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int):
    import librosa
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty bands for the narrowest windows
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)
    return torch.from_numpy(fb.astype(np.float32))


def _check_length(x: np.ndarray, needed: int, what: str) -> None:
    if x.shape[-1] < needed:
        raise Skip(f"shorter than {needed} samples ({what})")


def mel_distance(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Multi-scale mel distance (the DAC recipe): for windows 32..2048 (hop = window / 4) with 5..320 mel bands,
    the mean |log10 mel(ref) - log10 mel(deg)| of magnitude mel spectrograms clamped at 1e-5, summed over scales.
    """
    _check_length(ref, max(MEL_WINDOWS), "the longest mel window")
    total = 0.0
    with _one_torch_thread():
        for n_fft, n_mels in zip(MEL_WINDOWS, MEL_BANDS, strict=True):
            fb = _mel_filters(sample_rate, n_fft, n_mels)
            a = (fb @ _magnitudes(ref, n_fft, n_fft // 4)).clamp_min(1e-5).log10()
            b = (fb @ _magnitudes(deg, n_fft, n_fft // 4)).clamp_min(1e-5).log10()
            total += float((a - b).abs().mean())
    return {"mel_distance": total}


def stft_distance(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Multi-resolution STFT distance (Parallel WaveGAN): at FFT sizes 512, 1024, 2048 (hop = size / 4, Hann),
    spectral convergence |S_ref - S_deg|_F / |S_ref|_F plus mean |log S_ref - log S_deg| (clamped at 1e-7),
    averaged over the resolutions.
    """
    _check_length(ref, max(n for n, _ in STFT_RESOLUTIONS), "the longest STFT window")
    total = 0.0
    with _one_torch_thread():
        for n_fft, hop in STFT_RESOLUTIONS:
            a, b = _magnitudes(ref, n_fft, hop), _magnitudes(deg, n_fft, hop)
            convergence = float((a - b).norm() / a.norm().clamp_min(1e-12))
            log_magnitude = float((a.clamp_min(1e-7).log() - b.clamp_min(1e-7).log()).abs().mean())
            total += convergence + log_magnitude
    return {"stft_distance": total / len(STFT_RESOLUTIONS)}


def dnsmos(ref: np.ndarray | None, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    """DNSMOS P.835 (SIG, BAK, OVRL) of `deg` alone, from speechmos' bundled ONNX models (no network).

    speechmos repeats a clip shorter than 9.01 s up to that length and averages 9.01 s windows every second.
    """
    from speechmos import dnsmos as speechmos_dnsmos

    out = speechmos_dnsmos.run(np.clip(deg, -1.0, 1.0).astype(np.float32), sr=sample_rate)
    return {
        "dnsmos_sig": float(out["sig_mos"]),
        "dnsmos_bak": float(out["bak_mos"]),
        "dnsmos_ovrl": float(out["ovrl_mos"]),
    }


# --- the registry ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    columns: tuple[str, ...]
    fn: Callable[..., dict[str, float]]
    sample_rate: int | None  # the rate the metric runs at; None = the clip's own rate
    higher_is_better: bool | None  # None: best at 0 (a signed error such as level_db)
    speech_only: bool = False
    intrusive: bool = True  # needs the reference (DNSMOS does not)
    min_seconds: float = 0.0
    needs_signal: bool = True  # undefined (or meaningless) for a silent reference
    packages: tuple[str, ...] = ()  # import names needed; the pip name is the same


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("pesq_wb", ("pesq_wb",), pesq_wb, 16000, True, speech_only=True, min_seconds=0.25, packages=("pesq",)),
        Metric("pesq_nb", ("pesq_nb",), pesq_nb, 8000, True, speech_only=True, min_seconds=0.25, packages=("pesq",)),
        Metric("stoi", ("stoi",), stoi, 10000, True, speech_only=True, min_seconds=0.4, packages=("pystoi",)),
        Metric("estoi", ("estoi",), estoi, 10000, True, speech_only=True, min_seconds=0.4, packages=("pystoi",)),
        Metric("si_sdr", ("si_sdr",), si_sdr, None, True),
        Metric("mel_distance", ("mel_distance",), mel_distance, None, False, needs_signal=False, packages=("librosa",)),
        Metric("stft_distance", ("stft_distance",), stft_distance, None, False),
        Metric("level_db", ("level_db",), level_db, None, None),
        Metric(
            "dnsmos",
            ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"),
            dnsmos,
            16000,
            True,
            speech_only=True,
            intrusive=False,
            min_seconds=0.5,
            packages=("speechmos", "onnxruntime", "librosa"),
        ),
    )
}
COLUMNS: dict[str, Metric] = {column: m for m in METRICS.values() for column in m.columns}


def select_metrics(names: str | list[str] | None) -> list[Metric]:
    """Metrics by name ('all' or None: every one), in registry order; unknown names are a CodecError."""
    if names is None or names == "all":
        return list(METRICS.values())
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n and n not in METRICS]
    if unknown:
        raise CodecError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)} or 'all'")
    return [m for m in METRICS.values() if m.name in wanted]


def check_available(metrics: list[Metric], *, required: bool = True) -> list[Metric]:
    """The metrics whose packages import, checked now rather than on the first clip.

    required: a missing package is a CodecError naming the install (`codec eval`: the run stops before it starts);
    False leaves those metrics out (training validation, where the eval extra is optional).
    """
    import importlib

    available = []
    for m in metrics:
        try:
            for package in m.packages:
                importlib.import_module(package)
        except ImportError as e:
            if required:
                raise CodecError(
                    f"metric {m.name} needs the Python package {package} ({e}); "
                    f"install the eval extra: pip install 'codec[eval]' (or pip install {package})"
                ) from None
            continue
        available.append(m)
    return available


def rms_dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def score(
    ref: np.ndarray,
    deg: np.ndarray | None,
    sample_rate: int,
    metrics: list[Metric],
    *,
    content: str = "speech",
) -> tuple[dict[str, float], dict[str, str]]:
    """Score mono `deg` against mono `ref` (both [T] at `sample_rate`); `deg=None` scores the reference itself
    with the metrics that need no reference. Returns (values by column, skip reason by metric name).

    A metric that raises anything but `Skip` is reported as skipped with "error: ..." so one broken metric never
    loses the others.
    """
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    seconds = ref.shape[-1] / sample_rate
    level = rms_dbfs(ref)
    cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def at(rate: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        rate = rate or sample_rate
        if rate not in cache:
            pair = [x if x is None else resample(x[None].astype(np.float32), sample_rate, rate)[0] for x in (ref, deg)]
            cache[rate] = (pair[0], pair[1])
        return cache[rate]

    for m in metrics:
        if deg is None and m.intrusive:
            continue
        if m.speech_only and content != "speech":
            skipped[m.name] = f"speech-only metric on {content}"
        elif seconds < m.min_seconds:
            skipped[m.name] = f"clip too short ({seconds:.2f} s < {m.min_seconds:g} s)"
        elif m.needs_signal and level < SILENCE_DBFS:
            skipped[m.name] = f"reference is silent (RMS {level:.0f} dBFS < {SILENCE_DBFS:g})"
        else:
            r, d = at(m.sample_rate)
            try:
                got = m.fn(r, r if d is None else d, m.sample_rate or sample_rate)
                bad = [k for k, v in got.items() if not math.isfinite(v)]
                if bad:
                    raise Skip(f"error: {m.name} gave a non-finite value")
                values.update(got)
            except Skip as e:
                skipped[m.name] = str(e)
            except Exception as e:  # noqa: BLE001 - a metric library failing on one clip is recorded, not fatal
                skipped[m.name] = f"error: {type(e).__name__}: {e}"
    return values, skipped


# --- what the codes spend ----------------------------------------------------------------------------------
def bitrate_spent(num_bytes: int, seconds: float) -> float:
    """Bits per second actually spent: the whole encoded file (headers and packet overhead included)."""
    return num_bytes * 8 / seconds


def codebook_counts(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Histogram [N, K] of codes [frames, N] (N codebooks in level-major order)."""
    return np.stack([np.bincount(codes[:, n], minlength=codebook_size) for n in range(codes.shape[1])])


def codebook_usage(counts: np.ndarray, frame_rate: float) -> dict:
    """Usage and entropy per codebook from counts [N, K], and the bitrates they imply.

    `entropy_bound_bps` = frame_rate * sum of per-codebook entropies: what an ideal entropy coder of each codebook's
    unigram distribution would spend (a bound for coding codebooks independently, not jointly).
    """
    N, K = counts.shape
    totals = counts.sum(axis=1, keepdims=True)
    p = counts / np.maximum(totals, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return {
        "codebooks": N,
        "codebook_size": K,
        "frames": int(totals.max()) if N else 0,
        "usage": [round(float(u), 4) for u in (counts > 0).sum(axis=1) / K],  # fraction of codes used
        "entropy_bits": [round(float(h), 4) for h in entropy],  # out of log2(K)
        "fixed_bps": frame_rate * N * math.log2(K),
        "entropy_bound_bps": frame_rate * float(entropy.sum()),
    }
