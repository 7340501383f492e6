"""Raw PCM and streaming WAV over pipes: parse what arrives on stdin, format what leaves on stdout.

Formats: s16le, s32le (signed little-endian integers) and f32le (float), interleaved channels.
A streamed WAV header may carry 0 or 0xFFFFFFFF as its data size (length unknown): we accept both.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from codec import limits
from codec.errors import CodecError

# name -> (sample dtype, full scale)
FORMATS = {
    "s16le": (np.dtype("<i2"), 32768.0),
    "s32le": (np.dtype("<i4"), 2147483648.0),
    "f32le": (np.dtype("<f4"), 1.0),
}
UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class PcmFormat:
    sample_rate: int
    channels: int
    format: str = "s16le"

    @property
    def frame_bytes(self) -> int:
        return FORMATS[self.format][0].itemsize * self.channels

    def decode(self, data: bytes) -> np.ndarray:
        """Whole frames of interleaved bytes -> float32 [C, n]."""
        dtype, scale = FORMATS[self.format]
        samples = np.frombuffer(data, dtype=dtype).astype(np.float32)
        if scale != 1.0:
            samples /= scale
        return samples.reshape(-1, self.channels).T

    def encode(self, audio: np.ndarray) -> bytes:
        """float [C, n] -> interleaved bytes (clipped to [-1, 1] for integer formats)."""
        dtype, scale = FORMATS[self.format]
        interleaved = np.ascontiguousarray(audio.T)
        if scale != 1.0:
            interleaved = np.clip(np.round(interleaved * scale), -scale, scale - 1)
        return interleaved.astype(dtype).tobytes()


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise CodecError(f"unknown PCM format '{name}'; use one of {', '.join(FORMATS)}")
    return name


def read_wav_header(stream: BinaryIO, name: str = "stdin") -> tuple[PcmFormat, int | None]:
    """Parse a RIFF/WAVE header up to the start of the data; returns the format and frame count (None if unknown)."""
    riff = stream.read(12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise CodecError(
            f"{name} is not a WAV stream; for raw PCM pass --rate and --channels (and --format, default s16le)"
        )
    fmt: PcmFormat | None = None
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            raise CodecError(f"{name}: the WAV stream ends before its data chunk")
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"data":
            if fmt is None:
                raise CodecError(f"{name}: WAV data arrives before its fmt chunk")
            known = size not in (0, UNKNOWN_SIZE)
            return fmt, size // fmt.frame_bytes if known else None
        if chunk_id != b"fmt ":
            _skip(stream, size + (size & 1))  # in pieces: a forged chunk size never sizes a buffer
            continue
        if not 16 <= size <= 256:
            raise CodecError(f"{name}: the WAV fmt chunk is {size} bytes long; the stream is damaged")
        body = stream.read(size + (size & 1))
        if len(body) < size:
            raise CodecError(f"{name}: the WAV stream ends inside its fmt chunk")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag starts the sub-format GUID
            tag = struct.unpack("<H", body[24:26])[0]
        kinds = {(1, 16): "s16le", (1, 32): "s32le", (3, 32): "f32le"}
        if (tag, bits) not in kinds or channels < 1:
            raise CodecError(
                f"{name}: unsupported WAV encoding (format tag {tag}, {bits} bits); "
                "send 16- or 32-bit integer or 32-bit float PCM"
            )
        fix = "the stream is damaged, or resample or remix it first"
        rate = limits.check_sample_rate(rate, f"{name}: the WAV sample rate", fix)
        channels = limits.check_channels(channels, f"{name}: the WAV channel count", fix)
        fmt = PcmFormat(rate, channels, kinds[(tag, bits)])


def _skip(stream: BinaryIO, n: int) -> None:
    while n > 0 and (piece := stream.read(min(n, 2**16))):
        n -= len(piece)


def wav_header(fmt: PcmFormat, frames: int | None) -> bytes:
    """A WAV header for `frames` frames, or for a stream of unknown length (sizes 0xFFFFFFFF)."""
    dtype, _ = FORMATS[fmt.format]
    tag = 3 if fmt.format == "f32le" else 1
    data = UNKNOWN_SIZE if frames is None else frames * fmt.frame_bytes
    riff = UNKNOWN_SIZE if frames is None else 36 + data
    byte_rate = fmt.sample_rate * fmt.frame_bytes
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, tag, fmt.channels, fmt.sample_rate, byte_rate, fmt.frame_bytes,
                                dtype.itemsize * 8)
        + b"data" + struct.pack("<I", data)
    )  # fmt: skip


class FrameReader:
    """Read whole PCM frames from a pipe as they arrive (a partial frame waits for its remaining bytes)."""

    def __init__(self, stream: BinaryIO, fmt: PcmFormat, limit_frames: int | None = None) -> None:
        self.stream, self.fmt, self._rest = stream, fmt, b""
        self._left = None if limit_frames is None else limit_frames * fmt.frame_bytes

    def read(self, max_bytes: int = 65536) -> np.ndarray | None:
        """Float32 [C, n] of the next whole frames (n may be 0), or None at the end of the stream."""
        if self._left is not None:
            max_bytes = min(max_bytes, self._left)
            if max_bytes == 0:
                return None
        read1 = getattr(self.stream, "read1", self.stream.read)
        data = read1(max_bytes)
        if not data:
            return None
        if self._left is not None:
            self._left -= len(data)
        data = self._rest + data
        whole = len(data) - len(data) % self.fmt.frame_bytes
        self._rest = data[whole:]
        return self.fmt.decode(data[:whole])

    def blocks(self, max_bytes: int = 65536) -> Iterator[np.ndarray]:
        """Every block until the end of the stream."""
        while (block := self.read(max_bytes)) is not None:
            yield block
