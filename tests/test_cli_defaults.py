"""What a new user meets first: the threads a verb codes with, the line that says what ran, `codec info` that a
person can read, output names checked before any work, the bitrate documented per channel, and a blocking client
beside the async one."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import start_server, tone

from codec.cli import build_parser, main
from codec.errors import CodecError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verbs_code_on_one_thread_unless_told_and_train_keeps_torchs_choice():
    from codec.runtimes import threads

    for verb in ("encode", "decode", "stream-encode", "stream-decode", "serve", "demo", "tokens", "eval", "bench"):
        assert threads.threads_for(verb, None) == 1
        assert threads.threads_for(verb, 3) == 3
    assert threads.threads_for("train", None) is None and threads.threads_for("train", 2) == 2


def test_more_onnx_threads_wait_without_spinning(tiny_model):
    pytest.importorskip("onnxruntime")
    from codec.runtimes.runtime import with_runtime

    for n, spinning in ((1, None), (2, "0")):
        options = with_runtime(tiny_model, "onnx", threads=n).session("encoder").get_session_options()
        assert options.intra_op_num_threads == n
        try:
            entry = options.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: one thread has no partner to wait for
            entry = None
        assert entry == spinning


def test_verbose_names_model_runtime_and_threads_in_one_line(capsys, tmp_path, tiny_model_file, wav_file):
    code, out, err = run(capsys, "-v", "encode", wav_file, tmp_path / "x.codes", "-m", tiny_model_file)
    assert code == 0
    said = [line for line in err.splitlines() if not line.startswith("codec: first use of")]
    assert len(said) == 1 and "model tiny (id " in said[0] and "runtime onnx" in said[0] and "1 thread" in said[0]
    assert " on onnx, " in out  # the summary names the runtime too
    code, _, err = run(capsys, "--threads", "2", "-v", "decode", tmp_path / "x.codes", tmp_path / "y.wav", "-m",
                       tiny_model_file, "--runtime", "torch")  # fmt: skip
    assert code == 0 and err.count("\n") == 1 and "runtime torch" in err and "2 threads" in err
    code, _, err = run(capsys, "encode", wav_file, tmp_path / "z.codes", "-m", tiny_model_file)
    assert code == 0 and err == ""  # without -v, nothing on stderr once the graphs are built


def test_encode_to_another_name_warns_once_and_decode_checks_the_extension_first(capsys, tmp_path, wav_file,
                                                                                 tiny_model_file):  # fmt: skip
    code, _, err = run(capsys, "encode", wav_file, tmp_path / "out.txt", "-m", tiny_model_file)
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert code == 0 and len(warnings) == 1 and "out.txt does not end in .codes" in warnings[0]
    assert (tmp_path / "out.txt").read_bytes()[:4] == b"GRVQ"
    # before any work: neither the input nor the model named exist
    code, _, err = run(capsys, "decode", tmp_path / "x.codes", tmp_path / "y.mp4", "-m", tmp_path / "none.safetensors")
    assert code == 1 and err.count("\n") == 1 and err.startswith("codec: error: cannot write") and ".wav" in err


def test_bitrate_is_documented_per_channel_and_info_gives_the_total(capsys, tmp_path, tiny_model_file):
    help_text = build_parser()._subparsers._group_actions[0].choices["encode"].format_help()
    assert "per channel" in " ".join(help_text.split())
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, tone(1.0, 8000, channels=2).T, 8000)
    code, out, _ = run(capsys, "encode", stereo, tmp_path / "s.codes", "-m", tiny_model_file, "-l", "1")
    assert code == 0 and "(2 channels x " in out
    code, out, _ = run(capsys, "info", tmp_path / "s.codes")
    assert code == 0 and "= 2 channels x" in out
    info = json.loads(run(capsys, "info", tmp_path / "s.codes", "--json")[1])
    assert info["payload_kbps"] == pytest.approx(2 * info["payload_kbps_per_channel"], rel=1e-3)


def test_model_info_is_readable_and_json_has_it_all(capsys, tmp_path, tiny_model):
    from codec.checkpoint import save_model

    path = tmp_path / "m.safetensors"
    config = {"train": {"output_dir": "exp/x", "max_steps": 9}, "data": {"train_dir": "data/train"}}
    save_model(tiny_model, path, {"steps": 9, "checkpoint": "/home/someone/exp/x/step_9.pt", "training_config": config})
    code, out, _ = run(capsys, "info", path)
    lines = out.splitlines()
    assert code == 0 and len(lines) < 20 and max(map(len, lines)) < 200
    assert any("9 steps" in line for line in lines) and "per channel" in out
    assert "training_config" in out and "max_steps" not in out and "/home/someone" not in out  # folded, shortened
    info = json.loads(run(capsys, "info", path, "--json")[1])
    assert info["provenance"]["training_config"]["train"]["max_steps"] == 9


def test_blocking_client_beside_the_async_one(tiny_model):
    pytest.importorskip("websockets")
    from codec.server.serve import decode_remote_sync, encode_remote, encode_remote_sync

    url = start_server(tiny_model)
    audio = tone(0.5, 8000)
    data = encode_remote_sync(url, audio, 8000, levels=2)
    assert data == asyncio.run(encode_remote(url, audio, 8000, levels=2))
    decoded, rate = decode_remote_sync(url, data)
    assert rate == 8000 and decoded.shape == audio.shape and np.isfinite(decoded).all()

    async def inside_a_loop():
        return encode_remote_sync(url, audio, 8000, levels=2)

    with pytest.raises(CodecError, match="await codec.serve.encode_remote"):
        asyncio.run(inside_a_loop())


def test_stream_client_and_codes_info_never_import_torch(tmp_path, tiny_model, tiny_model_file, wav_file):
    """Verbs that code nothing themselves start without torch (its import alone costs seconds on a busy machine)."""
    import subprocess
    import sys

    pytest.importorskip("websockets")
    url = start_server(tiny_model)
    script = "import sys; sys.modules['torch'] = None\nfrom codec.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    for argv in (["stream-client", "encode", str(wav_file), str(tmp_path / "x.codes"), "--url", url, "-l", "2"],
                 ["info", str(tmp_path / "x.codes")]):  # fmt: skip
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
