"""Bitrates and level counts: the one rule that turns a requested bitrate into a number of residual levels.

Torch-free, so that a model run by ONNX Runtime (codec.runtime.OnnxCodec) answers exactly as the torch model
(codec.models.codec.CodecModel.levels_for).
"""

from __future__ import annotations

import math

from codec.errors import CodecError


def bitrate(frame_rate: float, levels: int, num_groups: int, bits_per_code: int) -> float:
    """Bits per second when coding with the first `levels` levels."""
    return frame_rate * levels * num_groups * bits_per_code


def levels_for(
    name: str, rates: list[float], *, bitrate_kbps: float | None = None, levels: int | None = None
) -> tuple[int, str | None]:
    """Resolve a requested bitrate (kbps) or level count to a level count, plus a notice if rounded down.

    `rates`: the model's bitrates for 1..num_levels levels. A bitrate between two supported ones takes the one
    below; below the lowest or above the highest is an error listing the valid ones. Neither given: all levels.
    """
    num_levels = len(rates)
    valid = ", ".join(f"{b / 1000:g}" for b in rates)
    if levels is not None:
        if not 1 <= levels <= num_levels:
            raise CodecError(f"--levels {levels} is out of range; this model has levels 1..{num_levels}")
        return levels, None
    if bitrate_kbps is None:
        return num_levels, None
    if not math.isfinite(bitrate_kbps):
        raise CodecError(f"bitrate {bitrate_kbps} kbps is not a number; valid kbps for {name}: {valid}")
    wanted = bitrate_kbps * 1000
    tolerance = 1e-6 * rates[0]
    if wanted < rates[0] - tolerance or wanted > rates[-1] + tolerance:
        raise CodecError(f"bitrate {bitrate_kbps:g} kbps is not possible with {name}; valid kbps: {valid}")
    n = max(i + 1 for i, r in enumerate(rates) if r <= wanted + tolerance)
    if abs(rates[n - 1] - wanted) > tolerance:
        return n, f"{bitrate_kbps:g} kbps is between supported bitrates; using {rates[n - 1] / 1000:g} kbps"
    return n, None
