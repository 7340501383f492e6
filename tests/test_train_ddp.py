"""Two ranks under torchrun (gloo on CPU) end every step with identical codebooks, weights and optimizers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import make_data_dir, tiny_training_config

from codec.config import to_dict

WORKER = r"""
import sys, yaml, torch
from pathlib import Path
from codec.config import from_dict
from codec.train.config import Config
from codec.train.trainer import Trainer

out = Path(sys.argv[2])
config = from_dict(Config, yaml.safe_load(Path(sys.argv[1]).read_text()))
trainer = Trainer(config, progress_bar=False)
restarts = []
original = trainer.model.quantizer._restart_dead
def counting(residuals):
    restarts.append(int((trainer.model.quantizer.cluster_size < trainer.model.quantizer.dead_code_threshold).sum()))
    return original(residuals)
trainer.model.quantizer._restart_dead = counting
trainer.fit()
state = {f"g.{k}": v for k, v in trainer.model.state_dict().items()}
state.update({f"d.{k}": v for k, v in trainer.disc.state_dict().items()})
state["g.quantizer.embed_sum"] = trainer.model.quantizer.embed_sum
state["adam_exp_avg"] = torch.cat([s["exp_avg"].flatten() for s in trainer.opt_g.state_dict()["state"].values()])
state["restarts"] = torch.tensor(restarts)
state["first_batch_sum"] = torch.tensor(float(next(iter(trainer.loader))["audio"].sum()))
torch.save(state, out / f"rank{trainer.dist.rank}.pt")
trainer.close()
trainer.dist.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical(tmp_path):
    data = make_data_dir(tmp_path / "data", count=8)
    config = tiny_training_config(
        tmp_path,
        data,
        "discriminator.kinds=[mpd]",
        "train.max_steps=4",
        "train.grad_accum=2",
        "train.batch_size=2",
        "model.quantizer.dead_code_threshold=20.0",  # force dead-code restarts, which must be broadcast
        valid=False,
    )
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(to_dict(config)))
    (tmp_path / "worker.py").write_text(WORKER)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 rank(s) on cpu" in done.stderr
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert int(a["restarts"].sum()) > 0 and torch.equal(a["restarts"], b["restarts"])  # restarts happened, alike
    assert a["first_batch_sum"] != b["first_batch_sum"]  # the ranks trained on different data
    for key in a:
        if key not in ("first_batch_sum", "restarts"):
            assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "exp" / "checkpoints" / "step_00000004.pt").is_file()
