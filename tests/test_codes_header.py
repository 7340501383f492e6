"""A header that checks itself (container version 4): with `--on-corrupt silence` a damaged header is an error and a
damaged packet is silence for exactly its frames; files of versions 1 to 3 still decode (tests/data holds three
written by the codec before version 4, see tests/data/README.md)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.coding.compress import decode_stream, encode_audio
from codec.errors import CodecError
from codec.format.bitstream import CodesReader, CodesWriter
from tests.conftest import tone
from tests.fuzzing import as_version
from tests.test_core_cli import assert_one_line_error, run

DATA = Path(__file__).parent / "data"
RATE = 8000  # the tiny model's: one frame is `hop_length` samples of the output


def _encoded(tiny_model) -> bytes:
    out = io.BytesIO()
    encode_audio(tiny_model, tone(1.0, RATE, seed=3), RATE, out, levels=3, packet_bytes=24)
    return out.getvalue()


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x10
    return bytes(damaged)


def test_a_damaged_header_is_an_error_even_when_concealing(tiny_model):
    data = _encoded(tiny_model)
    size = CodesReader(io.BytesIO(data)).header_size
    for at in range(5, size):  # every byte after the version (a changed version is refused by number)
        with pytest.raises(CodecError, match="damaged header|truncated inside its header"):
            decode_stream(tiny_model, io.BytesIO(_flip(data, at)), conceal=True)


@pytest.mark.parametrize("damaged_packet", [0, 2])
def test_a_damaged_packet_is_silence_for_exactly_its_frames(tiny_model, damaged_packet):
    data = _encoded(tiny_model)
    clean, _, _ = decode_stream(tiny_model, io.BytesIO(data))
    packets = list(CodesReader(io.BytesIO(data)).packets())
    assert len(packets) >= 4
    target = packets[damaged_packet]
    bad = _flip(data, target.offset + target.size // 2)
    with pytest.raises(CodecError, match=f"packet {damaged_packet} .* fails its CRC check"):
        decode_stream(tiny_model, io.BytesIO(bad))
    audio, _, report = decode_stream(tiny_model, io.BytesIO(bad), conceal=True)
    assert audio.shape == clean.shape and len(report.damaged) == 1
    hop = tiny_model.hop_length
    start = sum(p.frames for p in packets[:damaged_packet]) * hop
    end = start + target.frames * hop
    assert np.array_equal(audio[:, :start], clean[:, :start])  # before it: untouched
    assert not audio[:, start:end].any() and clean[:, start:end].any()  # its frames: silence
    assert audio[:, end:].any()  # after it: decoded again


def test_an_older_file_conceals_a_damaged_packet_but_not_an_unchecked_header(tiny_model):
    data = as_version(_encoded(tiny_model), 1, None)
    assert data[4] == 1
    clean, _, _ = decode_stream(tiny_model, io.BytesIO(data))
    assert np.array_equal(clean, decode_stream(tiny_model, io.BytesIO(_encoded(tiny_model)))[0])
    packets = list(CodesReader(io.BytesIO(data)).packets())
    later = _flip(data, packets[1].offset + 1)
    audio, _, report = decode_stream(tiny_model, io.BytesIO(later), conceal=True)
    assert audio.shape == clean.shape and len(report.damaged) == 1
    # the first packet's CRC also covers a version-1 header: damage there may be the header's
    for at in (9, packets[0].offset + 1):  # the input sample rate: still within the limits
        with pytest.raises(CodecError, match="version-1 file .* the header cannot be trusted"):
            decode_stream(tiny_model, io.BytesIO(_flip(data, at)), conceal=True)
    size = CodesReader(io.BytesIO(data)).header_size
    with pytest.raises(CodecError, match="it holds no packet.* the header cannot be trusted"):
        decode_stream(tiny_model, io.BytesIO(data[:size]), conceal=True)


def test_the_cli_refuses_a_damaged_header_in_one_line(capsys, tmp_path, tiny_model, tiny_model_file):
    bad = tmp_path / "bad.codes"
    bad.write_bytes(_flip(_encoded(tiny_model), 10))
    out = tmp_path / "out.wav"
    code, _, err = run(capsys, "decode", bad, out, "-m", tiny_model_file, "--on-corrupt", "silence")
    assert_one_line_error(code, err, "bad.codes has a damaged header (it fails its CRC check)", "undamaged copy")
    assert not out.exists()


@pytest.mark.parametrize(("name", "version", "levels"), [("v1", 1, 1), ("v2", 2, 1), ("v3", 3, 2)])
def test_files_written_before_version_4_still_decode(capsys, tmp_path, name, version, levels):
    path = DATA / f"{name}.codes"
    code, out, _ = run(capsys, "info", path, "--json")
    header = json.loads(out)["header"]
    assert code == 0 and (header["version"], header["levels"], header["model_id"]) == (version, levels, "62310a0b")
    wav = tmp_path / "out.wav"
    code, _, err = run(capsys, "decode", path, wav, "--runtime", "torch")
    if version == 3:  # coded with grvq16k's first tables (549386aa, format 1), refitted since: a one-line error
        assert_one_line_error(code, err, "was coded with entropy tables 549386aa", "fitted again since")
        _version_3_with_todays_tables_decodes()
        return
    assert code == 0, err
    info = sf.info(wav)
    assert (info.samplerate, info.channels) == (16000, 1)
    assert info.frames == header["num_samples"] == 16000
    # the same codes under a version-4 header decode to the same audio
    from codec.checkpoint import load_model
    from codec.format import entropy

    model = load_model("grvq16k")
    data = path.read_bytes()
    audio, _, _ = decode_stream(model, io.BytesIO(data))
    again = as_version(data, 4, entropy.tables_for(model) if version == 3 else None)
    assert again[4] == 4
    np.testing.assert_array_equal(decode_stream(model, io.BytesIO(again))[0], audio)


def _version_3_with_todays_tables_decodes() -> None:
    """The version-3 layout itself still reads: v1.codes's packets under a version-3 header and today's tables."""
    from codec.checkpoint import load_model
    from codec.format import entropy

    model = load_model("grvq16k")
    tables = entropy.tables_for(model)
    data = (DATA / "v1.codes").read_bytes()
    reader = CodesReader(io.BytesIO(data))
    out = io.BytesIO()
    writer = CodesWriter(out, dataclasses.replace(reader.header, version=3, tables_id=tables.tables_id), tables)
    for packet in reader.packets():
        writer.write_packet(packet.codes)
    v3 = out.getvalue()
    assert v3[4] == 3 and CodesReader(io.BytesIO(v3)).header.entropy_coded
    np.testing.assert_array_equal(decode_stream(model, io.BytesIO(v3))[0], decode_stream(model, io.BytesIO(data))[0])
