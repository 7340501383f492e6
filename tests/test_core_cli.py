"""The `codec` command line end to end on a tiny random model, including every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from codec.bitstream import CodesReader
from codec.cli import main
from tests.conftest import tone


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codec: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("rate", "channels", "suffix"), [(8000, 1, ".wav"), (11025, 2, ".flac"), (22050, 1, ".ogg")])
def test_round_trip_keeps_length_rate_and_channels(capsys, tmp_path, tiny_model_file, rate, channels, suffix):
    src = tmp_path / f"in{suffix}"
    sf.write(src, tone(0.77, rate, channels).T, rate)
    n = sf.info(src).frames
    code, out, _ = run(capsys, "encode", src, tmp_path / "x.codes", "--model", tiny_model_file, "--levels", 2)
    assert code == 0 and "2 levels" in out
    code, _, _ = run(capsys, "decode", tmp_path / "x.codes", tmp_path / "out.wav", "--model", tiny_model_file)
    assert code == 0
    info = sf.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.frames) == (rate, channels, n)


def test_decoded_audio_matches_the_model_directly(capsys, tmp_path, tiny_model, tiny_model_file, wav_file):
    import torch

    run(capsys, "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file)
    run(capsys, "decode", tmp_path / "x.codes", tmp_path / "y.wav", "-m", tiny_model_file)
    audio, _ = sf.read(wav_file, dtype="float32")
    direct = tiny_model.decode(tiny_model.encode(torch.from_numpy(audio)[None, None]))[0, 0, : audio.size].numpy()
    decoded, _ = sf.read(tmp_path / "y.wav", dtype="float32")
    assert np.abs(decoded - np.clip(direct, -1, 1)).max() < 2 / 32768  # 16-bit rounding


def test_info_reports_model_and_codes(capsys, tmp_path, tiny_model_file, wav_file):
    code, out, _ = run(capsys, "info", tiny_model_file, "--json")
    model = json.loads(out)
    assert code == 0 and model["name"] == "tiny" and len(model["bitrates_kbps"]) == 4
    run(capsys, "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file, "-b", model["bitrates_kbps"][2])
    code, out, _ = run(capsys, "info", tmp_path / "x.codes", "--json")
    info = json.loads(out)
    assert info["header"]["levels"] == 3 and info["header"]["num_samples"] == sf.info(wav_file).frames
    assert info["file_bytes"] == (tmp_path / "x.codes").stat().st_size
    assert info["payload_kbps"] == pytest.approx(model["bitrates_kbps"][2])
    assert info["measured_kbps"] > info["payload_kbps"] and info["damaged_packets"] == 0


def test_bitrate_between_supported_ones_rounds_down_with_a_notice(capsys, tmp_path, tiny_model_file, wav_file):
    code, out, err = run(capsys, "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file, "-b", "12")
    assert code == 0 and "using 10.6667 kbps" in err and "2 levels" in out


def test_impossible_bitrate_lists_the_valid_ones(capsys, tmp_path, tiny_model_file, wav_file):
    code, _, err = run(capsys, "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file, "-b", "1")
    assert_one_line_error(code, err, "valid kbps: 5.33333, 10.6667, 16, 21.3333")
    assert not (tmp_path / "x.codes").exists()


def test_models_and_demo_without_a_default(capsys, tmp_path, tiny_model_file, monkeypatch):
    from codec import pretrained

    monkeypatch.setattr(pretrained, "shipped_models", lambda: [])  # a build that ships no model
    code, out, _ = run(capsys, "models")
    assert code == 0 and "no models ship" in out
    code, _, err = run(capsys, "demo")
    assert_one_line_error(code, err, "no pretrained default model ships", "--model")
    code, out, _ = run(capsys, "demo", "--model", tiny_model_file, "--out-dir", tmp_path)
    assert code == 0 and out.count("kbps:") == 3
    assert len(list(tmp_path.glob("*.codes"))) == 3 and len(list(tmp_path.glob("*.wav"))) == 3


# --- bad input -------------------------------------------------------------------------------------------
def test_missing_and_unreadable_inputs(capsys, tmp_path, tiny_model_file):
    out = tmp_path / "x.codes"
    code, _, err = run(capsys, "encode", tmp_path / "nope.wav", out, "-m", tiny_model_file)
    assert_one_line_error(code, err, "not found")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio")
    code, _, err = run(capsys, "encode", text, out, "-m", tiny_model_file)
    assert_one_line_error(code, err, "cannot read", "convert")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 8000)
    code, _, err = run(capsys, "encode", empty, out, "-m", tiny_model_file)
    assert_one_line_error(code, err, "no audio samples")
    assert not out.exists()
    code, _, err = run(capsys, "encode", text, out, "-m", tmp_path / "nomodel.safetensors")
    assert_one_line_error(code, err, "model file", "not found")


def test_unwritable_output_format(capsys, tmp_path, tiny_model_file, wav_file):
    run(capsys, "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file)
    code, _, err = run(capsys, "decode", tmp_path / "x.codes", tmp_path / "y.xyz", "-m", tiny_model_file)
    assert_one_line_error(code, err, "unsupported extension")
    assert list(tmp_path.glob("y*")) == []


@pytest.fixture
def codes_file(capsys, tmp_path, tiny_model_file):
    src = tmp_path / "long.wav"
    sf.write(src, tone(3.0, 8000).T, 8000)
    path = tmp_path / "x.codes"
    assert run(capsys, "encode", src, path, "-m", tiny_model_file, "--packet-bytes", 64)[0] == 0
    return path


def test_flipped_byte_fails_the_crc_and_can_be_concealed(capsys, tmp_path, tiny_model_file, codes_file):
    data = bytearray(codes_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.codes"
    bad.write_bytes(bytes(data))
    out = tmp_path / "y.wav"
    code, _, err = run(capsys, "decode", bad, out, "-m", tiny_model_file)
    assert_one_line_error(code, err, "fails its CRC check", "--on-corrupt silence")
    assert not out.exists()
    code, _, err = run(capsys, "decode", bad, out, "-m", tiny_model_file, "--on-corrupt", "silence")
    assert code == 0 and "replaced by silence" in err
    assert sf.info(out).frames == 3 * 8000


def test_truncated_files(capsys, tmp_path, tiny_model_file, codes_file):
    data = codes_file.read_bytes()
    info = json.loads(run(capsys, "info", codes_file, "--json")[1])
    assert info["packets"] > 3
    out = tmp_path / "y.wav"
    for cut, needle in [(len(data) - 3, "ends in the middle of packet"), (6, "truncated inside its header")]:
        bad = tmp_path / "cut.codes"
        bad.write_bytes(data[:cut])
        code, _, err = run(capsys, "decode", bad, out, "-m", tiny_model_file)
        assert_one_line_error(code, err, needle)
        assert not out.exists()
    # cut exactly at a packet boundary: the header's length shows the file is short
    with open(codes_file, "rb") as f:
        boundary = [p.offset for p in CodesReader(f).packets()][-2]
    bad.write_bytes(data[:boundary])
    code, _, err = run(capsys, "decode", bad, out, "-m", tiny_model_file)
    assert_one_line_error(code, err, "cut short")
    code, _, _ = run(capsys, "decode", bad, out, "-m", tiny_model_file, "--on-corrupt", "silence")
    assert code == 0 and sf.info(out).frames == 3 * 8000


def test_codes_from_another_model_or_version(capsys, tmp_path, tiny_model_file, codes_file):
    from codec.checkpoint import save_model
    from tests.conftest import make_tiny

    other = tmp_path / "other.safetensors"
    model = make_tiny()
    model.decoder.model[0].bias.data += 1  # different weights, same architecture
    save_model(model, other)
    code, _, err = run(capsys, "decode", codes_file, tmp_path / "y.wav", "-m", other)
    assert_one_line_error(code, err, "was encoded by a model with id", "--model")
    data = bytearray(codes_file.read_bytes())
    data[4] = 7
    bad = tmp_path / "v7.codes"
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "decode", bad, tmp_path / "y.wav", "-m", tiny_model_file)
    assert_one_line_error(code, err, "version 7", "upgrade")
    code, _, err = run(capsys, "decode", tiny_model_file, tmp_path / "y.wav", "-m", tiny_model_file)
    assert_one_line_error(code, err, "not a .codes file")


def test_debug_shows_the_traceback(tmp_path, tiny_model_file):
    with pytest.raises(Exception, match="not found"):
        main(["--debug", "encode", str(tmp_path / "nope.wav"), str(tmp_path / "x.codes"), "-m", str(tiny_model_file)])


def test_console_script_and_module_entry_points(tmp_path, tiny_model_file, wav_file):
    for cmd in (["codec"], [sys.executable, "-m", "codec"]):
        result = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True)
        for verb in ("encode", "decode", "info", "models", "demo"):
            assert verb in result.stdout
    result = subprocess.run(
        ["codec", "encode", str(wav_file), str(tmp_path / "x.codes"), "-m", str(tiny_model_file), "-b", "0.1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threads", "-1"), "--threads -1 is not possible; give 1 or more"),
        (("--threads", "0"), "--threads 0 is not possible; give 1 or more"),
        (("--bitrate", "nan"), "bitrate nan kbps is not a number; valid kbps"),
    ],
)
def test_bad_flag_values_are_one_line_errors_with_no_output(capsys, tmp_path, tiny_model_file, wav_file, args, message):
    out = tmp_path / "x.codes"
    verb_args = ("encode", wav_file, out, "--model", tiny_model_file)
    argv = (*args, *verb_args) if args[0] == "--threads" else (*verb_args, *args)
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.startswith("codec: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
