"""The README's Python example runs as written, and its command lines name real verbs and options."""

from __future__ import annotations

import re
from pathlib import Path

from codec.cli import build_parser

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_python_example_runs_as_pasted():
    """Nothing defined beforehand: the block runs as a user pastes it (tests/test_docs.py runs every page)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__main__"})


def test_cli_lines_name_real_verbs_and_options():
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    lines = re.findall(r"^codec (\w[\w-]*)(.*)$", README, re.M)
    assert {verb for verb, _ in lines} >= {"encode", "decode", "info", "models", "demo"}
    for verb, rest in lines:
        assert verb in verbs, verb
        known = {opt for action in verbs[verb]._actions for opt in action.option_strings}
        for option in re.findall(r"(--[\w-]+)", rest.split("#")[0]):
            assert option in known, f"README: codec {verb} has no option {option}"
