"""Rewrite a model file's provenance as `codec export` writes it now, leaving the weights (and so the model id)
untouched: absolute paths of the machine that trained it made portable (codec.train.export.portable_paths), and
the step count of a model fine-tuned from another one made the total (`--steps`, with `steps_this_run` keeping
the file's old count).

    python tools/model_metadata.py codec/pretrained/grvq16k.safetensors --steps 20500

Prints the provenance before and after; `--check` only says whether the file needs it (exit status 1 if so).
tests/test_pretrained.py checks that every shipped model's metadata holds no absolute path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from codec.checkpoint import load_model
from codec.train.export import portable_paths


def absolute_paths(value, where: str = "") -> list[str]:
    """Every string in `value` (a provenance table) that is an absolute path, with where it sits."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in absolute_paths(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in absolute_paths(v, f"{where}[{i}]")]
    return [f"{where}={value}"] if isinstance(value, str) and value.startswith("/") else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a .safetensors model file (rewritten in place)")
    ap.add_argument("--steps", type=int, default=None, help="all training steps of these weights")
    ap.add_argument("--check", action="store_true", help="only report; exit status 1 if the file needs rewriting")
    args = ap.parse_args()
    with safe_open(str(args.model), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    before = json.loads(metadata.get("provenance", "{}"))
    after = portable_paths(before, Path.cwd())
    if args.steps is not None and args.steps != before.get("steps"):
        after["steps_this_run"] = before.get("steps")
        after["steps"] = args.steps
        after.setdefault("init_from", before.get("training_config", {}).get("train", {}).get("init_from"))
    if args.check:
        found = absolute_paths(before)
        print("\n".join(found) or f"{args.model}: no absolute paths")
        return 1 if found or after != before else 0
    if after == before:
        print(f"{args.model}: nothing to change")
        return 0
    metadata["provenance"] = json.dumps(after)
    tmp = args.model.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    loaded = load_model(tmp)  # strict, and the weights still hash to the recorded id
    tmp.replace(args.model)
    short = {k: v for k, v in after.items() if k != "training_config"}
    print(f"{args.model}: id {loaded.model_id} unchanged; provenance now {json.dumps(short)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
