"""`codec tokens`: turn a corpus into codec tokens, batched, resumable, on one process or many (torchrun).

Flow of one run (every rank does the same, on its own shard):

    list utterances (sorted ids) -> skip those a journal already commits -> shard = pending[rank::world]
    -> length buckets -> DataLoader workers read, mix to mono, resample -> model.encode per bucket, trimmed to
    each utterance's own frames -> pattern -> part writer -> journal commit (per bucket)
    -> all ranks done: rank 0 merges the journals into OUT (tokens, utt2num_frames, failed.list, manifest.json)

Padding a bucket never changes an utterance's codes: the encoder is causal, so frame f sees only samples up
to the end of frame f, and the zeros after a shorter utterance are exactly the zeros `encode` pads its last
partial frame with:

    utt a  |--f0--|--f1--|--f2--|-f3-...|            a makes ceil(len / hop) = 4 frames; keep f0..f3
    utt b  |--f0--|--f1|0000 zeros 0000000|          b makes 2; its f1 is padded with zeros either way

Skipped, on purpose, and listed in failed.list (`utt-id kind: reason`) with counts in the summary:
unreadable files (kind `unreadable`), audio without samples (`empty`), and audio shorter than `min_frames`
whole frames at the model's rate (`short`, default: under one frame), which would yield codes of mostly
padding. Skipped utterances are retried when the run is resumed.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec import __version__, dist
from codec.datadir import list_utterances
from codec.errors import CodecError
from codec.models.codec import CodecModel
from codec.tokens.data import BatchLoader, frames_for, make_batches, probe_duration
from codec.tokens.patterns import PATTERNS, Pattern, make_pattern
from codec.tokens.writers import PARTS, WORK, Journal, check_format, merge, read_journals, storage_dtype, write_text

LEVEL_ORDER = "level-major: index l*G+g"
LONG_SECONDS = 60.0  # longer utterances are encoded alone, block by block (bounded memory)
BLOCK_SECONDS = 10.0
MANIFEST_VERSION = 1
# Ranks wait for the slowest one at the end of their shards; only barriers and small objects cross (gloo).
TIMEOUT = timedelta(days=2)


def build_pattern(name: str, model: CodecModel, levels: int, *, offsets: bool = False, **options) -> Pattern:
    """The pattern for `levels` levels of `model` (coarse-first puts the whole first level, G codebooks, first)."""
    if name not in PATTERNS:
        raise CodecError(f"--pattern {name} is not one of {', '.join(PATTERNS)}")
    if name == "coarse-first":
        options.setdefault("coarse", model.num_groups)
    return make_pattern(name, levels * model.num_groups, model.codebook_size, offsets=offsets, **options)


def extract_tokens(
    model: CodecModel,
    data: str | Path,
    out: str | Path,
    *,
    levels: int,
    fmt: str = "npy",
    pattern: str = "parallel",
    offsets: bool = False,
    batch_size: int = 16,
    max_batch_seconds: float = 320.0,
    num_workers: int = 2,
    device: str = "auto",
    min_frames: int = 1,
    progress: bool = True,
) -> dict:
    """Extract tokens of every utterance of `data` into `out` (see the module docstring); returns the summary.

    Under torchrun each rank calls this with the same arguments; rank 0 merges and returns the full summary.
    """
    if batch_size < 1 or num_workers < 0 or min_frames < 0:
        raise CodecError("--batch-size must be >= 1, --num-workers >= 0 and --min-frames >= 0")
    world = dist.join(device, backend="gloo", timeout=TIMEOUT)
    try:
        model = model.to(world.device).eval()
        return _run(model, data, Path(out), world, levels=levels, fmt=fmt, pattern=pattern, offsets=offsets,
                    batch_size=batch_size, max_batch_seconds=max_batch_seconds, num_workers=num_workers,
                    min_frames=min_frames, progress=progress)  # fmt: skip
    finally:
        world.close()


def _settings(model: CodecModel, data, levels: int, fmt: str, pattern: Pattern, dtype, min_frames: int) -> dict:
    G = model.num_groups
    return {
        "model": {
            "name": model.name, "weights_hash": model.weights_hash, "sample_rate": model.sample_rate,
            "hop_length": model.hop_length, "frame_rate": model.frame_rate, "num_groups": G,
            "num_levels": model.num_levels, "codebook_size": model.codebook_size,
        },
        "bitrate": model.bitrate(levels), "levels": levels, "num_codebooks": levels * G, "level_order": LEVEL_ORDER,
        "format": fmt, "dtype": dtype.name, "pattern": pattern.to_json(), "min_frames": min_frames,
        "data": str(Path(data).resolve()),
    }  # fmt: skip


def _run(model, data, out: Path, world: dist.World, *, levels, fmt, pattern, offsets, batch_size, max_batch_seconds,
         num_workers, min_frames, progress) -> dict:  # fmt: skip
    started = time.perf_counter()
    utts = list_utterances(data)
    pat = build_pattern(pattern, model, levels, offsets=offsets)
    dtype = storage_dtype(pat.max_token)
    check_format(fmt, pat.max_token)
    settings = _settings(model, data, levels, fmt, pat, dtype, min_frames)
    work = out / WORK
    if not work.exists() and (out / "manifest.json").is_file():
        return _already_done(out, settings, [u.id for u in utts])
    world.barrier()  # everyone has looked before rank 0 creates .work
    if world.is_main:
        _start_work(out, work, settings)
    world.barrier()
    committed = {r["id"]: r for r in read_journals(work) if "shape" in r}
    world.barrier()  # everyone has read the journals before anyone appends to them
    pending = [u for u in utts if u.id not in committed]
    shard = pending[world.rank :: world.world_size]
    name = f"rank{world.rank}"
    journal = Journal(work / f"{name}.jsonl")
    part = PARTS[fmt](out, work, name, dtype, list(committed.values()))
    stats = {"utterances": 0, "seconds": 0.0, "unreadable": 0, "empty": 0, "short": 0}
    try:
        _extract_shard(model, shard, pat, dtype, part, journal, stats, levels=levels, batch_size=batch_size,
                       max_batch_seconds=max_batch_seconds, num_workers=num_workers, min_frames=min_frames,
                       progress=progress and world.is_main, world=world)  # fmt: skip
    finally:
        part.close()
        journal.close()
    wall = time.perf_counter() - started
    gathered = world.gather({**stats, "wall": wall})
    world.barrier()
    if not world.is_main:
        return {"rank": world.rank, **stats}
    summary = _finish(out, work, fmt, settings, utts)
    this_run = {k: sum(g[k] for g in gathered) for k in stats}
    wall = max(g["wall"] for g in gathered)
    summary["this_run"] = {
        "utterances": this_run["utterances"], "audio_hours": this_run["seconds"] / 3600, "wall_seconds": wall,
        "utterances_per_second": this_run["utterances"] / wall, "audio_hours_per_hour": this_run["seconds"] / wall,
        "processes": world.world_size, "resumed_from": len(committed),
    }  # fmt: skip
    return summary


def _start_work(out: Path, work: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    path = work / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise CodecError(
                f"{out} holds an unfinished extraction with other {', '.join(changed)}; rerun with the same "
                "options to resume it, or use a new --out"
            )
    else:
        path.write_text(json.dumps(settings, indent=1))


def _already_done(out: Path, settings: dict, ids: list[str]) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    same = all(manifest.get(k) == v for k, v in settings.items())
    listed = manifest.get("all_ids_sha1")
    if not same or listed != _ids_digest(ids):
        raise CodecError(f"{out} already holds a finished extraction of other data or options; use a new --out")
    return {**manifest["summary"], "up_to_date": True}


def _ids_digest(ids: list[str]) -> str:
    import hashlib

    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def _extract_shard(model, shard, pat, dtype, part, journal, stats, *, levels, batch_size, max_batch_seconds,
                   num_workers, min_frames, progress, world) -> None:  # fmt: skip
    durations = [probe_duration(u) for u in shard]
    batches = make_batches(
        shard, durations, batch_size=batch_size, max_batch_seconds=max_batch_seconds, long_seconds=LONG_SECONDS
    )
    dataset = BatchLoader(shard, batches, model.sample_rate, min_frames * model.hop_length)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_as_is
    )  # fmt: skip
    where = f" (rank 0 of {world.world_size})" if world.world_size > 1 else ""
    bar = tqdm(total=len(shard), unit="utt", desc=f"tokens{where}", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for ready, skipped in loader:
        records = []
        if ready:
            codes = _encode(model, [audio for _, audio, _ in ready], levels)
            for (i, audio, seconds), c in zip(ready, codes, strict=True):
                tokens = pat.apply(c.numpy()).astype(dtype)
                location = part.add(shard[i].id, tokens)
                records.append({
                    "id": shard[i].id, "num_frames": c.shape[-1], "shape": list(tokens.shape),
                    "num_samples": int(audio.shape[0]), "seconds": round(seconds, 6), **location,
                })  # fmt: skip
                stats["utterances"] += 1
                stats["seconds"] += seconds
        for i, kind, reason in skipped:
            records.append({"id": shard[i].id, "skip": kind, "reason": reason})
            stats[kind] += 1
        part.sync()
        journal.commit(records)
        bar.update(len(ready) + len(skipped))
        elapsed = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{stats['seconds'] / 3600 / elapsed:.4f} audio-h/s, {stats['seconds'] / 3600:.3f} h")
    bar.close()


def _as_is(item):
    return item


def _encode(model: CodecModel, audios: list[np.ndarray], levels: int) -> list[torch.Tensor]:
    """Codes [N, F_i] of each mono utterance (model rate), F_i = its own frame count."""
    hop, device = model.hop_length, next(model.parameters()).device
    if len(audios) == 1 and audios[0].shape[0] > LONG_SECONDS * model.sample_rate:
        from codec.coding.streaming import StreamingEncoder

        encoder = StreamingEncoder(model, levels=levels)  # equals offline encoding, in bounded memory
        step = int(BLOCK_SECONDS * model.sample_rate)
        parts = [encoder.push(audios[0][None, i : i + step]) for i in range(0, audios[0].shape[0], step)]
        return [torch.cat([*parts, encoder.flush()], dim=-1)[0]]
    frames = [frames_for(a.shape[0], hop) for a in audios]
    x = torch.zeros(len(audios), 1, max(frames) * hop)
    for b, a in enumerate(audios):
        x[b, 0, : a.shape[0]] = torch.from_numpy(a)
    codes = model.encode(x.to(device), levels).cpu()
    return [codes[b, :, :f] for b, f in enumerate(frames)]


def _finish(out: Path, work: Path, fmt: str, settings: dict, utts) -> dict:
    """Rank 0, after every rank is done: merge the journals into OUT's final files, then drop .work."""
    records, skips = {}, {}
    for r in read_journals(work):  # later records win: a retried skip may have succeeded
        if "shape" in r:
            records[r["id"]] = r
            skips.pop(r["id"], None)
        elif r["id"] not in records:
            skips[r["id"]] = r
    ids = [u.id for u in utts]
    done = [records[i] for i in ids if i in records]
    failed = [skips[i] for i in ids if i in skips and i not in records]
    files = merge(fmt, out, work, done)
    write_text(out / "utt2num_frames", "".join(f"{r['id']} {r['num_frames']}\n" for r in done))
    write_text(out / "failed.list", "".join(f"{r['id']} {r['skip']}: {r['reason']}\n" for r in failed))
    counts = {kind: sum(r["skip"] == kind for r in failed) for kind in ("unreadable", "empty", "short")}
    summary = {
        "utterances": len(ids), "extracted": len(done), "failed": counts["unreadable"], "skipped_empty":
        counts["empty"], "skipped_short": counts["short"], "frames": sum(r["num_frames"] for r in done),
        "audio_hours": sum(r["seconds"] for r in done) / 3600,
    }  # fmt: skip
    manifest = {
        "manifest_version": MANIFEST_VERSION, "codec_version": __version__, **settings,
        "files": [*files, "utt2num_frames", "failed.list"], "summary": summary, "all_ids_sha1": _ids_digest(ids),
        "utterances": [
            {"id": r["id"], "num_frames": r["num_frames"], "shape": r["shape"], "seconds": r["seconds"]} for r in done
        ],
    }  # fmt: skip
    write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(work)
    return summary
