"""`--runtime torch|onnx|auto`: the coding verbs, pipes, batch decoding and the server on ONNX Runtime.

The ONNX path codes frame by frame with the same graph call whatever the chunking, so its codes are compared
bitwise between the verbs; against the torch path they are equal except at near-ties of the search
(tests/near_ties.py), and decoded audio agrees to float rounding.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import start_server, tone
from near_ties import ONNX_TIE_RTOL, parting_gaps

from codec.cli import main
from codec.coding.compress import decode_stream, encode_audio
from codec.errors import CodecError
from codec.format.bitstream import CodesReader
from codec.runtimes.runtime import FILE_FRAMES_PER_CALL

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

RATE = 8000  # the tiny model's rate: no resampler, so the ONNX codes can be compared with the runner's own


def codes_of(data: bytes) -> np.ndarray:
    """[frames, C, codebooks] of every packet of a .codes file."""
    return np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of this module's own, so `auto` sees exactly what these tests exported."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CODEC_CACHE_DIR")
    os.environ["CODEC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["CODEC_CACHE_DIR"]
    else:
        os.environ["CODEC_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def onnx_model(cache, tiny_model):
    from codec.runtimes.runtime import with_runtime

    return with_runtime(tiny_model, "onnx", live=True)  # exports into the cache; one frame per graph call


@pytest.fixture
def speech(tmp_path):
    audio = tone(1.3, RATE, seed=5)
    path = tmp_path / "in.wav"
    sf.write(path, audio.T, RATE, subtype="FLOAT")
    return path, audio


def test_onnx_runtime_exports_once_into_the_cache_and_auto_uses_it(cache, tiny_model, onnx_model):
    from codec.runtimes.runtime import OnnxCodec, onnx_cache_dir, with_runtime

    folder = onnx_cache_dir(tiny_model)
    assert folder.parent.parent == cache and (folder / "manifest.json").is_file()
    assert isinstance(onnx_model, OnnxCodec) and onnx_model.onnx_dir == folder
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind
    stamp = (folder / "encoder.onnx").stat().st_mtime_ns
    live, files = with_runtime(tiny_model, "auto", live=True), with_runtime(tiny_model, "auto")
    assert isinstance(live, OnnxCodec) and isinstance(files, OnnxCodec)  # cached: auto takes the ONNX path
    assert (live.frames_per_call, files.frames_per_call) == (1, FILE_FRAMES_PER_CALL)
    assert with_runtime(tiny_model, "onnx").onnx_dir == folder and (folder / "encoder.onnx").stat().st_mtime_ns == stamp
    assert with_runtime(tiny_model, "torch") is tiny_model
    # the facts of the model are the torch model's
    assert (onnx_model.name, onnx_model.model_id, onnx_model.hop_length) == (
        tiny_model.name,
        tiny_model.model_id,
        tiny_model.hop_length,
    )


def test_auto_builds_the_graphs_on_first_use_with_one_notice(tmp_path, monkeypatch, tiny_model):
    """A fresh install codes on ONNX Runtime: `auto` builds the model's graphs into an empty cache, says so in one
    line, and the second call reuses them without a word."""
    from codec.runtimes.runtime import OnnxCodec, onnx_cache_dir, with_runtime

    monkeypatch.setenv("CODEC_CACHE_DIR", str(tmp_path / "empty"))
    said = []
    got = with_runtime(tiny_model, "auto", live=True, notice=said.append)
    assert isinstance(got, OnnxCodec) and got.onnx_dir == onnx_cache_dir(tiny_model)
    assert len(said) == 1 and "first use" in said[0] and str(onnx_cache_dir(tiny_model)) in said[0]
    again = with_runtime(tiny_model, "auto", notice=said.append)
    assert isinstance(again, OnnxCodec) and len(said) == 1


def test_auto_falls_back_to_torch_saying_why(tmp_path, monkeypatch, tiny_model, speech, tiny_model_file, capsys):
    from codec.runtimes import runtime

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CODEC_CACHE_DIR", str(blocked))
    said = []
    assert runtime.with_runtime(tiny_model, "auto", notice=said.append) is tiny_model
    assert len(said) == 1 and said[0].startswith("running on torch: cannot write the ONNX cache"), said
    out = tmp_path / "x.codes"
    assert main(["encode", str(speech[0]), str(out), "-m", str(tiny_model_file)]) == 0 and out.is_file()
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "running on torch" in captured.err and " on torch," in captured.out
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    assert runtime.why_torch(tiny_model).startswith("onnxruntime is not installed")


def test_auto_exports_again_over_graphs_of_an_older_exporter(tmp_path, monkeypatch, tiny_model, onnx_model):
    """A user who ran --runtime onnx with an older codec keeps ONNX Runtime under auto, on current graphs."""
    import json
    import shutil

    from codec.runtimes.onnx_runtime import GRAPH_REVISION
    from codec.runtimes.runtime import OnnxCodec, onnx_cache_dir, with_runtime

    monkeypatch.setenv("CODEC_CACHE_DIR", str(tmp_path))
    old = tmp_path / "onnx" / f"{tiny_model.name}-{tiny_model.model_id}"  # the folder name before revisions
    shutil.copytree(onnx_model.onnx_dir, old)
    other = tmp_path / "onnx" / f"{tiny_model.name}-{tiny_model.model_id}x-r1"  # another model's: left alone
    shutil.copytree(onnx_model.onnx_dir, other)
    got = with_runtime(tiny_model, "auto", live=True)
    assert isinstance(got, OnnxCodec) and got.onnx_dir == onnx_cache_dir(tiny_model)
    assert json.loads((got.onnx_dir / "manifest.json").read_text())["graph_revision"] == GRAPH_REVISION
    assert not old.exists() and other.exists()


def test_encode_and_decode_verbs_on_onnx_match_the_runner_and_torch(
    tmp_path, speech, onnx_model, tiny_model, tiny_model_file
):
    from codec.runtimes.onnx_runtime import OnnxEncoder

    path, audio = speech
    model_file = tiny_model_file  # the weights the cache was exported from
    out = {}
    for runtime in ("onnx", "torch", "auto"):
        codes = tmp_path / f"{runtime}.codes"
        assert main(["encode", str(path), str(codes), "-m", str(model_file), "-l", "3", "--runtime", runtime]) == 0
        out[runtime] = codes.read_bytes()
    assert out["auto"] == out["onnx"]  # the graphs are cached, so auto ran them
    # a file goes through the graphs in blocks of FILE_FRAMES_PER_CALL frames: the runner's offline encode with
    # the same blocks gives the same codes; frame by frame, the same but for near-ties
    blocks = OnnxEncoder(onnx_model.onnx_dir, levels=3, frames_per_call=FILE_FRAMES_PER_CALL).encode(audio)
    got = codes_of(out["onnx"]).transpose(1, 2, 0)  # [1, 3 * G, F]
    assert np.array_equal(got, blocks) and got.shape[-1] > 1
    one = OnnxEncoder(onnx_model.onnx_dir, levels=3).encode(audio)
    assert (got != one).any(1).mean() < 0.05
    differ, frames, gap = parting_gaps(tiny_model, torch.from_numpy(audio)[None], got, levels=3)
    assert gap <= ONNX_TIE_RTOL, (differ, frames, gap)  # against torch: equal but for near-ties
    wavs = {}
    for runtime in ("onnx", "torch"):
        wav = tmp_path / f"{runtime}.wav"
        assert (
            main(["decode", str(tmp_path / "torch.codes"), str(wav), "-m", str(model_file), "--runtime", runtime]) == 0
        )
        wavs[runtime] = sf.read(wav, dtype="float32")[0]
    assert wavs["onnx"].shape == wavs["torch"].shape == (audio.shape[1],)
    assert np.abs(wavs["onnx"] - wavs["torch"]).max() < 1e-4


def test_coding_verbs_on_cached_graphs_run_without_torch(tmp_path, speech, onnx_model, tiny_model_file):
    """With the model's graphs cached, encode, decode, stream-encode and stream-decode never import torch (their
    cold start is the ONNX Runtime path's alone), and write what the same verbs write in a process with torch."""
    path, audio = speech
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    model = str(tiny_model_file)
    verbs = {  # name: (argv, stdin, output file or None for stdout)
        "encode": (["encode", str(path), "{out}", "-m", model, "-l", "3"], None, ".codes"),
        "decode": (["decode", str(tmp_path / "with-encode.codes"), "{out}", "-m", model], None, ".wav"),
        "stream-encode": (["stream-encode", "-m", model, "--rate", str(RATE)], pcm, None),
        "stream-decode": (["stream-decode", "-m", model], None, None),
    }
    script = "import sys; sys.modules['torch'] = None\nfrom codec.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    for verb, (argv, stdin, suffix) in verbs.items():
        outputs = {}
        for how in ("with", "without"):
            out = tmp_path / f"{how}-{verb}{suffix or '.out'}"
            args = [a.replace("{out}", str(out)) for a in argv]
            if verb == "stream-decode":
                stdin = (tmp_path / "with-stream-encode.out").read_bytes()
            prefix = [sys.executable, "-c", script] if how == "without" else [sys.executable, "-m", "codec"]
            done = subprocess.run([*prefix, *args], input=stdin, capture_output=True)
            assert done.returncode == 0, (verb, how, done.stderr.decode())
            if suffix is None:
                out.write_bytes(done.stdout)
            outputs[how] = out.read_bytes()
        assert outputs["with"] == outputs["without"], verb
    assert len(codes_of((tmp_path / "with-stream-encode.out").read_bytes())) == -(-audio.shape[1] // 12)


def test_server_on_cached_graphs_runs_without_torch(speech, onnx_model, tiny_model_file):
    """`codec serve` on a model whose graphs are cached starts and serves without importing torch; its codes are
    the frame-by-frame codes of the ONNX runner."""
    import socket
    import time

    from codec.runtimes.onnx_runtime import OnnxEncoder
    from codec.server.serve import encode_remote

    _, audio = speech
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = "import sys; sys.modules['torch'] = None\nfrom codec.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    argv = ["serve", "-m", str(tiny_model_file), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([sys.executable, "-c", script, *argv], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "listening" not in line and time.monotonic() < deadline and server.poll() is None:
            line = server.stderr.readline()
        assert "listening" in line, f"the server did not start: {line}"
        data = asyncio.run(encode_remote(f"ws://127.0.0.1:{port}", audio, RATE, levels=3))
    finally:
        server.terminate()
        server.wait(10)
    s16 = np.frombuffer((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), "<i2").astype(np.float32)[None]
    expected = OnnxEncoder(onnx_model.onnx_dir, levels=3).encode(s16 / 32768)  # [1, 3 * G, F]
    assert np.array_equal(codes_of(data).transpose(1, 2, 0), expected)


def test_pipes_on_onnx_give_the_frame_by_frame_codes_for_any_chunking(tmp_path, speech, onnx_model, tiny_model_file):
    from codec.runtimes.onnx_runtime import OnnxEncoder

    _, audio = speech
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()  # s16 on the wire: compare against that input
    s16 = np.frombuffer(pcm, "<i2").astype(np.float32)[None] / 32768
    reference = OnnxEncoder(onnx_model.onnx_dir).encode(s16)  # [1, L * G, F], one frame per call
    args = ["-m", str(tiny_model_file), "--runtime", "onnx"]
    enc = subprocess.run([sys.executable, "-m", "codec", "stream-encode", *args, "--rate", str(RATE)], input=pcm,
                         capture_output=True)  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    assert np.array_equal(codes_of(enc.stdout).transpose(1, 2, 0), reference)
    auto = subprocess.run([sys.executable, "-m", "codec", "stream-encode", "-m", str(tiny_model_file), "--rate",
                           str(RATE)], input=pcm, capture_output=True)  # fmt: skip
    assert auto.returncode == 0 and auto.stdout == enc.stdout  # live + cached graphs: auto runs ONNX Runtime
    dec = subprocess.run([sys.executable, "-m", "codec", "stream-decode", *args, "--format", "f32le"], input=enc.stdout,
                         capture_output=True)  # fmt: skip
    assert dec.returncode == 0, dec.stderr
    streamed = np.frombuffer(dec.stdout, "<f4")
    whole = decode_stream(onnx_model, io.BytesIO(enc.stdout))[0][0]
    assert np.abs(streamed[: whole.shape[0]] - whole).max() < 1e-6


def test_streaming_encoder_on_onnx_is_chunking_independent_per_stream(onnx_model):
    from codec.coding.streaming import StreamingEncoder

    audio = np.stack([tone(0.9, RATE, seed=1)[0], tone(0.9, RATE, seed=2)[0]])  # two streams
    whole = StreamingEncoder(onnx_model, batch_size=2)
    expected = np.concatenate([whole.push(audio), whole.flush()], -1)  # numpy on the ONNX path
    rng = np.random.default_rng(0)
    chunked = StreamingEncoder(onnx_model, batch_size=2)
    got, i = [], 0
    while i < audio.shape[1]:
        n = int(rng.choice([1, 7, 12, 13, 250]))
        got.append(chunked.push(audio[:, i : i + n]))
        i += n
    got.append(chunked.flush())
    assert np.array_equal(np.concatenate(got, -1), expected)
    chunked.push(audio[:, :24])  # whole frames: stream 0 may start afresh while stream 1 goes on
    chunked.reset(np.array([True, False]))
    assert np.array_equal(chunked.push(audio[:, 24:48])[1], expected[1, :, 2:4])  # stream 1 went on
    chunked.push(audio[:, :30])  # a partial frame pending: a reset of some streams would lose it
    with pytest.raises(RuntimeError, match="frame boundaries"):
        chunked.reset(np.array([True, False]))


def test_batch_decode_on_onnx_with_jobs(tmp_path, speech, onnx_model, tiny_model_file):
    path, audio = speech
    (tmp_path / "codes").mkdir()
    for i in range(3):
        assert main(["encode", str(path), str(tmp_path / f"codes/c{i}.codes"), "-m", str(tiny_model_file)]) == 0
    code = main(["decode", str(tmp_path / "codes"), str(tmp_path / "wav"), "-m", str(tiny_model_file),
                 "--runtime", "onnx", "--jobs", "2", "-q"])  # fmt: skip
    assert code == 0
    torch_wav = tmp_path / "one.wav"
    assert main(["decode", str(tmp_path / "codes/c0.codes"), str(torch_wav), "-m", str(tiny_model_file),
                 "--runtime", "torch", "-q"]) == 0  # fmt: skip
    for i in range(3):
        got = sf.read(tmp_path / f"wav/c{i}.wav", dtype="float32")[0]
        assert np.abs(got - sf.read(torch_wav, dtype="float32")[0]).max() < 1e-4


def test_server_on_onnx_streams_the_offline_codes(onnx_model):
    pytest.importorskip("websockets")
    from codec.server.serve import encode_remote

    url = start_server(onnx_model)
    audio = (np.round(tone(0.6, RATE, seed=3) * 32768) / 32768).astype(np.float32)  # on the client's s16 grid
    data = asyncio.run(encode_remote(url, audio, RATE, levels=2))
    expected = io.BytesIO()
    encode_audio(onnx_model, audio, RATE, expected, levels=2)
    assert np.array_equal(codes_of(data), codes_of(expected.getvalue()))


def test_runtime_errors_are_one_line(tmp_path, monkeypatch, speech, tiny_model, tiny_model_file, capsys):
    from codec.runtimes import runtime

    path, _ = speech
    with pytest.raises(CodecError, match="--runtime 'tpu'"):
        runtime.with_runtime(tiny_model, "tpu")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CODEC_CACHE_DIR", str(blocked))
    code = main(["encode", str(path), str(tmp_path / "x.codes"), "-m", str(tiny_model_file), "--runtime", "onnx"])
    err = capsys.readouterr().err
    assert code == 1 and "CODEC_CACHE_DIR" in err and err.count("\n") == 1 and not (tmp_path / "x.codes").exists()
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    with pytest.raises(CodecError, match=r"needs onnxruntime"):
        runtime.with_runtime(tiny_model, "onnx")


def test_damaged_cached_graphs_are_a_one_line_error(tmp_path, onnx_model):
    import shutil

    from codec.runtimes.runtime import OnnxCodec

    damaged = tmp_path / "damaged"
    shutil.copytree(onnx_model.onnx_dir, damaged)
    (damaged / "encoder.onnx").write_bytes(b"truncated")
    with pytest.raises(CodecError, match="delete that folder"):
        OnnxCodec(onnx_model.model, damaged).session("encoder")


def test_damaged_cached_manifest_is_a_one_line_error_naming_the_fix(tmp_path, monkeypatch, speech, onnx_model,
                                                                    tiny_model_file, capsys):  # fmt: skip
    import json
    import shutil

    from codec.runtimes.runtime import onnx_cache_dir

    monkeypatch.setenv("CODEC_CACHE_DIR", str(tmp_path / "cache"))
    folder = onnx_cache_dir(onnx_model.model)
    shutil.copytree(onnx_model.onnx_dir, folder)
    text = (folder / "manifest.json").read_text()
    manifest = json.loads(text)
    del manifest["encoder"]["states"]
    for damage in (text[: len(text) // 2], "[1, 2]", json.dumps(manifest)):  # truncated, not a table, a key gone
        (folder / "manifest.json").write_text(damage)
        argv = ["encode", str(speech[0]), str(tmp_path / "out.codes"), "-m", str(tiny_model_file)]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "codec: error:" in err and f"delete {folder}" in err, err
        assert not (tmp_path / "out.codes").exists()


def test_cached_graphs_of_another_model_are_refused(tmp_path, monkeypatch, onnx_model):
    from conftest import make_tiny

    from codec.runtimes.runtime import OnnxCodec

    other = make_tiny(**{"quantizer.num_levels": 3})
    with pytest.raises(CodecError, match="delete the folder"):
        OnnxCodec(other, onnx_model.onnx_dir)


def test_bench_process_costs_runs_both_runtimes(capsys, tiny_model):
    import json

    from codec.commands import bench

    bench.process_costs(tiny_model, repeats=1, stream_seconds=1.0)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["what"], r["runtime"]) for r in rows} == {
        (what, runtime) for what in ("cold_start_encode_1s", "stream_encode_1s") for runtime in ("torch", "onnx")
    }
    assert all(r["cpu_seconds"] > 0 and r["wall_seconds"] > 0 for r in rows)


def test_bench_onnx_versus_torch_reports_every_runtime_mode_and_direction(tmp_path, capsys, tiny_model):
    import json

    from codec.commands import bench
    from codec.runtimes.export_onnx import export_onnx

    export_onnx(tiny_model, tmp_path / "graphs")
    bench.onnx_versus_torch(tiny_model, str(tmp_path / "graphs"), frames=30, seconds=0.5)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames = [r for r in rows if r["what"] == "streaming_frame_time"]
    assert {(r["runtime"], r["mode"], r["direction"], r["levels"]) for r in frames} == {
        (runtime, mode, direction, levels)
        for runtime in ("torch", "onnxruntime")
        for mode in ("alone", "duplex")
        for direction in ("encode", "decode")
        for levels in (1, tiny_model.num_levels)
    }
    assert all(0 < r["cpu_median_ms"] <= r["cpu_p99_ms"] for r in frames)
    offline = {(r["runtime"], r["levels"]): r for r in rows if r["what"] == "realtime_factor"}
    assert offline["onnxruntime", 1]["frames_per_call"] == FILE_FRAMES_PER_CALL
    assert offline["onnxruntime", tiny_model.num_levels]["frames_with_other_codes"] is not None


def test_threads_reach_onnx_runtime_sessions(onnx_model, tiny_model, tiny_model_file):
    from codec.runtimes.runtime import cached_onnx_codec, with_runtime

    for codec in (with_runtime(tiny_model, "onnx", threads=2), cached_onnx_codec(str(tiny_model_file), threads=2)):
        assert codec.session("encoder").get_session_options().intra_op_num_threads == 2
    assert onnx_model.session("encoder").get_session_options().intra_op_num_threads == 1  # the default
