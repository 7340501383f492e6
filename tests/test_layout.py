"""The package's folders are its layers (docs/DESIGN_NOTES.md, "Layout"): no folder imports one above it, and the
public paths of moved modules are the moved modules themselves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).parents[1] / "codec"
# the core: small cross-cutting modules at the root and the model itself; everything else builds on it
CORE = {"models", "modules", "quantization", "kernels", "pretrained"}
TOP = {"cli", "__main__"}
SHIMS = {
    "compress": "codec.coding.compress",
    "streaming": "codec.coding.streaming",
    "serve": "codec.server.serve",
    "runtime": "codec.runtimes.runtime",
    "onnx_runtime": "codec.runtimes.onnx_runtime",
}


def group(module: str) -> str:
    """The folder a module `codec.X...` belongs to: `core`, `cli` or the subpackage's name."""
    parts = module.split(".")
    if len(parts) > 1 and (ROOT / parts[1]).is_dir():
        return "core" if parts[1] in CORE else parts[1]
    return "cli" if len(parts) > 1 and parts[1] in TOP else "core"  # a root module, or a name from `codec`


def imports() -> dict[str, set[str]]:
    """Folder -> folders its modules import, type-checking imports and the public shims left out."""
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        if rel.parts[-1] in SHIMS and len(rel.parts) == 2:
            continue
        module = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, ast.ImportFrom | ast.Import):
                continue
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.module == "codec":
                names = [f"codec.{a.name}" for a in node.names]
            for name in names:
                if name and name.split(".")[0] == "codec" and name != "codec":
                    edges.setdefault(group(module), set()).add(group(name))
    return edges


def test_folders_import_one_way():
    edges = imports()
    assert edges["core"] <= {"core"}, "the core imports a folder built on it"
    assert all("train" not in targets for folder, targets in edges.items() if folder not in {"train", "cli"})
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(folder: str, path: list[str]) -> None:
        seen[folder] = 1
        for target in edges.get(folder, set()) - {folder}:
            assert seen.get(target) != 1, f"folders import in a cycle: {' -> '.join([*path, folder, target])}"
            if target not in seen:
                visit(target, [*path, folder])
        seen[folder] = 2

    for folder in edges:
        if folder not in seen:
            visit(folder, [])


def test_public_paths_are_the_moved_modules():
    for old, new in SHIMS.items():
        assert importlib.import_module(f"codec.{old}") is importlib.import_module(new)
    from codec.serve import encode_remote  # the client's names, as documented
    from codec.server.client import encode_remote as moved

    assert encode_remote is moved
