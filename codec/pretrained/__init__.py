"""Models that ship inside the package, listed in `registry.json` beside this file.

Each entry: {"name", "file" (relative to this folder), "description", "default": bool}. `retired` lists weights
that once shipped under a name and no longer do ({"id", "name", "where"}), so that a `.codes` file they made
can still be traced to the model that decodes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    description: str
    default: bool


def _registry() -> dict:
    return json.loads((HERE / "registry.json").read_text())


def shipped_models() -> list[ShippedModel]:
    data = _registry()
    return [
        ShippedModel(m["name"], HERE / m["file"], m.get("description", ""), bool(m.get("default", False)))
        for m in data["models"]
    ]


def find(name: str) -> ShippedModel | None:
    return next((m for m in shipped_models() if m.name == name), None)


def default_model() -> ShippedModel | None:
    return next((m for m in shipped_models() if m.default), None)


def retired_model(model_id: str) -> str | None:
    """'name (where to find it)' for weights that shipped once and were replaced, by model id prefix."""
    for old in _registry().get("retired", []):
        if model_id and old["id"].startswith(model_id):
            return f"{old['name']} ({old['where']})"
    return None
