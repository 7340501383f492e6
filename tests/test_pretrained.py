"""The shipped models: registered, one default, within the size budget, documented, and working codecs on CPU.

The default is spectral16k; grvq16k, the default before it, still ships so that the .codes files it made decode."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec import pretrained
from codec.checkpoint import load_model, read_metadata
from codec.cli import main
from codec.config import QUANTIZER_TRAINING_KEYS, builtin_config_path, load_model_config
from tests.conftest import tone

MAX_BYTES = 25 * 1024 * 1024  # the package budget for a shipped model


SHIPPED = [m.name for m in pretrained.shipped_models()]


@pytest.fixture(scope="module")
def default():
    shipped = pretrained.default_model()
    assert shipped is not None, "codec/pretrained/registry.json names no default model"
    return shipped


@pytest.fixture(scope="module")
def model(default):
    return load_model(default.name)


@pytest.fixture(scope="module", params=SHIPPED)
def shipped_model(request):
    return load_model(request.param)


def test_exactly_one_default_and_every_model_within_the_size_budget(default):
    assert [m.name for m in pretrained.shipped_models() if m.default] == [default.name] == ["spectral16k"]
    assert "grvq16k" in SHIPPED  # the previous default: its .codes files keep decoding
    for shipped in pretrained.shipped_models():
        assert shipped.path.is_file() and shipped.path.stat().st_size <= MAX_BYTES, shipped.name


def test_each_shipped_model_is_its_builtin_architecture(shipped_model):
    builtin = load_model_config(builtin_config_path(shipped_model.name))
    q = shipped_model.config.quantizer  # the quantizer's training-only settings come from its recipe
    training = {k: getattr(q, k) for k in QUANTIZER_TRAINING_KEYS}
    trained_with = dataclasses.replace(builtin.quantizer, **training)
    assert shipped_model.config == dataclasses.replace(builtin, quantizer=trained_with)
    assert shipped_model.sample_rate == 16000 and shipped_model.hop_length == 320
    assert [b / 1000 for b in shipped_model.supported_bitrates()] == list(range(1, 9))


def test_loading_a_model_file_does_not_import_training():
    """A model file rebuilds from its metadata through the model schema alone: codec.train and its extras stay out."""
    script = (
        "import sys\n"
        "import codec.checkpoint\n"
        f"for name in {SHIPPED!r}: codec.checkpoint.load_model(name)\n"
        "print(codec.checkpoint.__file__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['codec', 'train']))\n"
    )
    root = Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    where, train_modules = result.stdout.strip().splitlines()
    assert Path(where).is_relative_to(root / "codec")
    assert train_modules == "[]"


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_matches_the_shipped_weights(name):
    shipped = pretrained.find(name)
    card = shipped.path.with_suffix(".md").read_text()
    digest = read_metadata(shipped.path)["weights_hash"]
    assert digest in card, f"{name}.md must name the sha256 of the weights it describes"
    for package in ("fillets-ng-data", "klettres-data", "ktuberling-data", "hedgewars-data", "ufoai-music"):
        assert package in card  # data sources are credited
    assert re.search(r"PESQ", card) and re.search(r"STOI", card) and re.search(r"DNSMOS", card)


def test_shipped_metadata_is_portable_and_counts_the_cards_steps():
    """No absolute path of the machine that trained a shipped model, and the step count its card gives (a model
    fine-tuned from another counts both runs: `python tools/model_metadata.py FILE --steps N` rewrites an older
    file's provenance without touching its weights)."""
    import json

    for shipped in pretrained.shipped_models():
        provenance = json.loads(read_metadata(shipped.path).get("provenance", "{}"))
        strings = re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(provenance))
        absolute = [text for text in strings if text.startswith("/")]
        assert not absolute, f"{shipped.name}: {absolute}; run tools/model_metadata.py {shipped.path}"
        card = shipped.path.with_suffix(".md")
        if card.is_file() and "steps" in provenance:
            assert f"{provenance['steps']} steps" in card.read_text(), f"{shipped.name}: {provenance['steps']} steps"


def _speech_like(seconds: float = 2.0) -> np.ndarray:
    return tone(seconds, 16000, seed=7)[0]


def _log_mel_distance(a: np.ndarray, b: np.ndarray) -> float:
    from codec.eval.metrics import mel_distance

    return mel_distance(a, b, 16000)["mel_distance"]


def test_round_trip_is_a_trained_reconstruction_that_improves_with_bitrate(shipped_model):
    """Trained weights, not random ones: random weights give a mel distance of 8-9 (grvq16k) or 11.6 (spectral16k)
    on this signal, trained ones 1.7-2.6. Each shipped model must also code it better with more levels, and answer
    at about the input's level with all of them."""
    model, x = shipped_model, _speech_like()
    distances = []
    for levels in (1, 3, 8):
        codes = model.encode(torch.from_numpy(x)[None, None], levels)
        assert codes.shape == (1, model.num_groups * levels, x.size // model.hop_length)
        y = model.decode(codes)[0, 0, : x.size].numpy()
        distances.append(_log_mel_distance(x, y))
        assert distances[-1] < 3.5, levels
    assert distances[0] > distances[1] > distances[2], distances
    level_db = 20 * np.log10(np.std(y) / np.std(x))
    assert abs(level_db) < 3.0, level_db


def test_cli_uses_the_default_without_model_option(default, tmp_path, capsys):
    import json

    wav, codes, out = tmp_path / "in.wav", tmp_path / "x.codes", tmp_path / "out.wav"
    sf.write(wav, _speech_like(1.3), 16000)
    assert main(["encode", str(wav), str(codes), "--bitrate", "3"]) == 0
    assert main(["decode", str(codes), str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(codes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == default.name
    y, rate = sf.read(out)
    assert rate == 16000 and y.shape == (int(1.3 * 16000),)
    assert main(["demo", "--out-dir", str(tmp_path / "demo")]) == 0
    assert default.name in capsys.readouterr().out


def test_models_and_info_show_every_shipped_model(default, capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        f"{name} (default)" if name == default.name else name for name in SHIPPED
    )
    for name in SHIPPED:
        assert main(["info", name]) == 0
        out = capsys.readouterr().out
        model_id = read_metadata(pretrained.find(name).path)["weights_hash"][:8]
        assert f"{name} (id {model_id})" in out and "1, 2, 3, 4, 5, 6, 7, 8 kbps" in out, out
        level_type = load_model_config(builtin_config_path(name)).quantizer.level_type
        assert ("FSQ levels of" in out) == (level_type == "fsq"), out


def test_codes_of_the_previous_default_decode_without_model_option(default, tmp_path, capsys):
    """A grvq16k file (the default before spectral16k) decodes by the model id in its header; naming the new
    default for it is a one-line error that names the model it needs."""
    assert default.name != "grvq16k"
    wav, codes, out = tmp_path / "in.wav", tmp_path / "old.codes", tmp_path / "out.wav"
    sf.write(wav, _speech_like(1.3), 16000)
    assert main(["encode", str(wav), str(codes), "--bitrate", "2", "--model", "grvq16k"]) == 0
    capsys.readouterr()
    assert main(["decode", str(codes), str(out)]) == 0
    assert "(grvq16k on " in capsys.readouterr().out and sf.info(str(out)).frames == int(1.3 * 16000)
    assert main(["decode", str(codes), str(tmp_path / "wrong.wav"), "--model", default.name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("codec: error: ") and "Traceback" not in err, err
    assert "encoded by model grvq16k" in err and "--model grvq16k, or no --model" in err, err
    assert not (tmp_path / "wrong.wav").exists()


def test_codes_of_the_retired_release_name_the_model_they_need(model):
    from codec.coding.compress import check_compatible
    from codec.errors import CodecError
    from codec.format.bitstream import CodesHeader

    header = CodesHeader(
        model_id="5887b616", sample_rate=16000, model_sample_rate=16000, channels=1, hop_length=320,
        num_groups=2, levels=3, bits=10, num_samples=16000,
    )  # fmt: skip
    with pytest.raises(CodecError, match=r"grvq16k \(the release shipped until 2026-12-02.*5c68ef4\).*--model"):
        check_compatible(model, header, "old.codes")


def test_shipped_entropy_tables_code_each_shipped_model_losslessly(shipped_model):
    """The tables beside each shipped model (codec/pretrained/<name>.entropy) are of its model id and shrink its
    codes of real speech (the bundled clip), exactly, at the lowest and the highest bitrate. spectral16k's binary
    FSQ codes are close to uniform, so its saving is small (a synthetic tone is not shrunk at all). New weights need
    new tables: `codec fit-entropy` (docs/ENTROPY.md)."""
    from codec.commands.demo import CLIP
    from codec.format import entropy

    model = shipped_model
    tables = entropy.tables_for(model)
    assert tables is not None, f"no entropy tables of {model.name} (id {model.model_id}) beside it: fit them again"
    speech, rate = sf.read(CLIP, dtype="float32")
    assert rate == model.sample_rate
    with torch.no_grad():
        codes = model.encode(torch.from_numpy(speech)[None, None], model.num_levels)[0].numpy()
    for levels in (1, model.num_levels):
        packet = codes[: levels * model.num_groups].T[:, None, :]  # [frames, channels, N]
        payload = entropy.encode_packet(tables, packet, levels)
        assert np.array_equal(entropy.decode_packet(tables, payload, len(packet), 1, levels), packet)
        assert len(payload) < packet.size * model.bits_per_code / 8, levels
