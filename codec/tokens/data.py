"""The utterances of a corpus, read and resampled for the model, in length buckets.

Sources (`--data`), listed by `codec.datadir.list_utterances`:
    Kaldi data dir   a directory with `wav.scp`; optional `segments` and `utt2dur` (used for bucketing instead
                     of opening every file)
    wav.scp          a file of `utt-id path` lines; a path ending in `|` is a command whose stdout is the audio
                     (Kaldi's pipe convention; run without a shell, see `codec.datadir`)
    folder           audio files found recursively; the id is the path relative to the folder, without its
                     suffix, whitespace replaced by `_`

Every utterance is mixed to mono (the channel mean) and resampled to the model's rate exactly as `codec
encode` does (soxr HQ, then padded to the rounded-up resampled length), so a mono file's tokens equal its
`codec encode` codes.
"""

from __future__ import annotations

import math

import numpy as np

from codec.audio import fit_length, resample, resampled_length
from codec.datadir import AudioError, Utterance, read_span, utterance_seconds


def probe_duration(utt: Utterance) -> float | None:
    """Seconds of audio, from the list or the file header; None if unknown (pipes, unreadable files)."""
    if utt.duration is not None:
        return utt.duration
    if utt.is_pipe:
        return None
    try:
        return utterance_seconds(utt)
    except AudioError:  # unreadable: the loader reports why
        return None


class Skip(Exception):
    """An utterance that is not extracted, with its reason (`kind`: unreadable, empty or short)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def read_utterance(utt: Utterance) -> tuple[np.ndarray, int]:
    """float32 [C, T] and its sample rate; raises Skip('unreadable' | 'empty', reason)."""
    try:
        return read_span(utt)
    except AudioError as e:
        raise Skip(e.kind, str(e)) from None


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
