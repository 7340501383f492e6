#!/usr/bin/env python
"""Fingerprints of what a refactor must not change: run before and after it, then compare the two JSON files.

    PYTHONPATH=$PWD python tools/fingerprint_training.py > before.json      # on the old tree
    PYTHONPATH=$PWD python tools/fingerprint_training.py > after.json       # on the new one
    cmp before.json after.json

`train`: a few steps of tiny training (one thread, fixed seed) for SEANet and spectral configs with and without
critics, the balancer, accumulation, the quantizer warm start and the loss terms: every logged loss (exact repr),
a hash of every parameter's gradient before each optimizer step, and hashes of the weights and buffers after.
`bf16`: the same under bf16 autocast. `models`: the shipped model files' codes, decoded audio and forward output
for a clip, and a fresh build (seed 0) of every shipped config: parameter names, weights, output and module tree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RUNS = {
    "seanet_gan": (
        "tiny",
        [
            "loss.complex_weight=1.0",
            "loss.phase_levels=2",
            "loss.stft_windows=[64,128]",
            "loss.waveform_weight=1.0",
            "loss.level_weight=0.5",
            "loss.stft_weight=1.0",
        ],
        3,
    ),
    "seanet_gan_balancer_accum": (
        "tiny",
        [
            "loss.balancer=true",
            "train.grad_accum=2",
            "loss.complex_weight=1.0",
            "loss.stft_windows=[64,128]",
            "loss.commitment_weight=0.5",
            "discriminator.kinds=[mpd,msd,msstft,mrd]",
            "loss.adversarial=lsgan",
        ],
        2,
    ),
    "seanet_gan_late_warmup": (
        "tiny",
        ["train.disc_start_step=1", "train.quantizer_warmup_steps=1", "train.kmeans_batches=2", "train.ema_decay=0.9"],
        3,
    ),
    "spectral": (
        "tiny_spectral",
        ["discriminator.kinds=[]", "loss.complex_weight=1.0", "loss.phase_levels=3", "loss.stft_windows=[64,128]"],
        3,
    ),
    "spectral_gan": ("tiny_spectral", ["loss.waveform_weight=2.0"], 2),
}
BF16_RUNS = {
    "seanet_gan_bf16": (
        "tiny",
        ["train.precision=bf16", "train.grad_accum=2", "loss.balancer=true", "loss.waveform_weight=1.0"],
        2,
    ),
    "spectral_gan_bf16": ("tiny_spectral", ["train.precision=bf16", "loss.level_weight=1.0"], 2),
}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def training(runs: dict, tmp: Path) -> dict:
    from train_fixtures import make_data_dir, tiny_training_config

    from codec.train.trainer import Trainer

    data = make_data_dir(tmp / "data", count=6, broken=False)
    out = {}
    for name, (model, overrides, steps) in runs.items():
        (tmp / name).mkdir()
        trainer = Trainer(
            tiny_training_config(tmp / name, data, *overrides, valid=False, model=model), progress_bar=False
        )
        trainer.log.enabled = False
        grads: list[str] = []
        apply_step = trainer._apply_step

        def hashing(metrics, gan, quantizer_state, trainer=trainer, apply_step=apply_step, grads=grads):
            named = [("g", trainer.model), ("d", trainer.disc)]
            grads.append(
                digest({f"{n}.{k}": p.grad for n, m in named for k, p in m.named_parameters() if p.grad is not None})
            )
            return apply_step(metrics, gan, quantizer_state)

        trainer._apply_step = hashing
        log = []
        for _ in range(steps):
            metrics = trainer.train_step()
            log.append({k: repr(v) for k, v in sorted(metrics.items())} if metrics else None)
        out[name] = {
            "log": log,
            "grads": grads,
            "g": digest(trainer.model.state_dict()),
            "d": digest(trainer.disc.state_dict()),
            "buffers": digest(dict(trainer.model.named_buffers())),
        }
        trainer.close()
    return out


@torch.no_grad()
def models() -> dict:
    import soundfile as sf

    from codec.audio import resample
    from codec.checkpoint import load_model
    from codec.config import load_model_config
    from codec.models.codec import build_model

    out = {}
    clip, rate = sf.read(str(ROOT / "codec/assets/speech_en.flac"), dtype="float32")
    shipped = ["grvq16k", *sorted(str(p) for p in ROOT.glob("egs/*/results/*/*.safetensors"))]
    for source in shipped:
        model = load_model(source).eval()
        x = torch.from_numpy(resample(clip[None, : rate * 2].copy(), rate, model.sample_rate))[None]
        codes = model.encode(x)
        out[f"model:{Path(source).name}"] = {
            "codes": digest({"c": codes}),
            "decoded": digest({"y": model.decode(codes)}),
            "forward": digest({"y": model(x)[0]}),
            "weights": model.weights_hash[:16],
        }
    for path in sorted(ROOT.glob("codec/configs/*.yaml")) + sorted(ROOT.glob("egs/*/conf/*.yaml")):
        config = load_model_config(path)
        torch.manual_seed(0)
        model = build_model(config).eval()
        x = 0.1 * torch.randn(1, config.channels, config.hop_length * 5, generator=torch.Generator().manual_seed(1))
        out[f"build:{path.relative_to(ROOT)}"] = {
            "names": hashlib.sha256(" ".join(model.state_dict()).encode()).hexdigest()[:16],
            "weights": model.weights_hash[:16],
            "out": digest({"y": model(x)[0]}),
            "modules": hashlib.sha256(repr(model).encode()).hexdigest()[:16],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["train", "models"], choices=["train", "bf16", "models"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in args.parts:
            out.update(training(RUNS, Path(tmp) / "fp32"))
        if "bf16" in args.parts:
            out.update(training(BF16_RUNS, Path(tmp) / "bf16"))
    if "models" in args.parts:
        out.update(models())
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
