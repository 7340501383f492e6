"""Sane limits for every number that arrives from outside: file headers, pipes, flags and network clients.

A number read from a file or a socket never decides on its own how much memory is allocated: it is checked
against these limits first, with a one-line `CodecError` that names the value, the range and the fix.
The same checks serve the CLI flags, the .codes reader, the PCM pipes and `codec serve`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from codec.errors import CodecError

MIN_SAMPLE_RATE = 1000  # Hz: below this nothing is audio to a speech/music codec, and 1 Hz in means 16000x out
MAX_SAMPLE_RATE = 768_000  # Hz: the highest rate audio hardware records at
MAX_CHANNELS = 64
MAX_HOP_LENGTH = 2**16  # samples per frame of a model
MAX_GROUPS = 256
MAX_LEVELS = 256
MAX_BITS = 32  # per code
MAX_EXTRA_BYTES = 2**16  # the JSON metadata of a .codes header
MAX_SECONDS = 7 * 24 * 3600  # the longest input a .codes header may announce: one week
MAX_PACKET_FRAMES = 2**16  # frames in one packet
MAX_PACKET_BYTES = 2**20  # payload bytes in one packet
CONCEAL_TAIL_SECONDS = 600  # --on-corrupt silence fills a missing tail with at most this much silence
MAX_JOBS = 1024  # worker processes of a batch: more than any machine has cores
MAX_SAMPLE_MAGNITUDE = 64.0  # float input beyond +-64 (36 dB over full scale) is mis-scaled, not loud


def check_int(value, what: str, low: int, high: int, fix: str | None = None) -> int:
    """`value` as an int in [low, high], else a one-line CodecError naming `what`, the range and `fix`."""
    fix = fix or "give a value in that range"
    whole = isinstance(value, Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise CodecError(f"{what} {value!r} is not a whole number in {low}..{high}; {fix}")
    if not low <= value <= high:
        raise CodecError(f"{what} {value} is out of range {low}..{high}; {fix}")
    return int(value)


def check_sample_rate(value, what: str = "sample rate", fix: str | None = None) -> int:
    return check_int(value, what, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, fix)


def check_channels(value, what: str = "channels", fix: str | None = None) -> int:
    return check_int(value, what, 1, MAX_CHANNELS, fix)


def check_number(value, what: str):
    """A real number (not a bool, not a string) for options like a bitrate; range checks are the caller's."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise CodecError(f"{what} {value!r} is not a number")
    if not math.isfinite(value):
        raise CodecError(f"{what} {value!r} is not a finite number")
    return value


def check_pcm(block: np.ndarray, name: str = "the input") -> None:
    """Refuse NaN/infinite samples and float samples far beyond full scale (a mis-scaled file, not loud audio).

    Samples between 1 and MAX_SAMPLE_MAGNITUDE are coded as they are (the decoder's output is clipped to
    [-1, 1] when written as integer PCM).
    """
    if not block.size:
        return
    if not np.isfinite(block).all():
        raise CodecError(f"{name} contains NaN or infinite samples; repair or re-export it")
    peak = float(np.abs(block).max())
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise CodecError(
            f"{name} has samples of magnitude {peak:.3g}, far beyond full scale (+-1); it is probably integer PCM "
            f"stored as float: rescale it to [-1, 1] (e.g. divide by 32768)"
        )
