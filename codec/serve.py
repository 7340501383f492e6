"""`codec serve`: streaming compression over WebSockets, and the matching Python client.

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

All connections share one model through a `codec.batching.FrameBatcher`: on every tick, one frame of each
stream that has a whole frame waiting is coded in one model call (torch or ONNX Runtime) on a worker thread,
while the event loop goes on receiving and sending. Each frame is coded from its stream's own state by a
one-frame call, so a stream's codes are those of the same audio coded alone frame by frame (bitwise on the ONNX
path; on torch except at near-ties of the search: codec/batching.py).

Anything malformed (bad JSON, unknown mode or format, binary before "start", a packet that fails its CRC,
codes from another model, a field outside `codec.limits`, NaN samples) gets {"type": "error", "message": "..."}
and the connection closes with code 1008; other connections are unaffected. Each connection owns its streaming
state; all share one model and its batched calls.

Access (`codec.access.Access`, checked on the HTTP upgrade request, before any model work): a browser `Origin`
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
import contextlib
import io
import json
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codec import limits
from codec.access import Access, resolve_token
from codec.atomic import atomic_output
from codec.audio import fit_length, read_audio, write_audio
from codec.batching import FrameBatcher
from codec.bitstream import CRC_BITS, CodesReader, CodesWriter, max_packet_frames
from codec.compress import Packetizer, check_compatible, new_header
from codec.errors import CodecError
from codec.pcmio import FORMATS, PcmFormat
from codec.rates import SERVER_NAMES

if TYPE_CHECKING:  # a server on cached ONNX graphs runs without torch (codec.runtime.cached_onnx_codec)
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
AHEAD_SECONDS = 2.0  # the clients here send at most this much audio (or codes) ahead of what has come back
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


async def _encode_session(model: CodecModel, batcher: FrameBatcher, conn: _Connection, start: dict) -> None:
    sample_rate = limits.check_sample_rate(start.get("sample_rate", model.sample_rate), '"sample_rate"')
    channels = limits.check_channels(start.get("channels", 1), '"channels"')
    fmt = PcmFormat(sample_rate, channels, start.get("format", "s16le"))
    bitrate = limits.check_number(start.get("bitrate"), '"bitrate"')
    levels, notice = model.levels_for(bitrate_kbps=bitrate, levels=start.get("levels"), names=SERVER_NAMES)
    crc_bits = start.get("packet_crc", 32)
    if isinstance(crc_bits, bool) or crc_bits not in CRC_BITS or not isinstance(crc_bits, int):
        raise ProtocolError(f'"packet_crc" is {crc_bits!r}; use 32, 16 or 8 (bits of each packet\'s check)')
    out = _Collector()
    header = new_header(
        model, sample_rate=sample_rate, channels=channels, levels=levels, num_samples=None, crc_bits=crc_bits
    )
    packet_frames = limits.check_int(start.get("packet_frames", 1), '"packet_frames"', 1, max_packet_frames(header))
    encoder = batcher.encoder(levels=levels, rows=channels, sample_rate=sample_rate)
    writer = CodesWriter(out, header)
    packets = Packetizer(writer, packet_frames)
    ready = {"type": "ready", "mode": "encode", "model": model.name, "model_id": model.model_id,
             "levels": levels, "bitrate_kbps": model.bitrate(levels) / 1000, "frame_rate": model.frame_rate,
             "frame_samples": model.hop_length * sample_rate / model.sample_rate, "notice": notice}  # fmt: skip
    await conn.send(json.dumps(ready))
    for chunk in out.take():
        await conn.send(chunk)
    step = max(1, STEP_SAMPLES * sample_rate // max(sample_rate, model.sample_rate) // channels)  # input samples
    rest, total = b"", 0
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
        pcm = fmt.decode(data[:whole])
        limits.check_pcm(pcm, "the PCM")
        for i in range(0, pcm.shape[1], step):  # in steps, yielding in between: no client holds up the others
            packets.add(await encoder.push(pcm[:, i : i + step]))
            for chunk in out.take():
                await conn.send(chunk)
            await conn.coded(min(step, pcm.shape[1] - i) / sample_rate)
        total += pcm.shape[1]
    if total:
        packets.add(await encoder.flush(), final=True)
    writer.write_end(total)
    for chunk in out.take():
        await conn.send(chunk)
    await conn.send(json.dumps({"type": "done", "samples": total}))


async def _decode_session(model: CodecModel, batcher: FrameBatcher, conn: _Connection, start: dict) -> None:
    await conn.send(json.dumps({"type": "ready", "mode": "decode", "model": model.name, "model_id": model.model_id}))
    first = await conn.recv()
    if isinstance(first, str):
        raise ProtocolError("expected the .codes header as the first binary message")
    reader = CodesReader(io.BytesIO(first), "stream")
    h = reader.header
    check_compatible(model, h, "the stream")
    if h.entropy_coded:  # decoded with the tables beside the server's model file (docs/ENTROPY.md)
        from codec import entropy

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


# --- client -------------------------------------------------------------------------------------------
async def encode_remote(
    url: str,
    audio: np.ndarray,
    sample_rate: int,
    *,
    bitrate: float | None = None,
    levels: int | None = None,
    chunk_seconds: float = 0.02,
    realtime: bool = False,
    packet_crc: int = 32,
    token: str | None = None,
) -> bytes:
    """Send float audio [C, T] to a `codec serve` for encoding; returns the .codes bytes it streams back.
    `packet_crc` 16 or 8 asks for lighter packet checks (a version-2 stream). `token`: the server's token (default:
    $CODEC_SERVE_TOKEN if set, else none). A coroutine: `await` it in async code, or call `encode_remote_sync` (same
    arguments) from a plain script.

    Flow control: at most AHEAD_SECONDS of audio is sent beyond the frames whose packets have come back, so a
    client faster than the server never piles audio up in the connection's buffers."""
    fmt = PcmFormat(sample_rate, audio.shape[0], "s16le")
    async with _connect(url, token) as ws:
        start = {"type": "start", "mode": "encode", "sample_rate": sample_rate, "channels": audio.shape[0],
                 "format": fmt.format, "bitrate": bitrate, "levels": levels}  # fmt: skip
        if packet_crc != 32:
            start["packet_crc"] = packet_crc
        await ws.send(json.dumps(start))
        message = await ws.recv()
        _expect(message, "ready")
        frame_samples = json.loads(message)["frame_samples"]
        received: list[bytes] = []
        progress = asyncio.Event()

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    received.append(message)
                    progress.set()
                elif _expect(message, "done"):
                    return

        receiver = asyncio.create_task(receive())
        step = max(1, int(chunk_seconds * sample_rate))
        ahead = AHEAD_SECONDS * sample_rate
        for i in range(0, audio.shape[1], step):
            # packets after the header, one frame each by default: the audio they cover has been coded
            while i - (len(received) - 1) * frame_samples > ahead and not receiver.done():
                await _progress(progress, receiver)
            if receiver.done():
                break  # the server ended the stream (an error): the receiver raises it below
            await ws.send(fmt.encode(audio[:, i : i + step]))
            if realtime:
                await asyncio.sleep(chunk_seconds)
        else:
            await ws.send(json.dumps({"type": "end"}))
        await receiver
    return b"".join(received)


async def decode_remote(
    url: str, data: bytes, *, sample_rate: int | None = None, token: str | None = None
) -> tuple[np.ndarray, int]:
    """Send a .codes file to a `codec serve` packet by packet; returns the float audio [C, T] and its rate.
    `token` as for `encode_remote`. A coroutine: `await` it in async code, or call `decode_remote_sync`."""
    reader = CodesReader(io.BytesIO(data), "input")
    h = reader.header
    packets = list(reader.packets())
    bounds = [reader.header_size] + [p.offset + p.size for p in packets] + [len(data)]
    sizes = [0] + [p.frames for p in packets] + [0]  # frames in each piece
    pairs = [(data[a:b], n) for a, b, n in zip([0, *bounds[:-1]], bounds, sizes, strict=True) if b > a]
    pieces, frames = [p for p, _ in pairs], [n for _, n in pairs]  # header, packets, end record
    fmt = PcmFormat(sample_rate or h.sample_rate, h.channels, "f32le")
    frame_out = h.hop_length * fmt.sample_rate / h.model_sample_rate  # output samples per frame
    async with _connect(url, token) as ws:
        start = {"type": "start", "mode": "decode", "format": fmt.format}
        if sample_rate:
            start["sample_rate"] = sample_rate
        await ws.send(json.dumps(start))
        _expect(await ws.recv(), "ready")
        chunks: list[np.ndarray] = []
        progress = asyncio.Event()
        done_samples = 0

        async def receive() -> None:
            nonlocal done_samples
            async for message in ws:
                if isinstance(message, bytes):
                    chunks.append(fmt.decode(message))
                    done_samples += chunks[-1].shape[1]
                    progress.set()
                elif _expect(message, "done"):
                    return

        receiver = asyncio.create_task(receive())
        sent_frames, ahead = 0, AHEAD_SECONDS * h.frame_rate
        for piece, n in zip(pieces, frames, strict=True):  # header, packets, end record
            while sent_frames - done_samples / frame_out > ahead and not receiver.done():
                await _progress(progress, receiver)
            if receiver.done():
                break
            await ws.send(piece)
            sent_frames += n
        else:
            await ws.send(json.dumps({"type": "end"}))
        await receiver
    audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((h.channels, 0), np.float32)
    if reader.num_samples is not None:
        audio = fit_length(audio, reader.num_samples)
    return audio, fmt.sample_rate


@contextlib.asynccontextmanager
async def _connect(url: str, token: str | None):
    """A client connection to `url`, sending `token` (or $CODEC_SERVE_TOKEN) as `Authorization: Bearer`; a refusal
    at the upgrade (HTTP 401, 403, 503, ...) is a CodecError with the server's reason."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    token = resolve_token(token)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    try:
        ws = await connect(url, max_size=2**24, ping_interval=None, additional_headers=headers)
    except InvalidStatus as e:
        reason = " ".join((e.response.body or b"").decode("utf-8", "replace").split())[:300]
        raise CodecError(f"{url} refused the connection (HTTP {e.response.status_code}): {reason}") from None
    except InvalidHandshake as e:
        raise CodecError(f"{url} did not answer as a WebSocket server ({e}); is `codec serve` running there?") from None
    async with ws:
        yield ws


async def _progress(progress: asyncio.Event, receiver: asyncio.Task) -> None:
    """Wait until the receiver gets something (or ends)."""
    progress.clear()
    waiter = asyncio.ensure_future(progress.wait())
    await asyncio.wait([receiver, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


def _run_remote(url: str, coroutine):
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no event loop here: run one
        pass
    else:
        coroutine.close()
        raise CodecError(
            "this is the blocking client, called inside a running event loop (a notebook, an async program); "
            "await codec.serve.encode_remote / decode_remote there instead"
        )
    try:
        return asyncio.run(coroutine)
    except OSError as e:
        raise CodecError(f"cannot reach {url} ({e}); is `codec serve` running there?") from None


def encode_remote_sync(url: str, audio: np.ndarray, sample_rate: int, **options) -> bytes:
    """`encode_remote` for a plain script: blocks until the server has sent the whole .codes stream. `options`:
    those of `encode_remote` (bitrate, levels, chunk_seconds, realtime, packet_crc, token). In async code (a running
    event loop) await `encode_remote` instead."""
    return _run_remote(url, encode_remote(url, audio, sample_rate, **options))


def decode_remote_sync(
    url: str, data: bytes, *, sample_rate: int | None = None, token: str | None = None
) -> tuple[np.ndarray, int]:
    """`decode_remote` for a plain script: float audio [C, T] and its rate. In async code await `decode_remote`."""
    return _run_remote(url, decode_remote(url, data, sample_rate=sample_rate, token=token))


def encode_file_remote(
    url: str, input_path: str | Path, output_path: str | Path, *, bitrate: float | None = None,
    levels: int | None = None, realtime: bool = False, token: str | None = None,
) -> int:  # fmt: skip
    """Encode an audio file through a `codec serve` at `url` into a .codes file; returns its size in bytes.

    The output appears whole or not at all (written to a temporary file, then renamed)."""
    audio, rate = read_audio(input_path)
    coding = encode_remote(url, audio, rate, bitrate=bitrate, levels=levels, realtime=realtime, token=token)
    data = _run_remote(url, coding)
    with atomic_output(output_path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def decode_file_remote(
    url: str, input_path: str | Path, output_path: str | Path, *, token: str | None = None
) -> tuple[int, int, int]:
    """Decode a .codes file through a `codec serve` at `url` into audio; returns (channels, samples, rate)."""
    if not Path(input_path).is_file():
        raise CodecError(f"input file {input_path} not found")
    audio, rate = _run_remote(url, decode_remote(url, Path(input_path).read_bytes(), token=token))
    write_audio(output_path, audio, rate)
    return audio.shape[0], audio.shape[1], rate


def _expect(message, kind: str) -> bool:
    if isinstance(message, bytes):
        raise CodecError(f"the server sent data where a '{kind}' message was expected")
    data = json.loads(message)
    if data.get("type") == "error":
        raise CodecError(f"the server refused the stream: {data.get('message')}")
    if data.get("type") != kind:
        raise CodecError(f"the server sent '{data.get('type')}' where '{kind}' was expected")
    return True
