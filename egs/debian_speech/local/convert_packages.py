#!/usr/bin/env python3
"""Convert the speech recordings of unpacked Debian packages (`dpkg -x` trees) into a 16 kHz mono FLAC corpus.

    convert_packages.py SRC_DIR CORPUS_DIR PACKAGE...

SRC_DIR/<package>/ holds each unpacked package. Every recording below its usr/share (docs excepted) is decoded
(.g722 with spandsp through local/g722.py; .wav/.flac/.ogg/.opus with libsndfile), mixed to mono, resampled to
16 kHz (soxr HQ), its peak scaled down to 0.99 if above, and written as 16-bit FLAC to

    CORPUS_DIR/audio/<speaker>/<prompt>.flac

where <speaker> is the voice folder under a `sounds/` folder (Asterisk: en_US_f_Allison), else the package name,
and <prompt> the path below it (digits/1). Dropped, each counted per package: files shorter than --min-seconds,
near-silent ones (peak below --silence-db dBFS), known non-speech prompts (tones, beeps, silence, animal noises),
byte-identical copies, and files that cannot be read (one line on stderr each; the run goes on).
Also written: manifest.tsv (utt, speaker, prompt, package, seconds, path), SOURCES.tsv (per package: version,
speakers, files kept and dropped, minutes, licence, copyright holders), LICENSES.md and licenses/<package>.copyright.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from g722 import decode_g722  # noqa: E402

SAMPLE_RATE = 16000
SUFFIXES = (".g722", ".wav", ".flac", ".ogg", ".oga", ".opus")
# Asterisk ships a few prompts that are not speech: tones, beeps, digital silence, the "tt-monkeys" screeching.
NON_SPEECH = re.compile(r"^(silence/.*|.*-2tone|beep.*|beeperr|tt-monkeys|ha/.*)$")


def clean(text: str) -> str:
    """An id or path part with no spaces and nothing outside [A-Za-z0-9_.-] ('/' becomes '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("/", "-"))


def recordings(tree: Path) -> list[Path]:
    share = tree / "usr" / "share"
    files = sorted(p for p in share.rglob("*") if p.suffix.lower() in SUFFIXES and not p.is_symlink() and p.is_file())
    return [p for p in files if "doc" not in p.relative_to(share).parts[:1]]


def speaker_and_prompt(package: str, rel: Path) -> tuple[str, str]:
    """(speaker, prompt) of a file at `rel` below usr/share: the voice folder after `sounds/`, else the package."""
    parts = rel.with_suffix("").parts
    if "sounds" in parts[:-2]:
        i = parts.index("sounds")
        return clean(parts[i + 1]), "/".join(parts[i + 2 :])
    return clean(package), "/".join(parts)


def read_audio(path: Path, spandsp_dir: Path | None) -> np.ndarray:
    """Any supported recording -> float32 mono at 16 kHz."""
    if path.suffix.lower() == ".g722":
        return decode_g722(path.read_bytes(), spandsp_dir)
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return soxr.resample(x, rate, SAMPLE_RATE, quality="HQ").astype(np.float32) if rate != SAMPLE_RATE else x


def parse_copyright(text: str) -> list[dict[str, str]]:
    """Stanzas of a machine-readable (DEP-5) debian/copyright file: {'Files', 'Copyright', 'License'} each."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                key = m.group(1)
                fields[key] = m.group(2).strip()
            elif key and line.startswith((" ", "\t")) and key in ("Files", "Copyright"):
                fields[key] += " " + line.strip()
        if "Files" in fields:
            stanzas.append(fields)
    return stanzas


def licence_for(package: str, text: str) -> tuple[str, str]:
    """(licence, copyright holders) that cover `package`'s recordings, from its copyright file.

    Upstream copyright files of multi-language sound sets name stanzas by language (`Files: fr-*`); the one whose
    prefix is a word of the package name wins, else the `Files: *` stanza. Without DEP-5 stanzas: unknown.
    """
    stanzas = [s for s in parse_copyright(text) if not s["Files"].startswith("debian/")]
    words = f"-{package}-"
    specific = [
        s for s in stanzas if any(f"-{p.rstrip('*').rstrip('-')}-" in words for p in s["Files"].split() if p != "*")
    ]
    chosen = specific or [s for s in stanzas if "*" in s["Files"].split()] or stanzas
    if not chosen:
        return f"unknown (see licenses/{package}.copyright)", "unknown"
    licences = sorted({s.get("License", "?").split()[0] if s.get("License") else "?" for s in chosen})
    holders = "; ".join(s.get("Copyright", "?") for s in chosen)
    return ", ".join(licences), holders


def package_version(tree: Path, package: str) -> str:
    changelog = tree / "usr" / "share" / "doc" / package / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
            m = re.match(r"^\S+ \(([^)]+)\)", fh.readline())
        return m.group(1) if m else "?"
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src_dir", type=Path, help="folder of dpkg -x trees, one per package")
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--spandsp-dir", type=Path, default=None, help="dpkg -x tree of libspandsp2 (G.722 decoder)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="drop shorter recordings")
    parser.add_argument("--silence-db", type=float, default=-45.0, help="drop recordings whose peak is below (dBFS)")
    args = parser.parse_args()

    (args.corpus_dir / "licenses").mkdir(parents=True, exist_ok=True)
    floor = 10 ** (args.silence_db / 20)
    seen: set[str] = set()
    manifest: list[tuple[str, str, str, str, float, str]] = []
    sources = []
    for package in args.packages:
        tree = args.src_dir / package
        if not tree.is_dir():
            print(f"convert_packages: {tree} is missing; run local/data.sh --stage 0 first", file=sys.stderr)
            return 1
        dropped: Counter[str] = Counter()
        kept, seconds, speakers = 0, 0.0, set()
        for path in recordings(tree):
            speaker, prompt = speaker_and_prompt(package, path.relative_to(tree / "usr" / "share"))
            if NON_SPEECH.match(prompt):
                dropped["non-speech"] += 1
                continue
            digest = hashlib.md5(path.read_bytes()).hexdigest()
            if digest in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(digest)
            try:
                x = read_audio(path, args.spandsp_dir)
            except Exception as e:  # whatever the decoder says, this one file is skipped
                if "libspandsp" in str(e):  # no decoder at all: every .g722 would fail the same way
                    print(f"convert_packages: {e}", file=sys.stderr)
                    return 1
                print(f"convert_packages: skipped unreadable {path}: {e}", file=sys.stderr)
                dropped["unreadable"] += 1
                continue
            if len(x) < args.min_seconds * SAMPLE_RATE:
                dropped["short"] += 1
                continue
            peak = float(np.abs(x).max())
            if peak < floor:
                dropped["silent"] += 1
                continue
            if peak > 0.99:
                x = x * (0.99 / peak)
            rel = Path("audio") / speaker / (prompt.replace(" ", "_") + ".flac")
            out = args.corpus_dir / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out), x, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            utt = clean(f"{speaker}-{prompt}")
            manifest.append((utt, speaker, prompt, package, len(x) / SAMPLE_RATE, rel.as_posix()))
            kept, seconds = kept + 1, seconds + len(x) / SAMPLE_RATE
            speakers.add(speaker)
        copyright_file = tree / "usr" / "share" / "doc" / package / "copyright"
        text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.is_file() else ""
        (args.corpus_dir / "licenses" / f"{package}.copyright").write_text(text or "no copyright file\n")
        licence, holders = licence_for(package, text)
        sources.append(
            (
                package,
                package_version(tree, package),
                ",".join(sorted(speakers)) or "-",
                kept,
                ",".join(f"{k}:{v}" for k, v in sorted(dropped.items())) or "-",
                seconds / 60,
                licence,
                holders,
            )
        )
        print(f"convert_packages: {package}: {kept} files, {seconds / 60:.1f} min kept; dropped {dict(dropped)}")

    ids = Counter(m[0] for m in manifest)
    if any(n > 1 for n in ids.values()):
        print(f"convert_packages: repeated ids {[u for u, n in ids.items() if n > 1][:5]}", file=sys.stderr)
        return 1
    with open(args.corpus_dir / "manifest.tsv", "w") as fh:
        fh.write("utt\tspeaker\tprompt\tpackage\tseconds\tpath\n")
        for utt, speaker, prompt, package, sec, rel in sorted(manifest):
            fh.write(f"{utt}\t{speaker}\t{prompt}\t{package}\t{sec:.3f}\t{rel}\n")
    with open(args.corpus_dir / "SOURCES.tsv", "w") as fh:
        fh.write("package\tversion\tspeakers\tfiles\tdropped\tminutes\tlicence\tcopyright\n")
        for package, version, speakers, kept, dropped, minutes, licence, holders in sources:
            fh.write(f"{package}\t{version}\t{speakers}\t{kept}\t{dropped}\t{minutes:.1f}\t{licence}\t{holders}\n")
    with open(args.corpus_dir / "LICENSES.md", "w") as fh:
        fh.write(
            "# Licences of the recordings in this corpus\n\nFrom each Debian package's /usr/share/doc/<package>/"
            "copyright (copied whole to licenses/<package>.copyright, the authority).\n\n"
            "| package | version | speakers | minutes | licence | copyright |\n|---|---|---|---|---|---|\n"
        )
        for package, version, speakers, _, _, minutes, licence, holders in sources:
            fh.write(f"| {package} | {version} | {speakers} | {minutes:.1f} | {licence} | {holders} |\n")
    total = sum(m[4] for m in manifest) / 60
    print(f"convert_packages: {len(manifest)} files, {total:.1f} min in {args.corpus_dir / 'audio'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
