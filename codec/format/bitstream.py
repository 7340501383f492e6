"""The .codes container: a small header, then CRC-checked packets of bit-packed codes.

    file    := header packet* [end]
    header  := magic "GRVQ" (4 bytes) | version (1 byte) | model id (4 bytes)
               | sample_rate | model_sample_rate | channels | hop_length | num_groups | levels
               | bits | num_samples + 1 (0 = not known yet) | extra_len
               | version 4: crc_bits | coder (0 plain, 1 entropy coded) | [tables id (4 bytes), coder 1]
                            | extra (UTF-8 JSON) | header crc (CRC-32, 4 bytes, big-endian)
               | versions 1 to 3: [crc_bits, versions 2 and 3] | [coder (1), tables id (4 bytes), version 3]
                                  | extra (UTF-8 JSON)
    packet  := num_frames (>= 1) | [payload_len, entropy coded only] | payload
               | crc (crc_bits / 8 bytes, big-endian)
    end     := 0 | num_samples | crc

Numbers without a stated width are unsigned LEB128 varints. The model id is the first 4 bytes of
the model's weights sha256. `sample_rate`, `channels` and `num_samples` describe the input file, so
decoding returns exactly its length, rate and channel layout; `model_sample_rate` and `hop_length`
are the network's. `extra` is free JSON metadata, empty unless the writer asks for it.

A payload holds `num_frames` frames; within a frame, channel by channel, the `levels * num_groups`
codes in level-major order, each `bits` wide, most significant bit first; the payload is padded
with zero bits to a whole byte. A packet's CRC covers its own bytes (the frame count, payload length and
payload).

Version 4 (what this codec writes) ends its header with a CRC-32 of every header byte before it, checked
before any field but the metadata length is trusted and before any packet is read: a damaged header is an
error even with `--on-corrupt silence`, and a damaged packet never hides one. In versions 1 to 3 the header had
no check of its own; the first packet's CRC covered the header's bytes too, so a reader trusts such a header only
once the first packet has passed its check (`CodesReader.header_verified`).

Packets are checked with CRC-32 (zlib's) unless the header says otherwise: `crc_bits` 16 (CRC-16/CCITT-FALSE,
`binascii.crc_hqx` from 0xFFFF) or 8 (CRC-8, polynomial 0x07, from 0), for live links that send one packet per
frame: at 8 kbps a 20-byte frame pays 5 bytes for framing with CRC-32, 3 with CRC-16 and 2 with CRC-8
(docs/STREAMING.md has the table of overhead against latency). The header's own check is always CRC-32: it is
paid once per stream. Version 1 headers have no `crc_bits` and meant CRC-32, version 2 headers a lighter check.

Every number is checked against `codec.limits` before it sizes anything (the metadata, a packet's payload,
the decoder's output), and bytes are read in bounded pieces, so what a reader allocates grows only with the
bytes that really arrive: a forged length costs the forger the bytes, not the reader the memory.

Entropy-coded files (coder 1; version 3 before version 4; `codec encode --entropy`, codec/format/entropy.py,
docs/ENTROPY.md): each payload is the range-coded codes of its packet, `payload_len` bytes, under the context
model named by the tables id (the first 4 bytes of the tables' sha256; coder 1 is the only one). A packet is
coded on its own, so damage stays in it; it may hold at most 8 * payload_len + 8 frames per channel, so a forged
frame count costs its forger bytes too (a writer splits a packet that would break this, which only digital
silence comes near).

The header is binary rather than JSON so that a 10 s file at 1 kbps spends about 3% on overhead;
streamed files, whose length is unknown when the header is written, end with an `end` record.
"""

from __future__ import annotations

import binascii
import dataclasses
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from codec import limits
from codec.errors import CodecError

MAGIC = b"GRVQ"
PLAIN_VERSION = 1  # before version 4: plain payload, CRC-32 packets, the header checked by the first packet's CRC
LIGHT_CRC_VERSION = 2  # before version 4: as version 1 with crc_bits (a lighter packet check)
ENTROPY_VERSION = 3  # before version 4: entropy coded; crc_bits, coder and tables id, payload_len per packet
VERSION = 4  # what this codec writes: crc_bits and coder always, and the header's own CRC-32 at its end
VERSIONS = (PLAIN_VERSION, LIGHT_CRC_VERSION, ENTROPY_VERSION, VERSION)  # what this codec reads
PLAIN_CODER = 0  # bit-packed codes
ENTROPY_CODER = 1  # the context-mixture range coder of codec/format/entropy.py
CRC_BYTES = 4  # of the default packet check, CRC-32, and of the header's own check
CRC_BITS = (32, 16, 8)


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()


def crc(data: bytes, bits: int = 32, value: int | None = None) -> int:
    """The packet check of `data` with `bits` 32, 16 or 8; `value` continues an earlier call's result."""
    if bits == 32:
        return zlib.crc32(data, 0 if value is None else value)
    if bits == 16:
        return binascii.crc_hqx(data, 0xFFFF if value is None else value)
    out = 0 if value is None else value
    for byte in data:
        out = _CRC8[out ^ byte]
    return out


DEFAULT_PACKET_BYTES = 1024  # payload per packet when writing files: ~0.5% packet overhead


# --- bit packing -------------------------------------------------------------------------------------
def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers, each `bits` wide, MSB first, zero-padded to a whole byte."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    if values.size and int(values.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    bit_matrix = ((values[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_matrix.ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: `count` integers (int64) from `data`."""
    needed = (count * bits + 7) // 8
    if len(data) < needed:
        raise ValueError(f"need {needed} bytes for {count} values of {bits} bits, got {len(data)}")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=needed))[: count * bits]
    weights = np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return flat.reshape(count, bits).astype(np.int64) @ weights


# --- varints -------------------------------------------------------------------------------------------
def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Truncated(Exception):
    pass


READ_PIECE = 2**16  # bytes asked of the stream at a time: a forged length never sizes a buffer


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    if n <= READ_PIECE:
        data = stream.read(n)
    else:
        pieces, left = [], n
        while left and (piece := stream.read(min(left, READ_PIECE))):
            pieces.append(piece)
            left -= len(piece)
        data = b"".join(pieces)
    if len(data) < n:
        raise _Truncated
    return data


def _read_varint(stream: BinaryIO) -> tuple[int, bytes]:
    raw = bytearray()
    value = shift = 0
    while True:
        byte = _read_exact(stream, 1)[0]
        raw.append(byte)
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, bytes(raw)
        if shift > 63:
            raise ValueError("varint too long")


# --- header -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodesHeader:
    model_id: str  # 8 hex digits
    sample_rate: int  # of the input audio
    model_sample_rate: int
    channels: int
    hop_length: int
    num_groups: int
    levels: int
    bits: int
    num_samples: int | None  # of the input audio, per channel; None until known (live streams)
    extra: dict = field(default_factory=dict)
    crc_bits: int = 32  # width of each packet's check: 32, 16 or 8
    tables_id: str | None = None  # 8 hex digits: the payload is entropy coded with these tables
    version: int = VERSION  # of the container; a reader reports the file's, a writer writes VERSION

    def __post_init__(self) -> None:
        if self.crc_bits not in CRC_BITS:
            raise CodecError(f"--packet-crc {self.crc_bits} is not possible; choose one of 32, 16 or 8")
        if self.version != VERSION and self.version != _legacy_version(self.crc_bits, self.entropy_coded):
            raise ValueError(f"a version-{self.version} header cannot say this (only tests write versions 1 to 3)")

    @property
    def crc_bytes(self) -> int:
        return self.crc_bits // 8

    @property
    def num_codebooks(self) -> int:
        return self.levels * self.num_groups

    @property
    def frame_rate(self) -> float:
        return self.model_sample_rate / self.hop_length

    @property
    def bits_per_frame(self) -> int:
        return self.channels * self.num_codebooks * self.bits

    @property
    def bitrate(self) -> float:
        """Payload bits per second of audio (all channels)."""
        return self.frame_rate * self.bits_per_frame

    @property
    def expected_frames(self) -> int | None:
        """Frames a complete file holds: the input's length at the model rate, in whole frames."""
        if self.num_samples is None:
            return None
        at_model_rate = -(-self.num_samples * self.model_sample_rate // self.sample_rate)
        return -(-at_model_rate // self.hop_length)

    @property
    def entropy_coded(self) -> bool:
        return self.tables_id is not None

    def payload_bytes(self, frames: int) -> int:
        """Bytes of `frames` frames of plain (bit-packed) payload."""
        return (frames * self.bits_per_frame + 7) // 8

    def to_bytes(self) -> bytes:
        extra = json.dumps(self.extra, separators=(",", ":")).encode() if self.extra else b""
        numbers = (
            self.sample_rate,
            self.model_sample_rate,
            self.channels,
            self.hop_length,
            self.num_groups,
            self.levels,
            self.bits,
            0 if self.num_samples is None else self.num_samples + 1,
            len(extra),
        )
        head = MAGIC + bytes([self.version]) + bytes.fromhex(self.model_id) + b"".join(map(encode_varint, numbers))
        tables = bytes.fromhex(self.tables_id) if self.entropy_coded else b""
        if self.version == VERSION:
            coder = ENTROPY_CODER if self.entropy_coded else PLAIN_CODER
            head += encode_varint(self.crc_bits) + encode_varint(coder) + tables + extra
            return head + crc(head).to_bytes(CRC_BYTES, "big")
        # versions 1 to 3, kept so that tests and the fuzz harness can make the files older codecs wrote
        if self.version != PLAIN_VERSION:
            head += encode_varint(self.crc_bits)
        if self.entropy_coded:
            head += encode_varint(ENTROPY_CODER) + tables
        return head + extra

    @property
    def checks_itself(self) -> bool:
        """The header carries its own CRC (version 4); older headers are covered by the first packet's CRC."""
        return self.version >= VERSION

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _legacy_version(crc_bits: int, entropy_coded: bool) -> int:
    """The version that codecs before version 4 wrote a header of this kind as."""
    if entropy_coded:
        return ENTROPY_VERSION
    return PLAIN_VERSION if crc_bits == 32 else LIGHT_CRC_VERSION


def max_packet_frames(header: CodesHeader) -> int:
    """The most frames one packet of this stream may hold (readers refuse more: `codec.limits`)."""
    return max(1, min(limits.MAX_PACKET_FRAMES, limits.MAX_PACKET_BYTES * 8 // header.bits_per_frame))


def frames_per_packet(header: CodesHeader, target_bytes: int = DEFAULT_PACKET_BYTES) -> int:
    """Frames that fill about `target_bytes` of payload (at least one, at most `max_packet_frames`)."""
    return min(max(1, (target_bytes * 8) // header.bits_per_frame), max_packet_frames(header))


def container_overhead(header: CodesHeader, frames: int, packet_frames: int) -> int:
    """Bytes a file of `frames` frames spends beyond its payload."""
    full, rest = divmod(frames, packet_frames)
    sizes = [packet_frames] * full + ([rest] if rest else [])
    payload = sum(header.payload_bytes(n) for n in sizes)
    packets = sum(len(encode_varint(n)) + header.crc_bytes for n in sizes)
    return len(header.to_bytes()) + packets + (payload - (frames * header.bits_per_frame + 7) // 8)


# --- writing --------------------------------------------------------------------------------------------
class CodesWriter:
    """Write a .codes stream: the header at once, then one packet per `write_packet` call.

    A stream whose header left the length unknown (`num_samples` None) must end with `write_end(num_samples)`,
    which the caller calls; the writer buffers nothing and never closes `stream`, which stays the caller's.
    """

    def __init__(self, stream: BinaryIO, header: CodesHeader, tables=None) -> None:
        if header.entropy_coded and (tables is None or tables.tables_id != header.tables_id):
            raise ValueError("an entropy-coded stream needs the tables its header names")
        self.stream, self.header, self.tables = stream, header, tables
        head = header.to_bytes()
        self._pending_header: bytes | None = None if header.checks_itself else head  # for the first packet's CRC
        self.frames_written = 0
        self.stream.write(head)

    def write_packet(self, codes: np.ndarray) -> int:
        """codes [frames, channels, levels * G] -> one packet; returns bytes written."""
        h = self.header
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[1:] != (h.channels, h.num_codebooks) or codes.shape[0] < 1:
            raise ValueError(f"packet codes must be [frames >= 1, {h.channels}, {h.num_codebooks}], got {codes.shape}")
        if codes.shape[0] > max_packet_frames(h):
            raise ValueError(f"a packet holds at most {max_packet_frames(h)} frames of this stream")
        if h.entropy_coded:
            return self._write_entropy_packet(codes)
        return self._write_body(codes.shape[0], encode_varint(codes.shape[0]) + pack_bits(codes, h.bits))

    def _write_entropy_packet(self, codes: np.ndarray) -> int:
        from codec.format.entropy import encode_packet

        h = self.header
        payload = encode_packet(self.tables, codes, h.levels)
        frames = codes.shape[0]
        if not entropy_frames_ok(frames, h.channels, len(payload)) or len(payload) > limits.MAX_PACKET_BYTES:
            half = frames // 2  # a packet below a bit per frame (digital silence): two smaller ones
            return self._write_entropy_packet(codes[:half]) + self._write_entropy_packet(codes[half:])
        return self._write_body(frames, encode_varint(frames) + encode_varint(len(payload)) + payload)

    def _write_body(self, frames: int, body: bytes) -> int:
        h = self.header
        check = crc(body, h.crc_bits, crc(self._pending_header, h.crc_bits) if self._pending_header else None)
        self._pending_header = None
        data = body + check.to_bytes(h.crc_bytes, "big")
        self.stream.write(data)
        self.frames_written += frames
        return len(data)

    def write_end(self, num_samples: int) -> None:
        body = encode_varint(0) + encode_varint(num_samples)
        self.stream.write(body + crc(body, self.header.crc_bits).to_bytes(self.header.crc_bytes, "big"))


# --- reading --------------------------------------------------------------------------------------------
@dataclass
class Packet:
    index: int
    offset: int  # byte offset of the packet in the file
    frames: int
    codes: np.ndarray | None  # [frames, channels, levels * G]; None when damaged
    error: str | None = None  # why the packet is unusable
    size: int = 0  # bytes the packet takes in the stream
    payload_size: int = 0  # bytes of its payload


def entropy_frames_ok(frames: int, channels: int, payload_len: int) -> bool:
    """An entropy-coded packet holds at most 8 * payload_len + 8 frames per channel (codes cost a forger bytes)."""
    return 1 <= frames and frames * channels <= 8 * payload_len + 8


class CodesReader:
    """Parse a .codes stream: the header on construction, then `packets()`.

    Header problems raise `CodecError`. Damaged packets are yielded with `codes=None` and `error` set,
    so the caller decides whether to stop or conceal; a truncated or unparseable tail ends the iteration
    with one such packet. After iteration, `num_samples` holds the length from the header or end record.
    `header_verified` says whether the header has passed a CRC check: at once in version 4, with the first
    packet's CRC in versions 1 to 3 (a caller that conceals damage must not conceal a damaged first packet there).

    Entropy-coded packets are decoded with `tables` (codec.format.entropy.EntropyTables, set before reading
    packets); without them their packets come with `codes=None` and no error (for `codec info`). With `read_ahead`
    > 1, `packets()` reads up to that many packets before it yields the first of them and decodes their
    entropy-coded payloads together (`entropy.decode_packets`: up to 3x faster per packet on long files): for files
    and whole streams, not for live ones, whose packets should come out as they come in.
    """

    def __init__(self, stream: BinaryIO, name: str = "input", tables=None, read_ahead: int = 1) -> None:
        self.stream, self.name, self.tables, self.read_ahead = stream, name, tables, read_ahead
        self._raw_header = b""
        self.header = self._read_header()
        # a version-4 header has passed its own CRC; an older one is trusted once the first packet passes its CRC
        self.header_verified = self.header.checks_itself
        self.num_samples = self.header.num_samples
        self.ended = False  # an end record was read
        self._index, self._offset = 0, len(self._raw_header)

    def _read_header(self) -> CodesHeader:
        recorder = _Recorder(self.stream)
        damaged = f"{self.name} has a damaged header"
        try:
            magic = _read_exact(recorder, 4)
            if magic != MAGIC:
                raise CodecError(f"{self.name} is not a .codes file (it does not start with {MAGIC!r})")
            version = _read_exact(recorder, 1)[0]
            if version not in VERSIONS:
                raise CodecError(
                    f"{self.name} is .codes version {version}; this codec reads versions "
                    f"{', '.join(map(str, VERSIONS))}: "
                    + ("upgrade the codec package" if version > max(VERSIONS) else "re-encode it with this codec")
                )
            model_id = _read_exact(recorder, 4).hex()
            numbers = [_read_varint(recorder)[0] for _ in range(9)]
            fix = "the file is damaged or was not written by this codec"
            limits.check_int(numbers[8], f"{damaged}: metadata length", 0, limits.MAX_EXTRA_BYTES, fix)  # sizes a read
            crc_bits, coder = 32, PLAIN_CODER
            if version != PLAIN_VERSION:
                crc_bits = _read_varint(recorder)[0]
            if version == VERSION:
                coder = _read_varint(recorder)[0]
            elif version == ENTROPY_VERSION:
                coder = _read_varint(recorder)[0]
                self._check_coder(coder)  # before reading what only coder 1 writes
            tables_id = _read_exact(recorder, 4).hex() if coder != PLAIN_CODER else None
            extra_raw = _read_exact(recorder, numbers[8])
            if version == VERSION:
                check = int.from_bytes(_read_exact(recorder, CRC_BYTES), "big")
                if crc(recorder.data[:-CRC_BYTES]) != check:
                    raise CodecError(
                        f"{damaged} (it fails its CRC check), so nothing in it can be trusted; "
                        "decode an undamaged copy of the file"
                    )
        except _Truncated:
            if not recorder.data:
                raise CodecError(f"{self.name} is empty; it is not a .codes file") from None
            raise CodecError(f"{self.name} is truncated inside its header; the file is damaged") from None
        except ValueError:
            raise CodecError(damaged) from None
        self._check_numbers(numbers)
        allowed = {PLAIN_VERSION: (32,), LIGHT_CRC_VERSION: (16, 8)}.get(version, CRC_BITS)
        if crc_bits not in allowed:
            raise CodecError(
                f"{damaged}: packet check of {crc_bits} bits (version {version} files "
                f"use {' or '.join(map(str, allowed))}); the file is damaged or was not written by this codec"
            )
        self._check_coder(coder)
        try:
            extra = json.loads(extra_raw) if extra_raw else {}
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep to parse
            extra = None
        if not isinstance(extra, dict):
            raise CodecError(f"{damaged} (its metadata is not a JSON object)")
        sample_rate, model_sr, channels, hop, groups, levels, bits, samples, _ = numbers
        self._raw_header = recorder.data
        return CodesHeader(
            model_id,
            sample_rate,
            model_sr,
            channels,
            hop,
            groups,
            levels,
            bits,
            samples - 1 if samples else None,
            extra,
            crc_bits,
            tables_id,
            version,
        )

    def _check_coder(self, coder: int) -> None:
        if coder not in (PLAIN_CODER, ENTROPY_CODER):
            raise CodecError(
                f"{self.name} is coded with coder {coder}, which this codec does not know; upgrade the codec package"
            )

    def _check_numbers(self, numbers: list[int]) -> None:
        """Every header number within `codec.limits`, before any of them sizes anything (the metadata length, the one
        that sizes a read of the header itself, is checked as soon as it is read)."""
        sample_rate, model_sr, channels, hop, groups, levels, bits, samples, _ = numbers
        fix = "the file is damaged or was not written by this codec"
        where = f"{self.name} has a damaged header:"
        limits.check_sample_rate(sample_rate, f"{where} sample rate", fix)
        limits.check_sample_rate(model_sr, f"{where} model sample rate", fix)
        limits.check_channels(channels, f"{where} channels", fix)
        limits.check_int(hop, f"{where} hop length", 1, limits.MAX_HOP_LENGTH, fix)
        limits.check_int(groups, f"{where} groups", 1, limits.MAX_GROUPS, fix)
        limits.check_int(levels, f"{where} levels", 1, limits.MAX_LEVELS, fix)
        limits.check_int(bits, f"{where} bits per code", 1, limits.MAX_BITS, fix)
        limits.check_int(max(samples - 1, 0), f"{where} length", 0, limits.MAX_SECONDS * sample_rate, fix)

    @property
    def header_size(self) -> int:
        """Bytes the header takes at the start of the stream."""
        return len(self._raw_header)

    def packets(self) -> Iterator[Packet]:
        """Every packet until the end of the stream (or the end record), `read_ahead` at a time."""
        ahead: list[tuple[Packet, bytes | None]] = []
        while True:
            try:
                got = self._read()
            except CodecError:  # a damaged end record: the packets before it first
                yield from self._decoded(ahead)
                raise
            if got is not None:
                ahead.append(got)
            last = got is None or (got[0].error is not None and got[0].frames == 0)  # the rest cannot be framed
            if last or len(ahead) >= self.read_ahead:
                yield from self._decoded(ahead)
                ahead = []
            if last:
                return

    def read_packet(self) -> Packet | None:
        """The next packet from `self.stream`, or None at the end of the stream or after the end record.

        The reader keeps its place (packet index and byte offset), so `stream` may be swapped for the next
        piece of a file as it arrives (one packet per WebSocket message, say).
        """
        got = self._read()
        return None if got is None else self._decoded([got])[0]

    def _decoded(self, read: list[tuple[Packet, bytes | None]]) -> list[Packet]:
        """The packets `_read` returned, their entropy-coded payloads (those not None) decoded together."""
        waiting = [i for i, (_, payload) in enumerate(read) if payload is not None]
        packets = [packet for packet, _ in read]
        if waiting:
            from codec.format.entropy import decode_packets

            h = self.header
            payloads, frames = [read[i][1] for i in waiting], [packets[i].frames for i in waiting]
            for i, codes in zip(
                waiting, decode_packets(self.tables, payloads, frames, h.channels, h.levels), strict=True
            ):
                p = packets[i]
                if isinstance(codes, ValueError):
                    packets[i] = dataclasses.replace(p, error=f"packet {p.index} (byte {p.offset}): {codes}")
                else:
                    packets[i] = dataclasses.replace(p, codes=codes)
        return packets

    def _read(self) -> tuple[Packet, bytes | None] | None:
        """`read_packet` but for the payload of an entropy-coded packet that passed its CRC: that packet comes with
        `codes=None` and its payload, to be decoded (`_decoded`); every other packet with None."""
        h = self.header
        index, offset = self._index, self._offset
        recorder = _Recorder(self.stream)
        try:
            first = recorder.read(1)
            if not first:
                return None
            recorder.push_back(first)
            frames, _ = _read_varint(recorder)
            if frames == 0:
                self._read_end(recorder, offset)
                return None
            if frames > limits.MAX_PACKET_FRAMES or h.payload_bytes(frames) > limits.MAX_PACKET_BYTES:
                raise ValueError
            if h.entropy_coded:
                payload_len, _ = _read_varint(recorder)
                if payload_len > limits.MAX_PACKET_BYTES or not entropy_frames_ok(frames, h.channels, payload_len):
                    raise ValueError
            else:
                payload_len = h.payload_bytes(frames)
            payload = _read_exact(recorder, payload_len)
            check = int.from_bytes(_read_exact(recorder, h.crc_bytes), "big")
        except _Truncated:
            return Packet(index, offset, 0, None, f"file ends in the middle of packet {index} (byte {offset})"), None
        except ValueError:
            return Packet(
                index, offset, 0, None,
                f"packet {index} (byte {offset}) has a damaged frame count (over {limits.MAX_PACKET_FRAMES} frames "
                f"or {limits.MAX_PACKET_BYTES} bytes)",
            ), None  # fmt: skip
        size = len(recorder.data)
        self._index, self._offset = index + 1, offset + size
        body = recorder.data[: -h.crc_bytes]
        covers_header = index == 0 and not h.checks_itself
        if crc(body, h.crc_bits, crc(self._raw_header, h.crc_bits) if covers_header else None) != check:
            return Packet(
                index, offset, frames, None, f"packet {index} (byte {offset}) fails its CRC check", size
            ), None
        self.header_verified |= covers_header
        if h.entropy_coded:
            return Packet(index, offset, frames, None, None, size, payload_len), (
                payload if self.tables is not None else None
            )
        codes = unpack_bits(payload, h.bits, frames * h.channels * h.num_codebooks)
        return Packet(
            index, offset, frames, codes.reshape(frames, h.channels, h.num_codebooks), None, size, payload_len
        ), None

    def _read_end(self, recorder: _Recorder, offset: int) -> None:
        try:
            samples, _ = _read_varint(recorder)
            check = int.from_bytes(_read_exact(recorder, self.header.crc_bytes), "big")
        except (_Truncated, ValueError):
            raise CodecError(
                f"{self.name}: the end record at byte {offset} is truncated; the file is damaged"
            ) from None
        if crc(recorder.data[: -self.header.crc_bytes], self.header.crc_bits) != check:
            raise CodecError(f"{self.name}: the end record at byte {offset} fails its CRC check; the file is damaged")
        if self.stream.read(1):
            raise CodecError(f"{self.name} has data after its end record at byte {offset}; the file is damaged")
        limits.check_int(
            samples, f"{self.name}: the end record's length", 0, limits.MAX_SECONDS * self.header.sample_rate,
            "the file is damaged or was not written by this codec",
        )  # fmt: skip
        self.num_samples = samples
        self.ended = True


class _Recorder:
    """A read-through wrapper that remembers the bytes read (to checksum them)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.data, self._back = stream, b"", b""

    def push_back(self, data: bytes) -> None:
        self._back = data + self._back
        self.data = self.data[: len(self.data) - len(data)]

    def read(self, n: int) -> bytes:
        out = self._back[:n]
        self._back = self._back[n:]
        if len(out) < n:
            out += self.stream.read(n - len(out))
        self.data += out
        return out


def read_header(data: bytes | BinaryIO, name: str = "input") -> CodesHeader:
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    return CodesReader(stream, name).header
