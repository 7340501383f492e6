#!/usr/bin/env python3
"""Write Kaldi data dirs for every audio file under a folder, split deterministically into train/dev/test.

A file's part is decided by the MD5 of its path relative to the folder (bucket = hash mod 100), so it never
depends on the machine, the order of listing, or which other files exist: adding files never moves old ones.
With --heldout-dir the whole folder is train and the held-out folder is split into dev and test by the same hash.

Utterance id = the relative path without its suffix, "/" written as "-" and any character outside
[A-Za-z0-9_.-] as "_" (the suffix is appended if two files would share an id); speaker (utt2spk) = the
file's folder, written the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "utils"))
from datadir import write_spk2utt, write_table  # noqa: E402

SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def bucket(rel: str) -> int:
    return int(hashlib.md5(rel.encode("utf-8")).hexdigest(), 16) % 100


def clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("/", "-"))


def audio_files(root: Path) -> list[tuple[str, Path]]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return [(p.relative_to(root).as_posix(), p.resolve()) for p in files]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--heldout-dir", type=Path, default=None, help="held-out folder split into dev and test")
    parser.add_argument("--dev-percent", type=int, default=5, help="share of the files in dev (without --heldout-dir)")
    parser.add_argument(
        "--test-percent", type=int, default=5, help="share of the files in test (without --heldout-dir)"
    )
    args = parser.parse_args()
    if not args.corpus_dir.is_dir():
        print(f"prepare_folder: {args.corpus_dir} is not a folder; pass --corpus_dir DIR", file=sys.stderr)
        return 1
    parts: dict[str, dict[str, tuple[Path, str]]] = {"train": {}, "dev": {}, "test": {}}

    def add(part: str, rel: str, path: Path) -> None:
        utt = clean(rel.rsplit(".", 1)[0])
        if any(utt in p for p in parts.values()):
            utt = clean(rel)
        parts[part][utt] = (path, clean(str(Path(rel).parent)) or "root")

    for rel, path in audio_files(args.corpus_dir):
        if args.heldout_dir is not None:
            add("train", rel, path)
        else:
            b = bucket(rel)
            add(
                "dev" if b < args.dev_percent else "test" if b < args.dev_percent + args.test_percent else "train",
                rel,
                path,
            )
    if args.heldout_dir is not None:
        for rel, path in audio_files(args.heldout_dir):
            add("dev" if bucket(rel) < 50 else "test", rel, path)
    for part, utts in parts.items():
        if not utts:
            print(
                f"prepare_folder: no audio files ({', '.join(SUFFIXES)}) went to {part}; add files or change the split",
                file=sys.stderr,
            )
            return 1
        d = args.data_dir / part
        d.mkdir(parents=True, exist_ok=True)
        write_table(d / "wav.scp", {u: str(p) for u, (p, _) in utts.items()})
        write_table(d / "utt2spk", {u: s for u, (_, s) in utts.items()})
        write_spk2utt(d)
        print(f"prepare_folder: {d}: {len(utts)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
