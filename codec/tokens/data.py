"""The utterances of a corpus, read and resampled for the model, in length buckets.

Sources (`--data`):
    Kaldi data dir   a directory with `wav.scp`; optional `segments` (`utt rec start end`, end -1 = to the end
                     of the recording) and `utt2dur` (used for bucketing instead of opening every file)
    wav.scp          a file of `utt-id path` lines; a path ending in `|` is a shell command whose stdout is
                     the audio (Kaldi's pipe convention)
    folder           audio files found recursively; the id is the path relative to the folder, without its
                     suffix, whitespace replaced by `_`

Every utterance is mixed to mono (the channel mean) and resampled to the model's rate exactly as `codec
encode` does (soxr HQ, then padded to the rounded-up resampled length), so a mono file's tokens equal its
`codec encode` codes.
"""

from __future__ import annotations

import io
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.audio import fit_length, resample, resampled_length
from codec.errors import CodecError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str  # file path, or a shell command ending in "|"
    start: float = 0.0  # seconds into the recording (segments)
    end: float | None = None  # None: to the end
    duration: float | None = None  # seconds, if known without reading (utt2dur, segments)

    @property
    def is_pipe(self) -> bool:
        return self.path.rstrip().endswith("|")


def list_utterances(data: str | Path) -> list[Utterance]:
    """The utterances of a Kaldi data dir, a wav.scp or a folder of audio files, sorted by id."""
    data = Path(data)
    if data.is_dir() and (data / "wav.scp").is_file():
        utts = _kaldi_dir(data)
    elif data.is_dir():
        utts = _folder(data)
    elif data.is_file():
        if data.suffix.lower() in AUDIO_SUFFIXES:
            raise CodecError(f"--data {data} is an audio file; pass a folder of audio files, a wav.scp or a data dir")
        utts = [Utterance(i, p) for i, p in _read_table(data, "utt-id path").items()]
    else:
        raise CodecError(f"--data {data} not found; pass a Kaldi data dir, a wav.scp or a folder of audio files")
    if not utts:
        raise CodecError(
            f"no utterances in {data}: expected wav.scp lines or audio files ({', '.join(AUDIO_SUFFIXES)})"
        )
    return sorted(utts, key=lambda u: u.id)


def _read_table(path: Path, what: str) -> dict[str, str]:
    """`key rest-of-line` lines; a repeated key is an error."""
    table: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise CodecError(f"{path}:{number}: expected '{what}', got {line.strip()!r}")
        if fields[0] in table:
            raise CodecError(f"{path}:{number}: id {fields[0]} appears twice; ids must be unique")
        table[fields[0]] = fields[1].strip()
    return table


def _resolve(where: str, scp: Path) -> str:
    """Kaldi paths are relative to the recipe dir (the cwd); also accept ones relative to the scp's folder."""
    if where.endswith("|"):
        return where
    p = Path(where)
    if not p.is_absolute() and not p.exists() and (scp.parent / p).exists():
        return str(scp.parent / p)
    return where


def _kaldi_dir(data: Path) -> list[Utterance]:
    wavs = {k: _resolve(v, data / "wav.scp") for k, v in _read_table(data / "wav.scp", "utt-id path").items()}
    durations: dict[str, float] = {}
    if (data / "utt2dur").is_file():
        for k, v in _read_table(data / "utt2dur", "utt-id seconds").items():
            durations[k] = _number(v, data / "utt2dur", k)
    if not (data / "segments").is_file():
        return [Utterance(k, p, duration=durations.get(k)) for k, p in wavs.items()]
    utts = []
    for utt, rest in _read_table(data / "segments", "utt-id recording start end").items():
        fields = rest.split()
        if len(fields) != 3:
            raise CodecError(f"{data / 'segments'}: line of {utt} must be 'utt-id recording start end'")
        rec, start, end = (
            fields[0],
            _number(fields[1], data / "segments", utt),
            _number(fields[2], data / "segments", utt),
        )
        if rec not in wavs:
            raise CodecError(f"{data / 'segments'}: {utt} refers to recording {rec}, which is not in wav.scp")
        stop = None if end < 0 else end
        known = durations.get(utt, None if stop is None else max(stop - start, 0.0))
        utts.append(Utterance(utt, wavs[rec], start=start, end=stop, duration=known))
    return utts


def _number(text: str, path: Path, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CodecError(f"{path}: {key} has {text!r} where a number of seconds belongs") from None


def _folder(data: Path) -> list[Utterance]:
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    seen: dict[str, Path] = {}
    for p in files:
        utt = "_".join(p.relative_to(data).with_suffix("").as_posix().split())
        if utt in seen:
            raise CodecError(f"{seen[utt]} and {p} both make utterance id {utt}; rename one or list them in a wav.scp")
        seen[utt] = p
    return [Utterance(u, str(p)) for u, p in seen.items()]


def probe_duration(utt: Utterance) -> float | None:
    """Seconds of audio, from the list or the file header; None if unknown (pipes, unreadable files)."""
    if utt.duration is not None:
        return utt.duration
    if utt.is_pipe:
        return None
    try:
        info = sf.info(utt.path)
    except Exception:  # unreadable: the loader reports why
        return None
    total = info.frames / info.samplerate if info.samplerate else 0.0
    return max((total if utt.end is None else min(utt.end, total)) - utt.start, 0.0)


class Skip(Exception):
    """An utterance that is not extracted, with its reason (`kind`: unreadable, empty or short)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def read_utterance(utt: Utterance) -> tuple[np.ndarray, int]:
    """float32 [C, T] and its sample rate; raises Skip('unreadable' | 'empty', reason)."""
    try:
        if utt.is_pipe:
            run = subprocess.run(utt.path.rstrip()[:-1], shell=True, capture_output=True, check=False)
            if run.returncode != 0:
                err = run.stderr.decode(errors="replace").strip().splitlines()
                raise Skip("unreadable", f"command exited with {run.returncode}: {err[-1] if err else 'no message'}")
            source = io.BytesIO(run.stdout)
        else:
            if not Path(utt.path).is_file():
                raise Skip("unreadable", f"{utt.path} not found")
            source = utt.path
        with sf.SoundFile(source) as f:
            rate = f.samplerate
            first = int(round(utt.start * rate))
            last = f.frames if utt.end is None else min(int(round(utt.end * rate)), f.frames)
            if first:
                f.seek(min(first, f.frames))
            audio = f.read(max(last - first, 0), dtype="float32", always_2d=True)
    except Skip:
        raise
    except Exception as e:  # libsndfile raises several types for a damaged or unknown file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Skip("unreadable", f"cannot read {utt.path} as audio ({reason})") from None
    if audio.shape[0] == 0:
        raise Skip("empty", "no audio samples")
    if not np.isfinite(audio).all():
        raise Skip("unreadable", "contains NaN or infinite samples")
    return np.ascontiguousarray(audio.T), int(rate)


def prepare(audio: np.ndarray, rate: int, model_rate: int) -> np.ndarray:
    """Mono float32 [T'] at the model's rate, exactly as `codec encode` feeds the model (see module docstring)."""
    mono = audio.mean(axis=0, keepdims=True, dtype=np.float32) if audio.shape[0] > 1 else audio
    out = fit_length(resample(mono, rate, model_rate), resampled_length(mono.shape[1], rate, model_rate))
    return np.ascontiguousarray(out[0], dtype=np.float32)


def make_batches(
    utts: list[Utterance], durations: list[float | None], *, batch_size: int, max_batch_seconds: float,
    long_seconds: float,
) -> list[list[int]]:  # fmt: skip
    """Length buckets: indices into `utts`, longest first, each batch of similar lengths whose padded size
    (count x longest) stays within `max_batch_seconds`. Unknown and long (> long_seconds) utterances go alone."""
    known = sorted((i for i, d in enumerate(durations) if d is not None), key=lambda i: (-durations[i], utts[i].id))
    batches: list[list[int]] = [[i] for i, d in enumerate(durations) if d is None]
    current: list[int] = []
    for i in known:
        d = durations[i]
        if d > long_seconds:
            batches.append([i])
            continue
        longest = durations[current[0]] if current else d
        if current and (len(current) >= batch_size or longest * (len(current) + 1) > max_batch_seconds):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class BatchLoader:
    """torch Dataset of batches: item b reads, mixes and resamples batch b's utterances (in a DataLoader worker).

    Returns a list of (utterance index, mono float32 [T] at the model rate, seconds of input audio) and a list
    of (utterance index, kind, reason) for those that could not be used (plain tuples: they cross process
    boundaries). An utterance shorter than `min_samples` at the model's rate is skipped as 'short'.
    """

    def __init__(self, utts: list[Utterance], batches: list[list[int]], model_rate: int, min_samples: int) -> None:
        self.utts, self.batches, self.model_rate, self.min_samples = utts, batches, model_rate, min_samples

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        ready, skipped = [], []
        for i in self.batches[b]:
            try:
                audio, rate = read_utterance(self.utts[i])
                seconds = audio.shape[1] / rate
                mono = prepare(audio, rate, self.model_rate)
                if mono.shape[0] < self.min_samples:
                    raise Skip("short", f"{mono.shape[0]} samples at {self.model_rate} Hz, under {self.min_samples}")
                ready.append((i, mono, seconds))
            except Skip as s:
                skipped.append((i, s.kind, s.reason))
            except Exception as e:  # a bug or an odd file: report it on this utterance, keep going
                skipped.append((i, "unreadable", f"{type(e).__name__}: {e}"))
        return ready, skipped


def frames_for(num_samples: int, hop_length: int) -> int:
    """Frames the model makes of `num_samples` (the last partial frame is zero-padded)."""
    return math.ceil(num_samples / hop_length)
