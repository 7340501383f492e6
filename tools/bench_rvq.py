"""Benchmark of the residual search: every backend beside the torch reference and a plain per-level loop.

Prints one JSON line per figure: first the machine (with the FP32 peak measured by a large sgemm),
then one line per (backend, frames N, levels L): median seconds per call, frames/s, GFLOP/s,
fraction of the measured FP32 peak, and the speed-up over the torch reference and over the loop.

FLOPs of one call: 2 * N * G * L * K * D (the dot products; norms, argmins and subtractions are
lower order). The peak is what torch.matmul reaches on an fp32 product (2048^3 on CPU, 4096^3 on GPU) with
the current thread count, so "roofline" here means the sgemm ceiling, not the vendor's sheet.

Cells whose estimated time exceeds --budget-s are reported as skipped. Where the [G, N, K] score
matrices of the torch reference and the loop would not fit in memory, those two run over slices of
--chunk-frames frames (marked chunk_frames in their lines, "(chunked)" in the table).

    python tools/bench_rvq.py --device cpu --threads 1 --markdown table.md
    python tools/bench_rvq.py --device cuda
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from codec.quantization import search


def search_loop(residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str):
    """The straightforward version: per level a matmul, an argmin, a gather and a subtraction."""
    N, G, _ = residual.shape
    r = residual.clone()
    groups = torch.arange(G, device=residual.device)
    codes = []
    for level in range(levels):
        book = codebooks[:, level]  # [G, K, D]
        dots = torch.einsum("ngd,gkd->ngk", r, book)
        if lookup == "euclidean":
            score = (book * book).sum(-1) - 2 * dots
        else:
            score = -dots / book.norm(dim=-1).clamp_min(1e-12)
        index = score.argmin(-1)  # [N, G]
        r = r - book[groups, index]
        codes.append(index)
    return torch.stack(codes, 1), residual - r


def chunked(fn, frames: int, residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str):
    """`fn` over slices of `frames` frames, concatenated."""
    parts = [fn(part, codebooks, levels, lookup) for part in residual.split(frames)]
    return torch.cat([c for c, _ in parts]), torch.cat([q for _, q in parts])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def sgemm_peak(device: torch.device) -> float:
    """FLOP/s of a 4096^3 fp32 matmul (median of 5), TF32 off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    return 2 * n**3 / statistics.median(time_call(lambda: a @ b, device, 5))


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical CPUs)"


def free_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 << 30


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, nargs="+", default=[1, 64, 4096, 1_000_000])
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 32])
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--codebook-dim", type=int, default=64)
    p.add_argument("--lookup", choices=search.LOOKUPS, default="euclidean")
    p.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: leave as is)")
    p.add_argument("--repeats", type=int, default=15, help="most timed calls per cell (fewer for slow cells)")
    p.add_argument("--budget-s", type=float, default=30.0, help="skip a cell whose one call is estimated longer")
    p.add_argument("--chunk-frames", type=int, default=65536, help="slices for torch/loop when N won't fit")
    p.add_argument("--markdown", help="also write the figures as a markdown table to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import numba

            numba.set_num_threads(args.threads)
        except ImportError:
            pass
    backends = [b for b in search.available_backends() if (b == "cuda") == (device.type == "cuda") or b == "torch"]
    G, K, D, lookup = args.groups, args.codebook_size, args.codebook_dim, args.lookup
    peak = sgemm_peak(device)
    head = {
        "figure": "machine",
        "device": machine(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "fp32_peak_gflops": round(peak / 1e9, 1),
        "peak_from": "median torch.matmul sgemm (2048^3 on CPU, 4096^3 on GPU)",
        "flops_per_call": "2*N*G*L*K*D",
        "G": G,
        "K": K,
        "D": D,
        "lookup": lookup,
        "backends": backends,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    print(json.dumps(head), flush=True)

    gen = torch.Generator().manual_seed(0)
    L_max = max(args.levels)
    scale = 0.8 ** torch.arange(L_max, dtype=torch.float32)[None, :, None, None]
    codebooks = (torch.randn(G, L_max, K, D, generator=gen) * scale).to(device)
    rate: dict[str, float] = {}  # seconds per (frame x level), from the last measured cell, for estimates
    rows = []
    for N in args.frames:
        residual = torch.randn(N, G, D, generator=gen).to(device)
        for L in args.levels:
            flops = 2 * N * G * L * K * D
            cell: dict[str, float] = {}
            for name in [*backends, "loop"]:
                fn = search_loop if name == "loop" else search._backend(name)
                line = {"figure": "rvq_search", "backend": name, "N": N, "L": L}
                estimate = rate.get(name, 0.0) * N * L
                need = 3 * G * N * K * 4  # dots, scores and a temporary, fp32
                if name in ("torch", "loop") and need > 0.8 * free_memory(device):
                    # Unchunked, the [G, N, K] scores would not fit: time it over slices of frames instead.
                    fn = functools.partial(chunked, fn, args.chunk_frames)
                    line["chunk_frames"] = args.chunk_frames
                if estimate > args.budget_s:
                    line["skipped"] = f"estimated {estimate:.0f} s per call > --budget-s {args.budget_s:g}"
                if "skipped" in line:
                    print(json.dumps(line), flush=True)
                    rows.append(line)
                    continue
                call = functools.partial(fn, residual, codebooks, L, lookup)
                with torch.no_grad():
                    first = time_call(call, device, 1)[0]  # warm-up (and numba's first load)
                    repeats = max(1, min(args.repeats, int(args.budget_s / 2 / max(first, 1e-6))))
                    times = time_call(call, device, repeats)
                seconds = statistics.median(times)
                rate[name] = seconds / (N * L)
                cell[name] = seconds
                line.update(
                    median_s=seconds,
                    repeats=repeats,
                    frames_per_s=N / seconds,
                    gflops=flops / seconds / 1e9,
                    roofline_fraction=flops / seconds / peak,
                )
                rows.append(line)
            for line in rows[-len(backends) - 1 :]:
                if "median_s" in line:
                    for base in ("torch", "loop"):
                        if base in cell:
                            line[f"speedup_vs_{base}"] = cell[base] / line["median_s"]
                    print(json.dumps(line), flush=True)

    if args.markdown:
        write_markdown(args.markdown, head, rows, backends)


def write_markdown(path: str, head: dict, rows: list[dict], backends: list[str]) -> None:
    names = [*backends, "loop"]
    lines = [
        f"Device: {head['device']}, torch {head['torch']}, threads: {head['threads']}; "
        f"G={head['G']}, K={head['K']}, D={head['D']}, {head['lookup']}. "
        f"FP32 peak (measured sgemm): {head['fp32_peak_gflops']} GFLOP/s; FLOPs per call = 2*N*G*L*K*D.",
        "",
        "| N | L | "
        + " | ".join(f"{n} ms/call" for n in names)
        + " | "
        + " | ".join(f"{n} frames/s" for n in backends)
        + " | best vs torch | best vs loop | best % of peak |",
        "|---|---|" + "---|" * (2 * len(names) - 1 + 3),
    ]
    cells: dict[tuple[int, int], dict[str, dict]] = {}
    for row in rows:
        cells.setdefault((row["N"], row["L"]), {})[row["backend"]] = row
    for (N, L), cell in cells.items():
        timed = {name: row for name, row in cell.items() if "median_s" in row}
        fast = [b for b in backends if b != "torch" and b in timed]
        best = min(fast, key=lambda b: timed[b]["median_s"]) if fast else None
        ratios = [
            f"{timed[best][f'speedup_vs_{base}']:.2f}x ({best})"
            if best and f"speedup_vs_{base}" in timed[best]
            else "-"
            for base in ("torch", "loop")
        ]
        share = f"{timed[best]['roofline_fraction'] * 100:.1f}%" if best else "-"
        ms = [
            f"{timed[n]['median_s'] * 1e3:.3g}" + (" (chunked)" if "chunk_frames" in timed[n] else "")
            if n in timed
            else "skipped"
            for n in names
        ]
        fps = [f"{timed[n]['frames_per_s']:.3g}" if n in timed else "-" for n in backends]
        lines.append(f"| {N} | {L} | " + " | ".join([*ms, *fps, *ratios, share]) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
