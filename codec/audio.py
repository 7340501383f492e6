"""Audio files in and out: read with soundfile, resample with soxr, write clipping-safe and atomically.

Audio arrays here are float32 numpy [C, T] in [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from codec.atomic import atomic_output
from codec.errors import CodecError

WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read any format libsndfile knows (wav, flac, ogg, mp3, ...): float32 [C, T] and its sample rate."""
    with open_audio(path) as f:
        data = f.read(dtype="float32", always_2d=True)
        sample_rate = f.samplerate
    if data.shape[0] == 0:
        raise CodecError(f"{path} holds no audio samples")
    if not np.isfinite(data).all():
        raise CodecError(f"{path} contains NaN or infinite samples; repair or re-export it")
    return np.ascontiguousarray(data.T), int(sample_rate)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample [C, T] with soxr (high quality); returns the input unchanged if the rates agree."""
    if from_rate == to_rate:
        return audio
    out = soxr.resample(audio.T, from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, audio.shape[0]).T)


def resampled_length(num_samples: int, from_rate: int, to_rate: int) -> int:
    """Samples after resampling `num_samples` (rounded up, so nothing is lost)."""
    return -(-num_samples * to_rate // from_rate)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad [C, T] to exactly `length` samples."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[-1])))


def check_output_format(path: str | Path) -> tuple[str, str]:
    """The (format, subtype) that `write_audio` writes `path` in; a one-line error naming the ones it can write
    otherwise (the CLI checks this before it loads a model)."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CodecError(
            f"cannot write {path}: unsupported extension; audio is written as {', '.join(WRITE_FORMATS)}: name the "
            "output with one of them"
        )
    return fmt


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write [C, T] to wav/flac/ogg (by extension), clipping to [-1, 1], through a temporary file."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CodecError(f"cannot write {path}: unsupported extension; use one of {', '.join(WRITE_FORMATS)}")
    clipped = np.clip(audio, -1.0, 1.0).T
    with atomic_output(path) as tmp:
        sf.write(str(tmp), clipped, sample_rate, format=fmt[0], subtype=fmt[1])


def open_audio(path: str | Path) -> sf.SoundFile:
    """Open an audio file for block-wise reading, with the same clear errors as `read_audio`."""
    if not str(path).strip():
        raise CodecError("input path is empty; pass an audio file")
    path = Path(path)
    if not path.exists():
        raise CodecError(f"input file {path} not found")
    if path.is_dir():
        raise CodecError(f"input {path} is a directory; pass an audio file")
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(e).split(":")[-1].strip() or "unknown format"
        raise CodecError(
            f"cannot read {path} as audio ({reason}); use wav, flac, ogg or mp3 (convert with ffmpeg or sox)"
        ) from None
    if f.frames == 0:
        f.close()
        raise CodecError(f"{path} holds no audio samples")
    return f


def duration(path: str | Path) -> float | None:
    """Seconds of audio in the file at `path`, or None where it cannot be read (the coding verb reports that)."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
