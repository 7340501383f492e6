"""The `codec` command line end to end on a tiny random model, including every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.cli import main
from codec.format.bitstream import CodesReader
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
    assert_one_line_error(code, err, "no default model", "registry.json", "--model")
    code, out, _ = run(capsys, "demo", "--model", tiny_model_file, "--out-dir", tmp_path)
    assert code == 0 and out.count("kbps:") == 3
    assert len(list(tmp_path.glob("*.codes"))) == 3 and len(list(tmp_path.glob("*.wav"))) == 3


def test_a_shipped_model_whose_file_is_missing(capsys, tmp_path, monkeypatch):
    from codec import pretrained

    gone = pretrained.ShippedModel("gone16k", tmp_path / "gone16k.safetensors", "listed, file deleted", True)
    monkeypatch.setattr(pretrained, "shipped_models", lambda: [gone])
    for args in (["demo"], ["demo", "--model", "gone16k"]):
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, "gone16k", "is missing from this installation", "reinstall")


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


ENCODE = ("encode", "{wav}", "{out}.codes", "-m", "{model}")
STREAM_ENCODE = ("stream-encode", "-m", "{model}")
BIG = 2**40


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (("--threads", "-1", *ENCODE), None, "--threads -1 is not possible; give 1 or more"),
        (("--threads", "0", *ENCODE), None, "--threads 0 is not possible; give 1 or more"),
        ((*ENCODE, "--bitrate", "nan"), None, "bitrate nan kbps is not a number; valid kbps"),
        ((*ENCODE, "--levels", "0"), None, "--levels 0 is out of range; this model has levels 1..4"),
        ((*ENCODE, "--packet-bytes", "0"), None, "--packet-bytes 0 is out of range 1..1048576"),
        ((*ENCODE, "--packet-bytes", "-5"), None, "--packet-bytes -5 is out of range 1..1048576"),
        (("encode", "{loud_wav}", "{out}.codes", "-m", "{model}"), None, "far beyond full scale (+-1)"),
        (("encode", "", "{out}.codes", "-m", "{model}"), None, "input path is empty; pass an audio file"),
        (("encode", "{wav}", "{dir}.codes", "-m", "{model}"), None, "is a directory; give a file name"),
        (("encode", "{wav}", "/sys/x.codes", "-m", "{model}"), None, "cannot write into /sys (Permission denied)"),
        (("decode", "{codes}", "{dir}.wav", "-m", "{model}"), None, "is a directory; give a file name"),
        (("decode", "{codes}", "/sys/x.wav", "-m", "{model}"), None, "cannot write into /sys (Permission denied)"),
        (("decode", "{forged:extra_len=2**40}", "{out}.wav", "-m", "{model}"), None, f"metadata length {BIG} is out"),
        (("decode", "{forged:frames=2**40}", "{out}.wav", "-m", "{model}"), None, "damaged frame count (over 65536"),
        (
            ("decode", "{forged:num_samples=2**40}", "{out}.wav", "-m", "{model}", "--on-corrupt", "silence"),
            None,
            "damaged header: length 1099511627775 is out of range 0..4838400000",
        ),
        (
            ("decode", "{forged:sample_rate=2**31}", "{out}.wav", "-m", "{model}"),
            None,
            "damaged header: sample rate 2147483648 is out of range 1000..768000",
        ),
        (("decode", "{forged:channels=0}", "{out}.wav", "-m", "{model}"), None, "channels 0 is out of range 1..64"),
        (
            ("decode", "{forged:sample_rate=700000}", "{out}.flac", "-m", "{model}"),
            None,
            "cannot write .flac audio at 700000 Hz",
        ),
        (("info", "{forged:sample_rate=2**31}"), None, "sample rate 2147483648 is out of range"),
        ((*STREAM_ENCODE, "--rate", "-16000"), "pcm", "--rate -16000 is out of range 1000..768000"),
        ((*STREAM_ENCODE, "--rate", "0"), "pcm", "--rate 0 is out of range 1000..768000"),
        ((*STREAM_ENCODE, "--rate", "8000", "--channels", "0"), "pcm", "--channels 0 is out of range 1..64"),
        ((*STREAM_ENCODE, "--packet-frames", "0"), "wav", "--packet-frames 0 is out of range 1..65536"),
        (STREAM_ENCODE, "wav_rate_2**31", "stdin: the WAV sample rate 2147483648 is out of range"),
        ((*STREAM_ENCODE, "--format", "f32le", "--rate", "8000"), "nan_pcm", "contains NaN or infinite samples"),
        (("stream-decode", "-m", "{model}"), "forged:frames=2**40", "stdin: packet 0 (byte 27) has a damaged"),
    ],
)
def test_bad_inputs_are_one_line_errors_with_no_output(
    capsys, monkeypatch, tmp_path, tiny_model_file, wav_file, argv, stdin, message
):
    """Every bad input: exit 1, one `codec: error:` line naming the problem and the fix, no output anywhere."""
    import io
    import struct

    from codec import load_model
    from codec.coding.compress import encode_file
    from tests.fuzzing import forge_frames, forge_header

    codes = tmp_path / "good.codes"
    encode_file(load_model(tiny_model_file), wav_file, codes, levels=2)

    def forged(spec: str) -> bytes:
        name, value = spec.split("=")
        value = eval(value)  # "2**40" in the table reads better than 1099511627776
        data = codes.read_bytes()
        return forge_frames(data, 0, value) if name == "frames" else forge_header(data, **{name: value})

    def path(token: str) -> str:  # the table's placeholders -> files
        if token.startswith("{forged:"):
            forged_path = tmp_path / "forged.codes"
            forged_path.write_bytes(forged(token[len("{forged:") : -1]))
            return str(forged_path)
        loud = tmp_path / "loud.wav"
        if token == "{loud_wav}":  # integer PCM values stored as float
            sf.write(loud, tone(0.2, 8000).T * 32768, 8000, subtype="FLOAT")
        if token.startswith("{dir}"):  # an existing directory where the output file should go
            (tmp_path / token.replace("{dir}", "dir")).mkdir()
        names = {"{wav}": wav_file, "{model}": tiny_model_file, "{codes}": codes, "{loud_wav}": loud}
        if token in names:
            return str(names[token])
        return token.replace("{out}", str(tmp_path / "out")).replace("{dir}", str(tmp_path / "dir"))

    pcm = (tone(0.2, 8000) * 8000).astype("<i2").tobytes()
    wav = io.BytesIO()
    sf.write(wav, tone(0.2, 8000).T, 8000, format="WAV", subtype="PCM_16")
    inputs = {
        "pcm": pcm,
        "wav": wav.getvalue(),
        "wav_rate_2**31": wav.getvalue()[:24] + struct.pack("<I", 2**31) + wav.getvalue()[28:],
        "nan_pcm": np.full(1600, np.nan, "<f4").tobytes(),
    }
    stdout = io.BytesIO()
    if stdin is not None:
        data = forged(stdin.split(":")[1]) if stdin.startswith("forged:") else inputs[stdin]
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout))
    argv = [path(token) for token in argv]
    before = set(tmp_path.rglob("*"))
    code, _, err = run(capsys, *argv)
    assert code == 1 and err.startswith("codec: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert set(tmp_path.rglob("*")) == before and not stdout.getvalue()  # no output file, nothing half-written
    assert not Path("/sys/x.codes").exists() and not Path("/sys/x.wav").exists()


@pytest.mark.parametrize("verb", ["stream-encode", "stream-decode"])
def test_a_closed_output_pipe_ends_quietly(tmp_path, tiny_model_file, verb):
    """`codec stream-* | head -c 100`: exit 141 (as if killed by SIGPIPE), nothing on stderr."""
    src = tmp_path / "long.wav"
    sf.write(src, tone(8.0, 8000).T, 8000)
    codes = tmp_path / "long.codes"
    assert main(["encode", str(src), str(codes), "-m", str(tiny_model_file), "-q"]) == 0
    stdin = src if verb == "stream-encode" else codes  # 128 KB of PCM out: more than a pipe holds
    script = f'"{sys.executable}" -m codec {verb} -m "{tiny_model_file}" < "{stdin}" | head -c 100 > /dev/null'
    result = subprocess.run(["bash", "-c", script + '; echo "${PIPESTATUS[0]}"'], capture_output=True, text=True)
    assert result.stdout.strip() == "141" and result.stderr == "", result.stderr
