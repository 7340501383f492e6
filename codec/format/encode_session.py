"""One encode session, free of I/O and of any coder: the bytes of a .codes stream from the codes of its frames.

`EncodeSession` checks everything about a stream before its header is written (the input's rate and channels,
its announced length, the packet size), writes the header, checks each block of input samples, packs codes into
packets as frames complete (`Packetizer`), and ends the stream (the last codes, the checks of the length, the
end record of a stream whose length was not known at the start). Its driver owns the I/O and the encoder:
`codec.coding.compress.encode_blocks` (files and pipes: blocks read, a `StreamingEncoder`, a file or stdout written) and
the server's encode session (`codec.server.serve`: messages received, a `batching.EncodeStream`, each write sent
as a WebSocket message) drive the same object, so both write the same bytes for the same codes.

    session = EncodeSession(model, out, sample_rate=..., channels=..., levels=..., num_samples=None)
    for block in blocks:
        session.codes(encoder.push(session.pcm(block)))   # the header goes out with the first samples
    session.check_complete()
    session.end(encoder.flush())                           # the last packet(s), the end record
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from codec import limits
from codec.errors import CodecError
from codec.format import bitstream
from codec.format.bitstream import CodesHeader, CodesWriter

if TYPE_CHECKING:  # no torch import here: codes may come from an OnnxCodec (codec.runtimes.runtime)
    import torch

    from codec.format.entropy import EntropyTables
    from codec.runtimes.runtime import RunnableCodec


@dataclass(frozen=True)
class InputNames:
    """How an encode session's errors name what its user gave: a file's facts and the CLI's flags by default."""

    sample_rate: str = "the input's sample rate"
    channels: str = "the input's channel count"
    packet_frames: str = "--packet-frames"
    pcm: str = "the input"
    fix: str = "resample or remix the input first (e.g. with sox or ffmpeg)"  # of a rate or channel count


def check_mono_network(model: RunnableCodec) -> None:
    if model.audio_channels != 1:
        raise CodecError(
            f"model {model.name} codes {model.audio_channels} channels jointly; the .codes container codes each "
            "channel with a mono network"
        )


class Packetizer:
    """Collect codes as frames complete and write them as packets of `frames_per_packet` frames."""

    def __init__(self, writer: CodesWriter, frames_per_packet: int, flush=None) -> None:
        self.writer, self.frames_per_packet, self._flush = writer, frames_per_packet, flush
        self._pending = np.zeros((0, writer.header.channels, writer.header.num_codebooks), dtype=np.int64)

    def add(self, codes: torch.Tensor | np.ndarray, final: bool = False) -> None:
        """codes [C, levels * G, F] (a CPU tensor or a numpy array); `final` writes a short last packet too."""
        if codes.shape[-1]:
            self._pending = np.concatenate([self._pending, np.asarray(codes).transpose(2, 0, 1)])
        while len(self._pending) >= self.frames_per_packet or (final and len(self._pending)):
            take = min(self.frames_per_packet, len(self._pending))
            self.writer.write_packet(self._pending[:take])
            self._pending = self._pending[take:]
            if self._flush is not None:
                self._flush()


def new_header(
    model: RunnableCodec,
    *,
    sample_rate: int,
    channels: int,
    levels: int,
    num_samples: int | None,
    crc_bits: int = 32,
    tables_id: str | None = None,
):
    """The .codes header of a stream coded by `model`; `crc_bits` 16 or 8 for lighter packet checks (live links);
    `tables_id` for an entropy-coded payload (codec.format.entropy)."""
    check_mono_network(model)
    return CodesHeader(
        model_id=model.model_id,
        sample_rate=sample_rate,
        model_sample_rate=model.sample_rate,
        channels=channels,
        hop_length=model.hop_length,
        num_groups=model.num_groups,
        levels=levels,
        bits=model.bits_per_code,
        num_samples=num_samples,
        crc_bits=crc_bits,
        tables_id=tables_id,
    )


class EncodeSession:
    """The .codes bytes of one stream, written to `stream` (a file, stdout, or a collector of messages).

    Everything is checked when the session is made, before a byte is written: the input's rate and channels
    (`codec.limits`, named as `names` says), `num_samples` (None: the length goes in an end record), and
    `packet_frames` (or `packet_bytes`, which sets it); `crc_bits` 16 or 8 makes a file with lighter packet checks
    and `tables` (`entropy.tables_for`) an entropy-coded one (codec/format/bitstream.py). `flush` (if given) is
    called after every packet and the end record (live pipes). `levels`: the checked level count (codec.rates).
    """

    def __init__(
        self,
        model: RunnableCodec,
        stream: BinaryIO,
        *,
        sample_rate: int,
        channels: int,
        levels: int,
        num_samples: int | None,
        packet_frames: int | None = None,
        packet_bytes: int = bitstream.DEFAULT_PACKET_BYTES,
        crc_bits: int = 32,
        flush=None,
        tables: EntropyTables | None = None,
        names: InputNames = InputNames(),
    ) -> None:
        sample_rate = limits.check_sample_rate(sample_rate, names.sample_rate, names.fix)
        channels = limits.check_channels(channels, names.channels, names.fix)
        self.header = new_header(
            model, sample_rate=sample_rate, channels=channels, levels=levels, num_samples=num_samples,
            crc_bits=crc_bits, tables_id=tables.tables_id if tables is not None else None,
        )  # fmt: skip
        if num_samples is not None:
            limits.check_int(num_samples, "the input's length", 0, limits.MAX_SECONDS * sample_rate, "split it")
        if packet_frames is None:
            limits.check_int(packet_bytes, "--packet-bytes", 1, limits.MAX_PACKET_BYTES)
            packet_frames = bitstream.frames_per_packet(self.header, packet_bytes)
        self.packet_frames = limits.check_int(
            packet_frames, names.packet_frames, 1, bitstream.max_packet_frames(self.header)
        )
        self.stream, self.tables, self.flush, self.names = stream, tables, flush, names
        self.num_samples, self.total = num_samples, 0  # samples per channel announced, and given so far
        self.packets: Packetizer | None = None  # made with the header, by `start`

    def start(self) -> None:
        """Write the header (once). `pcm` does it with the first samples, so that a bad input writes nothing; a
        server sends it before any audio arrives."""
        if self.packets is None:
            self.packets = Packetizer(
                CodesWriter(self.stream, self.header, self.tables), self.packet_frames, self.flush
            )

    def pcm(self, block: np.ndarray) -> np.ndarray:
        """Check a block of input samples [C, n] before it is coded (`codec.limits.check_pcm`) and count it."""
        limits.check_pcm(block, self.names.pcm)
        if block.shape[1]:
            self.start()
        self.total += block.shape[1]
        return block

    def codes(self, codes: torch.Tensor | np.ndarray) -> None:
        """Codes [C, levels * G, F] of the frames just completed; whole packets are written."""
        self.packets.add(codes)

    def check_complete(self) -> None:
        """The input is all there: some samples, and as many as the header announced."""
        if self.packets is None:
            raise CodecError("the input holds no audio samples")
        total, announced = self.total, self.num_samples
        if announced is not None and total < announced:
            raise CodecError(f"the input ended after {total} of the {announced} samples it announced; it is truncated")
        if announced is not None and total > announced:
            raise CodecError(f"the input holds {total} samples but announced {announced}; its header is damaged")

    def end(self, codes: torch.Tensor | np.ndarray | None) -> None:
        """The encoder's last codes (its flush; None when no sample came), the last short packet, then the end
        record of a stream whose length the header did not announce."""
        self.check_complete()
        if codes is not None:
            self.packets.add(codes, final=True)
        if self.num_samples is None:
            self.packets.writer.write_end(self.total)
            if self.flush is not None:
                self.flush()
