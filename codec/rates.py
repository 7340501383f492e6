"""Bitrates and level counts: the one rule that turns a requested bitrate into a number of residual levels.

`RateFacts` is mixed into the torch model (codec.models.codec.CodecModel) and the model run from its ONNX graphs
(codec.runtime.OnnxCodec, which needs no torch), so both answer alike.
"""

from __future__ import annotations

import math

from codec.errors import CodecError


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

    def levels_for(self, *, bitrate_kbps: float | None = None, levels: int | None = None) -> tuple[int, str | None]:
        """Resolve a requested bitrate (kbps) or level count to a level count, plus a notice if rounded down.

        A bitrate between two supported ones takes the one below; below the lowest or above the highest is an error
        listing the valid ones. Neither given: all levels.
        """
        rates = self.supported_bitrates()
        valid = ", ".join(f"{b / 1000:g}" for b in rates)
        if levels is not None:
            if not 1 <= levels <= self.num_levels:
                raise CodecError(f"--levels {levels} is out of range; this model has levels 1..{self.num_levels}")
            return levels, None
        if bitrate_kbps is None:
            return self.num_levels, None
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
