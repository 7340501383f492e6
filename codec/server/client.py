"""The Python client of `codec serve`: send audio to be encoded, or a .codes stream to be decoded, over WebSockets.

`encode_remote` and `decode_remote` are coroutines (await them in async code); `encode_remote_sync` and
`decode_remote_sync` block, for plain scripts; `encode_file_remote` and `decode_file_remote` code files (what
`codec stream-client` runs). The protocol is in codec/server/serve.py, whose public names these stay too
(`from codec.serve import encode_remote`). The client needs no model and never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import numpy as np

from codec.atomic import atomic_output
from codec.audio import fit_length, read_audio, write_audio
from codec.errors import CodecError
from codec.format.bitstream import CodesReader
from codec.format.pcmio import PcmFormat
from codec.server.access import resolve_token

AHEAD_SECONDS = 2.0  # the clients here send at most this much audio (or codes) ahead of what has come back


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
