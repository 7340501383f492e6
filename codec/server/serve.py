"""`codec serve`: streaming compression over WebSockets (the server; its Python client is `codec.server.client`, whose
names are importable from here too: `from codec.serve import encode_remote`).

Protocol (one WebSocket connection = one stream; JSON text messages for control, binary for data):

  client -> {"type": "start", "mode": "encode", "sample_rate": 16000, "channels": 1, "format": "s16le",
             "bitrate": 2.0 | "levels": 2, "packet_frames": 1, "packet_crc": 32 | 16 | 8}
  server -> {"type": "ready", ...model and stream facts...}, then one binary message: the .codes header
  client -> binary PCM (interleaved frames in `format`, any size)         ... repeated
  server -> binary: one .codes packet per `packet_frames` completed frames   ... as frames complete
  client -> {"type": "end"}
  server -> the last packet(s), the end record (binary), {"type": "done", "samples": N}, then closes (1000)

  client -> {"type": "start", "mode": "decode", "format": "s16le", "sample_rate": optional output rate}
  server -> {"type": "ready", ...}
  client -> binary: the .codes header, then one packet per message, then optionally the end record
  server -> binary PCM for each packet (at the header's input rate unless "sample_rate" was given)
  client -> {"type": "end"} (or the end record)
  server -> any remaining PCM, {"type": "done", "samples": N}, then closes (1000)

All connections share one model through a `codec.server.batching.FrameBatcher`: on every tick, one frame of each
stream that has a whole frame waiting is coded in one model call (torch or ONNX Runtime) on a worker thread,
while the event loop goes on receiving and sending. Each frame is coded from its stream's own state by a
one-frame call, so a stream's codes are those of the same audio coded alone frame by frame (bitwise on the ONNX
path; on torch except at near-ties of the search: codec/server/batching.py).

Anything malformed (bad JSON, unknown mode or format, binary before "start", a packet that fails its CRC,
codes from another model, a field outside `codec.limits`, NaN samples) gets {"type": "error", "message": "..."}
and the connection closes with code 1008; other connections are unaffected. Each connection owns its streaming
state; all share one model and its batched calls.

Access (`codec.server.access.Access`, checked on the HTTP upgrade request, before any model work): a browser `Origin`
that was not allowed gets HTTP 403, a missing or wrong token (when the server has one) HTTP 401.

Bounds (`ServerLimits`): a message over `max_message` bytes closes with 1009; more than `max_connections` at once
are refused with 1013; a client that sends nothing for `idle_seconds` is closed with 1008. Audio is coded
one frame per tick and connection, and sent back in steps of at most STEP_SAMPLES samples; each connection is
paced to `max_speed` x real time, so a client costs memory in proportion to what it sends, never to what a
header or start message claims.

Slow and stuck readers: a connection's session sends each reply before it reads the client's next message, and a
send waits while more than WRITE_LIMIT bytes are queued for the client. So what the server holds for a client
that does not read is at most WRITE_LIMIT plus one reply (a step of audio) plus MAX_QUEUE received messages: it
stops reading that client (TCP then stops the client's sends) instead of coding more. A send that cannot finish
within `send_seconds` closes the connection with 1008, reason "not reading"; if the client does not take the
close frame within another `send_seconds`, the connection is dropped.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from codec import limits
from codec.coding.compress import check_compatible
from codec.errors import CodecError
from codec.format.bitstream import CRC_BITS, CodesReader
from codec.format.encode_session import EncodeSession, InputNames
from codec.format.pcmio import FORMATS, PcmFormat
from codec.rates import SERVER_NAMES
from codec.server.access import Access
from codec.server.batching import FrameBatcher
from codec.server.client import (  # noqa: F401 - the client's public names, importable from here as always
    AHEAD_SECONDS,
    decode_file_remote,
    decode_remote,
    decode_remote_sync,
    encode_file_remote,
    encode_remote,
    encode_remote_sync,
)

if TYPE_CHECKING:  # a server on cached ONNX graphs runs without torch (codec.runtimes.runtime.cached_onnx_codec)
    from codec.models.codec import CodecModel

log = logging.getLogger("codec.serve")
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
MAX_MESSAGE_BYTES = limits.MAX_PACKET_BYTES + 1024  # the largest packet; larger messages are closed with 1009
MAX_CONNECTIONS = 64  # more at once are refused with 1013 (try again later)
IDLE_SECONDS = 30.0  # a connection that sends nothing for this long is closed
SEND_SECONDS = 10.0  # a reply the client has not taken within this long closes the connection ("not reading")
WRITE_LIMIT = 2**15  # bytes queued for a client above which a send waits for the client to read
MAX_QUEUE = 4  # received messages held per connection before the server stops reading from it
NOT_READING = "not reading"  # the close reason (code 1008) of a client that stopped taking replies
MAX_SPEED = 100.0  # seconds of audio one connection may have coded per second of wall time, after
BURST_SECONDS = 10.0  # of audio coded at full speed
STEP_SAMPLES = 2**16  # samples (all channels, at the larger of the two rates) coded between yields to others


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class ServerLimits:
    """The per-connection bounds of a server: memory (message size, one step's samples), time and rate."""

    max_message: int = MAX_MESSAGE_BYTES
    max_connections: int = MAX_CONNECTIONS
    idle_seconds: float = IDLE_SECONDS
    max_speed: float = MAX_SPEED
    send_seconds: float = SEND_SECONDS


def _parse_start(message) -> dict:
    if not isinstance(message, str):
        raise ProtocolError('the first message must be a JSON "start" message')
    try:
        start = json.loads(message)
    except (ValueError, RecursionError):
        raise ProtocolError("the start message is not valid JSON") from None
    if not isinstance(start, dict) or start.get("type") != "start" or start.get("mode") not in ("encode", "decode"):
        raise ProtocolError('expected {"type": "start", "mode": "encode" | "decode", ...}')
    if not isinstance(start.get("format", "s16le"), str) or start.get("format", "s16le") not in FORMATS:
        raise ProtocolError(f"unknown format {start.get('format')!r}; use one of {', '.join(FORMATS)}")
    return start


def _control(message) -> str:
    try:
        data = json.loads(message)
        return data["type"]
    except (ValueError, RecursionError, TypeError, KeyError):
        raise ProtocolError('control messages are JSON objects with a "type"') from None


class _Collector(io.RawIOBase):
    """A write-only stream that keeps each write as a separate chunk (one WebSocket message each)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> list[bytes]:
        out, self.chunks = self.chunks, []
        return out


class _Connection:
    """One client: receive with the idle timeout, send with the send timeout, pace the audio coded to `max_speed`."""

    def __init__(self, ws, bounds: ServerLimits) -> None:
        self.ws, self.bounds = ws, bounds
        self._start, self._seconds = time.monotonic(), 0.0

    async def recv(self):
        try:
            return await asyncio.wait_for(self.ws.recv(), self.bounds.idle_seconds)
        except asyncio.TimeoutError:
            seconds = self.bounds.idle_seconds
            raise ProtocolError(f"nothing received for {seconds:g} s; closing the connection") from None

    async def messages(self):
        """Messages until the client closes normally, each within the idle timeout (an abrupt close raises)."""
        from websockets.exceptions import ConnectionClosedOK

        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    async def send(self, data) -> None:
        try:
            await asyncio.wait_for(self.ws.send(data), self.bounds.send_seconds)
        except asyncio.TimeoutError:
            raise _Stalled from None

    async def coded(self, seconds: float) -> None:
        """Account for `seconds` of audio just coded; yield to the other connections, sleeping if over speed."""
        self._seconds += seconds
        ahead = (self._seconds - BURST_SECONDS) / self.bounds.max_speed - (time.monotonic() - self._start)
        await asyncio.sleep(max(ahead, 0.0))


class _Stalled(Exception):
    """The client stopped reading what we send."""


# how a client's start message names what the encode session checks (codec.format.encode_session)
CLIENT_NAMES = InputNames('"sample_rate"', '"channels"', '"packet_frames"', "the PCM", "give a value in that range")


async def _encode_session(model: CodecModel, batcher: FrameBatcher, conn: _Connection, start: dict) -> None:
    sample_rate, channels = start.get("sample_rate", model.sample_rate), start.get("channels", 1)
    bitrate = limits.check_number(start.get("bitrate"), '"bitrate"')
    levels, notice = model.levels_for(bitrate_kbps=bitrate, levels=start.get("levels"), names=SERVER_NAMES)
    crc_bits = start.get("packet_crc", 32)
    if isinstance(crc_bits, bool) or crc_bits not in CRC_BITS or not isinstance(crc_bits, int):
        raise ProtocolError(f'"packet_crc" is {crc_bits!r}; use 32, 16 or 8 (bits of each packet\'s check)')
    out = _Collector()
    session = EncodeSession(
        model, out, sample_rate=sample_rate, channels=channels, levels=levels, num_samples=None,
        packet_frames=start.get("packet_frames", 1), crc_bits=crc_bits, names=CLIENT_NAMES,
    )  # fmt: skip
    sample_rate, channels = session.header.sample_rate, session.header.channels  # checked ints
    fmt = PcmFormat(sample_rate, channels, start.get("format", "s16le"))
    encoder = batcher.encoder(levels=levels, rows=channels, sample_rate=sample_rate)
    ready = {"type": "ready", "mode": "encode", "model": model.name, "model_id": model.model_id,
             "levels": levels, "bitrate_kbps": model.bitrate(levels) / 1000, "frame_rate": model.frame_rate,
             "frame_samples": model.hop_length * sample_rate / model.sample_rate, "notice": notice}  # fmt: skip
    await conn.send(json.dumps(ready))
    session.start()  # the header goes out before any audio
    for chunk in out.take():
        await conn.send(chunk)
    step = max(1, STEP_SAMPLES * sample_rate // max(sample_rate, model.sample_rate) // channels)  # input samples
    rest = b""
    async for message in conn.messages():
        if isinstance(message, str):
            if _control(message) != "end":
                raise ProtocolError('expected binary PCM or {"type": "end"}')
            if rest:
                raise ProtocolError(f"the PCM ended in a partial frame ({len(rest)} bytes); send whole frames")
            break
        data = rest + message
        whole = len(data) - len(data) % fmt.frame_bytes
        rest = data[whole:]
        pcm = session.pcm(fmt.decode(data[:whole]))
        for i in range(0, pcm.shape[1], step):  # in steps, yielding in between: no client holds up the others
            session.codes(await encoder.push(pcm[:, i : i + step]))
            for chunk in out.take():
                await conn.send(chunk)
            await conn.coded(min(step, pcm.shape[1] - i) / sample_rate)
    session.end(await encoder.flush() if session.total else None)
    for chunk in out.take():
        await conn.send(chunk)
    await conn.send(json.dumps({"type": "done", "samples": session.total}))


async def _decode_session(model: CodecModel, batcher: FrameBatcher, conn: _Connection, start: dict) -> None:
    await conn.send(json.dumps({"type": "ready", "mode": "decode", "model": model.name, "model_id": model.model_id}))
    first = await conn.recv()
    if isinstance(first, str):
        raise ProtocolError("expected the .codes header as the first binary message")
    reader = CodesReader(io.BytesIO(first), "stream")
    h = reader.header
    check_compatible(model, h, "the stream")
    if h.entropy_coded:  # decoded with the tables beside the server's model file (docs/ENTROPY.md)
        from codec.format import entropy

        reader.tables = entropy.check_tables(entropy.tables_for(model), h, model, "the stream")
    rate = limits.check_sample_rate(start.get("sample_rate", h.sample_rate), '"sample_rate"')
    fmt = PcmFormat(rate, h.channels, start.get("format", "s16le"))
    decoder = batcher.decoder(rows=h.channels, sample_rate=fmt.sample_rate)
    frame_out = -(-h.hop_length * max(rate, model.sample_rate) // model.sample_rate)  # samples per frame, at most
    step = max(1, STEP_SAMPLES // (frame_out * h.channels))
    total = 0
    async for message in conn.messages():
        if isinstance(message, str):
            if _control(message) != "end":
                raise ProtocolError('expected a binary packet or {"type": "end"}')
            break
        reader.stream = io.BytesIO(message)
        packet = reader.read_packet()
        if packet is not None and packet.error is not None:
            raise ProtocolError(f"bad packet: {packet.error}")
        if reader.stream.read(1):
            raise ProtocolError("each binary message must hold exactly one packet")
        if packet is None:
            if reader.ended:
                break
            continue
        codes = packet.codes.transpose(1, 2, 0)
        for i in range(0, packet.frames, step):
            pcm = await decoder.push(codes[..., i : i + step])
            total += pcm.shape[1]
            await conn.send(fmt.encode(pcm))
            await conn.coded(pcm.shape[1] / rate)
    tail = decoder.flush()
    if tail.shape[1]:
        total += tail.shape[1]
        await conn.send(fmt.encode(tail))
    await conn.send(json.dumps({"type": "done", "samples": total}))


def make_handler(model: CodecModel, bounds: ServerLimits | None = None, batcher: FrameBatcher | None = None):
    """The per-connection coroutine of a server (access is checked before it, on the upgrade request)."""
    bounds = bounds or ServerLimits()
    batcher = batcher or FrameBatcher(model)
    open_connections = 0

    async def handler(ws) -> None:
        nonlocal open_connections
        peer = getattr(ws, "remote_address", None)
        if open_connections >= bounds.max_connections:
            log.info("client %s: refused, %d connections open", peer, open_connections)
            await ws.close(TRY_AGAIN_LATER, "server busy")
            return
        open_connections += 1
        conn = _Connection(ws, bounds)
        try:
            start = _parse_start(await conn.recv())
            session = _encode_session if start["mode"] == "encode" else _decode_session
            await session(model, batcher, conn, start)
            await ws.close()
        except (ProtocolError, CodecError) as e:  # bad input from the client: tell it, close, carry on
            log.info("client %s: protocol error: %s", peer, e)
            await _refuse(ws, str(e), bounds.idle_seconds)
        except _Stalled:
            log.info("client %s: took no reply for %g s; closing (%s)", peer, bounds.send_seconds, NOT_READING)
            try:  # the close frame queues behind what the client has not read: it gets it only if it reads again
                await asyncio.wait_for(ws.close(POLICY_VIOLATION, NOT_READING), bounds.send_seconds)
            except Exception:  # noqa: BLE001 - still not reading (or gone): drop it
                ws.transport.abort()
        except Exception as e:  # noqa: BLE001 - one broken connection must not take the server down
            if type(e).__name__.startswith("ConnectionClosed"):
                return
            log.exception("client %s: internal error", peer)
            await _refuse(ws, f"internal error: {e}", bounds.idle_seconds, 1011)
        finally:
            open_connections -= 1

    return handler


async def _refuse(ws, message: str, timeout: float, code: int = POLICY_VIOLATION) -> None:
    """Send an error message and close with `code`, giving up (and dropping the connection) after `timeout`."""
    try:
        await asyncio.wait_for(ws.send(json.dumps({"type": "error", "message": message})), timeout)
        await asyncio.wait_for(ws.close(code, "protocol error" if code == POLICY_VIOLATION else "internal error"),
                               timeout)  # fmt: skip
    except Exception:  # noqa: BLE001 - the client is gone or stalled: drop it
        ws.transport.abort()


def _process_request(access: Access):
    """The upgrade-request hook: refuse (HTTP 403 or 401, with the reason) before the connection is a WebSocket."""

    def check(connection, request):
        refusal = access.refusal(request.headers)
        if refusal is None:
            return None
        status, reason = refusal
        log.info("client %s: refused, HTTP %d: %s", connection.remote_address, status, reason.strip())
        response = connection.respond(status, reason)
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    return check


async def serve(
    model: CodecModel,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    bounds: ServerLimits | None = None,
    access: Access | None = None,
) -> None:
    """Serve until cancelled, each connection within `bounds` (default `ServerLimits()`), to the clients `access`
    admits (default `Access()`: any client without a browser `Origin`, no token)."""
    from websockets.asyncio.server import serve as ws_serve

    bounds, access = bounds or ServerLimits(), access or Access()
    batcher = FrameBatcher(model)
    batcher.warm_up()  # the first client does not pay for loading kernels and sessions (about a second)
    if not getattr(batcher.coder, "batched", True):
        log.warning("the ONNX graphs in %s have no batch axis (exported by an older codec): every stream is a "
                    "call of its own; delete that folder to export them again", model.onnx_dir)  # fmt: skip
    # no keepalive pings: a pong queues behind the audio a fast client has sent, and the idle timeout already
    # closes dead connections
    options = dict(max_size=bounds.max_message, max_queue=MAX_QUEUE, write_limit=WRITE_LIMIT,
                   open_timeout=bounds.idle_seconds, close_timeout=bounds.send_seconds, ping_interval=None,
                   process_request=_process_request(access))  # fmt: skip
    try:
        async with ws_serve(make_handler(model, bounds, batcher), host, port, **options) as server:
            if ready is not None:
                ready.set()
            for sock in server.sockets:
                log.warning("codec serve: model %s listening on ws://%s:%d", model.name, *sock.getsockname()[:2])
            await asyncio.Future()
    finally:
        batcher.close()
