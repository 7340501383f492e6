"""Bitrates and level counts: the one rule that turns a requested bitrate into a number of residual levels.

Each decision about a level count is made here, once: a bitrate or a level count, not both (`resolve_levels`);
neither means every level (`levels_or_all`); and the range check (`check_levels`). An entry point (the CLI's
verbs, the server's start message, `codec.jobs.batch`'s callers) resolves what its user asked for once and passes the
checked int down; the library functions below it (the streaming encoders, the frame coders, the search) take it
as it is, and call `check_levels` only where they are themselves an entry point a user calls.

`RateFacts` is mixed into the torch model (codec.models.codec.CodecModel) and the model run from its ONNX graphs
(codec.runtimes.runtime.OnnxCodec, which needs no torch), so both answer alike.
"""

from __future__ import annotations

import math
from numbers import Integral

from codec.errors import CodecError


def check_levels(levels, num_levels: int, what: str = "--levels", fix: str | None = None) -> int:
    """`levels` as an int in 1..num_levels, else a one-line CodecError naming `what` (the flag or field the user
    wrote) and `fix` (default: the model's range)."""
    whole = isinstance(levels, Integral) or (isinstance(levels, float) and levels.is_integer())
    if isinstance(levels, bool) or not whole:
        raise CodecError(f"{what} {levels!r} is not a whole number in 1..{num_levels}; give a value in that range")
    if not 1 <= levels <= num_levels:
        raise CodecError(f"{what} {levels} is out of range; {fix or f'this model has levels 1..{num_levels}'}")
    return int(levels)


def levels_or_all(levels: int | None, num_levels: int, what: str = "levels") -> int:
    """The default: None means every level; anything else is range checked (`check_levels`)."""
    return num_levels if levels is None else check_levels(levels, num_levels, what)


NAMES = ("--bitrate", "--levels")  # how the CLI's users write a bitrate and a level count
SERVER_NAMES = ('"bitrate"', '"levels"')  # how a `codec serve` client writes them (its start message)


class RateFacts:
    """Bitrate methods of a codec that has `name`, `frame_rate`, `num_groups`, `num_levels` and `bits_per_code`."""

    name: str
    frame_rate: float
    num_groups: int
    num_levels: int
    bits_per_code: int

    def bitrate(self, levels: int) -> float:
        """Bits per second when coding with the first `levels` levels."""
        return self.frame_rate * levels * self.num_groups * self.bits_per_code

    def supported_bitrates(self) -> list[float]:
        """Bits per second for 1..num_levels levels."""
        return [self.bitrate(n) for n in range(1, self.num_levels + 1)]

    def levels_for(
        self, *, bitrate_kbps: float | None = None, levels: int | None = None, names: tuple[str, str] = NAMES
    ) -> tuple[int, str | None]:
        """Resolve a requested bitrate (kbps) or level count to a level count, plus a notice if rounded down.

        A bitrate between two supported ones takes the one below; below the lowest or above the highest is an error
        listing the valid ones. Neither given: all levels. Both given: an error. `names`: how the user wrote the
        two (the CLI's flags by default; the server's fields are `SERVER_NAMES`), for the errors.
        """
        if bitrate_kbps is not None and levels is not None:
            raise CodecError(f"give {names[0]} or {names[1]}, not both")
        if levels is not None:
            return check_levels(levels, self.num_levels, names[1]), None
        if bitrate_kbps is None:
            return self.num_levels, None
        rates = self.supported_bitrates()
        valid = ", ".join(f"{b / 1000:g}" for b in rates)
        if not math.isfinite(bitrate_kbps):
            raise CodecError(f"bitrate {bitrate_kbps} kbps is not a number; valid kbps for {self.name}: {valid}")
        wanted = bitrate_kbps * 1000
        tolerance = 1e-6 * rates[0]
        if wanted < rates[0] - tolerance or wanted > rates[-1] + tolerance:
            raise CodecError(f"bitrate {bitrate_kbps:g} kbps is not possible with {self.name}; valid kbps: {valid}")
        n = max(i + 1 for i, r in enumerate(rates) if r <= wanted + tolerance)
        if abs(rates[n - 1] - wanted) > tolerance:
            return n, f"{bitrate_kbps:g} kbps is between supported bitrates; using {rates[n - 1] / 1000:g} kbps"
        return n, None
