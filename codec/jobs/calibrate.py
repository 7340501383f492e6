"""Output level calibration: one gain per level count, measured on real audio after training.

The reconstruction losses the models learn by (compressed complex spectra, log-mel distances) regress magnitudes the
codes leave uncertain toward values below the input's, so a decoder answers quieter than its input, the more the
fewer levels it gets. `calibrate_level` codes clips at every level count, measures the output level against the
input's (`codec.eval.metrics.level_db`, averaged in dB over clips as `codec eval` reports it) and returns the gain
per level count that brings that mean to 0 dB; `CodecModel.set_level_gain` stores it, the decoder's last step on
every path (torch, ONNX, live streams). It corrects the mean level of each bitrate, not clip-to-clip differences,
and changes no code and no other sample: PESQ and STOI, which align levels, do not move.
"""

from __future__ import annotations

import numpy as np
import torch

from codec.audio import resample
from codec.datadir import AudioError, Utterance, read_span
from codec.errors import CodecError
from codec.eval.metrics import level_db


def measure_levels(model, utterances: list[Utterance], *, seconds: float = 10.0) -> tuple[np.ndarray, int]:
    """Mean output level (dB against the input) per level count 1..num_levels as the model is now, and the number
    of clips measured: each utterance's first `seconds`, every channel on its own; silent or unreadable clips skip."""
    sums, count = np.zeros(model.num_levels), 0
    for utt in utterances:
        try:
            audio, rate = read_span(utt, 0.0, seconds)
        except AudioError:
            continue
        audio = resample(audio, rate, model.sample_rate) if rate != model.sample_rate else audio
        for channel in audio:
            if not np.any(channel) or channel.shape[0] < model.hop_length:
                continue
            x = torch.from_numpy(np.ascontiguousarray(channel, dtype=np.float32))[None, None]
            with torch.no_grad():
                levels = [model(x, levels=n)[0][0, 0].numpy() for n in range(1, model.num_levels + 1)]
            values = [level_db(channel, y)["level_db"] for y in levels]
            if np.all(np.isfinite(values)):
                sums += values
                count += 1
    return (sums / max(count, 1)), count


def calibrate_level(model, utterances: list[Utterance], *, seconds: float = 10.0, min_clips: int = 10):
    """Set `model`'s level gains so its mean output level on `utterances` is 0 dB at every level count; returns
    (gains in dB, clips measured). Measured with the gains off, so calibrating twice gives the same gains."""
    model.set_level_gain(torch.zeros(model.num_levels))
    mean, count = measure_levels(model, utterances, seconds=seconds)
    if count < min_clips:
        raise CodecError(
            f"only {count} usable clips to calibrate the output level on (at least {min_clips}); pass more audio"
        )
    gains = np.round(-mean, 3)
    model.set_level_gain(gains)
    return gains, count
