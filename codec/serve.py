"""`codec serve`: streaming compression over WebSockets, and the matching Python client.

Protocol (one WebSocket connection = one stream; JSON text messages for control, binary for data):

  client -> {"type": "start", "mode": "encode", "sample_rate": 16000, "channels": 1, "format": "s16le",
             "bitrate": 2.0 | "levels": 2, "packet_frames": 1}
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

Anything malformed (bad JSON, unknown mode or format, binary before "start", a packet that fails its CRC,
codes from another model) gets {"type": "error", "message": "..."} and the connection closes with code
1008; other connections are unaffected. Each connection owns its streaming state; all share one model.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import numpy as np
import torch

from codec.audio import fit_length
from codec.bitstream import CodesReader, CodesWriter
from codec.compress import Packetizer, check_compatible, model_id, new_header
from codec.errors import CodecError
from codec.models.codec import CodecModel
from codec.pcmio import FORMATS, PcmFormat
from codec.streaming import StreamingDecoder, StreamingEncoder

log = logging.getLogger("codec.serve")
POLICY_VIOLATION = 1008


class ProtocolError(Exception):
    pass


def _parse_start(message) -> dict:
    if not isinstance(message, str):
        raise ProtocolError('the first message must be a JSON "start" message')
    try:
        start = json.loads(message)
    except json.JSONDecodeError:
        raise ProtocolError("the start message is not valid JSON") from None
    if not isinstance(start, dict) or start.get("type") != "start" or start.get("mode") not in ("encode", "decode"):
        raise ProtocolError('expected {"type": "start", "mode": "encode" | "decode", ...}')
    if start.get("format", "s16le") not in FORMATS:
        raise ProtocolError(f"unknown format {start.get('format')!r}; use one of {', '.join(FORMATS)}")
    return start


def _control(message) -> str:
    try:
        data = json.loads(message)
        return data["type"]
    except (json.JSONDecodeError, TypeError, KeyError):
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


async def _encode_session(model: CodecModel, ws, start: dict) -> None:
    try:
        sample_rate = int(start.get("sample_rate", model.sample_rate))
        channels = int(start.get("channels", 1))
        packet_frames = int(start.get("packet_frames", 1))
        if sample_rate < 1 or not 1 <= channels <= 64 or packet_frames < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ProtocolError("sample_rate, channels and packet_frames must be positive integers") from None
    fmt = PcmFormat(sample_rate, channels, start.get("format", "s16le"))
    if start.get("bitrate") is not None and start.get("levels") is not None:
        raise ProtocolError('give "bitrate" or "levels", not both')
    try:
        levels, notice = model.levels_for(bitrate_kbps=start.get("bitrate"), levels=start.get("levels"))
    except (CodecError, TypeError) as e:
        raise ProtocolError(str(e)) from None
    encoder = StreamingEncoder(model, levels=levels, batch_size=channels, sample_rate=sample_rate)
    out = _Collector()
    header = new_header(model, sample_rate=sample_rate, channels=channels, levels=levels, num_samples=None)
    writer = CodesWriter(out, header)
    packets = Packetizer(writer, packet_frames)
    ready = {"type": "ready", "mode": "encode", "model": model.name, "model_id": model_id(model),
             "levels": levels, "bitrate_kbps": model.bitrate(levels) / 1000, "frame_rate": model.frame_rate,
             "frame_samples": model.hop_length * sample_rate / model.sample_rate, "notice": notice}  # fmt: skip
    await ws.send(json.dumps(ready))
    for chunk in out.take():
        await ws.send(chunk)
    rest, total = b"", 0
    async for message in ws:
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
        total += pcm.shape[1]
        packets.add(encoder.push(pcm))
        for chunk in out.take():
            await ws.send(chunk)
    if total:
        packets.add(encoder.flush(), final=True)
    writer.write_end(total)
    for chunk in out.take():
        await ws.send(chunk)
    await ws.send(json.dumps({"type": "done", "samples": total}))


async def _decode_session(model: CodecModel, ws, start: dict) -> None:
    await ws.send(json.dumps({"type": "ready", "mode": "decode", "model": model.name, "model_id": model_id(model)}))
    first = await ws.recv()
    if isinstance(first, str):
        raise ProtocolError("expected the .codes header as the first binary message")
    try:
        reader = CodesReader(io.BytesIO(first), "stream")
    except CodecError as e:
        raise ProtocolError(str(e)) from None
    h = reader.header
    try:
        check_compatible(model, h, "the stream")
    except CodecError as e:
        raise ProtocolError(str(e)) from None
    rate = start.get("sample_rate", h.sample_rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
        raise ProtocolError("sample_rate must be a positive integer")
    fmt = PcmFormat(rate, h.channels, start.get("format", "s16le"))
    decoder = StreamingDecoder(model, batch_size=h.channels, sample_rate=fmt.sample_rate)
    total = 0
    async for message in ws:
        if isinstance(message, str):
            if _control(message) != "end":
                raise ProtocolError('expected a binary packet or {"type": "end"}')
            break
        reader.stream = io.BytesIO(message)
        try:
            packet = reader.read_packet()
        except CodecError as e:  # a damaged end record
            raise ProtocolError(str(e)) from None
        if packet is not None and packet.error is not None:
            raise ProtocolError(f"bad packet: {packet.error}")
        if reader.stream.read(1):
            raise ProtocolError("each binary message must hold exactly one packet")
        if packet is None:
            if reader.ended:
                break
            continue
        pcm = decoder.push(torch.from_numpy(packet.codes).permute(1, 2, 0))
        total += pcm.shape[1]
        await ws.send(fmt.encode(pcm))
    tail = decoder.flush()
    if tail.shape[1]:
        total += tail.shape[1]
        await ws.send(fmt.encode(tail))
    await ws.send(json.dumps({"type": "done", "samples": total}))


def make_handler(model: CodecModel):
    async def handler(ws) -> None:
        peer = getattr(ws, "remote_address", None)
        try:
            start = _parse_start(await ws.recv())
            session = _encode_session if start["mode"] == "encode" else _decode_session
            await session(model, ws, start)
            await ws.close()
        except ProtocolError as e:
            log.info("client %s: protocol error: %s", peer, e)
            await ws.send(json.dumps({"type": "error", "message": str(e)}))
            await ws.close(POLICY_VIOLATION, "protocol error")
        except Exception as e:  # noqa: BLE001 - one broken connection must not take the server down
            if type(e).__name__.startswith("ConnectionClosed"):
                return
            log.exception("client %s: internal error", peer)
            try:
                await ws.send(json.dumps({"type": "error", "message": f"internal error: {e}"}))
                await ws.close(1011, "internal error")
            except Exception:  # noqa: BLE001
                pass

    return handler


async def serve(model: CodecModel, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    from websockets.asyncio.server import serve as ws_serve

    async with ws_serve(make_handler(model), host, port, max_size=2**24) as server:
        if ready is not None:
            ready.set()
        for sock in server.sockets:
            log.warning("codec serve: model %s listening on ws://%s:%d", model.name, *sock.getsockname()[:2])
        await asyncio.Future()


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
) -> bytes:
    """Send float audio [C, T] to a `codec serve` for encoding; returns the .codes bytes it streams back."""
    from websockets.asyncio.client import connect

    fmt = PcmFormat(sample_rate, audio.shape[0], "s16le")
    async with connect(url, max_size=2**24) as ws:
        start = {"type": "start", "mode": "encode", "sample_rate": sample_rate, "channels": audio.shape[0],
                 "format": fmt.format, "bitrate": bitrate, "levels": levels}  # fmt: skip
        await ws.send(json.dumps(start))
        _expect(await ws.recv(), "ready")
        received: list[bytes] = []

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    received.append(message)
                elif _expect(message, "done"):
                    return

        receiver = asyncio.create_task(receive())
        step = max(1, int(chunk_seconds * sample_rate))
        for i in range(0, audio.shape[1], step):
            await ws.send(fmt.encode(audio[:, i : i + step]))
            if realtime:
                await asyncio.sleep(chunk_seconds)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    return b"".join(received)


async def decode_remote(url: str, data: bytes, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Send a .codes file to a `codec serve` packet by packet; returns the float audio [C, T] and its rate."""
    from websockets.asyncio.client import connect

    reader = CodesReader(io.BytesIO(data), "input")
    h = reader.header
    bounds = [reader.header_size] + [p.offset + p.size for p in reader.packets()] + [len(data)]
    pieces = [data[a:b] for a, b in zip([0, *bounds[:-1]], bounds, strict=True) if b > a]  # header, packets, end record
    fmt = PcmFormat(sample_rate or h.sample_rate, h.channels, "f32le")
    async with connect(url, max_size=2**24) as ws:
        start = {"type": "start", "mode": "decode", "format": fmt.format}
        if sample_rate:
            start["sample_rate"] = sample_rate
        await ws.send(json.dumps(start))
        _expect(await ws.recv(), "ready")
        chunks: list[np.ndarray] = []

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    chunks.append(fmt.decode(message))
                elif _expect(message, "done"):
                    return

        receiver = asyncio.create_task(receive())
        for piece in pieces:
            await ws.send(piece)
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((h.channels, 0), np.float32)
    if reader.num_samples is not None:
        audio = fit_length(audio, reader.num_samples)
    return audio, fmt.sample_rate


def _expect(message, kind: str) -> bool:
    if isinstance(message, bytes):
        raise CodecError(f"the server sent data where a '{kind}' message was expected")
    data = json.loads(message)
    if data.get("type") == "error":
        raise CodecError(f"the server refused the stream: {data.get('message')}")
    if data.get("type") != kind:
        raise CodecError(f"the server sent '{data.get('type')}' where '{kind}' was expected")
    return True
