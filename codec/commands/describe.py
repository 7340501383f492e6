"""What `codec info` reports about a model or a .codes file: a dict (`describe`, all of it with `--json`) and the
few readable lines the CLI prints from it (`info_lines`: the training config folded, paths shortened)."""

from __future__ import annotations

from pathlib import Path

from codec.errors import CodecError
from codec.format import bitstream


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
        "level_type": model.config.quantizer.level_type,
        "fsq_levels": list(model.config.quantizer.fsq_levels) if model.config.quantizer.level_type == "fsq" else None,
        "parameters": model.num_parameters(),
        "bitrates_kbps": [round(b / 1000, 4) for b in model.supported_bitrates()],
        "bitrates_are": "per channel (every channel of a file is its own stream)",
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
    from codec.modelfile import shipped_model_for_id

    return {
        "model": shipped_model_for_id(h.model_id),
        "header": h.to_json(),
        "file_bytes": size,
        "packets": packets,
        "damaged_packets": damaged,
        "frames": frames,
        "seconds": round(seconds, 4),
        "payload_kbps": round(h.bitrate / 1000, 4),
        **entropy,
        "bits_per_frame": round(payload * 8 / frames, 2) if frames else None,
        "payload_kbps_per_channel": round(h.bitrate / h.channels / 1000, 4),
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


def _short_path(value) -> str:
    """A path as `codec info` shows it: an absolute one by its last three parts (the machine that wrote it is not
    the reader's)."""
    text = str(value)
    if not text.startswith("/"):
        return text
    parts = Path(text).parts
    return text if len(parts) <= 4 else ".../" + "/".join(parts[-3:])


def _kbps(values) -> str:
    return ", ".join(f"{v:g}" for v in values) + " kbps"


def info_lines(info: dict, target: str) -> list[str]:
    """The readable `codec info` of `describe(target)`: a few lines; the training config folded (--json has it)."""
    if "header" in info:
        h = info["header"]
        model = f"{info['model']} (id {h['model_id']})" if info.get("model") else f"id {h['model_id']} (not shipped)"
        per = info["payload_kbps_per_channel"]
        total = f"{info['payload_kbps']:g} kbps" + (
            f" = {h['channels']} channels x {per:g} kbps" if h["channels"] > 1 else ""
        )
        rows = {
            "model": model,
            "audio": f"{h['channels']} channel(s) at {h['sample_rate']} Hz, {info['seconds']} s"
            + (f" ({h['num_samples']} samples)" if h["num_samples"] is not None else " (length not recorded)"),
            "payload": f"{total}: {h['levels']} levels x {h['num_groups']} groups x {h['bits']} bits per frame "
            f"and channel, {h['model_sample_rate'] / h['hop_length']:g} frames/s",
            "file": f"{info['file_bytes']} bytes, {info['measured_kbps']} kbps measured; overhead "
            f"{info['overhead_bytes']} bytes ({info['overhead_percent']} %) in {info['packets']} packets "
            f"(CRC-{h['crc_bits']}), {info['damaged_packets']} damaged",
            "container": f"version {h['version']}, "
            + (
                "the header checked by its own CRC"
                if h["version"] >= bitstream.VERSION
                else "an older version: the header checked by the first packet's CRC"
            ),
        }
    else:
        p = dict(info["provenance"])
        config = p.pop("training_config", None)
        trained = [f"{p.pop('steps')} steps" if "steps" in p else None]
        if "steps_this_run" in p:
            trained[0] = f"{trained[0]} ({p.pop('steps_this_run')} in its last run, from {p.pop('init_from', None)})"
        trained += [f"{k} {_short_path(p.pop(k))}" for k in ("recipe", "data") if p.get(k)]
        if p.get("git_commit"):
            trained.append(f"commit {str(p.pop('git_commit'))[:12]}")
        rows = {
            "model": f"{info['name']} (id {info['model_id']}), {info['file'] or 'not from a file'}",
            "audio": f"{info['sample_rate']} Hz, hop {info['hop_length']} ({info['frame_rate']:g} frames/s)",
            "quantizer": f"{info['groups x levels']} (groups x levels) of {info['codebook_size']} codes, "
            f"{info['codebook_dim']}-d, {info['lookup']} lookup"
            + (f", FSQ levels of {'x'.join(map(str, info['fsq_levels']))} steps" if info["fsq_levels"] else ""),
            "parameters": f"{info['parameters'] / 1e6:.2f} M",
            "bitrates": f"{_kbps(info['bitrates_kbps'])}, per channel",
            "trained": ", ".join(t for t in trained if t) or "no provenance recorded",
        }
        rows.update({k: _short_path(v) for k, v in p.items() if not isinstance(v, (dict, list))})
        if config is not None:
            rows["training_config"] = f"{len(config)} sections, folded (codec info {target} --json prints them)"
    return [f"{key:>16}: {value}" for key, value in rows.items()]
