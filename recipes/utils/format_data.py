#!/usr/bin/env python3
"""Stage 2 of codec.sh: bring a data dir to the model's format. Every utterance (a whole file or a segment)
is read, mixed down to the model's channel count, resampled with soxr (HQ) to the model rate and written as
16-bit FLAC to DEST/audio/<utt-id>.flac; utterances shorter than --min-seconds or longer than --max-seconds
are dropped, and so are unreadable files (each reported). DEST gets wav.scp (absolute paths), utt2dur
(of the written audio) and the source's utt2spk/spk2utt/text for the utterances kept.

    utils/format_data.py --sample-rate 24000 --nj 4 data/train dump/train
"""

from __future__ import annotations

import argparse
import math
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import DataDir, DataDirError, write_spk2utt, write_table  # noqa: E402

from codec.datadir import read_span, utterance_seconds  # noqa: E402


def convert(job: tuple) -> tuple[str, str, float | str]:
    """(utt, status, seconds or reason): status is 'ok', 'short', 'long' or 'error'."""
    utt, out, rate, channels, min_s, max_s = job
    try:
        seconds = utterance_seconds(utt)
        if seconds < min_s:
            return utt.id, "short", seconds
        if max_s > 0 and seconds > max_s:
            return utt.id, "long", seconds
        audio, source_rate = read_span(utt)
        audio = audio.T  # [T, C]
        if audio.shape[1] > channels:
            audio = audio.mean(axis=1, keepdims=True) if channels == 1 else audio[:, :channels]
        elif audio.shape[1] < channels:
            audio = np.repeat(audio[:, :1], channels, axis=1)
        if source_rate != rate:
            audio = soxr.resample(audio, source_rate, rate, quality="HQ")
        if not np.isfinite(audio).all():
            raise ValueError("NaN or infinite samples")
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 1.0:  # resampling can overshoot a full-scale file; never clip
            audio = audio / peak
        sf.write(str(out), audio, rate, subtype="PCM_16", format="FLAC")
        return utt.id, "ok", audio.shape[0] / rate
    except Exception as e:  # an unreadable file is dropped and reported, never stops the stage
        return utt.id, "error", f"{utt.path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--sample-rate", type=int, required=True, help="the model's sample rate")
    parser.add_argument("--channels", type=int, default=1, help="the model's channel count")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="drop utterances shorter than this")
    parser.add_argument(
        "--max-seconds", type=float, default=0.0, help="drop utterances longer than this (0 = keep all)"
    )
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs")
    args = parser.parse_args()
    try:
        d = DataDir(args.src)
        spans = d.audio()
    except DataDirError as e:
        print(f"format_data: {e}", file=sys.stderr)
        return 1
    audio_dir = (args.dest / "audio").resolve()
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (utt, audio_dir / f"{utt.id}.flac", args.sample_rate, args.channels, args.min_seconds, args.max_seconds)
        for utt in spans.values()
    ]
    counts = {"ok": 0, "short": 0, "long": 0, "error": 0}
    kept: dict[str, float] = {}
    with Pool(max(1, args.nj)) as pool:
        for utt, status, value in pool.imap_unordered(
            convert, jobs, chunksize=max(1, min(32, len(jobs) // (4 * args.nj) or 1))
        ):
            counts[status] += 1
            if status == "ok":
                kept[utt] = value
            elif status == "error":
                print(f"format_data: warning: dropped {utt}: {value}", file=sys.stderr)
    if not kept:
        print(
            f"format_data: no utterance of {args.src} was kept ({counts}); check the audio paths and "
            "--min-seconds/--max-seconds",
            file=sys.stderr,
        )
        return 1
    for stale in audio_dir.glob("*.flac"):  # outputs of an earlier run that are no longer wanted
        if stale.stem not in kept:
            stale.unlink()
    write_table(args.dest / "wav.scp", {u: str(audio_dir / f"{u}.flac") for u in kept})
    write_table(args.dest / "utt2dur", {u: f"{s:.4f}" for u, s in kept.items()})
    for name in ("utt2spk", "text"):
        if name in d.tables:
            write_table(args.dest / name, {u: v for u, v in d.tables[name] if u in kept})
    if "utt2spk" in d.tables:
        write_spk2utt(args.dest)
    hours = sum(kept.values()) / 3600
    print(
        f"format_data: {args.dest}: {counts['ok']} of {len(jobs)} utterances at {args.sample_rate} Hz "
        f"({hours:.2f} h; dropped {counts['short']} shorter than {args.min_seconds} s, "
        f"{counts['long']} longer than {args.max_seconds or math.inf} s, {counts['error']} unreadable)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
