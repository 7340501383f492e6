"""Helpers for the training tests: a generated Kaldi data dir and a tiny, fast training config."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import yaml
from conftest import tone

from codec.config import builtin_config_path
from codec.train.config import Config, load_config


def make_data_dir(root: Path, count: int = 8, *, seconds: float = 1.0, rate: int = 16000, broken: bool = True) -> Path:
    """`count` generated utterances (stereo every third, at `rate`), plus one unreadable file if `broken`."""
    root.mkdir(parents=True, exist_ok=True)
    wav_scp, utt2dur = [], []
    for i in range(count):
        path = root / f"utt{i:02d}.wav"
        sf.write(path, tone(seconds + 0.1 * i, rate, channels=2 if i % 3 == 2 else 1, seed=i).T, rate)
        wav_scp.append(f"utt{i:02d} {path}")
        utt2dur.append(f"utt{i:02d} {seconds + 0.1 * i:.2f}")
    if broken:
        bad = root / "broken.wav"
        bad.write_bytes(b"RIFF not really a wav file")
        wav_scp.append(f"broken {bad}")
        utt2dur.append("broken 1.00")
    (root / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (root / "utt2dur").write_text("\n".join(utt2dur) + "\n")
    return root


TINY_TRAINING = {
    "data": {"segment_seconds": 0.2, "num_workers": 0, "valid_items": 2, "valid_segment_seconds": 0.5},
    "loss": {"mel_windows": [32, 64, 128, 256], "mel_bins": [5, 10, 20, 40]},
    "discriminator": {
        "kinds": ["mpd", "msstft"],
        "mpd_periods": [2, 3],
        "mpd_channels": 4,
        "msd_scales": 2,
        "msd_channels": 4,
        "msstft_n_ffts": [128, 256],
        "msstft_channels": 4,
        "mrd_n_ffts": [128, 256],
        "mrd_channels": 4,
    },
    "train": {
        "device": "cpu",
        "batch_size": 4,
        "lr_schedule": "constant",
        "log_every": 5,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    },
}


def tiny_training_config(tmp: Path, data_dir: Path, *overrides: str, valid: bool = True, model: str = "tiny") -> Config:
    """The tiny model (8 kHz, hop 12; or another builtin config, e.g. tiny_spectral) with small losses and
    critics, training into `tmp`/exp."""
    path = tmp / "tiny_train.yaml"
    path.write_text(yaml.safe_dump({"include": str(builtin_config_path(model)), **TINY_TRAINING}))
    items = [f"data.train_dir={data_dir}", f"train.output_dir={tmp / 'exp'}"]
    if valid:
        items.append(f"data.valid_dir={data_dir}")
    return load_config(path, items + list(overrides))
