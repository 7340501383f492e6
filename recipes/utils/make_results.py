#!/usr/bin/env python3
"""Write a recipe's RESULTS.md (codec.sh stages 6 and 7) from what the run left in its experiment dir:
the model file (`codec info`), each test set's `codec eval` summary.json, the decoded .codes of stage 5
(bitrate actually spent), the token dirs of stage 7 and the stage timings (exp/<tag>/stage_times.txt).

    utils/make_results.py --recipe mini --exp exp/mini --config conf/mini.yaml --train-set dump/train \
        --eval test=exp/mini/eval_test --out RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datadir import read_table  # noqa: E402

# Columns of the RESULTS.md tables, in this order, when the evaluation has them (summary.md has them all).
COLUMNS = {
    "pesq_wb": "PESQ-WB ↑",
    "stoi": "STOI ↑",
    "si_sdr": "SI-SDR dB ↑",
    "mel_distance": "mel dist ↓",
    "stft_distance": "STFT dist ↓",
    "dnsmos_ovrl": "DNSMOS ovrl ↑",
}
STAGES = {
    "0": "download",
    "1": "data prep",
    "2": "format",
    "3": "train",
    "4": "export",
    "5": "decode",
    "6": "score",
    "7": "tokens",
}


def hours(data_dir: Path) -> tuple[int, float]:
    durations = [float(v) for _, v in read_table(data_dir / "utt2dur", 1)] if (data_dir / "utt2dur").is_file() else []
    return len(durations), sum(durations) / 3600


def fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_section(exp: Path, config: str, train_set: Path) -> list[str]:
    from codec.commands.describe import model_info

    info = model_info(str(exp / "model.safetensors"))
    prov = info.get("provenance") or {}
    n, h = hours(train_set)
    steps = prov.get("steps", prov.get("step", "?"))
    rates = ", ".join(f"{b:g}" for b in info["bitrates_kbps"])
    lines = [
        f"- model: `{exp / 'model.safetensors'}` ({info['name']}, {info['sample_rate']} Hz, "
        f"{info['groups x levels'].replace(' x ', ' groups x ')} levels of {info['codebook_size']} codes, "
        f"{info['parameters'] / 1e6:.2f} M parameters; bitrates {rates} kbps)",
        f"- trained: `{config}` for {steps} steps on `{train_set}` ({n} utterances, {h:.2f} h)",
    ]
    if prov.get("git_commit"):
        lines.append(f"- code: commit {prov['git_commit']}")
    return lines


def eval_section(name: str, eval_dir: Path) -> list[str]:
    data = json.loads((eval_dir / "summary.json").read_text())
    summary, run = data["summary"], data["run"]
    lines = [f"## Test set `{name}`", ""]
    lines.append(
        f"{run.get('clips', '?')} clips; full report: `{eval_dir / 'summary.md'}`, plots in `{eval_dir / 'plots'}`, "
        f"listening page `{eval_dir / 'listen.html'}`."
    )
    lines.append("")
    for content in dict.fromkeys(e["content"] for e in summary):
        entries = [e for e in summary if e["content"] == content]
        columns = [c for c in COLUMNS if any(c in e["metrics"] for e in entries)]
        lines += [f"### {content}", ""]
        lines.append(
            "| system | kbps (target) | kbps (spent) | clips | " + " | ".join(COLUMNS[c] for c in columns) + " |"
        )
        lines.append("|---|---:|---:|---:|" + "---:|" * len(columns))
        for e in entries:
            cells = [e["label"], fmt(e["target_kbps"]), fmt(e["kbps"]), str(e["clips"])]
            cells += [fmt(e["metrics"][c]["mean"]) if c in e["metrics"] else "–" for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        for e in run.get("not_run", []):  # a baseline whose tool is not installed here
            lines.append(
                "| " + " | ".join([e["label"], fmt(e["target_kbps"]), "not run", "–", *["–"] * len(columns)]) + " |"
            )
        lines.append("")
    for why in dict.fromkeys(e["why"] for e in run.get("not_run", [])):
        lines += [f"Not run: {why}.", ""]
    if data.get("failures"):
        lines += [f"{len(data['failures'])} clip/system failures: see `{eval_dir / 'summary.json'}`.", ""]
    return lines


def decode_section(exp: Path) -> list[str]:
    rows = []
    for d in sorted(
        exp.glob("decode_*kbps"), key=lambda p: (p.name.rsplit("_", 1)[0], float(p.name.rsplit("_", 1)[1][:-4]))
    ):
        if not (d / ".done").is_file() or not (d / "utt2dur").is_file():
            continue
        seconds = sum(float(v) for _, v in read_table(d / "utt2dur", 1))
        codes = list((d / "codes").glob("*.codes"))
        size = sum(p.stat().st_size for p in codes)
        test, kbps = d.name[len("decode_") :].rsplit("_", 1)
        rows.append(
            f"| {test} | {kbps[:-4]} | {len(codes)} | {seconds:.1f} | {size} | {size * 8 / seconds / 1000:.3f} |"
        )
    if not rows:
        return []
    return [
        "## Decoding (stage 5: `codec encode` / `codec decode`)",
        "",
        "| test set | kbps (asked) | files | seconds | .codes bytes | kbps (spent, container included) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def tokens_section(exp: Path) -> list[str]:
    rows = []
    for d in sorted(exp.glob("tokens_*")):
        if not (d / ".done").is_file():
            continue
        frames = [int(v) for _, v in read_table(d / "utt2num_frames", 1)] if (d / "utt2num_frames").is_file() else []
        failed = len((d / "failed.list").read_text().splitlines()) if (d / "failed.list").is_file() else 0
        files = [
            p for p in d.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)
        ]
        size = sum(p.stat().st_size for p in files if p.suffix != ".log")
        rows.append(f"| {d.name[len('tokens_') :]} | `{d}` | {len(frames)} | {sum(frames)} | {failed} | {size} |")
    if not rows:
        return []
    return [
        "## Tokens (stage 7: `codec tokens`)",
        "",
        "| set | dir | utterances | frames | failed | bytes |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def timing_section(exp: Path) -> list[str]:
    path = exp / "stage_times.txt"
    if not path.is_file():
        return []
    last: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            last[parts[0]] = int(parts[1])  # the latest run of each stage
    rows = [f"| {s} {STAGES.get(s, '')} | {last[s] // 60}:{last[s] % 60:02d} |" for s in sorted(last)]
    total = sum(last.values())
    return [
        "## Stage timings (latest run of each stage)",
        "",
        "| stage | min:s |",
        "|---|---:|",
        *rows,
        f"| total | {total // 60}:{total % 60:02d} |",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--exp", type=Path, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-set", type=Path, required=True)
    parser.add_argument("--eval", action="append", default=[], metavar="NAME=DIR", help="a test set and its eval dir")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=Path("RESULTS.md"))
    args = parser.parse_args()
    lines = [f"# Results: egs/{args.recipe}", ""]
    if args.note:
        lines += [args.note, ""]
    lines += model_section(args.exp, args.config, args.train_set)
    lines += [f"- written: {datetime.now():%Y-%m-%d %H:%M} by `recipes/codec.sh` (stages 6-7)", ""]
    for item in args.eval:
        name, _, where = item.partition("=")
        if (Path(where) / "summary.json").is_file():
            lines += eval_section(name, Path(where))
    lines += decode_section(args.exp) + tokens_section(args.exp) + timing_section(args.exp)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(args.out)
    print(f"make_results: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
