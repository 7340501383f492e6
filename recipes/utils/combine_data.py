#!/usr/bin/env python3
"""Combine data dirs into one (Kaldi's combine_data.sh): concatenate every table, sorted. A table is kept
only if every source has it; an id that occurs in two sources is an error (prefix the ids first).

    utils/combine_data.py data/train_all data/train_clean_100 data/train_clean_360
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import DataDir, DataDirError, write_spk2utt, write_table  # noqa: E402


def combine(dest: Path, sources: list[Path]) -> int:
    dirs = [DataDir(s) for s in sources]
    with_segments = [("segments" in d.tables) for d in dirs]
    if any(with_segments) and not all(with_segments):
        raise DataDirError("some sources have segments and some do not; give every source a segments file first")
    names = [n for n in ("wav.scp", "segments", "utt2dur", "utt2spk", "text") if all(n in d.tables for d in dirs)]
    dropped = sorted({n for d in dirs for n in d.tables} - set(names) - {"spk2utt"})
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        merged: dict[str, str] = {}
        for d in dirs:
            for key, value in d.tables[name]:
                if key in merged and (name != "wav.scp" or merged[key] != value):
                    raise DataDirError(
                        f"id {key} is in more than one of {', '.join(map(str, sources))} ({name}); make ids unique"
                    )
                merged[key] = value
        write_table(dest / name, merged)
    if "utt2spk" in names:
        write_spk2utt(dest)
    if dropped:
        print(f"combine_data: not every source has {', '.join(dropped)}; left out of {dest}", file=sys.stderr)
    return len(DataDir(dest).utterances())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("sources", type=Path, nargs="+")
    args = parser.parse_args()
    try:
        n = combine(args.dest, args.sources)
    except DataDirError as e:
        print(f"combine_data: {e}", file=sys.stderr)
        return 1
    print(f"combine_data: {args.dest}: {n} utterances from {len(args.sources)} data dirs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
