"""`codec eval`: code a set of clips with the model at several bitrates and with classical baselines, score
every result with the same metrics, and write the reports (see `codec.eval.report`).

Clips come from a folder of audio files (searched recursively), a Kaldi data dir or a `wav.scp`, read by
`codec.datadir` (segments and pipe commands included). Every clip is mixed to mono and each system codes it at its own
rate; each metric then resamples reference and output to the rate it needs. Content type decides the
speech-only metrics and the Opus mode: with `content="auto"` the nearest path component (file name first,
then its folders upward) containing "music" or "speech" decides, and a clip matching neither counts as speech.

A clip that cannot be read, or a system that fails on it, becomes a CSV row with its reason; the run goes on.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec.datadir import Utterance, list_utterances, read_span
from codec.errors import CodecError
from codec.eval import metrics as M
from codec.eval.baselines import Codec2, Coded, Opus, make_baselines

CONTENT_TYPES = ("speech", "music")


@dataclass(frozen=True)
class Clip:
    utt: Utterance
    content: str  # "speech" or "music"

    @property
    def id(self) -> str:
        return self.utt.id

    @property
    def path(self) -> Path | str:
        """The audio file, or the command of a pipe entry."""
        return self.utt.path if self.utt.is_pipe else Path(self.utt.path)


def content_of(path: str | Path, default: str = "speech") -> str:
    """'music' or 'speech' from the nearest path component naming one (file name first), else `default`."""
    for part in reversed(Path(path).parts):
        part = part.lower()
        if "music" in part:
            return "music"
        if "speech" in part:
            return "speech"
    return default


def list_clips(data: str | Path, content: str = "auto") -> list[Clip]:
    """Clips of a folder of audio files, a Kaldi data dir or a wav.scp, sorted by id."""
    if content not in ("auto", *CONTENT_TYPES):
        raise CodecError(f"--content {content} is not one of auto, {', '.join(CONTENT_TYPES)}")
    return [Clip(u, content_of(u.path) if content == "auto" else content) for u in list_utterances(data)]


class ModelSystem:
    """The model at one level count, through the real .codes path (encode_audio -> bytes -> decode_stream)."""

    system_kind = "model"

    def __init__(self, model, levels: int) -> None:
        self.model, self.levels = model, levels
        self.system = model.name
        self.kbps = model.bitrate(levels) / 1000

    @property
    def label(self) -> str:
        return f"{self.system} {round(self.kbps, 2):g} kbps"

    def describe(self, sample_rate: int = 0, content: str = "") -> str:
        return (
            f"codec.compress.encode_audio/decode_stream with model {self.model.name}, {self.levels} of "
            f"{self.model.num_levels} levels ({self.kbps:g} kbps payload); bits = the whole .codes file"
        )

    def run(self, audio: np.ndarray, sample_rate: int, content: str) -> Coded:
        from codec.coding.compress import decode_stream, encode_audio
        from codec.format.bitstream import CodesReader

        buffer = io.BytesIO()
        encode_audio(self.model, audio[None], sample_rate, buffer, levels=self.levels)
        data = buffer.getvalue()
        decoded, _, _ = decode_stream(self.model, io.BytesIO(data), name="codes")
        codes = np.concatenate([p.codes[:, 0] for p in CodesReader(io.BytesIO(data)).packets()])
        return Coded(decoded[0], len(data) * 8, self.describe(), codes)


class ContinuousSystem:
    """The model's autoencoder with the quantizer bypassed: the ceiling its codes approach (no bits, no file)."""

    system_kind = "model"

    def __init__(self, model) -> None:
        self.model = model
        self.system = f"{model.name} continuous"
        self.kbps = None  # no target bitrate, like "original" (NaN would break summary.json, written strict)

    @property
    def label(self) -> str:
        return self.system

    def describe(self, sample_rate: int = 0, content: str = "") -> str:
        return f"model {self.model.name} encoder -> decoder with the quantizer bypassed (an upper bound, no bits)"

    def run(self, audio: np.ndarray, sample_rate: int, content: str) -> Coded:
        import torch

        from codec.audio import fit_length, resample

        rate = self.model.sample_rate
        x = resample(np.asarray(audio, dtype=np.float32)[None], sample_rate, rate)  # [1, T]
        with torch.no_grad():
            y, _ = self.model(torch.from_numpy(np.ascontiguousarray(x))[None], quantize=False)
        y = resample(y[0].numpy(), rate, sample_rate)
        return Coded(fit_length(y, audio.shape[-1])[0], 0, self.describe())


def parse_bitrates(model, text: str | None, log: Callable[[str], None]) -> list[int]:
    """Level counts for comma-separated kbps ('all' or None: every supported bitrate)."""
    if text is None or text.strip() in ("", "all"):
        return list(range(1, model.num_levels + 1))
    levels = []
    for item in text.split(","):
        try:
            kbps = float(item)
        except ValueError:
            raise CodecError(f"--bitrates takes kbps separated by commas (like 1,2,4), not {item!r}") from None
        n, notice = model.levels_for(bitrate_kbps=kbps)
        if notice:
            log(f"note: {notice}")
        levels.append(n)
    return sorted(set(levels))


def _listening_choice(clips: list[Clip], count: int) -> set[str]:
    """Up to `count` clip ids for the listening page, alternating content types so each is heard."""
    queues = {c: [clip.id for clip in clips if clip.content == c] for c in CONTENT_TYPES}
    chosen: list[str] = []
    while len(chosen) < count and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return set(chosen)


def run_eval(
    *,
    data: str | Path,
    out_dir: str | Path,
    model=None,
    bitrates: str | None = None,
    baselines: str | None = "opus,codec2",
    metrics: str | None = "all",
    content: str = "auto",
    limit: int | None = None,
    listen_clips: int = 6,
    listen_seconds: float = 10.0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    jobs: int = 1,
    continuous: bool = False,
    skip_missing_baselines: bool = False,
) -> dict:
    """Run the evaluation and write the reports into `out_dir`; returns the summary (as in summary.json).

    `jobs` > 1 scores clips in that many processes (one torch thread each); the reports are identical.
    A baseline whose tool is missing stops the run before it starts, or with `skip_missing_baselines` is not run:
    one `log` line each, naming what to install, and listed as not run in the reports (`run.not_run`).
    """
    from tqdm import tqdm

    from codec.eval import report

    log = log or (lambda message: print(f"codec: {message}", file=sys.stderr))
    started = time.time()
    if jobs < 1:
        raise CodecError(f"--jobs {jobs}: give 1 or more processes")
    chosen_metrics = M.select_metrics(metrics)
    M.check_available(chosen_metrics)
    systems: list = [ModelSystem(model, n) for n in parse_bitrates(model, bitrates, log)] if model is not None else []
    if continuous and model is not None:
        systems.append(ContinuousSystem(model))
    baseline_systems, not_run = make_baselines(baselines, skip_missing=skip_missing_baselines)
    systems += baseline_systems
    for why in dict.fromkeys(entry["why"] for entry in not_run):
        log(f"warning: baseline not run: {why}")
    if not systems:
        raise CodecError("nothing to evaluate: pass --model and/or --baselines")
    clips = list_clips(data, content)[:limit] if limit else list_clips(data, content)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    listen_ids = _listening_choice(clips, listen_clips)

    rows: list[dict] = []
    counts: dict[str, np.ndarray] = {}  # system label -> codebook histogram [N, K]
    how: dict[str, set[str]] = {}
    listening: list[dict] = []
    work = [(clip, clip.id in listen_ids, listen_seconds) for clip in clips]
    if jobs > 1 and len(clips) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(
            min(jobs, len(clips)), initializer=_init_worker, initargs=(systems, chosen_metrics)
        )
        results = pool.imap(_worker_clip, work)  # in clip order, whatever order the workers finish in
    else:
        pool, results = None, (_eval_clip(*item, systems, chosen_metrics) for item in work)
    try:
        for clip_rows, clip_counts, clip_how, heard in tqdm(
            results, total=len(work), desc="eval", unit="clip", disable=not progress, file=sys.stderr
        ):
            rows += clip_rows
            for label, hist in clip_counts.items():
                counts[label] = counts.get(label, 0) + hist
            for label, text in clip_how.items():
                how.setdefault(label, set()).add(text)
            if heard is not None:
                listening.append(heard)
    finally:
        if pool is not None:
            pool.terminate()

    codebooks = {}
    for system in systems:
        if isinstance(system, ModelSystem) and system.label in counts:
            usage = M.codebook_usage(counts[system.label], system.model.frame_rate)
            codebooks[system.label] = {**usage, "num_groups": system.model.num_groups}
    run_info = _run_info(model, data, clips, systems, chosen_metrics, how, content, started)
    if not_run:
        run_info["not_run"] = not_run
    return report.write_reports(out_dir, rows, run_info, chosen_metrics, codebooks, listening)


_WORKER: tuple = ()  # (systems, metrics) of a --jobs worker process


def _init_worker(systems: list, metrics) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)  # one process per core
    _WORKER = (systems, metrics)


def _worker_clip(item: tuple) -> tuple:
    return _eval_clip(*item, *_WORKER)


def _eval_clip(clip: Clip, listen: bool, listen_seconds: float, systems: list, chosen_metrics) -> tuple:
    """One clip through every system: (CSV rows, codebook histograms, how each system ran, listening entry)."""
    rows: list[dict] = []
    counts: dict[str, np.ndarray] = {}
    how: dict[str, str] = {}
    base = {"clip": clip.id, "path": str(clip.path), "content": clip.content}
    try:
        audio, sample_rate = read_span(clip.utt)
    except Exception as e:  # noqa: BLE001 - an unreadable clip is recorded, never fatal
        return [{**base, "system": "original", "label": "original", "error": _error_text(e)}], counts, how, None
    mono = audio.mean(axis=0).astype(np.float32)
    base.update(seconds=round(mono.size / sample_rate, 4), sample_rate=sample_rate)
    values, skipped = M.score(mono, None, sample_rate, chosen_metrics, content=clip.content)
    rows.append({**base, "system": "original", "label": "original", **values, "skipped": _skips(skipped)})
    heard = [("original", mono)] if listen else None
    for system in systems:
        row = {**base, "system": system.system, "label": system.label, "target_kbps": system.kbps}
        try:
            tick = time.perf_counter()
            coded = system.run(mono, sample_rate, clip.content)
            row["coding_seconds"] = round(time.perf_counter() - tick, 4)
            if system.kbps is not None:
                row["kbps"] = round(M.bitrate_spent(coded.num_bits // 8, mono.size / sample_rate) / 1000, 4)
            how[system.label] = coded.how
            values, skipped = M.score(mono, coded.audio, sample_rate, chosen_metrics, content=clip.content)
            row.update(values, skipped=_skips(skipped))
            if coded.codes is not None:
                counts[system.label] = M.codebook_counts(coded.codes, system.model.codebook_size)
            if heard is not None:
                heard.append((system.label, coded.audio))
        except Exception as e:  # noqa: BLE001 - one system failing on one clip is recorded, never fatal
            row["error"] = _error_text(e)
        rows.append(row)
    if heard is None:
        return rows, counts, how, None
    keep = int(listen_seconds * sample_rate)
    entry = {
        "clip": clip.id,
        "content": clip.content,
        "sample_rate": sample_rate,
        "seconds": mono.size / sample_rate,
        "players": [(label, x[:keep]) for label, x in heard],
    }
    return rows, counts, how, entry


def _error_text(e: Exception) -> str:
    """A CodecError's own one-line message; anything else with its type name."""
    return str(e) if isinstance(e, CodecError) else f"{type(e).__name__}: {e}"


def _skips(skipped: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in skipped.items())


def _run_info(model, data, clips, systems, metrics, how, content, started) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from codec import __version__

    versions = {"codec": __version__}
    for package in ("pesq", "pystoi", "speechmos", "onnxruntime", "librosa", "pycodec2", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    if any(isinstance(s, Opus) for s in systems):
        versions["opus-tools"] = Opus.version()
    info = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "data": str(data),
        "clips": len(clips),
        "content": {c: sum(clip.content == c for clip in clips) for c in CONTENT_TYPES},
        "content_rule": "forced by --content"
        if content != "auto"
        else ("nearest path component naming 'music' or 'speech' (file name first); neither = speech"),
        "systems": [
            {
                "label": s.label,
                "system": s.system,
                "target_kbps": s.kbps,
                "how": sorted(how.get(s.label, {s.describe()})),
            }
            for s in systems
        ],
        "metrics": [m.name for m in metrics],
        "versions": versions,
        "seconds": round(time.time() - started, 1),
    }
    if model is not None:
        info["model"] = {
            "name": model.name,
            "file": model.source,
            "id": model.model_id,
            "sample_rate": model.sample_rate,
            "provenance": model.provenance,
        }
    if any(isinstance(s, Codec2) for s in systems):
        info["codec2_note"] = "Codec2 is a speech codec; on music its figures show what it does to music"
    return info
