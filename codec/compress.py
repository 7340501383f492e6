"""Audio <-> .codes: the library functions behind `codec encode` and `codec decode`.

Every input channel is coded as its own stream (batch item) by a mono network. Audio runs through
the model's streaming path chunk by chunk, so codes equal whole-file encoding and packets can be
written as they are completed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from codec import bitstream
from codec.atomic import atomic_output
from codec.audio import fit_length, read_audio, resample, resampled_length, write_audio
from codec.bitstream import CodesHeader, CodesReader, CodesWriter
from codec.errors import CodecError
from codec.models.codec import CodecModel

CHUNK_FRAMES = 500  # frames pushed through the model per call (bounded memory for long files)


def model_id(model: CodecModel) -> str:
    """The 8-hex-digit id written in .codes headers: the start of the model's weights hash."""
    if getattr(model, "weights_hash", None) is None:
        from codec.checkpoint import weights_hash

        model.weights_hash = weights_hash(model.state_dict())
    return model.weights_hash[:8]


def _check_mono_network(model: CodecModel) -> None:
    if model.audio_channels != 1:
        raise CodecError(
            f"model {model.name} codes {model.audio_channels} channels jointly; the .codes container codes each "
            "channel with a mono network"
        )


def encode_audio(
    model: CodecModel,
    audio: np.ndarray,
    sample_rate: int,
    stream: BinaryIO,
    *,
    levels: int,
    packet_bytes: int = bitstream.DEFAULT_PACKET_BYTES,
) -> CodesHeader:
    """Encode float audio [C, T] at `sample_rate` into `stream` as a .codes file; returns its header."""
    _check_mono_network(model)
    C, T = audio.shape
    if T == 0:
        raise CodecError("cannot encode empty audio")
    x = resample(audio, sample_rate, model.sample_rate)
    x = fit_length(x, resampled_length(T, sample_rate, model.sample_rate))  # as CodesHeader.expected_frames assumes
    header = CodesHeader(
        model_id=model_id(model),
        sample_rate=sample_rate,
        model_sample_rate=model.sample_rate,
        channels=C,
        hop_length=model.hop_length,
        num_groups=model.num_groups,
        levels=levels,
        bits=model.bits_per_code,
        num_samples=T,
    )
    writer = CodesWriter(stream, header)
    per_packet = bitstream.frames_per_packet(header, packet_bytes)
    device = next(model.parameters()).device
    pending: list[np.ndarray] = []  # [frames, C, N] pieces not yet written
    waiting = 0

    def emit(codes: torch.Tensor, final: bool) -> None:
        nonlocal waiting
        if codes.shape[-1]:
            pending.append(codes.permute(2, 0, 1).cpu().numpy())
            waiting += codes.shape[-1]
        while waiting >= per_packet or (final and waiting):
            frames = np.concatenate(pending, axis=0)
            take = min(per_packet, waiting)
            writer.write_packet(frames[:take])
            pending[:] = [frames[take:]]
            waiting -= take

    chunk = CHUNK_FRAMES * model.hop_length
    with model.streaming(C):
        for start in range(0, x.shape[-1], chunk):
            piece = torch.from_numpy(np.ascontiguousarray(x[:, None, start : start + chunk])).to(device)
            emit(model.encode(piece, levels), final=False)
        emit(model.flush(levels), final=True)
    return header


@dataclass
class DecodeReport:
    header: CodesHeader
    frames: int = 0
    damaged: list[str] = field(default_factory=list)  # one message per concealed packet


def check_compatible(model: CodecModel, header: CodesHeader, name: str) -> None:
    """Refuse to decode codes made by another model, with the fix in the message."""
    _check_mono_network(model)
    ours = model_id(model)
    if header.model_id != ours:
        from codec.checkpoint import shipped_model_for_id

        known = shipped_model_for_id(header.model_id)
        made_by = f"model {known} (id {header.model_id})" if known else f"a model with id {header.model_id}"
        raise CodecError(
            f"{name} was encoded by {made_by}, not by {model.name} (id {ours}); "
            "decode it with --model set to the model that encoded it"
        )
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


def decode_stream(
    model: CodecModel, stream: BinaryIO, *, name: str = "input", conceal: bool = False
) -> tuple[np.ndarray, int, DecodeReport]:
    """Decode a .codes stream to float audio [C, T] at the input's original rate and length.

    A damaged packet is an error, or with `conceal` its frames become silence (the decoder keeps running
    on the last good codes so the audio after the damage starts cleanly).
    """
    reader = CodesReader(stream, name)
    h = reader.header
    check_compatible(model, h, name)
    report = DecodeReport(h)
    device = next(model.parameters()).device
    pieces: list[np.ndarray] = []
    last = torch.zeros(h.channels, h.num_codebooks, 1, dtype=torch.long, device=device)
    with model.streaming(h.channels):
        for packet in reader.packets():
            if packet.error is not None:
                if not conceal:
                    raise CodecError(
                        f"{name}: {packet.error}; the file is damaged (pass --on-corrupt silence to decode the rest)"
                    )
                report.damaged.append(packet.error)
                if packet.frames:  # frames known: keep the decoder's state moving, output silence
                    model.decode(last.expand(-1, -1, packet.frames))
                    pieces.append(np.zeros((h.channels, packet.frames * h.hop_length), dtype=np.float32))
                    report.frames += packet.frames
                continue
            codes = torch.from_numpy(packet.codes).permute(1, 2, 0).to(device)  # [C, N, frames]
            pieces.append(model.decode(codes)[:, 0].cpu().numpy())
            last = codes[..., -1:]
            report.frames += packet.frames
    expected = dataclasses.replace(h, num_samples=reader.num_samples).expected_frames  # end record may add it
    if expected is not None and report.frames < expected:
        missing = f"{name} ends after {report.frames} of {expected} frames: the file was cut short"
        if not conceal:
            raise CodecError(f"{missing}; pass --on-corrupt silence to decode what is there")
        report.damaged.append(missing)
    audio = np.concatenate(pieces, axis=-1) if pieces else np.zeros((h.channels, 0), dtype=np.float32)
    audio = resample(audio, h.model_sample_rate, h.sample_rate)
    length = reader.num_samples
    if length is None:
        length = (report.frames * h.hop_length * h.sample_rate) // h.model_sample_rate
    return fit_length(audio, length), h.sample_rate, report


def encode_file(
    model: CodecModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    levels: int,
    packet_bytes: int = bitstream.DEFAULT_PACKET_BYTES,
) -> CodesHeader:
    audio, sample_rate = read_audio(input_path)
    with atomic_output(output_path) as tmp, open(tmp, "wb") as f:
        return encode_audio(model, audio, sample_rate, f, levels=levels, packet_bytes=packet_bytes)


def decode_file(
    model: CodecModel, input_path: str | Path, output_path: str | Path, *, conceal: bool = False
) -> DecodeReport:
    input_path = Path(input_path)
    if not input_path.is_file():
        raise CodecError(f"input file {input_path} not found")
    with open(input_path, "rb") as f:
        audio, sample_rate, report = decode_stream(model, f, name=str(input_path), conceal=conceal)
    write_audio(output_path, audio, sample_rate)
    return report


def model_for_codes(input_path: str | Path, model: str | None):
    """The model to decode a file with: the one named, else the shipped model that made it, else the default."""
    from codec import pretrained
    from codec.checkpoint import load_model, shipped_model_for_id

    if model is not None:
        return load_model(model)
    input_path = Path(input_path)
    if not input_path.is_file():
        raise CodecError(f"input file {input_path} not found")
    with open(input_path, "rb") as f:
        header = bitstream.read_header(f, str(input_path))
    known = shipped_model_for_id(header.model_id)
    if known:
        return load_model(known)
    default = pretrained.default_model()
    if default is None:
        raise CodecError(
            f"{input_path} was made by model id {header.model_id}, which does not ship with this version; "
            "pass --model PATH with the model that encoded it"
        )
    return load_model(default.name)
