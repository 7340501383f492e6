#!/usr/bin/env python
"""Quality against training time: collect `codec eval` summaries of checkpoints into one table, and plot it.

    # add a row: checkpoint of run F at step 8000, reached after 2.68 hours of one CPU thread
    python tools/training_curve.py add egs/folder/results/grvq16k_cpu/curve.tsv exp/sub_F8000/summary.json \
        --run F --step 8000 --hours 2.68
    # draw speech PESQ-WB and STOI against hours, one line per run and bitrate (--kbps 3: only that bitrate)
    python tools/training_curve.py plot egs/folder/results/grvq16k_cpu/curve.tsv curve.png

The table keeps the figures themselves (not paths to summaries), so the plot can be redrawn from the repository
alone. Every row of one table should come from the same evaluation set (tools/eval_subset.sh gives the fixed dev
subset); `add` refuses a summary over another clip count than the rows already there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = (
    "run",
    "step",
    "hours",
    "clips",
    "kbps",
    "pesq_wb",
    "stoi",
    "si_sdr",
    "mel_distance",
    "level_db",
    "music_mel",
)


def rows_of_summary(summary: dict) -> list[dict]:
    """One row per coded bitrate: speech metrics, plus the music mel distance at that bitrate when music was scored."""
    by_label: dict[tuple[str, float], dict] = {}
    for entry in summary["summary"]:
        if entry.get("target_kbps") is None:
            if not entry["system"].endswith(" continuous"):
                continue  # the original and anything else without a bitrate
            entry = {**entry, "target_kbps": 0.0}  # the quantizer bypassed (codec eval --continuous): kbps 0
        by_label[(entry["content"], entry["target_kbps"])] = entry["metrics"]
    rows = []
    for (content, kbps), metrics in sorted(by_label.items(), key=lambda item: item[0][1]):
        if content != "speech":
            continue
        row = {name: metrics[name]["mean"] for name in COLUMNS if name in metrics}
        music = by_label.get(("music", kbps), {}).get("mel_distance")
        row.update(kbps=kbps, music_mel=music["mean"] if music else "")
        rows.append(row)
    return rows


def read_table(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def add(args: argparse.Namespace) -> None:
    summary = json.loads(Path(args.summary).read_text())
    clips = summary["run"]["clips"]
    table = read_table(Path(args.table))
    if table and int(table[0]["clips"]) != clips:
        sys.exit(
            f"training_curve: {args.summary} scored {clips} clips, the table's rows {table[0]['clips']}; "
            "score every checkpoint on the same set (tools/eval_subset.sh)"
        )
    table = [r for r in table if not (r["run"] == args.run and int(r["step"]) == args.step)]
    for row in rows_of_summary(summary):
        row.update(run=args.run, step=args.step, hours=args.hours, clips=clips)
        table.append({name: row.get(name, "") for name in COLUMNS})
    table.sort(key=lambda r: (float(r["hours"]), float(r["kbps"])))
    with Path(args.table).open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in table:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})


def plot(args: argparse.Namespace) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    table = read_table(Path(args.table))
    if not table:
        sys.exit(f"training_curve: {args.table} has no rows; add some first")
    metrics = ("pesq_wb", "stoi")
    drawn = sorted({float(r["kbps"]) for r in table})
    if args.kbps:
        try:
            wanted = {float(k) for k in args.kbps.split(",")}
        except ValueError:
            sys.exit(f"training_curve: --kbps takes comma-separated numbers, not {args.kbps!r}")
        drawn = [k for k in drawn if k in wanted]
        if not drawn:
            sys.exit(f"training_curve: {args.table} has no rows at {args.kbps} kbps")
    fig = Figure(figsize=(5.5 * len(metrics), 4.0), layout="constrained")
    for axis, metric in zip(fig.subplots(1, len(metrics)), metrics, strict=True):
        for run in dict.fromkeys(r["run"] for r in table):
            for kbps in drawn:
                points = sorted(
                    (float(r["hours"]), float(r[metric]))
                    for r in table
                    if r["run"] == run and float(r["kbps"]) == kbps and r[metric]
                )
                if points:
                    hours, values = zip(*points, strict=True)
                    axis.plot(hours, values, marker="o", label=f"{run}, {kbps:g} kbps")
        axis.set_xlabel("hours of training on one CPU thread")
        axis.set_ylabel(f"speech {metric} (dev subset)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best", framealpha=0.6)
    fig.savefig(args.out, format="png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    a = sub.add_parser("add", help="add (or replace) a checkpoint's rows from a codec eval summary.json")
    a.add_argument("table")
    a.add_argument("summary")
    a.add_argument("--run", required=True, help="the run's name (a line of the plot)")
    a.add_argument("--step", type=int, required=True)
    a.add_argument("--hours", type=float, required=True, help="training time to this checkpoint, in hours")
    p = sub.add_parser("plot", help="draw speech PESQ-WB and STOI against hours")
    p.add_argument("table")
    p.add_argument("out")
    p.add_argument("--kbps", help="comma-separated bitrates to draw (0: the quantizer bypassed; default: all)")
    args = parser.parse_args()
    add(args) if args.verb == "add" else plot(args)


if __name__ == "__main__":
    main()
