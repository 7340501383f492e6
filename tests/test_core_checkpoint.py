"""Model files rebuild the model from the file alone, strictly, and refuse what they cannot read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from codec import checkpoint, load_model
from codec.errors import CodecError
from tests.conftest import tone


def test_round_trip_gives_identical_outputs(tiny_model, tiny_model_file):
    loaded = load_model(tiny_model_file)
    x = torch.from_numpy(tone(0.3, 8000))[None]
    assert torch.equal(loaded.encode(x), tiny_model.encode(x))
    codes = tiny_model.encode(x)
    assert torch.equal(loaded.decode(codes), tiny_model.decode(codes))
    assert loaded.config == tiny_model.config
    assert loaded.provenance["recipe"] == "tests (random init)"
    assert "codec_version" in loaded.provenance and "created" in loaded.provenance


def test_identity_is_declared_on_the_model(tiny_model_file, tmp_path):
    from tests.conftest import make_tiny

    fresh = make_tiny()
    assert fresh.source is None and fresh.provenance == {}
    digest = checkpoint.save_model(fresh, tmp_path / "m.safetensors")
    assert fresh.weights_hash == digest and fresh.model_id == digest[:8]  # computed from the weights when asked
    loaded = load_model(tiny_model_file)
    assert loaded.source == str(tiny_model_file)
    assert loaded.weights_hash == checkpoint.read_metadata(tiny_model_file)["weights_hash"]
    assert loaded.model_id == loaded.weights_hash[:8]


def test_trained_quantizer_state_survives_a_round_trip(tmp_path):
    from tests.conftest import make_tiny

    model = make_tiny().train()
    model(torch.from_numpy(tone(0.5, 8000, channels=4))[:, None])
    model.eval()
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(model, path)
    loaded = load_model(path)
    assert bool(loaded.quantizer.initialized)
    assert torch.allclose(loaded.quantizer.embed_sum, model.quantizer.embed_sum, rtol=1e-5, atol=1e-6)


def _rewrite(src, dst, metadata_update=None, tensors_update=None):
    with open(src, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(header_len))["__metadata__"]
    tensors = load_file(str(src))
    metadata.update(metadata_update or {})
    tensors.update(tensors_update or {})
    save_file(tensors, str(dst), metadata=metadata)


def test_newer_format_version_is_refused(tiny_model_file, tmp_path):
    path = tmp_path / "new.safetensors"
    _rewrite(tiny_model_file, path, {"format_version": "99"})
    with pytest.raises(CodecError, match="format_version 99.*upgrade"):
        load_model(path)


def test_older_format_version_goes_through_the_migration_hook(tiny_model_file, tmp_path, monkeypatch):
    path = tmp_path / "old.safetensors"
    config = json.loads(checkpoint.read_metadata(tiny_model_file)["config"])
    config["model_name_v0"] = config.pop("name")  # pretend version 0 called the field differently
    _rewrite(tiny_model_file, path, {"format_version": "0", "config": json.dumps(config)})
    with pytest.raises(CodecError, match="cannot migrate"):
        load_model(path)

    def v0_to_v1(metadata, tensors):
        cfg = json.loads(metadata["config"])
        cfg["name"] = cfg.pop("model_name_v0")
        return {**metadata, "config": json.dumps(cfg)}, tensors

    monkeypatch.setitem(checkpoint.MIGRATIONS, 0, v0_to_v1)
    assert load_model(path).name == "tiny"


def test_damaged_weights_are_detected(tiny_model_file, tmp_path):
    path = tmp_path / "bad.safetensors"
    key = "decoder.model.0.bias"
    tensors = load_file(str(tiny_model_file))
    _rewrite(tiny_model_file, path, tensors_update={key: tensors[key] + 1})
    with pytest.raises(CodecError, match="corrupt"):
        load_model(path)


def test_mismatched_architecture_is_refused(tiny_model_file, tmp_path):
    path = tmp_path / "edited.safetensors"
    config = json.loads(checkpoint.read_metadata(tiny_model_file)["config"])
    config["encoder"]["channels"] = 6
    _rewrite(tiny_model_file, path, {"config": json.dumps(config), "weights_hash": ""})
    with pytest.raises(CodecError, match="does not match the architecture"):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"hello, not a model", "not a readable model file"), (None, "no codec metadata")],
)
def test_files_that_are_not_models(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    if content is None:
        save_file({"w": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(CodecError, match=message):
        load_model(path)


def _header(payload: bytes, size: int | None = None) -> bytes:
    import struct

    return struct.pack("<Q", len(payload) if size is None else size) + payload


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"short", "shorter than a header"),
        (_header(b"{}", size=2**62), "past the end of the file"),  # a hostile length: nothing of that size is read
        (_header(b"{not json"), "not JSON"),
        (_header(b'{"__metadata__": {"name": 3}}'), "not a table of strings"),
        (_header(b'{"__metadata__": {"format_version": "1"}, "w": {"dtype": "F32", "shape": [9], '
                 b'"data_offsets": [0, 36]}}'),
         "not a readable model file"),  # metadata fine, tensor bytes missing: found when the weights load
    ],
)  # fmt: skip
def test_damaged_model_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(CodecError, match=message) as error:
        load_model(path)
    assert "\n" not in str(error.value)


def test_missing_file_and_unknown_name():
    with pytest.raises(CodecError, match="not found"):
        load_model("nowhere/model.safetensors")
    with pytest.raises(CodecError, match="unknown model 'nosuchmodel'"):
        load_model("nosuchmodel")
