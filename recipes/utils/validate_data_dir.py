#!/usr/bin/env python3
"""Check a Kaldi data dir; print one line per problem (naming the file and the fix) and exit 1 if any.

Checks: every table's ids are unique and sorted (C locale); utt2dur, utt2spk and text cover exactly the
utterances (of segments, else of wav.scp); segments name recordings of wav.scp with start < end; every
audio file is present and readable; each utt2dur entry matches the audio's duration within a tolerance.

    utils/validate_data_dir.py data/train
    utils/validate_data_dir.py --no-audio data/train        # skip opening the files (tables only)
    utils/validate_data_dir.py --need utt2dur dump/train     # also require these tables
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import DataDir, DataDirError, sort_key  # noqa: E402

from codec.datadir import AudioError, Utterance, utterance_seconds  # noqa: E402


def check(directory: Path, *, audio: bool = True, need: tuple[str, ...] = (), tolerance: float = 0.05) -> list[str]:
    """The problems of a data dir, one line each (empty when it is valid)."""
    try:
        d = DataDir(directory)
    except (DataDirError, OSError, UnicodeDecodeError) as e:
        return [str(e)]
    fix = f"run {fix_cmd(directory)}"
    problems = []
    for name, rows in d.tables.items():
        keys = [k for k, _ in rows]
        seen: set[str] = set()
        dups = [k for k in keys if k in seen or seen.add(k)]
        if dups:
            problems.append(f"{directory / name}: id {dups[0]} appears more than once ({len(dups)} duplicates); {fix}")
        if keys != sorted(keys, key=sort_key):
            problems.append(f"{directory / name}: not sorted by id (C locale); {fix}")
        if not keys:
            problems.append(f"{directory / name}: empty; rerun the data preparation stage")
    for name in need:
        if name not in d.tables:
            problems.append(f"{directory}: {name} is missing; rerun the stage that writes it")
    utts = set(d.utterances())
    for name in ("utt2dur", "utt2spk", "text"):
        if name in d.tables:
            have = set(d.table(name))
            if have != utts:
                extra, missing = sorted(have - utts, key=sort_key), sorted(utts - have, key=sort_key)
                what = f"{len(missing)} utterances missing (e.g. {missing[0]})" if missing else ""
                what += ("; " if what and extra else "") + (
                    f"{len(extra)} unknown ids (e.g. {extra[0]})" if extra else ""
                )
                problems.append(f"{directory / name}: {what}; {fix}")
    try:
        spans = d.audio()
    except DataDirError as e:
        return problems + [f"{e}; {fix}"]
    for utt in spans.values():
        if utt.start < 0 or (utt.end is not None and utt.end <= utt.start):
            times = f"start {utt.start} and end {utt.end}"
            problems.append(f"{directory / 'segments'}: {utt.id} has {times}; fix its times")
    if audio:
        problems += _check_audio(directory, spans, d.table("utt2dur"), tolerance)
    return problems


def _check_audio(directory: Path, spans: dict, utt2dur: dict[str, str], tolerance: float) -> list[str]:
    problems, durations = [], {}
    for u in spans.values():
        utt, path, start, end = u.id, u.path, u.start, u.end
        if path not in durations:
            try:
                durations[path] = utterance_seconds(Utterance(utt, path))  # the whole recording
            except AudioError as e:  # any reason a file cannot be opened is the same problem to the user
                fix = f"fix the path or drop it with {fix_cmd(directory)} --check-audio"
                problems.append(f"{directory / 'wav.scp'}: {utt}: {e}; {fix}")
                durations[path] = None
                continue
        total = durations[path]
        if total is None or utt not in utt2dur:
            continue
        actual = (total if end is None else min(end, total)) - start
        try:
            listed = float(utt2dur[utt])
        except ValueError:
            problems.append(
                f"{directory / 'utt2dur'}: {utt} has duration {utt2dur[utt]!r}, not a number; regenerate utt2dur"
            )
            continue
        if abs(listed - actual) > tolerance:
            problems.append(
                f"{directory / 'utt2dur'}: {utt} lists {listed:.3f} s but its audio lasts {actual:.3f} s; "
                "regenerate utt2dur"
            )
    return problems


def fix_cmd(directory: Path) -> str:
    return f"utils/fix_data_dir.py {directory}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--no-audio", action="store_true", help="do not open the audio files")
    parser.add_argument("--need", default="", help="comma-separated tables that must be present, e.g. utt2dur")
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed utt2dur error in seconds")
    args = parser.parse_args()
    need = tuple(n for n in args.need.split(",") if n)
    problems = check(args.data_dir, audio=not args.no_audio, need=need, tolerance=args.tolerance)
    for line in problems[:20]:
        print(f"validate_data_dir: {line}", file=sys.stderr)
    if len(problems) > 20:
        print(f"validate_data_dir: ... and {len(problems) - 20} more problems", file=sys.stderr)
    if problems:
        return 1
    print(f"validate_data_dir: {args.data_dir}: OK ({len(DataDir(args.data_dir).utterances())} utterances)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
