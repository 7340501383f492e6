"""The GAN trainer: one process per device under torchrun (or a single plain process), DDP over NCCL or gloo.

One optimizer step, for each of `grad_accum` micro-batches:

    y_hat, q = G(x)                              quantizer in fp32, codebooks EMA-updated and synchronised
                                                 across ranks inside G
    L_D = objective.critic_pass(y_hat, x)        critics on real and generated audio in one pass; backward
                                                 into D (before the G terms, so D's graph is freed first)
    L_G = objective(y_hat, x, commitment, ...)   every generator term and weight (codec/train/objective.py);
                                                 D frozen; optionally balanced (EnCodec); backward into G

then clip, step D and G, schedulers, generator EMA. A step whose loss or gradient is NaN/Inf on any rank
is skipped by every rank (codebook statistics rolled back too); `max_bad_steps` in a row stop the run
with a checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from codec import dist, pretrained
from codec.config import QUANTIZER_TRAINING_KEYS, ModelConfig, builtin_config_path, from_dict, to_dict
from codec.datadir import read_data_dir
from codec.errors import CodecError
from codec.models.codec import build_model
from codec.train import checkpoints
from codec.train.config import Config, load_config
from codec.train.data import AudioSpec, train_loader, validation_items
from codec.train.discriminators import build_discriminators
from codec.train.ema import GeneratorEMA
from codec.train.logger import TrainLog
from codec.train.objective import AdversarialObjective, Objective
from codec.train.validation import mel_image, validate

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def git_commit() -> str | None:
    """The commit of the codec source tree this runs from ("+dirty" if it has local changes), if a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def lr_lambda(config: Config) -> Callable[[int], float]:
    tc = config.train

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
        if tc.lr_schedule == "cosine":
            progress = min(step / tc.max_steps, 1.0)
            return warm * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        if tc.lr_schedule == "exponential":
            return warm * tc.lr_gamma**step
        return warm

    return factor


def _is_oom(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


class Trainer:
    """Builds everything from a `Config` and trains it with `fit()`.

    Args:
        config: the whole config (model, data, train, discriminator, loss).
        resume: a checkpoint file or output dir to continue from, True for the newest checkpoint in
            `train.output_dir`, or None/False to start fresh (refused if the output dir has checkpoints).
        config_source: where the config came from (recorded as the recipe in exported model files).
        progress_bar: None = a tqdm bar only on a terminal.
    """

    def __init__(
        self,
        config: Config,
        *,
        resume: str | Path | bool | None = None,
        config_source: str | None = None,
        progress_bar: bool | None = None,
    ) -> None:
        self.config, self.config_source = config, config_source
        tc, mc = config.train, config.model
        if not config.data.train_dir:
            raise CodecError("data.train_dir is not set; pass data.train_dir=PATH (a Kaldi data dir with wav.scp)")
        # Read the data dirs first: a mistake there should fail before anything is written.
        self._train_utterances = read_data_dir(config.data.train_dir)
        self._valid_utterances = read_data_dir(config.data.valid_dir) if config.data.valid_dir else []
        self.dist = dist.join(tc.device, option="train.device")
        self.device = self.dist.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # crops have one fixed length: autotuned kernels pay off
        if tc.precision == "fp16" and self.device.type != "cuda":
            raise CodecError("train.precision=fp16 needs a CUDA device; on CPU use train.precision=bf16 or fp32")
        self.output_dir = Path(tc.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.length = int(config.data.segment_seconds * mc.sample_rate) // mc.hop_length * mc.hop_length
        self._check_lengths()

        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.model = build_model(mc).to(self.device).train()
        self.disc = build_discriminators(config.discriminator, audio_channels=mc.channels).to(self.device).train()
        self.use_gan = len(self.disc.critics) > 0
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Buffers (codebooks) are kept identical by the quantizer's own all-reduce/broadcast. Codebooks learned
            # by gradient (simvq, fsq) are parameters that the bypassed warm-start steps do not use: DDP must
            # look for them, or it fails at the second step (they keep no gradient, as in one process).
            q = mc.quantizer
            idle = tc.quantizer_warmup_steps > 0 and (q.level_type == "fsq" or q.codebook_update == "simvq")
            self.g = DistributedDataParallel(
                self.model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=idle
            )
            self.d = DistributedDataParallel(self.disc, device_ids=ids) if self.use_gan else self.disc
        else:
            self.g, self.d = self.model, self.disc
        betas = (tc.betas[0], tc.betas[1])
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, betas=betas, weight_decay=tc.weight_decay)
        self.opt_d = torch.optim.AdamW(
            self.disc.parameters() if self.use_gan else [torch.zeros(1, requires_grad=True)],
            lr=tc.lr_d if tc.lr_d is not None else tc.lr,
            betas=betas,
            weight_decay=tc.weight_decay,
        )
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lr_lambda(config))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lr_lambda(config))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tc.precision == "fp16")
        adversarial = None
        if self.use_gan:
            adversarial = AdversarialObjective(
                self.disc, kind=config.loss.adversarial, synced=self.d, autocast=self._autocast
            )
        self.objective = Objective(config.loss, sample_rate=mc.sample_rate, adversarial=adversarial).to(self.device)
        self.mel_loss = self.objective.mel
        self.ema = GeneratorEMA(self.model, tc.ema_decay) if tc.ema_decay else None

        self.step, self.epoch, self.batch_index = 0, 0, 0
        self.init_steps = 0  # training steps of the weights train.init_from started from (exported models add them)
        self.bad_in_row, self.bad_total, self.skipped_files = 0, 0, 0
        self._cpu_base, self._cpu_mark = 0.0, time.process_time()
        self.commit = git_commit() if self.dist.is_main else None
        torch.manual_seed(tc.seed + 1_000_003 * self.dist.rank)  # per-rank stream for dropout, restarts
        np.random.seed((tc.seed + self.dist.rank) % 2**32)

        self._resolve_resume(resume)
        if tc.init_from and self.step == 0:
            self._init_from(tc.init_from)
        self.log = TrainLog(
            self.output_dir / "tensorboard",
            enabled=self.dist.is_main,
            rank=self.dist.rank,
            total_steps=tc.max_steps,
            start_step=self.step,
            progress_bar=progress_bar,
        )
        self._seen_skips: set[str] = set()
        self._setup_data()
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
            self.log.info(
                f"{mc.name}: {self.model.num_parameters() / 1e6:.2f} M generator parameters, "
                f"{sum(p.numel() for p in self.disc.parameters()) / 1e6:.2f} M discriminator parameters "
                f"({', '.join(self.disc.critics) or 'none'}); {self.dist.world_size} rank(s) on {self.device.type}; "
                f"batch {tc.batch_size} x {tc.grad_accum} accumulation x {self.dist.world_size} ranks of "
                f"{self.length / mc.sample_rate:g} s; step {self.step}/{tc.max_steps}"
            )

    # --- set-up -----------------------------------------------------------------------------------------
    def _check_lengths(self) -> None:
        c = self.config
        if self.length < c.model.hop_length:
            raise CodecError(
                f"data.segment_seconds={c.data.segment_seconds} is shorter than one frame "
                f"({c.model.hop_length} samples); use longer segments"
            )
        d = c.discriminator
        ffts = list(c.loss.mel_windows)
        ffts += list(c.loss.stft_windows) if c.loss.stft_weight > 0 or c.loss.complex_weight > 0 else []
        ffts += list(d.msstft_n_ffts) if "msstft" in d.kinds else []
        ffts += list(d.mrd_n_ffts) if "mrd" in d.kinds else []
        if max(ffts) // 2 >= self.length:
            raise CodecError(
                f"training crops of {self.length} samples are too short for an STFT window of {max(ffts)} "
                "(loss.mel_windows, discriminator.*_n_ffts); raise data.segment_seconds or use smaller windows"
            )

    def _resolve_resume(self, resume: str | Path | bool | None) -> None:
        existing = checkpoints.list_checkpoints(self.checkpoint_dir)
        if resume is None or resume is False:
            if existing:
                raise CodecError(
                    f"{self.output_dir} already holds training checkpoints; pass --resume to continue that run, "
                    "or choose another train.output_dir"
                )
            return
        if resume is True:
            if not existing:
                raise CodecError(f"--resume: no checkpoint in {self.checkpoint_dir} yet; start without --resume")
            path = existing[-1]
        else:
            path = checkpoints.find(resume)
        self.load_state(checkpoints.load(path, self.device), source=path)

    def _same_architecture(self, other: ModelConfig) -> bool:
        """Equal configs up to the name and the quantizer's training-only settings (EMA decay, restarts, dropout)."""
        mine, q = self.config.model, self.config.model.quantizer
        training = {k: getattr(q, k) for k in QUANTIZER_TRAINING_KEYS}
        theirs = dataclasses.replace(other, name=mine.name, quantizer=dataclasses.replace(other.quantizer, **training))
        return theirs == mine

    def _init_from(self, source: str) -> None:
        """Load generator weights (and codebook statistics) from a checkpoint or model file; nothing else."""
        path = Path(source)
        if path.suffix == ".safetensors" or (not path.exists() and pretrained.find(source) is not None):
            from codec.checkpoint import load_model

            loaded = load_model(source)
            self.init_steps = int(loaded.provenance.get("steps") or 0)
            if not self._same_architecture(loaded.config):
                raise CodecError(
                    f"train.init_from={source} holds a model with another config; set model: to its config "
                    "(codec info shows it) to fine-tune it"
                )
            weights, extra = loaded.state_dict(), checkpoints.extra_buffers(loaded)
        else:
            state = checkpoints.load(checkpoints.find(path), self.device)
            self.init_steps = state["step"] + int(state.get("init_steps") or 0)
            if not self._same_architecture(from_dict(ModelConfig, state["config"]["model"])):
                raise CodecError(
                    f"train.init_from={source} was trained with another model config; set model: to the "
                    "config.yaml beside it to fine-tune it"
                )
            ema = state.get("generator_ema")
            weights, extra = (ema["model"], ema["extra"]) if ema else (state["generator"], state["generator_extra"])
        self.model.load_state_dict(weights)
        checkpoints.load_extra_buffers(self.model, extra)
        if self.ema is not None:
            self.ema = GeneratorEMA(self.model, self.config.train.ema_decay)

    def _setup_data(self) -> None:
        c = self.config
        dc = c.data
        usable = [u for u in self._train_utterances if u.duration is None or u.duration >= dc.min_seconds]
        if not usable:
            raise CodecError(f"no utterance in {dc.train_dir} is at least data.min_seconds={dc.min_seconds} long")
        known = [u.duration for u in usable if u.duration is not None]
        hours = f", {sum(known) / 3600:.2f} h" if known else " (no utt2dur: durations unknown)"
        self.log.info(f"training data {dc.train_dir}: {len(usable)} utterances{hours}")
        self.spec = AudioSpec(
            sample_rate=c.model.sample_rate,
            channels=c.model.channels,
            channel_mode=dc.channel_mode,
            loudness_db=dc.loudness_db,
            max_gain_db=dc.max_gain_db,
        )
        self.loader = train_loader(
            usable,
            spec=self.spec,
            length=self.length,
            batch_size=c.train.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=c.train.seed,
            num_workers=dc.num_workers,
            epoch=self.epoch,
            batch_index=self.batch_index,
            pin_memory=self.device.type == "cuda",
        )
        self._batches = None
        self.valid_items: list = []
        if dc.valid_dir and self.dist.is_main:
            self.valid_items, skipped = validation_items(
                self._valid_utterances, spec=self.spec, seconds=dc.valid_segment_seconds, count=dc.valid_items
            )
            for utt, reason in skipped:
                self.log.warning(f"validation: skipped unreadable {utt} ({reason})")
            self.log.info(f"validation data {dc.valid_dir}: {len(self.valid_items)} utterances")

    # --- state --------------------------------------------------------------------------------------------
    @property
    def cpu_seconds(self) -> float:
        """CPU time this run has spent in the training process (this rank), summed over resumes: the clock that
        arms are compared on. Data-loader workers are separate processes and not counted (data.num_workers 0
        keeps all the work in this one)."""
        return self._cpu_base + time.process_time() - self._cpu_mark

    def state_dict(self) -> dict:
        """The checkpoint content (call on every rank: RNG states are gathered from all of them)."""
        rng = self.dist.gather(checkpoints.rng_state())
        return {
            "step": self.step,
            "init_steps": self.init_steps,
            "data_position": {"epoch": self.epoch, "batch_index": self.batch_index},
            "world_size": self.dist.world_size,
            "config": to_dict(self.config),
            "config_source": self.config_source,
            "git_commit": self.commit,
            "generator": self.model.state_dict(),
            "generator_extra": checkpoints.extra_buffers(self.model),
            "generator_ema": self.ema.state_dict() if self.ema else None,
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "balancer": self.objective.balancer.state_dict() if self.objective.balancer else None,
            "counters": {
                "bad_in_row": self.bad_in_row,
                "bad_total": self.bad_total,
                "skipped": self.skipped_files,
                "cpu_seconds": self.cpu_seconds,
            },
            "rng": rng,
        }

    def load_state(self, state: dict, source: Path | str = "checkpoint") -> None:
        # parsed, not compared raw: a checkpoint written before a model option existed holds no key for it,
        # and reads as that option's default (as its exported model file would)
        try:
            saved_model = to_dict(from_dict(ModelConfig, state["config"]["model"], "model"))
        except (CodecError, TypeError, ValueError) as error:
            raise CodecError(
                f"{source}: its model config no longer parses ({error}); it needs another version of codec"
            ) from None
        if saved_model != to_dict(self.config)["model"]:
            raise CodecError(
                f"{source} was trained with a different model config; resume with the model section of the "
                "config.yaml beside its checkpoints (model settings cannot change mid-run)"
            )
        if state["config"]["discriminator"] != to_dict(self.config)["discriminator"]:
            raise CodecError(
                f"{source} was trained with other discriminator settings; keep the checkpoint's discriminator "
                "section (see its config.yaml) to resume or fine-tune from it"
            )
        self.model.load_state_dict(state["generator"])
        checkpoints.load_extra_buffers(self.model, state["generator_extra"])
        self.disc.load_state_dict(state["discriminator"])
        if self.ema is not None:  # an EMA switched on at resume starts from the loaded weights
            if state["generator_ema"] is not None:
                self.ema.load_state_dict(state["generator_ema"])
            else:
                self.ema = GeneratorEMA(self.model, self.config.train.ema_decay)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.scaler.load_state_dict(state["scaler"])
        if self.objective.balancer is not None and state["balancer"] is not None:
            self.objective.balancer.load_state_dict(state["balancer"])
        self.step, self.init_steps = state["step"], int(state.get("init_steps") or 0)
        self.epoch, self.batch_index = state["data_position"]["epoch"], state["data_position"]["batch_index"]
        counters = state["counters"]
        self.bad_in_row, self.bad_total, self.skipped_files = 0, counters["bad_total"], counters["skipped"]
        # checkpoints written before the CPU clock was kept start it at zero
        self._cpu_base, self._cpu_mark = float(counters.get("cpu_seconds", 0.0)), time.process_time()
        self.commit = self.commit or state.get("git_commit")
        rng = state["rng"]
        if state["world_size"] == self.dist.world_size:
            checkpoints.set_rng_state(rng[self.dist.rank])
        elif self.dist.is_main:
            print(
                f"codec: warning: resuming on {self.dist.world_size} ranks from a {state['world_size']}-rank run; "
                "data order and random streams will differ from an uninterrupted run",
                file=sys.stderr,
            )

    def save_checkpoint(self) -> Path:
        state = self.state_dict()  # collective: every rank takes part
        path = checkpoints.checkpoint_path(self.checkpoint_dir, self.step)
        if self.dist.is_main:
            path = checkpoints.save(self.checkpoint_dir, self.step, state, self.config.train.keep_checkpoints)
        self.dist.barrier()
        return path

    # --- one step ------------------------------------------------------------------------------------------
    def _autocast(self):
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[precision])

    @staticmethod
    def _maybe_no_sync(module, sync: bool):
        if sync or not isinstance(module, DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()

    def _next_batch(self) -> torch.Tensor:
        if self._batches is None:
            self._batches = iter(self.loader)
        batch = next(self._batches)
        self.epoch, self.batch_index = batch["epoch"], batch["batch_index"] + 1
        for utt, reason in batch["skipped"]:
            self.skipped_files += 1
            if utt not in self._seen_skips:
                self._seen_skips.add(utt)
                self.log.warning(f"skipped unreadable {utt}: {reason}")
        return batch["audio"].to(self.device, non_blocking=True)

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step; returns the step's metrics, or None if it was skipped (NaN/Inf)."""
        tc = self.config.train
        gan = self.use_gan and self.step >= tc.disc_start_step
        quantize = self.step >= tc.quantizer_warmup_steps
        if quantize and tc.quantizer_warmup_steps and not bool(self.model.quantizer.initialized):
            self._init_codebooks()
        accum = tc.grad_accum
        quantizer_state = {k: v.clone() for k, v in self.model.quantizer.named_buffers()}
        sums: dict[str, float] = {}
        for micro in range(accum):
            x = self._next_batch()
            last = micro == accum - 1
            with self._maybe_no_sync(self.g, last), self._maybe_no_sync(self.d, last):
                with self._autocast():
                    y_hat, q = self.g(x, quantize=quantize, noise=0.0 if quantize else tc.quantizer_warmup_noise)
                y_hat = y_hat.float()
                critics = self.objective.critic_pass(y_hat, x) if gan else None
                if critics is not None:
                    self.scaler.scale(critics.loss / accum).backward()
                losses = self.objective(
                    y_hat, x, commitment=q.commitment_loss, levels=q.levels if quantize else None, critics=critics
                )
                self.scaler.scale(losses.generator / accum).backward()
            for k, v in losses.logged.items():
                sums[k] = sums.get(k, 0.0) + float(v) / accum
        return self._apply_step(sums, gan, quantizer_state)

    @torch.no_grad()
    def _init_codebooks(self) -> None:
        """End of the quantizer warm start: k-means (fsq: a PCA per level) on the latents of `train.kmeans_batches`
        fresh batches."""
        tc = self.config.train
        was_training = self.model.training
        self.model.eval()
        with self._autocast():
            # training crops are whole frames (self.length), so the encoder takes them as they are
            latents = [self.model.encoder(self._next_batch()).float() for _ in range(tc.kmeans_batches)]
        self.model.train(was_training)
        z = torch.cat(latents)
        self.model.quantizer.init_codebooks(z)
        how = "a PCA per level (fsq)" if self.model.quantizer.level_type == "fsq" else "k-means"
        self.log.info(
            f"step {self.step}: quantizer warm start over; codebooks from {how} on {z.shape[0] * z.shape[-1]} "
            "latent frames"
        )

    def _apply_step(self, metrics: dict[str, float], gan: bool, quantizer_state: dict) -> dict[str, float] | None:
        tc = self.config.train
        bad = not all(math.isfinite(v) for v in metrics.values())
        if gan:
            self.scaler.unscale_(self.opt_d)
            metrics["grad_norm_d"] = float(
                torch.nn.utils.clip_grad_norm_(self.disc.parameters(), tc.grad_clip_d or float("inf"))
            )
        self.scaler.unscale_(self.opt_g)
        metrics["grad_norm_g"] = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or float("inf"))
        )
        if tc.precision != "fp16":  # with fp16 the grad scaler handles overflowing gradients itself
            bad = bad or not (math.isfinite(metrics["grad_norm_g"]) and math.isfinite(metrics.get("grad_norm_d", 0.0)))
        bad = dist.any_true(bad, self.device)  # every rank skips together or steps together
        if bad:
            with torch.no_grad():
                for name, buffer in self.model.quantizer.named_buffers():
                    buffer.copy_(quantizer_state[name])
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            if tc.precision == "fp16":
                self.scaler.update()
            self.bad_in_row += 1
            self.bad_total += 1
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            self.log.warning(f"step {self.step}: non-finite loss or gradient, step skipped ({shown})")
            return None
        self.bad_in_row = 0
        if gan:
            self.scaler.step(self.opt_d)
            self.sched_d.step()
        self.scaler.step(self.opt_g)
        self.sched_g.step()
        self.scaler.update()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return metrics

    # --- the loop ------------------------------------------------------------------------------------------
    def fit(self, max_steps: int | None = None, callback: Callable[[int, dict], None] | None = None) -> None:
        """Train until `train.max_steps` (or the earlier `max_steps`, which stops the run as an interruption
        would: the schedule still runs to `train.max_steps`), checkpointing on the way and at the end."""
        tc = self.config.train
        end = min(max_steps if max_steps is not None else tc.max_steps, tc.max_steps)
        interval: dict[str, list[float]] = {}
        saved_at = self.step
        try:
            while self.step < end:
                try:
                    metrics = self.train_step()
                except Exception as e:
                    if _is_oom(e):
                        self._raise_oom(e)
                    raise
                if metrics is None:
                    if self.bad_in_row >= tc.max_bad_steps:
                        path = self.save_checkpoint()
                        raise CodecError(
                            f"{self.bad_in_row} steps in a row had NaN/Inf losses or gradients (at step {self.step}); "
                            f"stopped with a checkpoint at {path}. Lower train.lr, use train.precision=fp32 or bf16, "
                            "or lower train.grad_clip, then rerun with --resume"
                        )
                    continue
                for k, v in metrics.items():
                    interval.setdefault(k, []).append(v)
                if callback is not None:
                    callback(self.step, metrics)
                if self.step % tc.log_every == 0 or self.step == end:
                    self._log_interval(interval)
                    interval = {}
                if self.step % tc.eval_every == 0:
                    self.run_validation()
                if self.step % tc.checkpoint_every == 0:
                    self.save_checkpoint()
                    saved_at = self.step
            if saved_at != self.step:
                self.save_checkpoint()
        finally:
            self.log.flush()

    def _raise_oom(self, error: BaseException) -> None:
        tc = self.config.train
        half = max(tc.batch_size // 2, 1)
        raise CodecError(
            f"out of memory on {self.device} with train.batch_size={tc.batch_size} and crops of "
            f"{self.config.data.segment_seconds:g} s; lower the batch size (e.g. train.batch_size={half} "
            f"train.grad_accum={tc.grad_accum * 2} keeps the effective batch) or data.segment_seconds"
        ) from error

    def _log_interval(self, interval: dict[str, list[float]]) -> None:
        keys = sorted(interval)
        means = dist.sum_over_ranks([sum(interval[k]) / len(interval[k]) for k in keys], self.device)
        means = [m / self.dist.world_size for m in means]
        skipped = int(dist.sum_over_ranks([float(self.skipped_files)], self.device)[0])
        values = dict(zip(keys, means, strict=True))
        summary = {k: values[k] for k in ("mel", "commitment", "adversarial") if k in values}
        summary["cpu_h"] = self.cpu_seconds / 3600
        rate = self.log.progress(self.step, summary)
        scalars = {}
        for k, v in values.items():
            group = "grad_norm" if k.startswith("grad_norm") else "balancer" if k.startswith("balancer") else "loss"
            scalars[f"{group}/{k}"] = v
        scalars["lr/generator"] = self.sched_g.get_last_lr()[0]
        if self.use_gan:
            scalars["lr/discriminator"] = self.sched_d.get_last_lr()[0]
        scalars["train/steps_per_s"] = rate
        scalars["train/cpu_hours"] = self.cpu_seconds / 3600
        scalars["train/skipped_files"] = skipped
        scalars["train/bad_steps"] = self.bad_total
        if self.config.train.precision == "fp16":
            scalars["train/grad_scale"] = self.scaler.get_scale()
        stats = self.model.quantizer.codebook_stats()
        K = self.model.codebook_size
        for g in range(self.model.num_groups):
            for level in range(self.model.num_levels):
                dead = float(stats["dead_codes"][g, level])
                scalars[f"codebook/g{g}_l{level}/perplexity"] = float(stats["perplexity"][g, level])
                scalars[f"codebook/g{g}_l{level}/dead_codes"] = dead
                scalars[f"codebook/g{g}_l{level}/usage"] = 1 - dead / K
        scalars["codebook/perplexity_mean"] = float(stats["perplexity"].mean())
        scalars["codebook/dead_codes_total"] = float(stats["dead_codes"].sum())
        self.log.scalars(self.step, scalars)

    def run_validation(self) -> dict[str, float]:
        """Validate on rank 0 (the generator EMA when there is one); the other ranks wait."""
        metrics: dict[str, float] = {}
        if self.dist.is_main and self.valid_items:
            model = self.ema.model if self.ema is not None else self.model
            # every prefix of levels (quality must rise with it) and the unquantized autoencoder (0)
            levels = [0, *range(1, model.num_levels + 1)]
            metrics, outputs = validate(model, self.valid_items, levels)
            self.log.scalars(self.step, metrics)
            sr = model.sample_rate
            for i, (utt, audio) in enumerate(self.valid_items[: self.config.train.audio_samples]):
                self.log.audio(f"audio/{utt}/input", audio.numpy(), self.step, sr)
                for n in sorted({0, 1, model.num_levels}):
                    self.log.audio(f"audio/{utt}/levels_{n}", outputs[n][i].numpy(), self.step, sr)
                pair = [
                    mel_image(self.mel_loss, audio.to(self.device)),
                    mel_image(self.mel_loss, outputs[levels[-1]][i].to(self.device)),
                ]
                self.log.image(
                    f"mel/{utt}", np.concatenate([pair[0], np.ones((2, pair[0].shape[1])), pair[1]]), self.step
                )
            shown = " ".join(f"{k.split('/', 1)[1]} {v:.4g}" for k, v in metrics.items() if k.startswith("valid/"))
            self.log.info(f"validation at step {self.step}: {shown}")
        self.dist.barrier()
        return metrics

    def close(self) -> None:
        self.log.close()
        self._batches = None


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a config shipped in codec/configs (e.g. grvq16k)."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    return builtin_config_path(name_or_path)


def train_from_cli(config: str, overrides: list[str], resume: bool = False, resume_from: str | None = None) -> None:
    """`codec train`: load the config, train to train.max_steps, clean up the process group."""
    path = resolve_config_path(config)
    cfg = load_config(path, overrides)
    trainer = Trainer(cfg, resume=resume_from or resume or None, config_source=str(path))
    try:
        trainer.fit()
        trainer.log.info(
            f"done at step {trainer.step}; export with: codec export {trainer.output_dir} model.safetensors"
        )
    finally:
        trainer.close()
        trainer.dist.close()
