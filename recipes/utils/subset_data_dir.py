#!/usr/bin/env python3
"""Copy N utterances of a data dir, spread evenly over its sorted ids (so every part of the set, e.g. speech
and music, stays represented), or the first N with --first.

    utils/subset_data_dir.py data/test 24 data/test_24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import DataDir, DataDirError, sort_key, subset  # noqa: E402


def pick(utts: list[str], n: int, first: bool = False) -> list[str]:
    utts = sorted(utts, key=sort_key)
    if n >= len(utts):
        return utts
    if first:
        return utts[:n]
    return [utts[i * len(utts) // n] for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--first", action="store_true", help="the first N utterances instead of N spread out")
    args = parser.parse_args()
    try:
        n = subset(args.src, args.dest, pick(DataDir(args.src).utterances(), args.n, args.first))
    except DataDirError as e:
        print(f"subset_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"subset_data_dir: {args.dest}: {n} utterances of {args.src}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
