"""Training data from Kaldi-style data dirs (read by `codec.datadir`): random crops, resampled to the model rate.

Every crop is a pure function of (seed, epoch, draw number): the sampler hands out those keys, so
the same step sees the same audio whatever the number of DataLoader workers, and a resumed run picks
up at the next unseen batch. An unreadable file is replaced by the next readable utterance and
reported in the batch (`skipped`), so the trainer can log and count it; it never stops training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from codec.audio import fit_length, resample
from codec.datadir import Utterance, read_span, utterance_seconds
from codec.errors import CodecError


@dataclass(frozen=True)
class AudioSpec:
    """What the model takes and how files are brought to it."""

    sample_rate: int
    channels: int
    channel_mode: str = "mix"  # mix | first | random, for files with more channels than the model
    loudness_db: float | None = None
    max_gain_db: float = 20.0


def prepare(audio: np.ndarray, rate: int, length: int, spec: AudioSpec, rng: np.random.Generator) -> np.ndarray:
    """Resample, fix the channel count, trim/pad to `length` samples and normalise loudness: [C, length]."""
    audio = resample(audio, rate, spec.sample_rate)
    C = audio.shape[0]
    if C != spec.channels:
        if spec.channels == 1 and spec.channel_mode == "mix":
            audio = audio.mean(0, keepdims=True)
        elif C == 1:
            audio = np.repeat(audio, spec.channels, axis=0)
        elif C > spec.channels and spec.channel_mode == "random":
            audio = audio[np.sort(rng.choice(C, spec.channels, replace=False))]
        elif C > spec.channels:
            audio = audio[: spec.channels]
        else:
            raise ValueError(f"has {C} channels; the model takes {spec.channels}")
    audio = fit_length(audio, length)
    if spec.loudness_db is not None:
        rms = float(np.sqrt(np.mean(audio**2)))
        if rms > 1e-5:  # leave digital silence alone
            gain = min(10 ** ((spec.loudness_db - 20 * math.log10(rms)) / 20), 10 ** (spec.max_gain_db / 20))
            audio = audio * gain
        peak = float(np.abs(audio).max())
        if peak > 0.99:  # never clip: loudness gives way to the peak
            audio = audio * (0.99 / peak)
    return np.ascontiguousarray(audio, dtype=np.float32)


class CropDataset(Dataset):
    """Random crops of `length` samples; indexed by (epoch, batch_index, draw, utterance index) keys.

    Returns {"audio": [C, length] float32, "skipped": [(utt_id, reason)], "epoch", "batch_index"}.
    """

    MAX_FALLBACKS = 50

    def __init__(self, utterances: list[Utterance], *, spec: AudioSpec, length: int, seed: int) -> None:
        self.utterances, self.spec, self.length, self.seed = utterances, spec, length, seed
        self.seconds = length / spec.sample_rate

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: tuple[int, int, int, int]) -> dict:
        epoch, batch_index, draw, index = key
        rng = np.random.default_rng([self.seed, epoch, draw])
        skipped = []
        for attempt in range(min(self.MAX_FALLBACKS, len(self.utterances))):
            utt = self.utterances[(index + attempt) % len(self.utterances)]
            try:
                audio = self._crop(utt, rng)
            except Exception as e:  # any failure to read one file must not stop training
                skipped.append((utt.id, f"{utt.path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
                continue
            return {"audio": torch.from_numpy(audio), "skipped": skipped, "epoch": epoch, "batch_index": batch_index}
        raise CodecError(
            f"{len(skipped)} utterances in a row could not be read (last: {skipped[-1][1]}); "
            "check the paths in the data dir's wav.scp"
        )

    def _crop(self, utt: Utterance, rng: np.random.Generator) -> np.ndarray:
        total = utterance_seconds(utt)
        if total <= 0:
            raise ValueError("empty utterance")
        offset = float(rng.uniform(0.0, total - self.seconds)) if total > self.seconds else 0.0
        audio, rate = read_span(utt, offset, self.seconds + 0.01)  # a little extra so resampling fills the crop
        return prepare(audio, rate, self.length, self.spec, rng)


class CropBatchSampler:
    """Endless batches of keys for `CropDataset`, epoch after epoch, this rank's share of each.

    Each epoch is a seeded permutation of the utterances, cut into batches of `batch_size` per rank
    (repeated when there are fewer utterances than one global batch). Starts at (`epoch`, `batch_index`),
    which is how a resumed run skips what it has already seen.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        epoch: int = 0,
        batch_index: int = 0,
    ) -> None:
        self.num_items, self.batch_size, self.rank, self.world_size, self.seed = (
            num_items,
            batch_size,
            rank,
            world_size,
            seed,
        )
        self.epoch, self.batch_index = epoch, batch_index
        self.batches_per_epoch = max(1, num_items // (batch_size * world_size))

    def _order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        need = self.batches_per_epoch * self.world_size * self.batch_size
        return np.resize(perm, need).reshape(self.batches_per_epoch, self.world_size, self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        epoch, start = self.epoch, self.batch_index
        while True:
            order = self._order(epoch)
            for b in range(start, self.batches_per_epoch):
                first_draw = (b * self.world_size + self.rank) * self.batch_size
                yield [(epoch, b, first_draw + i, int(index)) for i, index in enumerate(order[b, self.rank])]
            epoch, start = epoch + 1, 0


def collate(items: list[dict]) -> dict:
    return {
        "audio": torch.stack([item["audio"] for item in items]),
        "skipped": [s for item in items for s in item["skipped"]],
        "epoch": items[0]["epoch"],
        "batch_index": items[0]["batch_index"],
    }


def _seed_worker(worker_id: int) -> None:
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def train_loader(
    utterances: list[Utterance],
    *,
    spec: AudioSpec,
    length: int,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int,
    epoch: int = 0,
    batch_index: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless DataLoader of crops [B, C, length] for this rank, starting at the given data position."""
    dataset = CropDataset(utterances, spec=spec, length=length, seed=seed)
    sampler = CropBatchSampler(
        len(utterances),
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
        batch_index=batch_index,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if num_workers else None,
        persistent_workers=num_workers > 0,
        # Its own generator: creating an iterator draws a seed, which must not move the global RNG
        # (a resumed run creates its iterator at a different point of the global stream).
        generator=torch.Generator().manual_seed(seed * 1000 + rank),
    )


def validation_items(
    utterances: list[Utterance], *, spec: AudioSpec, seconds: float, count: int
) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, str]]]:
    """The first `seconds` of the first `count` readable utterances, as ([C, T] tensors by utt id, skipped)."""
    items, skipped = [], []
    rng = np.random.default_rng(0)
    for utt in utterances:
        if len(items) >= count:
            break
        try:
            audio, rate = read_span(utt, 0.0, seconds)
            n = math.ceil(audio.shape[1] * spec.sample_rate / rate)
            items.append((utt.id, torch.from_numpy(prepare(audio, rate, n, spec, rng))))
        except Exception as e:  # same policy as training: skip and report
            skipped.append((utt.id, f"{utt.path}: {type(e).__name__}: {e}"))
    return items, skipped
