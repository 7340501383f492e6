"""What `codec info` reports about a model or a .codes file."""

from __future__ import annotations

from pathlib import Path

from codec import bitstream
from codec.errors import CodecError


def model_info(name_or_path: str) -> dict:
    from codec.checkpoint import FORMAT_VERSION, load_model

    model = load_model(name_or_path)
    q = model.quantizer
    return {
        "name": model.name,
        "file": model.source,
        "model_id": model.model_id,
        "format_version": FORMAT_VERSION,
        "sample_rate": model.sample_rate,
        "hop_length": model.hop_length,
        "frame_rate": model.frame_rate,
        "groups x levels": f"{model.num_groups} x {model.num_levels}",
        "codebook_size": model.codebook_size,
        "codebook_dim": q.codebook_dim,
        "lookup": q.lookup,
        "parameters": model.num_parameters(),
        "bitrates_kbps": [round(b / 1000, 4) for b in model.supported_bitrates()],
        "provenance": model.provenance,
    }


def codes_info(path: Path) -> dict:
    if not path.is_file():
        raise CodecError(f"input file {path} not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        reader = bitstream.CodesReader(f, str(path))
        packets = damaged = frames = coded = 0
        for packet in reader.packets():
            packets += 1
            frames += packet.frames
            coded += packet.payload_size
            damaged += packet.error is not None
    h = reader.header
    samples = reader.num_samples
    seconds = samples / h.sample_rate if samples else frames / h.frame_rate
    plain = (frames * h.bits_per_frame + 7) // 8
    payload = coded if h.entropy_coded else plain
    entropy = {}
    if h.entropy_coded:  # the payload is measured, not computed: it varies with the audio
        entropy = {
            "entropy_tables": h.tables_id,
            "payload_bytes": coded,
            "plain_payload_bytes": plain,
            "payload_saving_percent": round(100 * (1 - coded / plain), 2) if plain else None,
        }
    return {
        "header": h.to_json(),
        "file_bytes": size,
        "packets": packets,
        "damaged_packets": damaged,
        "frames": frames,
        "seconds": round(seconds, 4),
        "payload_kbps": round(h.bitrate / 1000, 4),
        **entropy,
        "bits_per_frame": round(payload * 8 / frames, 2) if frames else None,
        "measured_kbps": round(size * 8 / seconds / 1000, 4) if seconds else None,
        "overhead_bytes": size - payload,
        "overhead_percent": round(100 * (size - payload) / payload, 3) if payload else None,
    }


def describe(target: str) -> dict:
    """`codec info TARGET`: a .codes file (by its magic bytes or suffix) or a model (name or file)."""
    path = Path(target)
    if path.suffix == ".codes" or (path.is_file() and _magic(path) == bitstream.MAGIC):
        return codes_info(path)
    return model_info(target)


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(len(bitstream.MAGIC))
