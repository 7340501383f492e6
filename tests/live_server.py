"""A `codec serve` in its own process and the clients that use it well or badly: the one home of the server tests
that need a process of their own, `tools/soak_serve.py` and `tools/fuzz_serve.py`.

`ServerProcess` starts a server on a free loopback port (the CLI, or `serve()` with bounds of the test's choosing),
reads its RSS and open file descriptors from /proc, and keeps the tail of its log. The clients:
- `good_session`: `encode_remote` of a clip; its codes must equal those of the clip's reference (`codec encode`);
- `abrupt`, `garbage`, `slow_reader`, `wrong_token`, `foreign_origin`: the misbehaving ones, each returning how
  the server answered it (an HTTP status or a close code), which the callers hold to what docs/ROBUSTNESS.md says.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVE_SCRIPT = """
import asyncio, json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
from codec.checkpoint import load_model
from codec.runtimes.runtime import with_runtime
from codec.server.serve import ServerLimits, serve
from codec.server.access import Access
model = with_runtime(load_model(sys.argv[1]), sys.argv[2], live=True)
bounds = ServerLimits(**json.loads(sys.argv[4]))
asyncio.run(serve(model, "127.0.0.1", int(sys.argv[3]), bounds=bounds, access=Access(token=sys.argv[5] or None)))
"""


def child_env() -> dict:
    """The environment for a child process that imports this checkout's package."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def codes_of(data: bytes) -> np.ndarray:
    """The codes of a .codes stream [F, C, N], whatever its packet sizes."""
    from codec.format.bitstream import CodesReader

    return np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])


class ServerProcess:
    """`codec serve` (argv after `codec`) or, with `bounds`, `serve()` with those ServerLimits fields, in a process
    of its own on a free loopback port, importing this checkout's package."""

    def __init__(self, model: str, *, runtime: str = "torch", token: str | None = None, bounds: dict | None = None,
                 cli: list[str] | None = None, start_seconds: float = 120.0) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        env = child_env()
        if bounds is not None:
            argv = ["-c", SERVE_SCRIPT, str(model), runtime, str(self.port), json.dumps(bounds), token or ""]
        else:
            argv = ["-m", "codec", "--threads", "1", "serve", "-m", str(model), "--runtime", runtime,
                    "--host", "127.0.0.1", "--port", str(self.port), *(cli or [])]  # fmt: skip
            if token is not None:
                env["CODEC_SERVE_TOKEN"] = token
        self.log: deque[str] = deque(maxlen=200)
        self.proc = subprocess.Popen([sys.executable, *argv], stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            self.log.append(line.rstrip())
            if "listening on" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise RuntimeError("the server did not start:\n" + "\n".join(self.log))

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def status_mib(self, field: str = "VmRSS") -> float:
        """A memory figure of /proc/PID/status (VmRSS now, VmHWM its peak) in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_clips(model: str, runtime: str, workdir: Path, count: int) -> list[dict]:
    """`count` speech clips (1.5 to 4 s at the model's rate, on the s16 grid) and the codes `codec encode` gives
    each, at 1 to 3 levels."""
    import soundfile as sf

    from codec.audio import resample
    from codec.checkpoint import load_model

    rate = load_model(model).sample_rate
    speech, speech_rate = sf.read(ROOT / "codec" / "assets" / "speech_en.flac", dtype="float32")
    speech = resample(speech[None] if speech.ndim == 1 else speech.T[:1], speech_rate, rate)[0]
    clips = []
    for i in range(count):
        start, seconds = int(i * 0.37 * rate) % (len(speech) // 2), 1.5 + 2.5 * i / max(1, count - 1)
        audio = np.round(speech[start : start + int(seconds * rate)] * 32767) / 32768
        wav, out = workdir / f"clip{i}.wav", workdir / f"clip{i}.codes"
        sf.write(wav, audio, rate, subtype="PCM_16")
        levels = 1 + i % 3
        done = subprocess.run([sys.executable, "-m", "codec", "--threads", "1", "encode", str(wav), str(out), "-m",
                               model, "--runtime", runtime, "-l", str(levels), "-q"], capture_output=True, text=True,
                              env=child_env())  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"codec encode failed: {done.stderr.strip()}")
        data = out.read_bytes()
        clips.append({"audio": audio[None].astype(np.float32), "rate": rate, "levels": levels, "data": data,
                      "codes": codes_of(data)})  # fmt: skip
    return clips


# --- clients --------------------------------------------------------------------------------------------------
def _auth(token: str | None) -> dict | None:
    return {"Authorization": f"Bearer {token}"} if token else None


async def good_session(url: str, audio: np.ndarray, rate: int, levels: int, token: str | None,
                       realtime: bool = True) -> bytes:  # fmt: skip
    """A well-behaved encode stream (20 ms chunks, real time unless told); the .codes bytes it got back."""
    from codec.server.serve import encode_remote

    return await encode_remote(url, audio, rate, levels=levels, token=token, realtime=realtime)


async def refused_status(url: str, headers: dict | None) -> int | None:
    """Open a connection with these request headers; the HTTP status of a refusal, or None if it was accepted."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(url, additional_headers=headers, ping_interval=None, open_timeout=30):
            return None
    except InvalidStatus as e:
        return e.response.status_code


async def wrong_token(url: str) -> int | None:
    return await refused_status(url, _auth("not-the-token"))


async def foreign_origin(url: str, token: str | None) -> int | None:
    return await refused_status(url, {**(_auth(token) or {}), "Origin": "https://evil.example"})


async def abrupt(url: str, token: str | None, rate: int, seconds: float = 0.3) -> None:
    """Start an encode stream, send some audio, then drop the TCP connection without a closing handshake."""
    from websockets.asyncio.client import connect

    ws = await connect(url, additional_headers=_auth(token), ping_interval=None, open_timeout=30)
    await ws.send(json.dumps({"type": "start", "mode": "encode", "sample_rate": rate}))
    await ws.send(np.zeros(int(seconds * rate), "<i2").tobytes())
    await asyncio.sleep(0.05)
    ws.transport.abort()


async def garbage(url: str, token: str | None, rng: np.random.Generator) -> int | None:
    """Random bytes or text where the start message belongs (or after it); the close code the server gave."""
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers=_auth(token), ping_interval=None, open_timeout=30) as ws:
        junk = rng.bytes(int(rng.integers(0, 4096)))
        if rng.random() < 0.5:
            await ws.send(json.dumps({"type": "start", "mode": "decode"}))
        await ws.send(junk if rng.random() < 0.5 else junk.decode("latin-1"))
        try:
            async for _ in ws:
                pass
        except Exception as e:  # noqa: BLE001 - an abrupt close is an answer too
            if not type(e).__name__.startswith("ConnectionClosed"):
                raise
        return ws.close_code


async def slow_reader(url: str, token: str | None, header: bytes, packets, stall_seconds: float,
                      until=None, output_rate: int = 768000) -> tuple[int, int | None, str | None]:  # fmt: skip
    """A decode client that sends `packets` (an iterable of one-packet messages after the .codes `header`) and
    reads nothing for `stall_seconds` (or until `until()` is true, checked every 0.1 s), then reads to the end.

    It asks for f32 PCM at `output_rate`, so that each packet costs the server hundreds of times its size to
    answer. Returns (bytes it managed to send, the close code it read at the end, the close reason)."""
    from websockets.asyncio.client import connect

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a small window: the server's sends block soon
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(url.rsplit(":", 1)[1])))
    ws = await connect(url, sock=sock, additional_headers=_auth(token), ping_interval=None, max_queue=1,
                       max_size=None, open_timeout=30)  # fmt: skip
    sent = 0
    try:
        await ws.send(json.dumps({"type": "start", "mode": "decode", "format": "f32le", "sample_rate": output_rate}))
        await ws.send(header)
        deadline = time.monotonic() + stall_seconds
        for piece in packets:  # send until the server stops taking them, reading nothing
            if time.monotonic() >= deadline:
                break
            try:
                await asyncio.wait_for(ws.send(piece), max(0.01, deadline - time.monotonic()))
            except (asyncio.TimeoutError, TimeoutError):
                break
            sent += len(piece)
        while time.monotonic() < deadline and not (until is not None and until()):
            await asyncio.sleep(0.1)
        async for _ in ws:  # now read: what was queued, then the close frame (if the server still waits for us)
            pass
    except Exception as e:  # noqa: BLE001 - the server may have dropped us
        if not type(e).__name__.startswith("ConnectionClosed"):
            raise
    finally:
        ws.transport.abort()
    return sent, ws.close_code, ws.close_reason
