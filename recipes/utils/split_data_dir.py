#!/usr/bin/env python3
"""Split a data dir into N parts: DIR/splitN/1 .. DIR/splitN/N (contiguous runs of sorted utterances, sizes
differing by at most one; with --per-spk a speaker's utterances stay in one part). An existing split of the
same N is overwritten.

    utils/split_data_dir.py data/train 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import DataDir, DataDirError, sort_key, subset  # noqa: E402


def split(directory: Path, parts: int, *, per_spk: bool = False) -> list[Path]:
    d = DataDir(directory)
    utts = sorted(d.utterances(), key=sort_key)
    if parts < 1:
        raise DataDirError(f"cannot split {directory} into {parts} parts; pass a number of at least 1")
    if per_spk:
        if "utt2spk" not in d.tables:
            raise DataDirError(f"{directory} has no utt2spk; drop --per-spk or write utt2spk first")
        utt2spk = d.table("utt2spk")
        groups: dict[str, list[str]] = {}
        for u in utts:
            groups.setdefault(utt2spk.get(u, u), []).append(u)
        units = list(groups.values())
    else:
        units = [[u] for u in utts]
    if parts > len(units):
        raise DataDirError(
            f"cannot split {directory} ({len(units)} units) into {parts} parts; use --nj {len(units)} or less"
        )
    out = []
    for i in range(parts):
        chunk = units[i * len(units) // parts : (i + 1) * len(units) // parts]
        dest = directory / f"split{parts}" / str(i + 1)
        subset(directory, dest, [u for unit in chunk for u in unit])
        out.append(dest)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("parts", type=int)
    parser.add_argument("--per-spk", action="store_true", help="keep each speaker's utterances in one part")
    args = parser.parse_args()
    try:
        dirs = split(args.data_dir, args.parts, per_spk=args.per_spk)
    except DataDirError as e:
        print(f"split_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"split_data_dir: {args.data_dir} -> {dirs[0].parent}/{{1..{len(dirs)}}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
