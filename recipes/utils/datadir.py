"""Kaldi data directories: hold, check and write their tables (shared by the recipe tools beside this file).

Reading (tables, wav.scp paths and pipes, segments) is `codec.datadir`'s, as for training and extraction.
A data dir holds `wav.scp`, optionally `segments`, `utt2dur`, `utt2spk`, `spk2utt` and `text`. Tables are
sorted by id in C-locale (byte) order, as Kaldi's `LC_ALL=C sort` leaves them, and ids are unique.
"""

from __future__ import annotations

from pathlib import Path

from codec.datadir import DataDirError, Utterance, read_data_dir, read_table

__all__ = ["TABLES", "DataDir", "DataDirError", "read_table", "sort_key", "subset", "write_spk2utt", "write_table"]

# Tables keyed by utterance id, and the number of fields after the id (None = free text).
UTT_TABLES = {"utt2dur": 1, "utt2spk": 1, "text": None, "segments": 3}
TABLES = ("wav.scp", "segments", "utt2dur", "utt2spk", "spk2utt", "text")


def sort_key(key: str) -> bytes:
    return key.encode("utf-8")


def write_table(path: Path, rows: dict[str, str] | list[tuple[str, str]]) -> None:
    """Write `id rest` lines sorted by id (atomically: a temporary file renamed into place)."""
    items = rows.items() if isinstance(rows, dict) else rows
    text = "".join(
        f"{key} {value}\n" if value != "" else f"{key}\n" for key, value in sorted(items, key=lambda r: sort_key(r[0]))
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class DataDir:
    """The tables of one data dir, as ordered dicts of id -> rest of line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "wav.scp").is_file():
            raise DataDirError(f"{self.path} has no wav.scp; it is not a data dir (run the data preparation stage)")
        self.tables: dict[str, list[tuple[str, str]]] = {}
        for name in TABLES:
            file = self.path / name
            if file.is_file():
                fields = {"wav.scp": None, "spk2utt": None, **UTT_TABLES}[name]
                self.tables[name] = read_table(file, fields)

    def table(self, name: str) -> dict[str, str]:
        return dict(self.tables.get(name, []))

    def utterances(self) -> list[str]:
        """Utterance ids: those of `segments` if present, else of `wav.scp`."""
        source = "segments" if "segments" in self.tables else "wav.scp"
        return [key for key, _ in self.tables[source]]

    def audio(self) -> dict[str, Utterance]:
        """utt-id -> its Utterance (audio path or pipe, start, end); the first line of a repeated id counts."""
        return {u.id: u for u in read_data_dir(self.path, unique=False)}


def write_spk2utt(directory: Path) -> None:
    """spk2utt from utt2spk (speakers sorted, their utterances in sorted order)."""
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in read_table(directory / "utt2spk", 1):
        spk2utt.setdefault(spk, []).append(utt)
    write_table(directory / "spk2utt", {s: " ".join(sorted(u, key=sort_key)) for s, u in spk2utt.items()})


def subset(src: Path, dest: Path, utts: list[str] | set[str]) -> int:
    """Write the data dir `dest` holding only `utts` of `src` (every table; wav.scp only the recordings used)."""
    d = DataDir(src)
    keep = set(utts)
    dest.mkdir(parents=True, exist_ok=True)
    if "segments" in d.tables:
        segments = {u: r for u, r in d.tables["segments"] if u in keep}
        write_table(dest / "segments", segments)
        used = {r.split()[0] for r in segments.values()}
        write_table(dest / "wav.scp", {r: p for r, p in d.tables["wav.scp"] if r in used})
    else:
        write_table(dest / "wav.scp", {u: p for u, p in d.tables["wav.scp"] if u in keep})
    for name in ("utt2dur", "utt2spk", "text"):
        if name in d.tables:
            write_table(dest / name, {u: v for u, v in d.tables[name] if u in keep})
    if "utt2spk" in d.tables:
        write_spk2utt(dest)
    return len(keep & set(d.utterances()))
