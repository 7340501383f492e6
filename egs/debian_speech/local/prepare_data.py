#!/usr/bin/env python3
"""Write Kaldi data dirs train/ and dev/ (wav.scp, utt2spk, spk2utt, utt2dur) from CORPUS_DIR/manifest.tsv.

    prepare_data.py CORPUS_DIR DATA_DIR [--dev-percent 5]

A recording goes to dev when the MD5 of its prompt name (digits/1, vm-intro) mod 100 is below --dev-percent.
The prompt, not the file, is hashed: each prompt set (Asterisk's) has the same prompt names in every language, so
a prompt is in dev for every voice or for none, and no prompt text recorded for train is heard again in dev. The
split depends on nothing else, so adding packages never moves an old recording. Files listed in the manifest but
missing on disk are left out with a message.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from datadir import write_spk2utt, write_table  # noqa: E402


def bucket(prompt: str) -> int:
    return int(hashlib.md5(prompt.encode("utf-8")).hexdigest(), 16) % 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--dev-percent", type=int, default=5, help="share of the prompts held out for dev")
    args = parser.parse_args()
    manifest = args.corpus_dir / "manifest.tsv"
    if not manifest.is_file():
        print(f"prepare_data: {manifest} not found; build the corpus with local/data.sh --stage 0", file=sys.stderr)
        return 1
    parts: dict[str, dict[str, tuple[str, str, float]]] = {"train": {}, "dev": {}}
    minutes: dict[tuple[str, str], float] = defaultdict(float)
    missing = 0
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            path = (args.corpus_dir / row["path"]).resolve()
            if not path.is_file():
                missing += 1
                continue
            part = "dev" if bucket(row["prompt"]) < args.dev_percent else "train"
            parts[part][row["utt"]] = (str(path), row["speaker"], float(row["seconds"]))
            minutes[part, row["speaker"]] += float(row["seconds"]) / 60
    if missing:
        print(f"prepare_data: {missing} files in {manifest} are missing on disk; left out", file=sys.stderr)
    for part, utts in parts.items():
        if not utts:
            print(f"prepare_data: no recordings went to {part}; change --dev-percent", file=sys.stderr)
            return 1
        d = args.data_dir / part
        d.mkdir(parents=True, exist_ok=True)
        write_table(d / "wav.scp", {u: p for u, (p, _, _) in utts.items()})
        write_table(d / "utt2spk", {u: s for u, (_, s, _) in utts.items()})
        write_table(d / "utt2dur", {u: f"{sec:.3f}" for u, (_, _, sec) in utts.items()})
        write_spk2utt(d)
        per_speaker = ", ".join(f"{s} {m:.1f}" for (p, s), m in sorted(minutes.items()) if p == part)
        total = sum(sec for _, _, sec in utts.values()) / 60
        print(f"prepare_data: {d}: {len(utts)} recordings, {total:.1f} min ({per_speaker})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
