"""Fuzzing the .codes reader: thousands of mutated files through the library and the CLI (tests/fuzzing.py).

`tools/fuzz_codes.py` runs the same cases by the hundred thousand; docs/ROBUSTNESS.md records its counts.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest

from codec.coding.compress import decode_stream
from tests import fuzzing


@pytest.mark.slow
def test_mutated_codes_decode_or_fail_cleanly(tmp_path, tiny_model, tiny_model_file):
    outcomes, failures = fuzzing.run(tiny_model, tiny_model_file, seed=0, count=2000, workdir=tmp_path, cli_every=10)
    assert not failures, "\n".join(failures[:20])
    assert sum(outcomes.values()) == 2200
    assert outcomes["library decoded"] > 300 and outcomes["library error"] > 300  # both ends are exercised


@pytest.mark.slow
def test_mutated_codes_through_the_console_script(tmp_path, tiny_model, tiny_model_file):
    files = fuzzing.valid_files(tiny_model)
    rng = np.random.default_rng(1)
    for i, name in enumerate(["forged_header", "forged_frames", "garbage_after_magic", "cut_at_packet"]):
        data = fuzzing.MUTATORS[name](rng, files)
        path, out = tmp_path / f"{name}.codes", tmp_path / f"{name}.wav"
        path.write_bytes(data)
        argv = [sys.executable, "-m", "codec", "decode", str(path), str(out), "-m", str(tiny_model_file)]
        argv += ["--on-corrupt", "silence"] * (i % 2)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        errors = [line for line in result.stderr.splitlines() if not line.startswith("codec: warning: ")]
        assert result.returncode in (0, 1), f"case {i} ({name}): {result.stderr}"
        if result.returncode == 1:
            assert len(errors) == 1 and errors[0].startswith("codec: error: ") and not out.exists(), result.stderr


def test_the_rule_catches_foreign_exceptions_and_hangs(tmp_path, tiny_model, tiny_model_file, monkeypatch):
    def boom(*args, **kwargs):
        raise MemoryError("forged length")

    monkeypatch.setattr(fuzzing, "decode_stream", boom)
    _, failures = fuzzing.run(tiny_model, tiny_model_file, seed=0, count=1, workdir=tmp_path)
    assert failures and "MemoryError" in failures[0]
    monkeypatch.setattr(fuzzing, "decode_stream", lambda *a, **k: time.sleep(3))
    monkeypatch.setattr(fuzzing, "CASE_SECONDS", 0.2)
    _, failures = fuzzing.run(tiny_model, tiny_model_file, seed=0, count=1, workdir=tmp_path)
    assert failures and "Hang" in failures[0]


def test_every_mutator_makes_something_new(tiny_model):
    files = fuzzing.valid_files(tiny_model)
    made = {name: data for _, name, data in fuzzing.cases(seed=3, count=len(fuzzing.MUTATORS), files=files)}
    assert set(made) == set(fuzzing.MUTATORS) and all(data not in files for data in made.values())


def test_forged_header_keeps_a_valid_crc(tiny_model):
    from codec.format.bitstream import CodesReader

    data = fuzzing.valid_files(tiny_model)[0]
    forged = fuzzing.forge_header(data, sample_rate=8001)
    reader = CodesReader(io.BytesIO(forged))
    assert reader.header.sample_rate == 8001 and all(p.error is None for p in reader.packets())


def test_cut_at_every_packet_boundary_conceals_to_the_full_length(tiny_model):
    data = fuzzing.valid_files(tiny_model)[0]  # 8 kHz mono at the model's rate: samples line up with frames
    full, rate, _ = decode_stream(tiny_model, io.BytesIO(data))
    size, packets = fuzzing.layout(data)
    hop = tiny_model.hop_length
    for k, end in enumerate([size, *(offset + psize for offset, psize in packets[:-1])]):
        audio, _, report = decode_stream(tiny_model, io.BytesIO(data[:end]), conceal=True)
        assert audio.shape == full.shape and report.damaged  # the right total length, the cut reported
        intact = min(report.frames * hop, full.shape[1])  # the frames of the intact packets
        np.testing.assert_allclose(audio[:, :intact], full[:, :intact], atol=1e-5, err_msg=f"cut after {k} packets")
        assert not audio[:, intact:].any()  # silence for the rest


@pytest.fixture(scope="module")
def entropy_model(tmp_path_factory, tiny_model):
    """The tiny model loaded from a file with entropy tables beside it (fitted on generated audio)."""
    from codec.checkpoint import load_model, save_model
    from codec.format import entropy
    from tests.test_entropy import _fit

    folder = tmp_path_factory.mktemp("fuzz_entropy")
    save_model(tiny_model, folder / "tiny.safetensors", {"recipe": "tests"})
    tables = _fit(tiny_model)
    tables.save(entropy.tables_path(folder / "tiny.safetensors"))
    return load_model(folder / "tiny.safetensors"), folder / "tiny.safetensors", tables


def test_mutated_entropy_coded_files_decode_or_fail_cleanly(tmp_path, entropy_model, monkeypatch):
    """The fuzz rule on entropy-coded files (version 4, and 3 as written before it): a short run here, `-m slow` for
    more."""
    model, model_file, tables = entropy_model
    monkeypatch.setattr(fuzzing, "valid_files", lambda m: fuzzing_valid(m, tables))
    outcomes, failures = fuzzing.run(model, model_file, seed=28, count=300, workdir=tmp_path, cli_every=10)
    assert not failures, "\n".join(failures[:20])
    assert outcomes["library decoded"] > 30 and outcomes["library error"] > 30


@pytest.mark.slow
def test_mutated_entropy_coded_files_many(tmp_path, entropy_model, monkeypatch):
    model, model_file, tables = entropy_model
    monkeypatch.setattr(fuzzing, "valid_files", lambda m: fuzzing_valid(m, tables))
    outcomes, failures = fuzzing.run(model, model_file, seed=2800, count=3000, workdir=tmp_path, cli_every=10)
    assert not failures, "\n".join(failures[:20])


_VALID = fuzzing.valid_files


def fuzzing_valid(model, tables):
    return _VALID(model, tables=tables, plain=False)  # the entropy-coded ones
