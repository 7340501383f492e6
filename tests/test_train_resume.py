"""Checkpoints resume exactly; export writes a model file that load_model rebuilds; the CLI verbs work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from conftest import tone
from train_fixtures import TINY_TRAINING, make_data_dir, tiny_training_config

from codec.checkpoint import load_model, save_model
from codec.cli import main
from codec.config import builtin_config_path
from codec.errors import CodecError
from codec.train import checkpoints
from codec.train.trainer import Trainer

STEPS = 6
RUN = ("discriminator.kinds=[mpd]", "train.ema_decay=0.5", "train.checkpoint_every=100", "train.keep_checkpoints=2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data"))


def run(config, steps=None, resume=None, callback=None) -> Trainer:
    trainer = Trainer(config, resume=resume, progress_bar=False)
    trainer.log.enabled = False
    trainer.fit(max_steps=steps, callback=callback)
    trainer.close()
    return trainer


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory, data_dir):
    """(straight run of STEPS, run stopped at STEPS / 2 and resumed to STEPS with a DataLoader worker)."""
    one, two = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    losses_straight, losses_resumed = [], []
    straight = run(
        tiny_training_config(one, data_dir, *RUN, f"train.max_steps={STEPS}", valid=False),
        callback=lambda s, m: losses_straight.append(m["mel"]),
    )
    config = tiny_training_config(two, data_dir, *RUN, f"train.max_steps={STEPS}", "data.num_workers=1", valid=False)
    run(config, steps=STEPS // 2, callback=lambda s, m: losses_resumed.append(m["mel"]))
    resumed = run(config, resume=True, callback=lambda s, m: losses_resumed.append(m["mel"]))
    return straight, resumed, losses_straight, losses_resumed


def test_resume_continues_exactly(straight_and_resumed):
    straight, resumed, losses_straight, losses_resumed = straight_and_resumed
    assert straight.step == resumed.step == STEPS
    assert losses_resumed == losses_straight
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.disc.state_dict(), resumed.disc.state_dict())
    assert_same_state(straight.ema.model.state_dict(), resumed.ema.model.state_dict())
    assert (straight.epoch, straight.batch_index) == (resumed.epoch, resumed.batch_index)
    assert straight.skipped_files == resumed.skipped_files > 0  # the broken file was met, skipped and counted


def test_keep_last_checkpoints(straight_and_resumed):
    _, resumed, _, _ = straight_and_resumed
    names = [p.name for p in checkpoints.list_checkpoints(resumed.checkpoint_dir)]
    assert names == [f"step_{STEPS // 2:08d}.pt", f"step_{STEPS:08d}.pt"]
    assert not list(resumed.checkpoint_dir.glob(".*tmp*"))


def test_fresh_start_over_checkpoints_is_refused(straight_and_resumed):
    _, resumed, _, _ = straight_and_resumed
    with pytest.raises(CodecError, match="already holds training checkpoints; pass --resume"):
        Trainer(resumed.config, progress_bar=False)


def test_export_then_load_model_reproduces_the_generator(straight_and_resumed, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CODEC_RVQ_BACKEND", "torch")  # the reference search; backends are tested elsewhere
    _, trainer, _, _ = straight_and_resumed
    x = torch.randn(2, 1, 600) * 0.1
    for flag, source in ((), trainer.ema.model), (("--no-ema",), trainer.model):
        out = tmp_path / f"model{len(flag)}.safetensors"
        assert main(["export", str(trainer.output_dir), str(out), *flag]) == 0
        assert f"step {STEPS}" in capsys.readouterr().out
        model = load_model(out)
        source.eval()
        with torch.no_grad():
            expected, q_expected = source(x)
            got, q_got = model(x)
        assert torch.equal(q_got.codes, q_expected.codes)
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.equal(model.encode(x), source.encode(x))
        provenance = model.provenance
        data = Path(trainer.config.data.train_dir)  # absolute here, outside the folder the export ran in: shortened
        assert provenance["steps"] == STEPS and provenance["data"] == ".../" + "/".join(data.parts[-2:])
        assert provenance["training_config"]["train"]["max_steps"] == STEPS and "git_commit" in provenance
    trainer.model.train()


def test_export_counts_every_step_and_writes_no_absolute_path(straight_and_resumed, tmp_path, monkeypatch):
    """A model fine-tuned from another counts that model's steps too (the step count of its card), and a model
    file does not carry the training machine's absolute paths."""
    _, trainer, _, _ = straight_and_resumed
    state = torch.load(checkpoints.list_checkpoints(trainer.checkpoint_dir)[-1], map_location="cpu", weights_only=False)
    state["init_steps"] = 100
    state["config"]["train"]["init_from"] = "/home/someone/models/base.safetensors"
    tuned = tmp_path / "run" / "step_00000009.pt"
    tuned.parent.mkdir()
    torch.save(state, tuned)
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(tuned.resolve()), "tuned.safetensors"]) == 0
    provenance = load_model(tmp_path / "tuned.safetensors").provenance
    assert (provenance["steps"], provenance["steps_this_run"]) == (STEPS + 100, STEPS)
    assert provenance["checkpoint"] == "run/step_00000009.pt"  # relative to where the export ran
    assert provenance["init_from"] == ".../models/base.safetensors"
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(provenance))
    assert not [text for text in strings if text.startswith("/")]  # the run's output_dir and data dirs too


def test_init_from_fine_tunes_from_weights_with_fresh_critics_and_step(straight_and_resumed, tmp_path):
    _, trainer, _, _ = straight_and_resumed
    exported = tmp_path / "model.safetensors"
    assert main(["export", str(trainer.output_dir), str(exported)]) == 0
    calibrated = load_model(exported)  # a shipped model is calibrated: its output gains must not reach training
    calibrated.set_level_gain([3.0] * calibrated.num_levels)
    save_model(calibrated, exported, calibrated.provenance)
    # from a model file, with other critics than the run had (a GAN fine-tune of a reconstruction-only model)
    for source in (str(exported), str(trainer.output_dir)):
        out = tmp_path / f"fine{len(source)}"
        out.mkdir()
        config = tiny_training_config(
            out,
            trainer.config.data.train_dir,
            "discriminator.kinds=[msstft]",
            "model.quantizer.dead_code_threshold=0.5",  # training-only quantizer settings may change
            f"train.init_from={source}",
            valid=False,
        )
        tuned = Trainer(config, progress_bar=False)
        assert tuned.step == 0 and all(name.startswith("msstft") for name in tuned.disc.critics)
        assert tuned.init_steps == STEPS  # its exported model counts the steps of the weights it started from
        assert_same_state(tuned.model.state_dict(), trainer.ema.model.state_dict())  # the EMA weights are taken
        assert not tuned.model.level_gain_db.any() and "level_gain_db" not in checkpoints.extra_buffers(tuned.model)
        tuned.close()
    (tmp_path / "other").mkdir()
    other = tiny_training_config(
        tmp_path / "other", trainer.config.data.train_dir, "model.latent_dim=4", f"train.init_from={exported}"
    )
    with pytest.raises(CodecError, match="another config"):
        Trainer(other, progress_bar=False)


def test_resume_from_a_checkpoint_older_than_a_model_option(straight_and_resumed, tmp_path):
    """A checkpoint written before a model option existed lacks its key; it resumes as that option's default,
    while a real change of model settings is still refused."""
    _, trainer, _, _ = straight_and_resumed
    state = torch.load(checkpoints.list_checkpoints(trainer.checkpoint_dir)[-1], map_location="cpu", weights_only=False)
    del state["config"]["model"]["quantizer"]["codebook_update"]  # as before that option was added
    del state["config"]["model"]["decoder"]["head"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    for name, overrides in ("same", ()), ("other", ("model.latent_dim=4",)):
        (tmp_path / name).mkdir()
        config = tiny_training_config(tmp_path / name, trainer.config.data.train_dir, *RUN, *overrides, valid=False)
        if not overrides:
            resumed = Trainer(config, resume=old, progress_bar=False)
            assert resumed.step == trainer.step
            assert_same_state(resumed.model.state_dict(), trainer.model.state_dict())
            resumed.close()
        else:
            with pytest.raises(CodecError, match="different model config"):
                Trainer(config, resume=old, progress_bar=False)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "m.safetensors")]) == 1
    assert "no training checkpoints" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_resume_and_export(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("CODEC_RVQ_BACKEND", "torch")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"include": str(builtin_config_path("tiny")), **TINY_TRAINING}))
    out = tmp_path / "exp"
    train = ["train", "--config", str(config), f"data.train_dir={data_dir}", f"train.output_dir={out}"]
    done = subprocess.run(
        [sys.executable, "-m", "codec", "--threads", "1", *train, "train.max_steps=2", "train.log_every=1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    assert "step 2/2" in done.stderr and "skipped unreadable broken" in done.stderr
    assert main([*train, "train.max_steps=3"]) == 1
    assert "already holds training checkpoints; pass --resume" in capsys.readouterr().err
    assert main([*train, "train.max_steps=3", "--resume"]) == 0
    assert (out / "checkpoints" / "step_00000003.pt").is_file()
    assert main(["export", str(out), str(tmp_path / "m.safetensors")]) == 0
    wav = tmp_path / "in.wav"
    sf.write(wav, tone(0.5, 8000).T, 8000)
    assert main(["encode", str(wav), str(tmp_path / "x.codes"), "-m", str(tmp_path / "m.safetensors"), "-q"]) == 0
