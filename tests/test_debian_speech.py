"""egs/debian_speech: converting unpacked Debian speech packages to a FLAC corpus, and its data dirs.

A tiny fake package tree laid out like Asterisk's sound packages (usr/share/asterisk/sounds/<voice>/..., a DEP-5
copyright file, a changelog) with generated recordings; no network, no apt, nothing from ../shared/data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "debian_speech"
sys.path.insert(0, str(ROOT / "recipes" / "utils"))
import datadir  # noqa: E402
import validate_data_dir  # noqa: E402

PROMPTS = [f"prompt-{i}" for i in range(12)] + ["digits/1", "digits/2", "letters/a b"]
COPYRIGHT = """Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fake-sounds

Files: *
Copyright: 2003-2010, Voice One
License: CC-BY-SA-3.0

Files: fr-*
Copyright: 2006-2008, Voix Deux
License: CC-BY-SA-3.0

Files: ru-*
Copyright: 2010, Golos Tri
License: CC-BY-3.0

Files: debian/*
Copyright: 2010, A Packager
License: GPL-2+
"""


def tone(seconds: float, rate: int = 16000, channels: int = 1, level: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = level * np.sin(2 * np.pi * (180 + 20 * seed) * t) + level * 0.03 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def fake_package(src: Path, package: str, voice: str, seed: int) -> Path:
    tree = src / package
    sounds = tree / "usr/share/asterisk/sounds" / voice
    for i, prompt in enumerate(PROMPTS):
        path = sounds / f"{prompt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        # one file at 44.1 kHz stereo, one at 8 kHz, the rest 16 kHz mono: all must come out 16 kHz mono
        rate, channels = {0: (44100, 2), 1: (8000, 1)}.get(i, (16000, 1))
        sf.write(path, tone(0.7, rate, channels, seed=seed + i), rate)
    (sounds / "silence").mkdir()
    sf.write(sounds / "silence/1.wav", np.zeros(16000, np.float32), 16000)  # non-speech by name
    sf.write(sounds / "quiet.wav", tone(1.0, level=1e-4), 16000)  # near-silent
    sf.write(sounds / "short.wav", tone(0.2), 16000)  # too short
    (sounds / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")  # unreadable
    doc = tree / "usr/share/doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as fh:
        fh.write(f"{package} (1.6.1-1) unstable; urgency=low\n")
    return tree


def run(cmd: list[str], cwd: Path = RECIPE, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ})
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("debian_speech")
    src, corpus = tmp / "src", tmp / "corpus"
    fake_package(src, "fake-sounds-en-g722", "en_US_f_One", seed=0)
    fake_package(src, "fake-sounds-fr-g722", "fr_CA_f_Deux", seed=50)
    proc = run(
        [
            sys.executable,
            "local/convert_packages.py",
            str(src),
            str(corpus),
            "fake-sounds-en-g722",
            "fake-sounds-fr-g722",
        ]
    )
    return corpus, proc


def test_recipe_layout():
    for link in ("codec.sh", "utils"):
        assert (RECIPE / link).is_symlink() and not os.path.isabs(os.readlink(RECIPE / link))
        assert (RECIPE / link).exists()
    for script in ("run.sh", "local/data.sh", "local/convert_packages.py", "local/prepare_data.py"):
        assert os.access(RECIPE / script, os.X_OK), script
    assert len((RECIPE / "run.sh").read_text().splitlines()) <= 35
    header = (RECIPE / "local/data.sh").read_text().split("set -euo pipefail")[0]
    assert "Layout" in header and "apt-get download" in header and "--stage 1" in header


def test_convert_writes_16k_mono_flac_and_skips_the_bad_files(corpus):
    corpus, proc = corpus
    assert "skipped unreadable" in proc.stderr and "broken.wav" in proc.stderr  # a message, and the run went on
    rows = [line.split("\t") for line in (corpus / "manifest.tsv").read_text().splitlines()[1:]]
    assert len(rows) == 2 * len(PROMPTS)  # silence/, quiet, short and broken dropped in each package
    utts = {r[0]: r for r in rows}
    assert "en_US_f_One-digits-1" in utts and "fr_CA_f_Deux-letters-a_b" in utts
    for utt, speaker, _prompt, _package, seconds, rel in rows:
        assert " " not in utt and " " not in rel and utt.startswith(speaker + "-")
        info = sf.info(str(corpus / rel))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        assert abs(info.frames / 16000 - float(seconds)) < 1e-3
    sources = {r.split("\t")[0]: r.split("\t") for r in (corpus / "SOURCES.tsv").read_text().splitlines()[1:]}
    en, fr = sources["fake-sounds-en-g722"], sources["fake-sounds-fr-g722"]
    assert en[1] == "1.6.1-1" and en[3] == str(len(PROMPTS))
    assert "unreadable:1" in en[4] and "short:1" in en[4] and "silent:1" in en[4] and "non-speech:1" in en[4]
    assert en[6] == "CC-BY-SA-3.0" and "Voice One" in en[7]  # the Files: * stanza
    assert fr[6] == "CC-BY-SA-3.0" and "Voix Deux" in fr[7]  # its own language's stanza
    assert "fake-sounds-fr-g722" in (corpus / "LICENSES.md").read_text()
    assert (corpus / "licenses/fake-sounds-en-g722.copyright").read_text() == COPYRIGHT


def test_data_sh_splits_by_prompt_so_no_prompt_crosses(corpus, tmp_path):
    corpus, _ = corpus
    data = tmp_path / "data"
    run(["local/data.sh", "--stage", "1", "--corpus_dir", str(corpus), "--data_dir", str(data),
         "--dev_percent", "40", "--python", sys.executable])  # fmt: skip
    dirs = {part: datadir.DataDir(data / part) for part in ("train", "dev")}
    for part in dirs:
        assert not validate_data_dir.check(data / part)  # files present, readable, utt2dur matches the audio
    prompts = {p: {u.split("-", 1)[1] for u in d.utterances()} for p, d in dirs.items()}
    assert prompts["train"] and prompts["dev"] and not prompts["train"] & prompts["dev"]
    for part, d in dirs.items():  # a dev prompt is in dev for every voice
        assert len(d.utterances()) == 2 * len(prompts[part])
        spk = d.table("utt2spk")
        assert set(spk.values()) == {"en_US_f_One", "fr_CA_f_Deux"}
        assert all(Path(p).is_absolute() and p.endswith(".flac") for p in d.table("wav.scp").values())
    # the split depends only on the prompt name: a second run gives the same one
    again = tmp_path / "again"
    run([sys.executable, "local/prepare_data.py", str(corpus), str(again), "--dev-percent", "40"])
    assert datadir.DataDir(again / "dev").utterances() == dirs["dev"].utterances()


def test_a_g722_file_without_a_decoder_stops_with_the_fix(tmp_path):
    if ctypes.util.find_library("spandsp"):
        pytest.skip("libspandsp is installed here")
    sounds = tmp_path / "src/pkg/usr/share/asterisk/sounds/xx_f_V"
    sounds.mkdir(parents=True)
    (sounds / "hello.g722").write_bytes(bytes(range(256)) * 40)
    proc = run([sys.executable, "local/convert_packages.py", str(tmp_path / "src"), str(tmp_path / "c"), "pkg",
                "--spandsp-dir", str(tmp_path / "none")], check=False)  # fmt: skip
    assert proc.returncode == 1 and "libspandsp" in proc.stderr and "--stage 0" in proc.stderr


def test_g722_round_trip_through_spandsp():
    """Encode a tone with spandsp and decode it with local/g722.py (needs libspandsp: set SPANDSP_DIR to a
    `dpkg -x` tree of libspandsp2, e.g. CORPUS_DIR/src/libspandsp2, or install it)."""
    sys.path.insert(0, str(RECIPE / "local"))
    import g722

    try:
        lib = g722.load_spandsp(os.environ.get("SPANDSP_DIR"))
    except OSError as e:
        pytest.skip(str(e))
    lib.g722_encode_init.restype = ctypes.c_void_p
    lib.g722_encode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    t = np.arange(8000) / 16000
    x = (0.4 * np.sin(2 * np.pi * (100 * t + 6000 * t**2)) * 32767).astype(np.int16)  # chirp 100 Hz -> 6.1 kHz
    state = lib.g722_encode_init(None, 64000, 0)
    data = np.zeros(len(x) // 2, np.uint8)
    n = lib.g722_encode(state, data.ctypes.data, x.ctypes.data, len(x))
    lib.g722_encode_free.argtypes = [ctypes.c_void_p]
    lib.g722_encode_free(state)
    assert n == len(x) // 2  # 64 kbit/s: one byte per two samples
    y = g722.decode_g722(data.tobytes())
    assert y.dtype == np.float32 and len(y) == len(x)
    ref = x.astype(np.float32) / 32768
    lag = int(np.argmax(np.correlate(y[:4000], ref[:2000], mode="valid")))  # the QMF delay, a few samples
    assert lag < 64
    err = y[lag + 1000 : 7000] - ref[1000 : 7000 - lag]
    assert 10 * np.log10(np.mean(ref[1000:7000] ** 2) / np.mean(err**2)) > 20  # SNR of 64 kbit/s G.722
    with pytest.raises(ValueError, match="empty"):
        g722.decode_g722(b"")
