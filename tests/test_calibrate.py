"""Output level calibration: per-level-count gains on every decode path, in model files, and `codec calibrate-level`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from codec.checkpoint import load_model, save_model
from codec.cli import main
from codec.coding.compress import decode_stream, encode_audio
from codec.datadir import Utterance
from codec.errors import CodecError
from codec.format.bitstream import CodesReader
from codec.jobs.calibrate import calibrate_level, measure_levels
from codec.models.codec import LEVEL_GAIN_KEY, weights_hash
from tests.conftest import make_spectral, make_tiny, tone

GAINS = [6.0, -3.0, 1.5, 0.25]


@pytest.fixture(params=["tiny", "spectral"])
def model(request):
    return make_tiny() if request.param == "tiny" else make_spectral()


def _codes(data: bytes) -> list:
    return [p.codes.tolist() for p in CodesReader(io.BytesIO(data)).packets()]


def _decoded(model, audio, rate, levels):
    out = io.BytesIO()
    encode_audio(model, audio, rate, out, levels=levels)
    return out.getvalue(), decode_stream(model, io.BytesIO(out.getvalue()))[0]


def test_gains_scale_every_decode_path_by_level_count_and_change_no_code(model):
    rate = model.sample_rate
    audio = tone(0.5, rate)
    plain = {n: _decoded(model, audio, rate, n) for n in (1, 2, 4)}
    x = torch.from_numpy(audio)[None]
    with torch.no_grad():
        forward = {n: model(x, levels=n)[0] for n in (1, 4)}
        codes = model.encode(x, levels=4)
        decoded = model.decode(codes)
    model.set_level_gain(GAINS)
    try:
        for n, (codes_plain, audio_plain) in plain.items():
            codes_gained, audio_gained = _decoded(model, audio, rate, n)
            assert _codes(codes_gained) == _codes(codes_plain)  # the same codes (the header names the new model id)
            np.testing.assert_allclose(audio_gained, audio_plain * 10 ** (GAINS[n - 1] / 20), rtol=1e-4, atol=1e-6)
        with torch.no_grad():
            for n, y in forward.items():
                torch.testing.assert_close(model(x, levels=n)[0], y * 10 ** (GAINS[n - 1] / 20))
            torch.testing.assert_close(model(x, quantize=False)[0], model(x, quantize=False)[0])
            torch.testing.assert_close(model.decode(codes), decoded * 10 ** (GAINS[3] / 20))
            # quantizer dropout's per-item level counts (training, the server's mixed batches): each row its own gain
            rows = model.apply_level_gain(torch.ones(2, 1, 5), torch.tensor([1, 3]))
            torch.testing.assert_close(rows[:, 0, 0], torch.tensor([10 ** (GAINS[0] / 20), 10 ** (GAINS[2] / 20)]))
    finally:
        model.set_level_gain(torch.zeros(model.num_levels))


def test_a_model_file_carries_its_gains_and_its_id_covers_them(tmp_path):
    model = make_tiny()
    plain_id = model.model_id
    assert model.weights_hash == weights_hash(model.state_dict())  # uncalibrated: ids as before gains existed
    save_model(model, tmp_path / "plain.safetensors")
    with safe_open(str(tmp_path / "plain.safetensors"), framework="pt") as f:
        assert LEVEL_GAIN_KEY not in f.keys()
    model.set_level_gain(GAINS)
    assert model.model_id != plain_id
    save_model(model, tmp_path / "gain.safetensors")
    loaded = load_model(tmp_path / "gain.safetensors")
    assert loaded.level_gain_db.tolist() == GAINS and loaded.model_id == model.model_id
    assert load_model(tmp_path / "plain.safetensors").model_id == plain_id
    assert LEVEL_GAIN_KEY not in loaded.state_dict()  # training, EMA and checkpoints never see it


@pytest.mark.parametrize("gains", [[99.0, 0, 0, 0], [0.0, 1.0], [float("nan"), 0, 0, 0]])
def test_a_file_with_unusable_gains_is_a_one_line_error(tmp_path, gains):
    model = make_tiny()
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors[LEVEL_GAIN_KEY] = torch.tensor(gains, dtype=torch.float32)
    meta["weights_hash"] = weights_hash(tensors)  # edited with a consistent hash: the gains themselves are checked
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CodecError, match="unusable output level gains"):
        load_model(path)


def _clips(tmp_path, rate, count=12):
    utts = []
    for i in range(count):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, (tone(0.6, rate, seed=i)[0] * (0.2 + 0.1 * i)), rate)
        utts.append(Utterance(f"c{i}", str(path)))
    return utts


def test_calibration_brings_the_mean_level_to_zero_at_every_level_count(tmp_path):
    model = make_spectral()
    utts = _clips(tmp_path, model.sample_rate)
    before, count = measure_levels(model, utts)
    assert count == len(utts) and np.abs(before).max() > 0.5  # a random model is far off
    gains, count = calibrate_level(model, utts)
    np.testing.assert_allclose(gains, -before, atol=1e-3)
    after, _ = measure_levels(model, utts)
    assert np.abs(after).max() < 0.01
    again, _ = calibrate_level(model, utts)  # measured with the gains off: the same answer
    np.testing.assert_allclose(again, gains)
    with pytest.raises(CodecError, match="usable clips"):
        calibrate_level(model, utts[:3])


def test_cli_calibrate_level(tmp_path, capsys):
    model = make_tiny()
    src = tmp_path / "m.safetensors"
    save_model(model, src)
    data = tmp_path / "wav.scp"
    data.write_text("".join(f"{u.id} {u.path}\n" for u in _clips(tmp_path, model.sample_rate)))
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate-level", str(src), str(out), "--data", str(data), "--max-clips", "10"]) == 0
    line = capsys.readouterr().out
    cal = load_model(out)
    assert f"id {cal.model_id}" in line and "measured on 10 clips" in line
    assert cal.level_gain_db.abs().max() > 0
    assert cal.provenance["level_calibration"]["clips"] == 10
    assert not cal.provenance["level_calibration"]["data"].startswith("/")  # portable, as `codec export` writes
    for args, needle in [
        (["--max-clips", "3"], "--max-clips"),
        (["--seconds", "0"], "--seconds"),
    ]:
        assert main(["calibrate-level", str(src), str(out), "--data", str(data), *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert main(["calibrate-level", str(src), str(tmp_path / "cal.pt"), "--data", str(data)]) == 1
    assert ".safetensors" in capsys.readouterr().err
    assert main(["calibrate-level", str(src), str(out), "--data", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err


def test_onnx_graphs_apply_the_gains_as_torch_does(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from codec.runtimes.export_onnx import export_onnx
    from codec.runtimes.onnx_runtime import OnnxDecoder

    model.set_level_gain(GAINS)
    try:
        export_onnx(model, tmp_path)
        audio = tone(12 * model.hop_length / model.sample_rate, model.sample_rate)
        codes = model.encode(torch.from_numpy(audio)[None]).numpy()
        for levels in (1, 3, model.num_levels):
            prefix = codes[:, : levels * model.num_groups]
            expected = model.decode(torch.from_numpy(prefix)).numpy()
            plain = expected / 10 ** (GAINS[levels - 1] / 20)
            for decoder in (OnnxDecoder(tmp_path, frames_per_call=1), OnnxDecoder(tmp_path, frames_per_call=5)):
                decoded = decoder.decode(prefix)
                assert np.abs(decoded - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())
                assert np.abs(decoded - plain).max() > 1e-3  # the gain is there, not only torch's
    finally:
        model.set_level_gain(torch.zeros(model.num_levels))
