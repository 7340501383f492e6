#!/usr/bin/env python3
"""Make a data dir consistent, Kaldi's fix_data_dir.sh in Python: sort every table, keep the first line of a
repeated id, and keep only the utterances present in every table (wav.scp or segments, utt2dur, utt2spk, text).
wav.scp keeps only recordings still used; spk2utt is rebuilt from utt2spk. The old tables go to .backup/.

    utils/fix_data_dir.py data/train
    utils/fix_data_dir.py --check-audio data/train     # also drop utterances whose file is missing or unreadable
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import TABLES, DataDir, DataDirError, write_spk2utt, write_table  # noqa: E402

from codec.datadir import AudioError, Utterance, open_audio, resolve_path  # noqa: E402


def first_of_each(rows: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in rows:
        out.setdefault(key, value)
    return out


def fix(directory: Path, *, check_audio: bool = False) -> tuple[int, int]:
    """Rewrite the data dir in place; returns (utterances before, after)."""
    d = DataDir(directory)
    tables = {name: first_of_each(rows) for name, rows in d.tables.items()}
    wav = tables["wav.scp"]
    if "segments" in tables:
        utts = {u for u, rest in tables["segments"].items() if rest.split()[0] in wav}
        before = len(d.tables["segments"])
    else:
        utts = set(wav)
        before = len(d.tables["wav.scp"])
    for name in ("utt2dur", "utt2spk", "text"):
        if name in tables:
            utts &= set(tables[name])
    if check_audio:
        utts = {u for u in utts if _readable(resolve_path(_recording_path(u, tables), directory / "wav.scp"))}
    backup = directory / ".backup"
    backup.mkdir(exist_ok=True)
    for name in TABLES:
        if (directory / name).is_file():
            shutil.copy2(directory / name, backup / name)
    if "segments" in tables:
        segments = {u: r for u, r in tables["segments"].items() if u in utts}
        write_table(directory / "segments", segments)
        used = {r.split()[0] for r in segments.values()}
        write_table(directory / "wav.scp", {r: p for r, p in wav.items() if r in used})
    else:
        write_table(directory / "wav.scp", {u: p for u, p in wav.items() if u in utts})
    for name in ("utt2dur", "utt2spk", "text"):
        if name in tables:
            write_table(directory / name, {u: v for u, v in tables[name].items() if u in utts})
    if "utt2spk" in tables:
        write_spk2utt(directory)
    elif (directory / "spk2utt").is_file():
        (directory / "spk2utt").unlink()
    return before, len(utts)


def _recording_path(utt: str, tables: dict[str, dict[str, str]]) -> str:
    if "segments" in tables:
        return tables["wav.scp"][tables["segments"][utt].split()[0]]
    return tables["wav.scp"][utt]


def _readable(where: str) -> bool:
    try:
        open_audio(Utterance("", where)).close()
        return True
    except AudioError:  # missing, truncated, not audio or a failing pipe: all mean "drop it"
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--check-audio", action="store_true", help="drop utterances whose audio cannot be opened")
    args = parser.parse_args()
    try:
        before, after = fix(args.data_dir, check_audio=args.check_audio)
    except DataDirError as e:
        print(f"fix_data_dir: {e}", file=sys.stderr)
        return 1
    print(f"fix_data_dir: {args.data_dir}: kept {after} of {before} utterances (old tables in {args.data_dir}/.backup)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
