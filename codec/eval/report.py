"""Reports of an evaluation run, all written into one folder:

results.csv    one row per clip and system ("original" included): kbps spent, every metric column,
               `skipped` (metric: reason; ...) and `error` (why the clip or system failed)
summary.json   run facts (systems and exactly how each ran, tool versions), per content type and system
               the mean of each metric over the clips it applies to, skip counts, codebook usage
summary.md     the same as Markdown tables
plots/*.png    each metric against kbps spent, one line per system, one panel per content type
listen.html    one self-contained page: the table, the plots, and per listening clip a player for the
               original and every system, the audio embedded as base64 16-bit WAV (no other files)
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.atomic import atomic_output
from codec.eval.metrics import COLUMNS, Metric

BASE_COLUMNS = (
    "clip",
    "path",
    "content",
    "seconds",
    "sample_rate",
    "system",
    "label",
    "target_kbps",
    "kbps",
    "coding_seconds",
)


def metric_columns(metrics: list[Metric]) -> list[str]:
    return [c for m in metrics for c in m.columns]


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def summarize(rows: list[dict], columns: list[str]) -> list[dict]:
    """Per (content, system label): mean kbps spent, mean of each metric over the clips that have it."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["content"], row["label"]), []).append(row)
    out = []
    for (content, label), members in groups.items():
        ok = [r for r in members if not r.get("error")]
        spent = [r["kbps"] for r in ok if r.get("kbps") is not None]
        entry = {
            "content": content,
            "system": members[0]["system"],
            "label": label,
            "target_kbps": members[0].get("target_kbps"),
            "kbps": round(float(np.mean(spent)), 4) if spent else None,
            "clips": len(ok),
            "failed": len(members) - len(ok),
            "metrics": {},
            "skipped": {},
        }
        for column in columns:
            values = [r[column] for r in ok if r.get(column) is not None]
            if values:
                entry["metrics"][column] = {"mean": round(float(np.mean(values)), 4), "n": len(values)}
        reasons = Counter(part for r in ok for part in (r.get("skipped") or "").split("; ") if part)
        entry["skipped"] = dict(sorted(reasons.items()))
        out.append(entry)
    order = {"original": 0, "opus": 2, "codec2": 3}
    out.sort(key=lambda e: (e["content"], order.get(e["system"], 1), e["system"], e["target_kbps"] or 0))
    return out


# --- Markdown ---------------------------------------------------------------------------------------------
def _header(column: str) -> str:
    better = COLUMNS[column].higher_is_better
    return f"{column} {'(best at 0)' if better is None else '↑' if better else '↓'}"


def table_rows(summary: list[dict], content: str, columns: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["system", "kbps (target)", "kbps (spent)", "clips", *(_header(c) for c in columns)]
    body = []
    for e in summary:
        if e["content"] != content:
            continue
        cells = [
            e["label"],
            _num(e["target_kbps"]),
            _num(e["kbps"]),
            f"{e['clips']}" + (f" ({e['failed']} failed)" if e["failed"] else ""),
        ]
        cells += [_num(e["metrics"][c]["mean"]) if c in e["metrics"] else "–" for c in columns]
        body.append(cells)
    return head, body


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(summary: list[dict], info: dict, columns: list[str], codebooks: dict) -> str:
    lines = [f"# Evaluation of {info.get('model', {}).get('name', 'baselines')} on {info['data']}", ""]
    lines += [
        f"{info['clips']} clips ({', '.join(f'{n} {c}' for c, n in info['content'].items())}), "
        f"{info['created']}, {info['seconds']} s. Means over the clips each metric applies to; "
        "– = the metric applies to none (see Skipped).",
        "",
    ]
    for content in dict.fromkeys(e["content"] for e in summary):
        head, body = table_rows(summary, content, columns)
        lines += [f"## {content}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines.append("")
    if codebooks:
        lines += [
            "## Codebook usage",
            "",
            "Entropy by level: bits per code of each level (mean over groups), out of log2(codebook size); a level",
            "near 0 bits carries nothing and its bitrate is wasted.",
            "",
            "| system | codebooks | mean usage | mean entropy (bits) | entropy by level (bits) | fixed kbps | "
            "entropy-coded bound kbps |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, c in codebooks.items():
            G = c.get("num_groups", 1)
            by_level = np.asarray(c["entropy_bits"]).reshape(-1, G).mean(1)  # level-major: G codebooks per level
            lines.append(
                f"| {label} | {c['codebooks']} x {c['codebook_size']} | {np.mean(c['usage']):.3f} | "
                f"{np.mean(c['entropy_bits']):.3f} | {' '.join(f'{h:.2f}' for h in by_level)} | "
                f"{c['fixed_bps'] / 1000:.3f} | {c['entropy_bound_bps'] / 1000:.3f} |"
            )
        lines.append("")
    lines += ["## How each system was run", ""]
    for s in info["systems"]:
        lines += [f"- **{s['label']}**: " + " | ".join(f"`{h}`" for h in s["how"])]
    for s in info.get("not_run", []):
        lines += [f"- **{s['label']}**: not run: {s['why']}"]
    lines += ["", "## Skipped metrics", "", "Counted over clip x system results (the original included).", ""]
    reasons: Counter = Counter()
    for e in summary:
        for reason, n in e["skipped"].items():
            reasons[(e["content"], reason)] += n
    lines += [f"- {content}: {reason} ({n})" for (content, reason), n in sorted(reasons.items())] or ["- none"]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), ""]
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------------------
def plot_metrics(summary: list[dict], columns: list[str], plot_dir: Path) -> dict[str, Path]:
    """One PNG per metric column with any value: metric against kbps spent, a line per system."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for column in columns:
        contents = list(dict.fromkeys(e["content"] for e in summary if column in e["metrics"]))
        if not contents:
            continue
        fig = Figure(figsize=(5.2 * len(contents), 3.8), dpi=100, layout="constrained")
        axes = fig.subplots(1, len(contents), squeeze=False)[0]
        for ax, content in zip(axes, contents, strict=True):
            entries = [e for e in summary if e["content"] == content and column in e["metrics"]]
            for system in dict.fromkeys(e["system"] for e in entries):
                points = sorted(
                    (e["kbps"], e["metrics"][column]["mean"])
                    for e in entries
                    if e["system"] == system and e["kbps"] is not None
                )
                if system == "original":
                    for e in entries:
                        if e["system"] == "original":
                            ax.axhline(e["metrics"][column]["mean"], color="black", linestyle="--", label="original")
                elif points:
                    ax.plot(*zip(*points, strict=True), marker="o", label=system)
            ax.set_title(f"{column} ({content})")
            ax.set_xlabel("kbps spent")
            ax.set_ylabel(_header(column))
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        path = plot_dir / f"{column}.png"
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
        written[column] = path
    return written


# --- listening page ---------------------------------------------------------------------------------------
def _wav_base64(audio: np.ndarray, sample_rate: int) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_table(head: list[str], body: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{rows}</tbody></table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:4px;border:1px solid #eee}audio{height:32px;vertical-align:middle}
.clip{margin:1.5em 0;padding:.5em 1em;border:1px solid #ddd}code{font-size:90%}"""


def listening_page(
    summary: list[dict], info: dict, columns: list[str], plots: dict[str, Path], listening: list[dict], rows: list[dict]
) -> str:
    esc = html.escape
    title = f"Evaluation of {info.get('model', {}).get('name', 'baselines')}"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>",
        f"<p>{info['clips']} clips from <code>{esc(info['data'])}</code>, {esc(info['created'])}. "
        "Audio below is embedded in this page (16-bit WAV, base64).</p>",
    ]
    for content in dict.fromkeys(e["content"] for e in summary):
        parts.append(f"<h2>{esc(content)}</h2>" + _html_table(*table_rows(summary, content, columns)))
    parts.append("<h2>Plots</h2>")
    for column, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(column)} against kbps' src='data:image/png;base64,{data}'>")
    parts.append("<h2>How each system was run</h2><ul>")
    for s in info["systems"]:
        parts.append(f"<li><b>{esc(s['label'])}</b>: " + " | ".join(f"<code>{esc(h)}</code>" for h in s["how"]))
    parts.append("</ul><h2>Listen</h2>")
    by_clip = {(r["clip"], r["label"]): r for r in rows}
    for item in listening:
        parts.append(
            f"<div class='clip'><h3>{esc(item['clip'])} ({esc(item['content'])}, "
            f"{item['seconds']:.1f} s)</h3><table><thead><tr><th>system</th><th>audio</th>"
            "<th>kbps spent</th><th>scores</th></tr></thead><tbody>"
        )
        for label, audio in item["players"]:
            r = by_clip.get((item["clip"], label), {})
            scores = ", ".join(f"{c} {r[c]:.2f}" for c in columns if r.get(c) is not None)
            src = _wav_base64(audio, item["sample_rate"])
            parts.append(
                f"<tr><td>{esc(label)}</td><td><audio controls preload='auto' "
                f"src='data:audio/wav;base64,{src}'></audio></td><td>{_num(r.get('kbps'))}</td>"
                f"<td>{esc(scores)}</td></tr>"
            )
        parts.append("</tbody></table></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(
    out_dir: Path, rows: list[dict], info: dict, metrics: list[Metric], codebooks: dict, listening: list[dict]
) -> dict:
    columns = metric_columns(metrics)
    write_csv(out_dir / "results.csv", rows, [*BASE_COLUMNS, *columns, "skipped", "error"])
    summary = summarize(rows, columns)
    result = {
        "run": info,
        "summary": summary,
        "codebooks": codebooks,
        "failures": [{"clip": r["clip"], "label": r["label"], "error": r["error"]} for r in rows if r.get("error")],
    }
    with atomic_output(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False, default=str))
    with atomic_output(out_dir / "summary.md") as tmp:
        tmp.write_text(markdown(summary, info, columns, codebooks))
    plots = plot_metrics(summary, columns, out_dir / "plots")
    with atomic_output(out_dir / "listen.html") as tmp:
        tmp.write_text(listening_page(summary, info, columns, plots, listening, rows))
    return result
