"""Every code block of README.md and docs/*.md that a user would paste runs as written.

A fenced block tagged bash, sh or python runs, unless the line right before it says why not:
`<!-- not run: REASON -->` (it installs packages, needs a microphone, trains for hours, ...) or
`<!-- run by tests/FILE.py ... -->` (another test runs it, with what it needs). The blocks of one page run in
order in one temporary folder that holds `in.wav` (the bundled speech clip) and `recordings/` (two short clips),
so a later block may use what an earlier one wrote. Shell blocks run under `bash -e -o pipefail` with `codec` on
the PATH (this checkout's package); Python blocks are executed as scripts. A block that names
`ws://127.0.0.1:8765` is pointed at a `codec serve` of the default model that this test starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = ("bash", "sh", "python")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!-- (not run: (?P<reason>.+?)|run by (?P<test>tests/\S+\.py)\b.*?) -->\s*$", re.S)
URL = "ws://127.0.0.1:8765"


def blocks(page: Path) -> list[tuple[int, str, str, re.Match | None]]:
    """(line, language, text, the mark before it) of every fenced block tagged with a language that runs."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) not in RUN:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append((text[: m.start()].count("\n") + 1, m.group(1), m.group(2), MARK.search(before + " ")))
    return found


def test_every_block_that_does_not_run_says_why():
    for page in PAGES:
        for line, _, _, mark in blocks(page):
            if mark is not None and mark.group("test"):
                test = ROOT / mark.group("test")
                assert test.is_file() and page.name in test.read_text(), f"{page.name}:{line}: {mark.group('test')}"
            elif mark is not None:
                assert len(mark.group("reason").split()) >= 3, f"{page.name}:{line}: say why it does not run"
    runnable = [page.name for page in PAGES for *_, mark in blocks(page) if mark is None]
    assert {"README.md", "STREAMING.md"} <= set(runnable)


@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("websockets")
    from conftest import start_server

    from codec import pretrained
    from codec.checkpoint import load_model
    from codec.runtimes.runtime import with_runtime

    return start_server(with_runtime(load_model(pretrained.default_model().name), "auto", live=True))


def _folder(tmp_path: Path) -> dict:
    """The page's working folder and the environment its shell blocks run in (`codec` = this checkout)."""
    clip, rate = sf.read(ROOT / "codec" / "assets" / "speech_en.flac", dtype="float32")
    sf.write(tmp_path / "in.wav", clip, rate, subtype="PCM_16")
    (tmp_path / "recordings").mkdir()
    for i in range(2):
        sf.write(tmp_path / "recordings" / f"r{i}.wav", np.roll(clip, 4000 * i)[: 2 * rate], rate, subtype="PCM_16")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "codec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m codec "$@"\n')
    shim.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath}


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(mark is None for *_, mark in blocks(p))], ids=lambda p: p.name
)
def test_page_runs_as_pasted(page, tmp_path, monkeypatch, request):
    env = _folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    for line, language, text, mark in blocks(page):
        if mark is not None:
            continue
        where = f"{page.name}:{line}"
        if URL in text:
            text = text.replace(URL, request.getfixturevalue("server_url"))
        if language == "python":
            exec(compile(text, where, "exec"), {"__name__": "__main__"})
            continue
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, f"{where} failed:\n{text}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr[-3000:]}"
