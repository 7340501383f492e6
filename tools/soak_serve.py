#!/usr/bin/env python
"""Soak a `codec serve`: N live sessions that join and leave for a stated time, a share of them misbehaving.

    python tools/soak_serve.py --minutes 20 --sessions 16           # the run in docs/ROBUSTNESS.md
    python tools/soak_serve.py --minutes 2 --sessions 16 --json     # the slow test (tests/test_serve_soak.py)

One server (`codec --threads 1 serve` with a token, on a free loopback port; loopback only) runs for the whole
soak. Each of N slots opens one session after another until the time is up. A well-behaved session streams one
of a few speech clips in real time and its codes must equal `codec encode` of the same clip (made before the
soak). The others, `--bad-share` of the sessions, misbehave: an abrupt disconnect mid-stream, garbage where a
message belongs, a reader that stops reading (the server must close it with 1008), a wrong token (HTTP 401)
and a foreign browser origin (HTTP 403). Every `--every` seconds a row records the server's RSS and open file
descriptors; the soak fails (exit 1) if the server process ends or is replaced, a well-behaved session's codes
differ, a misbehaving one is not answered as stated, or RSS grows by more than --rss-bound-mib (or FDs by more
than 2 x N + --fd-slack) over the first row after warm-up. Prints the table, then one JSON summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.cli import NO_DEFAULT  # noqa: E402
from codec.modelfile import default_model_name  # noqa: E402
from tests import live_server  # noqa: E402
from tests.live_server import codes_of  # noqa: E402

BAD_KINDS = ("abrupt", "garbage", "slow_reader", "wrong_token", "foreign_origin")


async def misbehave(kind: str, url: str, token: str, clip: dict, rng) -> str | None:
    """Run one misbehaving client; None if the server answered as docs/ROBUSTNESS.md says, else what went wrong."""
    if kind == "wrong_token":
        status = await live_server.wrong_token(url)
        return None if status == 401 else f"wrong token answered {status}"
    if kind == "foreign_origin":
        status = await live_server.foreign_origin(url, token)
        return None if status == 403 else f"foreign origin answered {status}"
    if kind == "abrupt":
        await live_server.abrupt(url, token, clip["rate"], seconds=float(rng.uniform(0.05, 2.0)))
        return None
    if kind == "garbage":
        code = await live_server.garbage(url, token, rng)
        return None if code in (1008, 1009) else f"garbage closed with {code}"
    data = clip["data"]  # slow_reader: the clip's packets after the first, over and over, at 768 kHz f32
    from codec.format.bitstream import CodesReader

    reader = CodesReader(io.BytesIO(data))
    spans = [(p.offset, p.offset + p.size) for p in reader.packets()]
    packets = [data[slice(*spans[0])]] + [data[a:b] for a, b in spans[1:]] * 40
    sent, code, reason = await live_server.slow_reader(url, token, data[: reader.header_size], packets, 25.0)
    return None if code in (1008, 1006, 1000) else f"slow reader closed with {code} {reason}"


async def soak(args, server, token: str, clips: list[dict]) -> dict:
    deadline = time.monotonic() + 60 * args.minutes
    counts: Counter = Counter()
    problems: list[str] = []
    rows: list[dict] = []
    t0 = time.monotonic()

    async def slot(i: int) -> None:
        local = np.random.default_rng([args.seed, i])
        await asyncio.sleep(float(local.uniform(0, 2)))  # join at different times
        while time.monotonic() < deadline and server.alive:
            clip = clips[int(local.integers(len(clips)))]
            kind = "good" if local.random() >= args.bad_share else BAD_KINDS[int(local.integers(len(BAD_KINDS)))]
            try:
                if kind == "good":
                    data = await live_server.good_session(server.url, clip["audio"], clip["rate"], clip["levels"],
                                                          token)  # fmt: skip
                    problem = None if np.array_equal(codes_of(data), clip["codes"]) else "codes differ"
                else:
                    problem = await misbehave(kind, server.url, token, clip, local)
            except Exception as e:  # noqa: BLE001 - a failure of the soak, recorded with its kind
                problem = f"{type(e).__name__}: {e}"
            counts[kind] += 1
            if problem is not None:
                counts[f"{kind} failed"] += 1
                problems.append(f"{kind}: {problem}")

    async def sample() -> None:
        while time.monotonic() < deadline and server.alive:
            rows.append({"minute": round((time.monotonic() - t0) / 60, 2), "rss_mib": round(server.status_mib(), 1),
                         "fds": server.fds(), "sessions": sum(counts[k] for k in ("good", *BAD_KINDS))})  # fmt: skip
            if args.progress:
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            await asyncio.sleep(min(args.every, max(0.1, deadline - time.monotonic())))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(slot(i) for i in range(args.sessions)))
    await sampler
    rows.append({"minute": round((time.monotonic() - t0) / 60, 2), "rss_mib": round(server.status_mib(), 1),
                 "fds": server.fds(), "sessions": sum(counts[k] for k in ("good", *BAD_KINDS))})  # fmt: skip
    return {"counts": dict(counts), "problems": problems, "rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="how long the sessions keep coming (at most 120)")
    p.add_argument("--sessions", type=int, default=16, help="live sessions at once (at most 64, the server's bound)")
    p.add_argument("--bad-share", type=float, default=0.25, help="share of sessions that misbehave")
    p.add_argument("--model", default=None, help="model name or file (default: the shipped default)")
    p.add_argument("--runtime", default="onnx", help="the server's and `codec encode`'s --runtime")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--every", type=float, default=30.0, help="seconds between rows of RSS and file descriptors")
    p.add_argument("--warmup-rows", type=int, default=1, help="rows before the baseline the bounds are held to")
    p.add_argument("--rss-bound-mib", type=float, default=64.0)
    p.add_argument("--fd-slack", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="print each row to stderr as it is taken")
    args = p.parse_args()
    args.model = args.model or default_model_name(NO_DEFAULT)
    if not (0 < args.minutes <= 120 and 1 <= args.sessions <= 64 and 0 <= args.bad_share <= 1):
        raise SystemExit("soak_serve: --minutes 0..120, --sessions 1..64, --bad-share 0..1")
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="soak-serve-") as tmp:
        clips = live_server.make_clips(args.model, args.runtime, Path(tmp), args.clips)
        server = live_server.ServerProcess(args.model, runtime=args.runtime, token=token)
        pid, started = server.proc.pid, time.time()
        try:
            result = asyncio.run(soak(args, server, token, clips))
            alive = server.alive and server.proc.pid == pid
        finally:
            server.stop()
    rows = result["rows"]
    base = rows[min(args.warmup_rows, len(rows) - 1)]
    after = rows[min(args.warmup_rows, len(rows) - 1) :]
    rss_growth = max(r["rss_mib"] for r in after) - base["rss_mib"]
    fd_spread = max(r["fds"] for r in after) - min(r["fds"] for r in rows)
    failures = list(result["problems"])
    if not alive:
        failures.append("the server process ended during the soak:\n" + "\n".join(list(server.log)[-20:]))
    if rss_growth > args.rss_bound_mib:
        failures.append(f"RSS grew by {rss_growth:.0f} MiB after warm-up (bound {args.rss_bound_mib:g})")
    if fd_spread > 2 * args.sessions + args.fd_slack:
        failures.append(f"open file descriptors varied by {fd_spread} (bound {2 * args.sessions + args.fd_slack})")
    if not result["counts"].get("good"):
        failures.append("no well-behaved session completed")
    print("| minute | server RSS MiB | open fds | sessions so far |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['minute']:.1f} | {r['rss_mib']:.0f} | {r['fds']} | {r['sessions']} |")
    summary = {"minutes": args.minutes, "sessions_at_once": args.sessions, "bad_share": args.bad_share,
               "model": args.model, "runtime": args.runtime,
               "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
               "counts": result["counts"], "rss_growth_mib": round(rss_growth, 1), "fd_spread": fd_spread,
               "server_pid_unchanged": alive, "restarts": 0 if alive else 1, "failures": failures[:20],
               "ok": not failures}  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
