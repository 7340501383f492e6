"""`codec encode` / `codec decode` of many files: folders, wav.scp and list files in, a folder out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.atomic import is_partial_output
from codec.cli import main
from codec.format.bitstream import CodesReader
from tests.conftest import tone


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write(path, seconds=0.5, rate=8000, channels=1, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, channels, seed).T, rate)
    return path


@pytest.fixture
def folder(tmp_path):
    """Three clips of different rates, lengths and channel counts, one of them in a subfolder."""
    src = tmp_path / "src"
    write(src / "a.wav", 0.5, seed=1)
    write(src / "b.flac", 0.8, 11025, 2, seed=2)
    write(src / "sub" / "c.wav", 0.3, seed=3)
    (src / "notes.txt").write_text("not audio, and not listed: no audio suffix")
    return src


def test_folder_round_trip_mirrors_the_tree(capsys, tmp_path, tiny_model_file, folder):
    codes = tmp_path / "codes"
    code, out, err = run(capsys, "encode", folder, codes, "-m", tiny_model_file, "--levels", 2)
    # no progress bar when stderr is not a terminal; at most the notice that the model's graphs are being built
    assert code == 0 and all(line.startswith("codec: first use of tiny") for line in err.splitlines()), err
    assert sorted(p.relative_to(codes).as_posix() for p in codes.rglob("*.codes")) == [
        "a.codes",
        "b.codes",
        "sub/c.codes",
    ]
    assert out.startswith(f"{codes}: 3 .codes files (3 coded, 0 kept from an earlier run), tiny, 2 levels")
    wavs = tmp_path / "wavs"
    code, out, err = run(capsys, "decode", codes, wavs, "-m", tiny_model_file)
    assert code == 0 and err == "" and out.startswith(f"{wavs}: 3 .wav files (3 coded, 0 kept")
    for name, original in [("a", "a.wav"), ("b", "b.flac"), ("sub/c", "sub/c.wav")]:
        got, want = sf.info(wavs / f"{name}.wav"), sf.info(folder / original)
        assert (got.samplerate, got.channels, got.frames) == (want.samplerate, want.channels, want.frames)


def test_batch_output_equals_single_file_output(capsys, tmp_path, tiny_model_file, folder):
    run(capsys, "encode", folder / "a.wav", tmp_path / "one.codes", "-m", tiny_model_file)
    run(capsys, "encode", folder, tmp_path / "many", "-m", tiny_model_file, "--quiet")
    assert (tmp_path / "many/a.codes").read_bytes() == (tmp_path / "one.codes").read_bytes()
    assert capsys.readouterr() == ("", "")


def test_wav_scp_with_a_pipe_and_a_data_dir_with_segments(capsys, tmp_path, tiny_model_file, folder):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt1 {folder / 'a.wav'}\nutt2 cat {folder / 'sub/c.wav'} |\n")
    code, _, _ = run(capsys, "encode", scp, tmp_path / "out", "-m", tiny_model_file)
    assert code == 0
    run(capsys, "encode", folder / "sub/c.wav", tmp_path / "c.codes", "-m", tiny_model_file)
    assert (tmp_path / "out/utt2.codes").read_bytes() == (tmp_path / "c.codes").read_bytes()
    assert (tmp_path / "out/utt1.codes").is_file()

    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec {folder / 'a.wav'}\n")
    (data / "segments").write_text("rec_1 rec 0.0 0.25\nrec_2 rec 0.25 -1\n")
    code, _, _ = run(capsys, "encode", data, tmp_path / "segs", "-m", tiny_model_file)
    assert code == 0
    code, _, _ = run(capsys, "decode", tmp_path / "segs", tmp_path / "segwav", "-m", tiny_model_file)
    assert code == 0
    for name in ("rec_1", "rec_2"):
        assert sf.info(tmp_path / f"segwav/{name}.wav").frames == 2000


def test_list_file_and_decoding_with_the_model_named_in_each_file(capsys, tmp_path, tiny_model_file, folder):
    listing = tmp_path / "files.txt"
    listing.write_text("src/a.wav\n\nsrc/sub/c.wav\n")  # relative to the list's folder
    code, _, _ = run(capsys, "encode", listing, tmp_path / "out", "-m", tiny_model_file)
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.codes", "c.codes"]
    codes_list = tmp_path / "codes.list"
    codes_list.write_text(f"{tmp_path / 'out/a.codes'}\n{tmp_path / 'out/c.codes'}\n")
    code, _, _ = run(capsys, "decode", codes_list, tmp_path / "wav", "-m", tiny_model_file)
    assert code == 0 and sorted(p.name for p in (tmp_path / "wav").iterdir()) == ["a.wav", "c.wav"]


def test_bad_inputs_are_listed_at_the_end_and_the_rest_written(capsys, tmp_path, tiny_model_file, folder):
    (folder / "broken.wav").write_text("this is not audio")
    sf.write(folder / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    code, _, err = run(capsys, "encode", folder, tmp_path / "out", "-m", tiny_model_file)
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"codec: failed: {folder / 'broken.wav'}: ") and "cannot read" in lines[0]
    assert lines[1].startswith(f"codec: failed: {folder / 'empty.wav'}: ") and "no audio samples" in lines[1]
    assert lines[2] == "codec: error: 2 of 5 inputs failed (listed above)"
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert written == ["a.codes", "b.codes", "sub", "sub/c.codes"]  # nothing half-written for the bad ones

    good = tmp_path / "out/a.codes"
    damaged = tmp_path / "out/b.codes"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    code, _, err = run(capsys, "decode", tmp_path / "out", tmp_path / "wav", "-m", tiny_model_file)
    assert code == 1 and f"codec: failed: {damaged}: " in err and "fails its CRC check" in err
    assert (tmp_path / "wav/a.wav").is_file() and not (tmp_path / "wav/b.wav").exists()
    code, _, err = run(capsys, "decode", tmp_path / "out", tmp_path / "wav", "-m", tiny_model_file,
                       "--on-corrupt", "silence")  # fmt: skip
    assert code == 0 and f"codec: warning: {damaged}: " in err and "replaced by silence" in err
    assert good.is_file() and (tmp_path / "wav/b.wav").is_file()


def test_jobs_give_the_same_bytes(capsys, tmp_path, tiny_model_file, folder):
    for jobs in (1, 2):
        code, _, _ = run(capsys, "encode", folder, tmp_path / f"j{jobs}", "-m", tiny_model_file, "--jobs", jobs)
        assert code == 0
    for name in ("a", "b", "sub/c"):
        assert (tmp_path / f"j1/{name}.codes").read_bytes() == (tmp_path / f"j2/{name}.codes").read_bytes()
    code, _, _ = run(capsys, "decode", tmp_path / "j2", tmp_path / "w2", "-m", tiny_model_file, "-j", 2)
    assert code == 0 and len(list((tmp_path / "w2").rglob("*.wav"))) == 3


def assert_one_line_error(code, err, *needles):
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codec: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unsafe_batches_are_refused_before_any_coding(capsys, tmp_path, tiny_model_file, folder):
    model = ("-m", tiny_model_file)
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "encode", folder, tmp_path / "file", *model)
    assert_one_line_error(code, err, "is a file", "folder")
    code, _, err = run(capsys, "encode", folder, tmp_path / "x.codes", *model)
    assert_one_line_error(code, err, "looks like a file name")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "encode", tmp_path / "empty", tmp_path / "out", *model)
    assert_one_line_error(code, err, "no audio files in", str(tmp_path / "empty"))
    code, _, err = run(capsys, "decode", folder, tmp_path / "out", *model)
    assert_one_line_error(code, err, "no .codes files in")
    same = tmp_path / "same.txt"
    same.write_text(f"{folder / 'a.wav'}\n{folder / 'sub' / 'a.flac'}\n")
    code, _, err = run(capsys, "encode", same, tmp_path / "out", *model)
    assert_one_line_error(code, err, f"{same}:2:", "makes id a, as line 1 does")
    scp = tmp_path / "escape.scp"
    scp.write_text(f"../../etc/x {folder / 'a.wav'}\n")
    code, _, err = run(capsys, "encode", scp, tmp_path / "out", *model)
    assert_one_line_error(code, err, "would write outside the output folder")
    code, _, err = run(capsys, "encode", tmp_path / "missing.scp", tmp_path / "out", *model)
    assert_one_line_error(code, err, "not found")
    code, _, err = run(capsys, "encode", folder, tmp_path / "out", *model, "--jobs", 0)
    assert_one_line_error(code, err, "--jobs 0")
    assert not (tmp_path / "out").exists()


def _whole(path: Path) -> bool:
    """A complete .codes file: every packet there and passing its CRC."""
    with open(path, "rb") as f:
        reader = CodesReader(f)
        packets = list(reader.packets())
    return all(p.error is None for p in packets) and sum(p.frames for p in packets) == reader.header.expected_frames


def test_a_batch_killed_with_sigkill_leaves_only_whole_outputs_and_a_rerun_finishes(capsys, tmp_path, tiny_model_file):
    src = tmp_path / "src"
    for i in range(40):
        write(src / f"clip{i:02d}.wav", 6.0, seed=i)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "codec", "encode", str(src), str(out), "-m", str(tiny_model_file), "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.codes")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next file: its partial output sits under a temporary name
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    partial = [p for p in out.iterdir() if p.name.startswith(".")]
    assert all(is_partial_output(p) for p in partial)
    finished = {p: p.read_bytes() for p in out.iterdir() if p not in partial}
    assert 1 <= len(finished) < 40
    assert all(_whole(p) for p in finished)  # never a partial file under its final name
    if partial:  # a batch decode of the folder takes only the finished files
        code, stdout, _ = run(capsys, "decode", out, tmp_path / "wavs", "-m", tiny_model_file)
        assert code == 0 and f"{len(finished)} .wav files" in stdout

    code, stdout, err = run(capsys, "encode", src, out, "-m", tiny_model_file)
    assert code == 0, err
    removed = f", {len(partial)} partial files of a stopped run removed" if partial else ""
    assert f"40 .codes files ({40 - len(finished)} coded, {len(finished)} kept from an earlier run{removed})" in stdout
    assert sorted(p.name for p in out.iterdir()) == [f"clip{i:02d}.codes" for i in range(40)]  # no leftovers
    assert all(p.read_bytes() == data for p, data in finished.items())  # kept as they were
    clean = tmp_path / "clean"
    assert run(capsys, "encode", src, clean, "-m", tiny_model_file, "-q")[0] == 0
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in clean.iterdir())


def test_a_rerun_keeps_only_outputs_that_check_out_and_overwrite_redoes_them(capsys, tmp_path, tiny_model_file, folder):
    out = tmp_path / "out"
    assert run(capsys, "encode", folder, out, "-m", tiny_model_file, "--levels", 2, "-q")[0] == 0
    whole = (out / "a.codes").read_bytes()
    (out / "b.codes").write_bytes((out / "b.codes").read_bytes()[:-5])  # cut short by something else
    (out / ".a.codes.x1y2z3w4.tmp.codes").write_bytes(b"GRVQ")  # what a killed run leaves
    code, stdout, _ = run(capsys, "encode", folder, out, "-m", tiny_model_file, "--levels", 2)
    assert code == 0 and "(1 coded, 2 kept from an earlier run, 1 partial files of a stopped run removed)" in stdout
    assert _whole(out / "b.codes") and not (out / ".a.codes.x1y2z3w4.tmp.codes").exists()
    # an input changed since its output was written: coded again
    os.utime(folder / "a.wav", (time.time() + 5, time.time() + 5))
    code, stdout, _ = run(capsys, "encode", folder, out, "-m", tiny_model_file, "--levels", 2)
    assert code == 0 and "(1 coded, 2 kept from an earlier run)" in stdout
    os.utime(folder / "a.wav", (time.time() - 60, time.time() - 60))
    # other settings are not what this run would write: coded again
    code, stdout, _ = run(capsys, "encode", folder, out, "-m", tiny_model_file, "--levels", 3)
    assert code == 0 and "(3 coded, 0 kept" in stdout and (out / "a.codes").read_bytes() != whole
    code, stdout, _ = run(capsys, "encode", folder, out, "-m", tiny_model_file, "--levels", 3, "--overwrite")
    assert code == 0 and "(3 coded, 0 kept" in stdout
    wavs = tmp_path / "wavs"
    assert run(capsys, "decode", out, wavs, "-m", tiny_model_file, "-q")[0] == 0
    (wavs / "a.wav").write_bytes(b"not audio")
    code, stdout, _ = run(capsys, "decode", out, wavs, "-m", tiny_model_file)
    assert code == 0 and "(1 coded, 2 kept from an earlier run)" in stdout and sf.info(wavs / "a.wav").frames
    code, stdout, _ = run(capsys, "decode", out, wavs, "-m", tiny_model_file, "--overwrite")
    assert code == 0 and "(3 coded, 0 kept" in stdout
