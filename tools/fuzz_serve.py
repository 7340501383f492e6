#!/usr/bin/env python
"""Fuzz the live protocol of `codec serve`: mutated and random WebSocket messages through a running server.

    python tools/fuzz_serve.py --cases 5000 --seed 1       # the run in docs/ROBUSTNESS.md
    python tools/fuzz_serve.py --cases 300 --model tiny.safetensors --runtime torch   # the test's size

One server (`codec --threads 1 serve` with a token, on a free loopback port) takes every case. A case is one
connection and a short sequence of messages drawn from: start messages with fields of the wrong type, out of
range, missing or unknown, in any order; a valid start (encode or decode) followed by PCM of any length, control
messages of any type, the `.codes` header and packets of a real stream with bytes flipped, cut or spliced;
binary and text where the other belongs, empty messages, messages just under and over the size limit, random
bytes and random text (some of it not UTF-8 on the wire), deeply nested JSON, a second start. `--parallel`
cases run at once.

The rule: the server answers every case by closing with 1000 (a valid stream), 1008 (refused, with an error
message) or 1009 (too big), or is still waiting for more when the case stops sending (the client then closes);
never 1011 (internal error), never a traceback in its log, never a reply later than --case-seconds; the server
process stays up; and after every --bystander-every cases and at the end, a well-behaved session's codes equal
`codec encode` of the same clip. Prints one JSON summary line; exits 1 if any case broke the rule.
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
from codec.format.bitstream import CodesReader  # noqa: E402
from codec.modelfile import default_model_name  # noqa: E402
from tests import live_server  # noqa: E402
from tests.live_server import codes_of  # noqa: E402

ODD_VALUES = [None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 1e308, -1e308, 0.5, "", "x", "16000", [], {},
              [1, 2], {"a": 1}, "\u0000", "\ud7ff" * 3, 10**30]  # fmt: skip
FIELDS = ["type", "mode", "sample_rate", "channels", "format", "bitrate", "levels", "packet_frames", "packet_crc"]


def _start(rng, mode: str | None = None) -> dict:
    mode = mode or str(rng.choice(["encode", "decode"]))
    start = {"type": "start", "mode": mode}
    if mode == "encode":
        start.update(sample_rate=int(rng.choice([8000, 16000, 44100])), channels=int(rng.integers(1, 3)), levels=1)
    return start


def _mutated_start(rng) -> str | bytes:
    start = _start(rng)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(4)
        field = str(rng.choice(FIELDS))
        if op == 0:
            start[field] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
        elif op == 1:
            start.pop(field, None)
        elif op == 2:
            start[f"unknown_{int(rng.integers(100))}"] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
        else:
            start = dict(reversed(list(start.items())))  # fields out of order
    text = json.dumps(start)
    if rng.random() < 0.1:
        cut = int(rng.integers(len(text)))
        text = text[:cut]  # truncated JSON
    return text.encode() if rng.random() < 0.1 else text  # sometimes as a binary message


def _flip(data: bytes, rng, flips: int = 1) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        if out:
            out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _random_message(rng, limit: int, big: bool = False) -> str | bytes:
    """A message of any kind; `big` allows ones just under and over the size limit (only where the server refuses
    them unread: one under the limit after a valid start would be coded, 30 s of audio a case)."""
    kind = int(rng.integers(9 if big else 6))
    if kind == 0:
        return b""
    if kind == 1:
        return ""
    if kind == 2:
        return rng.bytes(int(rng.integers(1, 4096)))
    if kind == 3:
        return "".join(chr(int(c)) for c in rng.integers(1, 0xD7FF, int(rng.integers(1, 300))))
    if kind == 4:
        return json.dumps({"type": str(rng.choice(["end", "start", "ready", "done", "error", "", "END"]))})
    if kind == 5:
        return json.dumps(ODD_VALUES[int(rng.integers(len(ODD_VALUES)))])
    if kind == 6:
        depth = int(rng.integers(10, 100_000))
        return "[" * depth + "]" * depth  # deeply nested JSON
    if kind == 7:
        return bytes(limit - int(rng.integers(0, 16)))  # just under the size limit
    return bytes(limit + int(rng.integers(1, 4096)))  # over it: closed with 1009


def case(rng, clip: dict, limit: int) -> list[str | bytes]:
    """One case: the messages a client sends, in order."""
    shape = int(rng.integers(6))
    if shape == 0:  # a broken start, maybe followed by more
        return [_mutated_start(rng)] + [_random_message(rng, limit) for _ in range(int(rng.integers(0, 3)))]
    if shape == 1:  # no start at all: anything first
        return [_random_message(rng, limit, big=True) for _ in range(int(rng.integers(1, 4)))]
    if shape == 2:  # a valid encode start, then PCM of any length and stray messages
        start = _start(rng, "encode")
        messages: list[str | bytes] = [json.dumps(start)]
        for _ in range(int(rng.integers(1, 8))):
            if rng.random() < 0.7:
                messages.append(rng.bytes(int(rng.integers(0, 5000))))  # any length, odd included
            else:
                messages.append(_random_message(rng, limit))
        if rng.random() < 0.5:
            messages.append(json.dumps({"type": "end"}))
        return messages
    # a valid decode start, then the clip's header and packets, damaged
    data = clip["data"]
    reader = CodesReader(io.BytesIO(data))
    header = data[: reader.header_size]
    packets = [data[p.offset : p.offset + p.size] for p in reader.packets()]
    pieces = [header, *packets]
    n = int(rng.integers(1, len(pieces) + 1))
    pieces = pieces[:n]
    if shape == 3:  # bit flips
        i = int(rng.integers(len(pieces)))
        pieces[i] = _flip(pieces[i], rng, int(rng.integers(1, 4)))
    elif shape == 4:  # cut, spliced or shuffled
        i = int(rng.integers(len(pieces)))
        op = rng.integers(3)
        if op == 0:
            pieces[i] = pieces[i][: int(rng.integers(len(pieces[i]) + 1))]
        elif op == 1 and len(pieces) > 1:
            pieces[i] = pieces[i] + pieces[(i + 1) % len(pieces)]
        else:
            rng.shuffle(pieces)
    else:  # stray messages among the pieces
        pieces.insert(int(rng.integers(len(pieces) + 1)), _random_message(rng, limit))
    end = [json.dumps({"type": "end"})] if rng.random() < 0.5 else []
    return [json.dumps(_start(rng, "decode")), *pieces, *end]


async def run_case(url: str, token: str, messages, wait: float, linger: float) -> str:
    """Send `messages` (each within `wait` s), then read for `linger` s; the outcome: "closed CODE", "waiting"
    (the server still expects more: the client closes), or a failure."""
    from websockets.asyncio.client import connect

    try:
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None,
                           max_size=None, open_timeout=wait) as ws:  # fmt: skip
            try:
                for message in messages:
                    await asyncio.wait_for(ws.send(message), wait)
                async with asyncio.timeout(linger):
                    async for _ in ws:
                        pass
            except TimeoutError:
                return "waiting"
            except Exception as e:  # noqa: BLE001 - the server closed while we sent
                if not type(e).__name__.startswith("ConnectionClosed"):
                    raise
            await ws.wait_closed()
            return f"closed {ws.close_code}"
    except TimeoutError:
        return "failure: no answer to the opening handshake"
    except Exception as e:  # noqa: BLE001
        return f"failure: {type(e).__name__}: {e}"


async def fuzz(args, server, token: str, clips: list[dict]) -> tuple[Counter, list[str], int]:
    from codec.server.serve import MAX_MESSAGE_BYTES

    outcomes: Counter = Counter()
    failures: list[str] = []
    bystanders = 0
    cases = iter(range(args.cases))
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None

    async def bystander() -> None:
        nonlocal bystanders
        clip = clips[bystanders % len(clips)]
        data = await live_server.good_session(server.url, clip["audio"], clip["rate"], clip["levels"], token,
                                              realtime=False)  # fmt: skip
        bystanders += 1
        if not np.array_equal(codes_of(data), clip["codes"]):
            failures.append(f"bystander {bystanders}: codes differ from `codec encode`")

    async def worker() -> None:
        for i in cases:
            if deadline is not None and time.monotonic() > deadline:
                return
            messages = case(np.random.default_rng([args.seed, i]), clips[i % len(clips)], MAX_MESSAGE_BYTES)
            outcome = await run_case(server.url, token, messages, args.case_seconds, args.linger)
            outcomes[outcome if not outcome.startswith("failure") else "failure"] += 1
            if outcome.startswith("failure") or outcome not in ("closed 1000", "closed 1008", "closed 1009", "waiting"):
                failures.append(f"case {args.seed}/{i}: {outcome}")
            if (i + 1) % args.bystander_every == 0:
                await bystander()
            if not server.alive:
                failures.append(f"case {args.seed}/{i}: the server process ended")
                return

    await asyncio.gather(*(worker() for _ in range(args.parallel)))
    if server.alive:
        await bystander()
    return outcomes, failures, bystanders


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--minutes", type=float, default=None, help="stop starting new cases after this long")
    p.add_argument("--model", default=None, help="model name or file (default: the shipped default)")
    p.add_argument("--runtime", default="onnx", help="the server's and `codec encode`'s --runtime")
    p.add_argument("--parallel", type=int, default=8, help="cases at once")
    p.add_argument("--case-seconds", type=float, default=10.0, help="how long a case may wait for the server")
    p.add_argument("--linger", type=float, default=2.0, help="how long a case reads after its last message")
    p.add_argument("--bystander-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.model = args.model or default_model_name(NO_DEFAULT)
    if not (1 <= args.cases <= 10**6 and 1 <= args.parallel <= 32):
        raise SystemExit("fuzz_serve: --cases 1..1000000, --parallel 1..32")
    token = secrets.token_urlsafe(24)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fuzz-serve-") as tmp:
        clips = live_server.make_clips(args.model, args.runtime, Path(tmp), 3)
        server = live_server.ServerProcess(args.model, runtime=args.runtime, token=token)
        pid = server.proc.pid
        try:
            outcomes, failures, bystanders = asyncio.run(fuzz(args, server, token, clips))
            alive = server.alive and server.proc.pid == pid
            rss = server.status_mib("VmHWM") if alive else None
        finally:
            server.stop()
    tracebacks = [line for line in server.log if "Traceback" in line or "internal error" in line]
    failures += [f"server log: {line}" for line in tracebacks[:5]]
    if not alive:
        failures.append("the server process ended:\n" + "\n".join(list(server.log)[-20:]))
    summary = {"cases": sum(outcomes.values()), "seed": args.seed, "model": args.model, "runtime": args.runtime,
               "seconds": round(time.time() - started), "outcomes": dict(outcomes), "bystanders_exact": bystanders -
               sum(f.startswith("bystander") for f in failures), "bystanders": bystanders, "server_peak_rss_mib":
               rss and round(rss), "server_up": alive, "failures": failures[:20], "ok": not failures}  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
