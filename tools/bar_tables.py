#!/usr/bin/env python
"""Markdown tables and the default model's quality bar, from a `codec eval` summary.json.

    python tools/bar_tables.py exp/eval_dev/summary.json [--model spectral16k]

Prints the speech table (PESQ-WB, STOI, DNSMOS OVRL, mel distance, SI-SDR, output level, bitrate spent), the music
table and each bar check with its figures (the bar of the default model, see codec/pretrained/grvq16k.md); the
checks against Opus and Codec2 need their rows in the summary (`codec eval --baselines opus,codec2`):
  - at 3 kbps the model beats Opus 6 kbps on PESQ-WB, STOI and DNSMOS OVRL (speech clips, averaged);
  - at every bitrate it beats Codec2 3.2 kbps on PESQ-WB;
  - at its lowest bitrate (1 kbps or below) STOI is at least 0.80.
"""

from __future__ import annotations

import argparse
import json
import math


def mean(row: dict, metric: str) -> float:
    m = row["metrics"].get(metric)
    return m["mean"] if m else math.nan


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    head = "| system | kbps spent | clips | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [head, "|" + "---|" * (3 + len(columns))]
    for r in rows:
        cells = [fmt(mean(r, key), digits) for key, _, digits in columns]
        lines.append(f"| {r['label']} | {fmt(r['kbps'], 2)} | {r['clips']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", help="summary.json written by codec eval")
    parser.add_argument("--model", help="the model's system name in the summary (default: the shipped default)")
    args = parser.parse_args()
    if args.model is None:
        from codec import pretrained

        args.model = pretrained.default_model().name
    summary = json.load(open(args.summary))["summary"]
    by = {(r["content"], r["label"]): r for r in summary}
    for content, columns in (
        (
            "speech",
            [
                ("pesq_wb", "PESQ-WB ↑", 3),
                ("stoi", "STOI ↑", 3),
                ("dnsmos_ovrl", "DNSMOS OVRL ↑", 3),
                ("mel_distance", "mel distance ↓", 3),
                ("si_sdr", "SI-SDR dB ↑", 2),
                ("level_db", "level dB (best 0)", 2),
            ],
        ),
        ("music", [("mel_distance", "mel distance ↓", 3), ("si_sdr", "SI-SDR dB ↑", 2), ("level_db", "level dB", 2)]),
    ):
        rows = [r for r in summary if r["content"] == content and r["clips"]]
        print(f"### {content}\n\n{table(rows, columns)}\n")

    model = sorted(
        (r for r in summary if r["content"] == "speech" and r["system"] == args.model), key=lambda r: r["target_kbps"]
    )
    if not model:
        raise SystemExit(f"bar_tables: no speech rows of system {args.model!r} in {args.summary}; pass --model")
    print("### bar\n")
    opus6, codec2 = by.get(("speech", "opus 6 kbps")), by.get(("speech", "codec2 3.2 kbps"))
    if opus6 is None or codec2 is None:
        print("- no Opus 6 kbps or Codec2 3.2 kbps rows in this summary (codec eval --baselines opus,codec2 adds them)")
        return
    at3 = next(r for r in model if abs(r["target_kbps"] - 3) < 1e-6)
    for metric in ("pesq_wb", "stoi", "dnsmos_ovrl"):
        a, b = mean(at3, metric), mean(opus6, metric)
        print(f"- 3 kbps vs Opus 6 kbps, {metric}: {a:.3f} vs {b:.3f}: {'met' if a > b else 'NOT met'}")
    floor = mean(codec2, "pesq_wb")
    beaten = [r["label"] for r in model if mean(r, "pesq_wb") > floor]
    print(f"- PESQ-WB above Codec2 3.2 kbps ({floor:.3f}) at {len(beaten)} of {len(model)} bitrates: {beaten}")
    lowest = model[0]
    stoi = mean(lowest, "stoi")
    print(f"- STOI at {lowest['label']}: {stoi:.3f} (bar 0.80): {'met' if stoi >= 0.8 else 'NOT met'}")


if __name__ == "__main__":
    main()
