#!/usr/bin/env python
"""Where a training step's CPU time goes, per config: data, generator forward, losses, backward, optimizer.

    python tools/profile_step.py egs/folder/conf/grvq16k_cpu.yaml egs/folder/conf/spectral16k_cpu.yaml \
        --data /path/to/train_dir --steps 20 [--set train.precision=bf16 ...]

Each config runs in this one process, one after the other, on one thread, with the quantizer on (the phase most of
a run spends in). Prints a JSON line per config: median CPU milliseconds per phase and audio-seconds trained per
CPU-second. CPU time (time.process_time) is what the training arms are compared on; it is less sensitive than wall
time to other processes on a shared machine, but not immune (caches, SMT siblings): compare configs in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def profile(config_path: str, data: str, steps: int, overrides: list[str]) -> dict:
    from codec.train.config import load_config
    from codec.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        config = load_config(
            config_path,
            [
                f"data.train_dir={data}",
                "data.valid_dir=null",
                "data.num_workers=0",
                f"train.output_dir={out}",
                "train.quantizer_warmup_steps=0",
                *overrides,
            ],
        )
        trainer = Trainer(config, progress_bar=False)
        tc = config.train
        phases: dict[str, list[float]] = {k: [] for k in ("data", "forward", "losses", "backward", "optimizer")}
        audio_per_step = tc.batch_size * tc.grad_accum * trainer.length / config.model.sample_rate
        for step in range(steps + 2):  # the first two steps (k-means init, allocator warm-up) are not counted
            marks = [time.process_time()]
            x = trainer._next_batch()
            marks.append(time.process_time())
            with trainer._autocast():
                y_hat, q = trainer.g(x)
            marks.append(time.process_time())
            loss = trainer.objective(y_hat.float(), x, commitment=q.commitment_loss).generator
            marks.append(time.process_time())
            trainer.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            marks.append(time.process_time())
            trainer.opt_g.step()
            if trainer.ema is not None:
                trainer.ema.update(trainer.model)
            marks.append(time.process_time())
            if step >= 2:
                for key, a, b in zip(phases, marks, marks[1:], strict=False):
                    phases[key].append(b - a)
        trainer.close()
    medians = {k: statistics.median(v) * 1000 for k, v in phases.items()}
    total = sum(medians.values())
    return {
        "config": config_path,
        "overrides": overrides,
        "parameters_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2),
        "audio_seconds_per_step": audio_per_step,
        "cpu_ms": {k: round(v, 1) for k, v in medians.items()},
        "cpu_ms_total": round(total, 1),
        "audio_seconds_per_cpu_second": round(audio_per_step / (total / 1000), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="training config files")
    parser.add_argument("--data", required=True, help="Kaldi data dir to draw batches from")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="a dotted override for every config")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.configs:
        print(json.dumps(profile(path, args.data, args.steps, args.set)), flush=True)


if __name__ == "__main__":
    main()
