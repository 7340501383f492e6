"""The shipped default model: registered, within the size budget, documented, and a working codec on CPU."""

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


@pytest.fixture(scope="module")
def default():
    shipped = pretrained.default_model()
    assert shipped is not None, "codec/pretrained/registry.json names no default model"
    return shipped


@pytest.fixture(scope="module")
def model(default):
    return load_model(default.name)


def test_exactly_one_default_within_the_size_budget(default):
    assert [m.name for m in pretrained.shipped_models() if m.default] == [default.name] == ["grvq16k"]
    assert default.path.is_file() and default.path.stat().st_size <= MAX_BYTES


def test_default_is_the_builtin_grvq16k_architecture(model):
    builtin = load_model_config(builtin_config_path("grvq16k"))
    q = model.config.quantizer  # the quantizer's training-only settings come from its recipe
    training = {k: getattr(q, k) for k in QUANTIZER_TRAINING_KEYS}
    trained_with = dataclasses.replace(builtin.quantizer, **training)
    assert model.config == dataclasses.replace(builtin, quantizer=trained_with)
    assert model.sample_rate == 16000 and [b / 1000 for b in model.supported_bitrates()] == list(range(1, 9))


def test_loading_a_model_file_does_not_import_training():
    """A model file rebuilds from its metadata through the model schema alone: codec.train and its extras stay out."""
    script = (
        "import sys\n"
        "import codec.checkpoint\n"
        "codec.checkpoint.load_model('grvq16k')\n"
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


def test_model_card_matches_the_shipped_weights(default):
    card = (default.path.parent / f"{default.name}.md").read_text()
    digest = read_metadata(default.path)["weights_hash"]
    assert digest in card, "the model card must name the sha256 of the weights it describes"
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


def test_round_trip_is_a_trained_reconstruction_that_improves_with_bitrate(model):
    """Trained weights, not random ones: random grvq16k weights give a mel distance of 5.6-5.9 on this signal.
    The shipped model must also code it better with more levels, and answer at about the input's level."""
    x = _speech_like()
    distances = []
    for levels in (1, 3, 8):
        codes = model.encode(torch.from_numpy(x)[None, None], levels)
        assert codes.shape == (1, 2 * levels, x.size // 320)
        y = model.decode(codes)[0, 0, : x.size].numpy()
        distances.append(_log_mel_distance(x, y))
        assert distances[-1] < 3.5, levels
    assert distances[0] > distances[1] > distances[2], distances
    level_db = 20 * np.log10(np.std(y) / np.std(x))
    assert abs(level_db) < 3.0, level_db


def test_cli_uses_the_default_without_model_option(tmp_path, capsys):
    wav, codes, out = tmp_path / "in.wav", tmp_path / "x.codes", tmp_path / "out.wav"
    sf.write(wav, _speech_like(1.3), 16000)
    assert main(["encode", str(wav), str(codes), "--bitrate", "3"]) == 0
    assert main(["decode", str(codes), str(out)]) == 0
    assert main(["info", str(codes), "--json"]) == 0
    y, rate = sf.read(out)
    assert rate == 16000 and y.shape == (int(1.3 * 16000),)
    assert main(["demo", "--out-dir", str(tmp_path / "demo")]) == 0
    assert "grvq16k" in capsys.readouterr().out


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


def test_shipped_entropy_tables_code_the_default_model_losslessly(model):
    """The tables beside the shipped model (codec/pretrained/<name>.entropy) shrink its codes, exactly. Tables of
    an older model id are skipped: encode then writes the plain payload until `codec fit-entropy` is run again."""
    from codec.format import entropy

    tables = entropy.tables_for(model)
    if tables is None:
        pytest.skip("no entropy tables for this model id beside it: refit them (codec fit-entropy, docs/ENTROPY.md)")
    import torch

    with torch.no_grad():
        codes = model.encode(torch.from_numpy(_speech_like(3.0))[None, None], model.num_levels)[0].numpy()
    packet = codes.T[:, None, :]  # [frames, channels, N]
    payload = entropy.encode_packet(tables, packet, model.num_levels)
    assert np.array_equal(entropy.decode_packet(tables, payload, len(packet), 1, model.num_levels), packet)
    assert len(payload) < packet.size * model.bits_per_code / 8
