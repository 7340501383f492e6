"""Audio <-> .codes: the library functions behind `codec encode`, `codec decode` and the pipe verbs.

Every input channel is coded as its own stream by a mono network. Audio always goes through the
streaming encoder and decoder in blocks, so memory stays bounded for files of any length, packets are
written as they complete, and the codes equal whole-file encoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile as sf

from codec import limits
from codec.atomic import atomic_output
from codec.audio import WRITE_FORMATS, open_audio
from codec.coding.streaming import StreamingDecoder, StreamingEncoder
from codec.errors import CodecError
from codec.format import bitstream
from codec.format.bitstream import CodesHeader, CodesReader
from codec.format.encode_session import EncodeSession, InputNames, Packetizer, new_header  # noqa: F401 - public here
from codec.format.encode_session import check_mono_network as _check_mono_network

if TYPE_CHECKING:  # no torch import here: with an OnnxCodec (codec.runtimes.runtime) this module runs without torch
    from codec.format.entropy import EntropyTables
    from codec.models.codec import CodecModel

BLOCK_SECONDS = 2.0  # audio read, encoded or decoded per step: bounds memory for long files
DECODE_FRAMES = 256  # frames decoded per step: a packet of many frames never sizes one big output
READ_AHEAD = 32  # entropy-coded packets of a file decoded together (`CodesReader`): grvq16k's, 30 s to 4 min of audio


def encode_blocks(model: CodecModel, blocks: Iterable[np.ndarray], session: EncodeSession) -> CodesHeader:
    """Encode float blocks [C, n] through `session` (an `EncodeSession` on the output stream) and return its header.

    The I/O-free session has checked everything when it was made, before the header is written (the input's rate
    and channels, named as its `names` say, the packet size, the length or None for an end record) and writes the
    bytes; with entropy tables it codes the payload (packets keep the frame count they would have had plain, so a
    damaged packet loses as much audio as before). This function drives it with the blocks and a
    `StreamingEncoder` at the session's level count, channels and rate.
    """
    h = session.header
    encoder = StreamingEncoder(model, levels=h.levels, batch_size=h.channels, sample_rate=h.sample_rate)
    for block in blocks:
        if session.pcm(block).shape[1]:
            session.codes(encoder.push(block))
    session.check_complete()
    session.end(encoder.flush())
    return h


def encode_audio(
    model: CodecModel,
    audio: np.ndarray,
    sample_rate: int,
    stream: BinaryIO,
    *,
    levels: int,
    packet_bytes: int = bitstream.DEFAULT_PACKET_BYTES,
    tables: EntropyTables | None = None,
) -> CodesHeader:
    """Encode float audio [C, T] at `sample_rate` into `stream` as a .codes file; returns its header."""
    C, T = audio.shape
    step = int(BLOCK_SECONDS * sample_rate)
    blocks = (audio[:, i : i + step] for i in range(0, T, step))
    session = EncodeSession(
        model, stream, sample_rate=sample_rate, channels=C, levels=levels, num_samples=T, packet_bytes=packet_bytes,
        tables=tables,
    )  # fmt: skip
    return encode_blocks(model, blocks, session)


def encode_file(
    model: CodecModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    levels: int,
    packet_bytes: int = bitstream.DEFAULT_PACKET_BYTES,
    tables: EntropyTables | None = None,
) -> CodesHeader:
    """Encode an audio file block by block (memory bounded by one block whatever the file's length)."""
    with open_audio(input_path) as f:
        step = int(BLOCK_SECONDS * f.samplerate)
        blocks = (block.T for block in f.blocks(blocksize=step, dtype="float32", always_2d=True))
        num_samples = f.frames if f.frames > 0 else None
        with atomic_output(output_path) as tmp, open(tmp, "wb") as out:
            session = EncodeSession(
                model, out, sample_rate=f.samplerate, channels=f.channels, levels=levels, num_samples=num_samples,
                packet_bytes=packet_bytes, tables=tables,
            )  # fmt: skip
            return encode_blocks(model, blocks, session)


@dataclass
class DecodeReport:
    header: CodesHeader
    frames: int = 0
    samples: int = 0  # per channel, written out
    damaged: list[str] = field(default_factory=list)  # one message per concealed problem


def check_compatible(model: CodecModel, header: CodesHeader, name: str) -> None:
    """Refuse to decode codes made by another model, with the fix in the message."""
    _check_mono_network(model)
    ours = model.model_id
    if header.model_id != ours:
        from codec.modelfile import shipped_model_for_id
        from codec.pretrained import retired_model

        shipped = shipped_model_for_id(header.model_id)
        known = shipped or retired_model(header.model_id)
        made_by = f"model {known} (id {header.model_id})" if known else f"a model with id {header.model_id}"
        fix = f"--model {shipped}, or no --model" if shipped else "--model set to the model that encoded it"
        raise CodecError(f"{name} was encoded by {made_by}, not by {model.name} (id {ours}); decode it with {fix}")
    facts = {
        "sample rate": (header.model_sample_rate, model.sample_rate),
        "hop length": (header.hop_length, model.hop_length),
        "groups": (header.num_groups, model.num_groups),
        "bits per code": (header.bits, model.bits_per_code),
    }
    for what, (theirs, mine) in facts.items():
        if theirs != mine:
            raise CodecError(f"{name} has {what} {theirs} but model {model.name} has {mine}; the header is damaged")
    if header.levels > model.num_levels:
        raise CodecError(f"{name} uses {header.levels} levels but model {model.name} has {model.num_levels}")


class _Trim:
    """Emit decoded audio up to the input's length, which may only be known at the end (end record).

    With an unknown length, the last `hold` samples are held back until the end: a decoded stream is
    longer than its input by less than one frame of zero padding.
    """

    def __init__(self, length: int | None, hold: int) -> None:
        self.length, self.hold, self.emitted = length, hold, 0
        self._held: np.ndarray | None = None

    def feed(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        if self.length is not None:
            audio = audio[:, : max(self.length - self.emitted, 0)]
        else:
            if self._held is not None:
                audio = np.concatenate([self._held, audio], axis=1)
            cut = max(audio.shape[1] - self.hold, 0)
            audio, self._held = audio[:, :cut], audio[:, cut:]
        if audio.shape[1]:
            self.emitted += audio.shape[1]
            yield audio

    def finish(self, length: int | None, channels: int, max_fill: int) -> Iterator[np.ndarray]:
        """The held samples, then silence up to `length`, but at most `max_fill` samples of it, in blocks."""
        rest = self._held if self._held is not None else np.zeros((channels, 0), np.float32)
        self._held = None
        target = length if length is not None else self.length
        if target is None:
            target = self.emitted + rest.shape[1]
        rest = rest[:, : max(target - self.emitted, 0)]
        if rest.shape[1]:
            self.emitted += rest.shape[1]
            yield rest
        fill = min(max(target - self.emitted, 0), max_fill)
        while fill > 0:  # block by block: a long missing tail never sizes one array
            n = min(fill, 2**16)
            self.emitted += n
            fill -= n
            yield np.zeros((channels, n), np.float32)


def decode_blocks(
    model: CodecModel, reader: CodesReader, *, conceal: bool = False, hold_back: bool = True, tables=None
) -> Iterator[np.ndarray]:
    """Decode packets as they arrive, yielding float blocks [C, n] at the input's rate; exact total length.

    A damaged packet is an error, or with `conceal` its frames become silence (the decoder keeps running on
    the last good codes so that the audio after the damage starts cleanly). The generator's return value
    (`StopIteration.value`) is the `DecodeReport`. `hold_back=False` emits every sample at once when the
    length is not known in advance (live pipes), at the cost of up to a frame of trailing padding.
    An entropy-coded stream is decoded with `tables` (an `EntropyTables` or a path; default: beside the model file).
    """
    h = reader.header
    name = reader.name
    check_compatible(model, h, name)
    if h.entropy_coded:
        from codec.format import entropy

        found = tables if isinstance(tables, entropy.EntropyTables) else entropy.tables_for(model, tables)
        reader.tables = entropy.check_tables(found, h, model, name)
    report = DecodeReport(h)
    decoder = StreamingDecoder(model, batch_size=h.channels, sample_rate=h.sample_rate)
    hold = -(-h.hop_length * h.sample_rate // h.model_sample_rate) + 64 if hold_back else 0
    trim = _Trim(h.num_samples, hold)
    last = np.zeros((h.channels, h.num_codebooks, 1), np.int64)
    for packet in reader.packets():
        if packet.error is not None:
            if not conceal:
                raise CodecError(
                    f"{name}: {packet.error}; the file is damaged (pass --on-corrupt silence to decode the rest)"
                )
            _check_header_verified(reader, packet.error)
            report.damaged.append(packet.error)
            if packet.frames:  # frames known: keep the decoder's state moving, output silence
                for start in range(0, packet.frames, DECODE_FRAMES):
                    n = min(DECODE_FRAMES, packet.frames - start)
                    yield from trim.feed(np.zeros_like(decoder.push(np.repeat(last, n, axis=-1))))
                report.frames += packet.frames
            continue
        codes = np.ascontiguousarray(packet.codes.transpose(1, 2, 0))  # [C, N, frames]
        last = codes[..., -1:]
        report.frames += packet.frames
        for start in range(0, packet.frames, DECODE_FRAMES):
            yield from trim.feed(decoder.push(codes[..., start : start + DECODE_FRAMES]))
    yield from trim.feed(decoder.flush())
    length = reader.num_samples
    expected = dataclasses.replace(h, num_samples=length).expected_frames  # the end record may carry the length
    missing = None
    if expected is not None and report.frames < expected:
        missing = f"{name} ends after {report.frames} of {expected} frames: the file was cut short"
    elif length is None and hold_back:  # a file of unknown length must end with its end record
        missing = f"{name} ends without its end record: the stream was cut short"
    if missing is not None:
        if not conceal:
            raise CodecError(f"{missing}; pass --on-corrupt silence to decode what is there")
        _check_header_verified(reader, "it holds no packet")
        report.damaged.append(missing)
    max_fill = limits.CONCEAL_TAIL_SECONDS * h.sample_rate
    yield from trim.finish(length, h.channels, max_fill)
    if length is not None and trim.emitted < length:
        report.damaged.append(
            f"{name}: the missing tail is longer than {limits.CONCEAL_TAIL_SECONDS} s, the most silence "
            f"--on-corrupt silence fills in; the output has {trim.emitted} of {length} samples"
        )
    report.samples = trim.emitted
    return report


def _check_header_verified(reader: CodesReader, problem: str) -> None:
    """Concealment stops at the header: a file whose header has passed no CRC check is an error, never silence."""
    if not reader.header_verified:
        h = reader.header
        raise CodecError(
            f"{reader.name}: {problem}, and in a version-{h.version} file the first packet's CRC is also the "
            "header's, so the header cannot be trusted (--on-corrupt silence conceals damaged packets, not a "
            "damaged header); decode an undamaged copy of the file"
        )


def decode_stream(
    model: CodecModel, stream: BinaryIO, *, name: str = "input", conceal: bool = False, tables=None
) -> tuple[np.ndarray, int, DecodeReport]:
    """Decode a whole .codes stream into memory: float audio [C, T] at the input's rate and length."""
    reader = CodesReader(stream, name, read_ahead=READ_AHEAD)
    pieces: list[np.ndarray] = []
    report = _drain(decode_blocks(model, reader, conceal=conceal, tables=tables), pieces.append)
    audio = np.concatenate(pieces, axis=1) if pieces else np.zeros((reader.header.channels, 0), np.float32)
    return audio, reader.header.sample_rate, report


def decode_file(
    model: CodecModel, input_path: str | Path, output_path: str | Path, *, conceal: bool = False, tables=None
) -> DecodeReport:
    """Decode a .codes file to an audio file, block by block, through a temporary file."""
    input_path, output_path = Path(input_path), Path(output_path)
    fmt = WRITE_FORMATS.get(output_path.suffix.lower())
    if fmt is None:
        raise CodecError(f"cannot write {output_path}: unsupported extension; use one of {', '.join(WRITE_FORMATS)}")
    if not input_path.is_file():
        raise CodecError(f"input file {input_path} not found")
    with open(input_path, "rb") as f:
        reader = CodesReader(f, str(input_path), read_ahead=READ_AHEAD)
        h = reader.header
        with atomic_output(output_path) as tmp, _open_output(tmp, output_path, h, fmt) as out:
            blocks = decode_blocks(model, reader, conceal=conceal, tables=tables)
            return _drain(blocks, lambda b: out.write(np.clip(b, -1.0, 1.0).T))


def _open_output(tmp: Path, output_path: Path, h: CodesHeader, fmt: tuple[str, str]) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(tmp), "w", samplerate=h.sample_rate, channels=h.channels, format=fmt[0], subtype=fmt[1])
    except (sf.LibsndfileError, RuntimeError) as e:
        raise CodecError(
            f"cannot write {output_path.suffix} audio at {h.sample_rate} Hz with {h.channels} channel(s) "
            f"({str(e).split(':')[-1].strip()}); decode to a .wav file instead"
        ) from None


def _drain(blocks: Generator[np.ndarray, None, DecodeReport], consume) -> DecodeReport:
    """Feed every block of `decode_blocks` to `consume`; return the generator's report."""
    while True:
        try:
            consume(next(blocks))
        except StopIteration as stop:
            return stop.value


def model_name_for_codes(input_path: str | Path, model: str | None) -> str:
    """The model to decode a file with (a name or path, found without torch): the one named, else the shipped
    model that made it, else the default."""
    if model is not None:
        return model
    input_path = Path(input_path)
    if not input_path.is_file():
        raise CodecError(f"input file {input_path} not found")
    with open(input_path, "rb") as f:
        header = bitstream.read_header(f, str(input_path))
    return model_name_for_header(header, str(input_path))


def model_name_for_header(header: CodesHeader, name: str) -> str:
    """The shipped model whose weights made `header`'s codes, else the shipped default; `name` is the input's."""
    from codec import pretrained
    from codec.modelfile import shipped_model_for_id

    known = shipped_model_for_id(header.model_id)
    if known:
        return known
    default = pretrained.default_model()
    if default is None:
        raise CodecError(
            f"{name} was made by model id {header.model_id}, which does not ship with this version; "
            "pass --model PATH with the model that encoded it"
        )
    return default.name
