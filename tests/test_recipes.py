"""Recipes: the shared codec.sh, its data-dir tools, and every egs/<dataset> (layout, configs, data preparation).

Each recipe's local/data.sh runs (stage 1) against a miniature fake corpus laid out like the real one (its
directory and file naming, transcripts and speaker files, a few short generated clips), so every data.sh is
shown to parse the real layout. Nothing here needs the network; nothing reads ../shared/data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.config import load_model_config
from codec.models.codec import build_model
from codec.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EGS = ROOT / "egs"
RECIPES = ROOT / "recipes"
UTILS = RECIPES / "utils"
DATASETS = ["libritts", "librispeech", "vctk", "ljspeech", "aishell3", "musdb18", "folder", "mini"]

sys.path.insert(0, str(UTILS))
import datadir  # noqa: E402
import validate_data_dir  # noqa: E402


def write_audio(path: Path, seconds: float = 0.3, rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = np.stack(
        [
            0.3 * np.sin(2 * np.pi * (200 + 50 * c + seed) * t) + 0.01 * rng.standard_normal(t.size)
            for c in range(channels)
        ],
        axis=1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate)
    return path


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, shell=isinstance(cmd, str), **kw)
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def data_sh(recipe: str, corpus: Path, data: Path, *opts: str) -> dict[str, datadir.DataDir]:
    """Run a recipe's local/data.sh stage 1 into `data`; check and return its train/dev/test data dirs."""
    run(
        [
            "local/data.sh",
            "--stage",
            "1",
            "--stop_stage",
            "1",
            "--corpus_dir",
            str(corpus),
            "--data_dir",
            str(data),
            "--python",
            sys.executable,
            *opts,
        ],
        cwd=EGS / recipe,
    )
    dirs = {}
    for part in ("train", "dev", "test"):
        problems = validate_data_dir.check(data / part)
        assert not problems, problems
        dirs[part] = datadir.DataDir(data / part)
    return dirs


# --- layout ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", DATASETS)
def test_recipe_layout_and_symlinks(recipe):
    d = EGS / recipe
    for link, target in (("codec.sh", RECIPES / "codec.sh"), ("utils", UTILS)):
        path = d / link
        assert path.is_symlink(), f"{path} must be a symlink, not a copy"
        assert not os.path.isabs(os.readlink(path)), f"{path} must be a relative symlink"
        assert path.resolve() == target.resolve()
    for script in ("run.sh", "local/data.sh"):
        assert os.access(d / script, os.X_OK), f"{d / script} is not executable"
    assert "./codec.sh" in (d / "run.sh").read_text()
    assert len((d / "run.sh").read_text().splitlines()) <= 35
    header = (d / "local/data.sh").read_text().split("set -euo pipefail")[0]
    assert "Layout" in header or "layout" in header, f"{recipe}/local/data.sh needs a header giving the on-disk layout"


def test_every_symlink_under_egs_resolves():
    links = [p for p in EGS.rglob("*") if p.is_symlink()]
    assert len(links) >= 2 * len(DATASETS)
    for link in links:
        assert link.exists(), f"{link} -> {os.readlink(link)} does not resolve"


@pytest.mark.parametrize("config", sorted(EGS.glob("*/conf/*.yaml")), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_config_builds_a_model(config):
    cfg = load_config(config)
    model = build_model(cfg.model)
    assert model.sample_rate == cfg.model.sample_rate
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("recipe", DATASETS)
def test_recipe_has_16k_and_24k_configs(recipe):
    rates = {load_model_config(p).sample_rate for p in (EGS / recipe / "conf").glob("*.yaml")}
    assert {16000, 24000} <= rates, f"egs/{recipe}/conf has sample rates {sorted(rates)}"


# --- option parsing, markers, failures --------------------------------------------------------------------------
OPTS_SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
# begin options
alpha=1          # the first option
beta_gamma=x y   # spaced value
flag=false       # a boolean
# end options
. {utils}/parse_options.sh
echo "alpha=$alpha beta_gamma=$beta_gamma flag=$flag rest=$*"
"""


@pytest.fixture
def opts_script(tmp_path):
    path = tmp_path / "opts.sh"
    path.write_text(OPTS_SCRIPT.replace("{utils}", str(UTILS)).replace("beta_gamma=x y", 'beta_gamma="x y"'))
    path.chmod(0o755)
    return path


def test_parse_options_sets_declared_options(opts_script, tmp_path):
    out = run([str(opts_script), "--alpha", "2", "--beta-gamma=z", "--flag", "true", "pos"], cwd=tmp_path).stdout
    assert out.strip() == "alpha=2 beta_gamma=z flag=true rest=pos"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--undeclared", "1"], "unknown option --undeclared"),
        (["--flag", "yes"], "takes true or false"),
        (["--alpha"], "needs a value"),
        (["--PATH", "/x"], "unknown option --PATH"),  # a shell variable is not an option
    ],
)
def test_parse_options_rejects(opts_script, tmp_path, args, message):
    proc = run([str(opts_script), *args], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_parse_options_help_lists_every_option_with_default(opts_script, tmp_path):
    out = run([str(opts_script), "--help"], cwd=tmp_path).stdout
    assert "--alpha" in out and "[1]" in out and "the first option" in out
    assert "--beta_gamma" in out and "[x y]" in out and "--flag" in out and "[false]" in out


def test_codec_sh_rejects_undeclared_option_and_lists_all_in_help():
    proc = run(["./run.sh", "--no_such_option", "1"], cwd=EGS / "mini", check=False)
    assert proc.returncode == 1 and "unknown option --no_such_option" in proc.stderr
    help_text = run(["./run.sh", "--help"], cwd=EGS / "mini").stdout
    declared = [
        line.split("=")[0]
        for line in (RECIPES / "codec.sh")
        .read_text()
        .split("# begin options")[1]
        .split("# end options")[0]
        .splitlines()
        if "=" in line
    ]
    assert len(declared) > 20
    for name in declared:
        assert f"--{name} " in help_text
    assert "--train_config" in help_text and "[conf/mini.yaml]" in help_text  # the recipe's value


FAKE_DATA_SH = """#!/usr/bin/env bash
# A fake recipe's data preparation: counts its runs; fails while FAIL_PREP is set.
set -euo pipefail
# begin options
stage=0
stop_stage=1
corpus_dir=
data_dir=data
python=python
# end options
. utils/parse_options.sh
echo run >> prep_runs
[ -z "${FAIL_PREP:-}" ] || { echo "prep failed on purpose" >&2; exit 7; }
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for set in train dev test; do
    mkdir -p $data_dir/$set
    for i in 1 2 3; do echo "${set}_$i $corpus_dir/$set$i.wav"; done > $data_dir/$set/wav.scp
  done
fi
"""


@pytest.fixture
def fake_recipe(tmp_path):
    d = tmp_path / "egs" / "fake"
    (d / "local").mkdir(parents=True)
    (d / "conf").mkdir()
    os.symlink(os.path.relpath(RECIPES / "codec.sh", d), d / "codec.sh")
    os.symlink(os.path.relpath(UTILS, d), d / "utils")
    (d / "local/data.sh").write_text(FAKE_DATA_SH)
    (d / "local/data.sh").chmod(0o755)
    (d / "conf/mini.yaml").write_text((EGS / "mini/conf/mini.yaml").read_text())
    corpus = tmp_path / "corpus"
    for part in ("train", "dev", "test"):
        for i in (1, 2, 3):
            write_audio(corpus / f"{part}{i}.wav", seconds=0.6, rate=8000, seed=i)
    return d, corpus


def codec_sh(recipe: Path, corpus: Path, *opts: str, check: bool = True, env: dict | None = None):
    cmd = [
        "./codec.sh",
        "--python",
        sys.executable,
        "--corpus_dir",
        str(corpus),
        "--train_config",
        "conf/mini.yaml",
        "--nj",
        "2",
        *opts,
    ]
    return (
        subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
        if not check
        else run(cmd, cwd=recipe)
    )


def test_done_markers_skip_finished_stages(fake_recipe):
    recipe, corpus = fake_recipe
    first = codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "2")
    assert "[codec.sh stage 2]" in first.stdout and "finished in" in first.stdout
    flac = recipe / "dump/train/audio/train_1.flac"
    assert sf.info(str(flac)).samplerate == 16000  # resampled to the model rate
    assert (recipe / "dump/train/utt2dur").is_file() and (recipe / "data/.stage1.done").is_file()
    stamp = flac.stat().st_mtime_ns
    second = codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "2")
    assert second.stdout.count("skipped:") == 4  # data prep and the three formatted sets
    assert (recipe / "prep_runs").read_text().count("run") == 1
    assert flac.stat().st_mtime_ns == stamp
    times = (recipe / "exp/mini/stage_times.txt").read_text().split()
    assert times[0] == "1" and times[3] == "2"


def test_failed_stage_prints_the_resume_command(fake_recipe):
    recipe, corpus = fake_recipe
    proc = codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "1", check=False, env={"FAIL_PREP": "1"})
    assert proc.returncode == 7
    assert "prep failed on purpose" in proc.stderr
    assert "[codec.sh stage 1] failed" in proc.stderr and "resume with" in proc.stderr
    assert "./run.sh --stage 1" in proc.stderr and "./codec.sh --python" in proc.stderr
    assert not (recipe / "data/.stage1.done").exists()


def test_format_drops_short_and_long_training_utterances(fake_recipe):
    recipe, corpus = fake_recipe
    write_audio(corpus / "train1.wav", seconds=0.2, rate=8000)
    write_audio(corpus / "train2.wav", seconds=3.0, rate=8000)
    codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "2", "--min_seconds", "0.5", "--max_seconds", "2")
    assert datadir.DataDir(recipe / "dump/train").utterances() == ["train_3"]
    assert len(datadir.DataDir(recipe / "dump/test").utterances()) == 3  # test sets are never filtered


def test_decode_stage_codes_every_test_utterance_and_names_a_bad_one(fake_recipe):
    import torch

    from codec.checkpoint import save_model

    recipe, corpus = fake_recipe
    codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "2")
    torch.manual_seed(0)
    save_model(build_model(load_model_config(recipe / "conf/mini.yaml")), recipe / "exp/mini/model.safetensors")
    codec_sh(recipe, corpus, "--stage", "5", "--stop_stage", "5", "--bitrates", "2.4")
    out = recipe / "exp/mini/decode_test_2.4kbps"
    ids = ["test_1", "test_2", "test_3"]
    assert sorted(p.name for p in (out / "codes").iterdir()) == [f"{u}.codes" for u in ids]
    scp = dict(line.split() for line in (out / "wav.scp").read_text().splitlines())
    assert sorted(scp) == ids and all(sf.info(path).samplerate == 16000 for path in scp.values())

    (recipe / "dump/test/audio/test_2.flac").write_text("damaged")
    proc = codec_sh(recipe, corpus, "--stage", "5", "--stop_stage", "5", "--bitrates", "4.8", check=False)
    assert proc.returncode == 1
    assert "codec: failed: " in proc.stderr and "test_2.flac" in proc.stderr and "1 of 3 inputs failed" in proc.stderr
    assert "./run.sh --stage 5" in proc.stderr
    assert (recipe / "exp/mini/decode_test_4.8kbps/codes/test_1.codes").is_file()
    assert not (recipe / "exp/mini/decode_test_4.8kbps/.done").exists()


def plain_machine(tmp_path: Path, hidden: tuple[str, ...] = ("opusenc", "opusdec", "c2enc", "c2dec")) -> dict:
    """The environment of a machine without the baselines' tools: every PATH folder that holds one of `hidden` is
    replaced by a folder of links to the rest of its programs, and a `pycodec2` that fails to import comes first
    on PYTHONPATH (this checkout's codec next)."""
    path = []
    for i, folder in enumerate(os.environ["PATH"].split(os.pathsep)):
        folder = Path(folder)
        if not any((folder / tool).exists() for tool in hidden):
            path.append(str(folder))
            continue
        shim = tmp_path / "bin" / str(i)
        shim.mkdir(parents=True)
        for program in folder.iterdir():
            if program.name not in hidden:
                (shim / program.name).symlink_to(program)
        path.append(str(shim))
    fake = tmp_path / "site" / "pycodec2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'pycodec2' (hidden by the test)\")\n")
    return {"PATH": os.pathsep.join(path), "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}


def test_scoring_on_a_machine_without_baseline_tools_scores_the_model_and_says_what_to_install(fake_recipe, tmp_path):
    import shutil

    import torch

    from codec.checkpoint import save_model

    recipe, corpus = fake_recipe
    env = plain_machine(tmp_path)
    assert shutil.which("opusenc", path=env["PATH"]) is None and shutil.which("awk", path=env["PATH"])
    codec_sh(recipe, corpus, "--stage", "1", "--stop_stage", "2", env=env)
    torch.manual_seed(0)
    save_model(build_model(load_model_config(recipe / "conf/mini.yaml")), recipe / "exp/mini/model.safetensors")
    proc = codec_sh(
        recipe, corpus, "--stage", "5", "--stop_stage", "6", "--bitrates", "2.4",
        "--eval_args", "--metrics si_sdr,mel_distance --listen-clips 0", check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "baseline not run" in line]
    assert len(warnings) == 2, proc.stderr  # one per missing tool, naming what to install
    assert "opusenc and opusdec" in warnings[0] and "apt-get install opus-tools" in warnings[0]
    assert "pip install pycodec2" in warnings[1]
    results = (recipe / "RESULTS.md").read_text()
    assert "| mini16k 2.4 kbps | 2.400 |" in results  # the model is scored
    for label, kbps in (("opus 6 kbps", "6.000"), ("opus 12 kbps", "12.000"), ("codec2 0.7 kbps", "0.700")):
        assert f"| {label} | {kbps} | not run | – |" in results
    assert results.count("| not run |") == 6 and "Not run: the opus baseline needs" in results
    report = (recipe / "exp/mini/eval_test/summary.md").read_text()
    assert "- **opus 6 kbps**: not run: the opus baseline needs opusenc and opusdec" in report


# --- data-dir tools --------------------------------------------------------------------------------------------
def make_dir(path: Path, rows: dict[str, float], audio: Path, unsorted: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    items = list(rows.items())[::-1] if unsorted else list(rows.items())
    (path / "wav.scp").write_text("".join(f"{u} {audio / (u + '.wav')}\n" for u, _ in items))
    (path / "utt2dur").write_text("".join(f"{u} {s}\n" for u, s in items))
    (path / "utt2spk").write_text("".join(f"{u} {u.split('_')[0]}\n" for u, _ in items))
    for u, s in rows.items():
        if not (audio / f"{u}.wav").exists():
            write_audio(audio / f"{u}.wav", seconds=s)
    return path


def test_validate_accepts_a_good_dir_and_names_each_problem(tmp_path):
    audio = tmp_path / "audio"
    good = make_dir(tmp_path / "good", {"a_1": 0.3, "a_2": 0.5, "b_1": 0.4}, audio)
    assert validate_data_dir.check(good) == []
    bad = make_dir(tmp_path / "bad", {"a_1": 0.3, "a_2": 0.5, "b_1": 0.4}, audio, unsorted=True)
    with open(bad / "wav.scp", "a") as f:
        f.write(f"a_1 {audio / 'a_1.wav'}\nc_1 {audio / 'missing.wav'}\n")
    (bad / "utt2dur").write_text("a_1 0.3\na_2 0.9\nb_1 0.4\n")
    problems = "\n".join(validate_data_dir.check(bad))
    assert "not sorted" in problems
    assert "a_1 appears more than once" in problems
    assert "missing.wav not found" in problems
    assert "a_2 lists 0.900 s but its audio lasts 0.500 s" in problems
    assert "utt2dur: 1 utterances missing (e.g. c_1)" in problems


def test_fix_data_dir_sorts_dedups_and_intersects(tmp_path):
    audio = tmp_path / "audio"
    d = make_dir(tmp_path / "d", {"a_1": 0.3, "a_2": 0.5, "b_1": 0.4}, audio, unsorted=True)
    with open(d / "wav.scp", "a") as f:
        f.write(f"a_1 {audio / 'a_1.wav'}\nc_1 {audio / 'missing.wav'}\n")
    run([sys.executable, str(UTILS / "fix_data_dir.py"), str(d)], cwd=tmp_path)
    assert validate_data_dir.check(d) == []
    assert datadir.DataDir(d).utterances() == ["a_1", "a_2", "b_1"]
    assert (d / "spk2utt").read_text() == "a a_1 a_2\nb b_1\n"
    assert (d / ".backup/wav.scp").is_file()


def test_split_and_combine_round_trip(tmp_path):
    rows = {f"s{i}_{j}": 0.2 for i in range(3) for j in range(3)}
    d = make_dir(tmp_path / "d", rows, tmp_path / "audio")
    run([sys.executable, str(UTILS / "split_data_dir.py"), str(d), "4"], cwd=tmp_path)
    parts = [d / "split4" / str(i) for i in range(1, 5)]
    sizes = [len(datadir.DataDir(p).utterances()) for p in parts]
    assert sorted(sizes) == [2, 2, 2, 3]
    run([sys.executable, str(UTILS / "combine_data.py"), str(tmp_path / "all"), *map(str, parts)], cwd=tmp_path)
    for name in ("wav.scp", "utt2dur", "utt2spk"):
        assert (tmp_path / "all" / name).read_text() == (d / name).read_text()
    assert (tmp_path / "all" / "spk2utt").read_text() == "s0 s0_0 s0_1 s0_2\ns1 s1_0 s1_1 s1_2\ns2 s2_0 s2_1 s2_2\n"
    run([sys.executable, str(UTILS / "split_data_dir.py"), "--per-spk", str(d), "3"], cwd=tmp_path)
    for i in range(1, 4):
        assert len(set(datadir.DataDir(d / "split3" / str(i)).table("utt2spk").values())) == 1
    proc = run(
        [sys.executable, str(UTILS / "combine_data.py"), str(tmp_path / "x"), str(d), str(d)], cwd=tmp_path, check=False
    )
    assert proc.returncode == 1 and "in more than one" in proc.stderr


def test_segments_are_cut_by_format(tmp_path):
    rec = write_audio(tmp_path / "audio" / "long.wav", seconds=2.0, rate=8000)
    d = tmp_path / "seg"
    d.mkdir()
    (d / "wav.scp").write_text(f"long {rec}\n")
    (d / "segments").write_text("long_a long 0.0 0.5\nlong_b long 0.5 -1\n")
    assert validate_data_dir.check(d) == []
    run(
        [sys.executable, str(UTILS / "format_data.py"), "--sample-rate", "16000", str(d), str(tmp_path / "out")],
        cwd=tmp_path,
    )
    durations = datadir.DataDir(tmp_path / "out").table("utt2dur")
    assert durations == {"long_a": "0.5000", "long_b": "1.5000"}
    assert validate_data_dir.check(tmp_path / "out", need=("utt2dur",)) == []


# --- each recipe's data preparation against a fake corpus ---------------------------------------------------------
def test_libritts_data_sh(tmp_path):
    root = tmp_path / "corpus" / "LibriTTS"
    for part, spk in (("train-clean-100", "19"), ("train-clean-100", "26"), ("dev-clean", "84"), ("test-clean", "121")):
        chapter = root / part / spk / "198"
        for sent in ("000000_000001", "000000_000002"):
            utt = f"{spk}_198_{sent}"
            write_audio(chapter / f"{utt}.wav", rate=24000)
            (chapter / f"{utt}.normalized.txt").write_text(f"Normalized text of {utt}.")
            (chapter / f"{utt}.original.txt").write_text(f"Original text of {utt}.")
        (chapter / f"{spk}_198.trans.tsv").write_text("")
        (chapter / f"{spk}_198.book.tsv").write_text("")
    (root / "speakers.tsv").write_text("READER\tGENDER\tSUBSET\tNAME\n")
    dirs = data_sh("libritts", tmp_path / "corpus", tmp_path / "data")
    assert dirs["train"].utterances() == [
        "19_198_000000_000001",
        "19_198_000000_000002",
        "26_198_000000_000001",
        "26_198_000000_000002",
    ]
    assert dirs["dev"].table("utt2spk") == {"84_198_000000_000001": "84", "84_198_000000_000002": "84"}
    assert dirs["test"].table("text")["121_198_000000_000002"] == "Normalized text of 121_198_000000_000002."


def test_librispeech_data_sh(tmp_path):
    root = tmp_path / "corpus" / "LibriSpeech"
    for part, spk in (
        ("train-clean-100", "103"),
        ("train-clean-100", "1034"),
        ("dev-clean", "1272"),
        ("test-clean", "1089"),
    ):
        chapter = root / part / spk / "1240"
        lines = []
        for n in ("0000", "0001"):
            write_audio(chapter / f"{spk}-1240-{n}.flac")
            lines.append(f"{spk}-1240-{n} CHAPTER ONE WORDS {n}")
        (chapter / f"{spk}-1240.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "SPEAKERS.TXT").write_text(";ID|SEX|SUBSET|MINUTES|NAME\n")
    dirs = data_sh("librispeech", tmp_path / "corpus", tmp_path / "data")
    assert len(dirs["train"].utterances()) == 4
    assert dirs["train"].table("utt2spk")["1034-1240-0001"] == "1034"
    assert dirs["test"].table("text")["1089-1240-0000"] == "CHAPTER ONE WORDS 0000"


def test_vctk_data_sh(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    for spk in ("p225", "p226", "p345", "p360", "p315"):
        for n in ("001", "002"):
            for mic in ("mic1", "mic2"):
                write_audio(root / "wav48_silence_trimmed" / spk / f"{spk}_{n}_{mic}.flac", rate=48000)
            if spk != "p315":  # as in the real corpus: p315 has no transcripts
                (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
                (root / "txt" / spk / f"{spk}_{n}.txt").write_text(f"Please call Stella {spk} {n}.\n")
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n")
    dirs = data_sh("vctk", root, tmp_path / "data", "--dev_speakers", "p345", "--test_speakers", "p360")
    assert dirs["train"].utterances() == ["p225_001", "p225_002", "p226_001", "p226_002", "p315_001", "p315_002"]
    assert "mic1" in dirs["train"].table("wav.scp")["p225_001"]
    assert "text" not in dirs["train"].tables  # p315 has none: transcripts are optional for a codec
    assert dirs["dev"].table("text") == {
        "p345_001": "Please call Stella p345 001.",
        "p345_002": "Please call Stella p345 002.",
    }
    assert dirs["test"].table("utt2spk") == {"p360_001": "p360", "p360_002": "p360"}


def test_ljspeech_data_sh(tmp_path):
    root = tmp_path / "corpus" / "LJSpeech-1.1"
    ids = [f"LJ001-{n:04d}" for n in range(1, 7)]
    for utt in ids:
        write_audio(root / "wavs" / f"{utt}.wav", rate=22050)
    (root / "metadata.csv").write_text(
        "".join(f"{u}|Raw text {u}, Mr. X.|Normalized text {u}, Mister X.\n" for u in ids)
    )
    (root / "README").write_text("LJ Speech\n")
    dirs = data_sh("ljspeech", tmp_path / "corpus", tmp_path / "data", "--num_dev", "2", "--num_test", "1")
    assert dirs["train"].utterances() == ids[:3]
    assert dirs["dev"].utterances() == ids[3:5] and dirs["test"].utterances() == ids[5:]
    assert dirs["test"].table("text")["LJ001-0006"] == "Normalized text LJ001-0006, Mister X."


def test_aishell3_data_sh(tmp_path):
    root = tmp_path / "aishell3"
    (root).mkdir()
    (root / "spk-info.txt").write_text("# speaker\tage\tgender\taccent\nSSB0005\tA\tfemale\tnorth\n")
    for part, speakers in (("train", ("SSB0005", "SSB0009", "SSB0011")), ("test", ("SSB0016",))):
        lines = []
        for spk in speakers:
            for n in ("0001", "0002"):
                write_audio(root / part / "wav" / spk / f"{spk}{n}.wav", rate=44100)
                lines.append(f"{spk}{n}.wav\t广 guang3 州 zhou1 女 nv3\n")
        (root / part / "content.txt").write_text("".join(lines))
    (root / "train" / "label_train-set.txt").write_text("# labels\n")
    dirs = data_sh("aishell3", root, tmp_path / "data", "--num_dev_speakers", "1")
    assert set(dirs["train"].table("utt2spk").values()) == {"SSB0005", "SSB0009"}
    assert dirs["dev"].utterances() == ["SSB00110001", "SSB00110002"]
    assert dirs["test"].table("text")["SSB00160001"] == "广州女"


def test_musdb18_data_sh(tmp_path):
    root = tmp_path / "musdb18hq"
    tracks = {
        "train": ["A Classic Education - NightOwl", "Actions - One Minute Smile", "Johnny Lokke - Promises & Lies"],
        "test": ["Al James - Schoolboy Facination"],
    }
    for part, names in tracks.items():
        for i, name in enumerate(names):
            for stem in ("drums", "bass", "other", "vocals"):
                write_audio(root / part / name / f"{stem}.wav", rate=44100, channels=2, seed=i)
            if name != "A Classic Education - NightOwl":  # this one has only its stems: they get mixed
                write_audio(root / part / name / "mixture.wav", rate=44100, channels=2, seed=i)
    data = tmp_path / "data"
    dirs = data_sh("musdb18", root, data)
    assert dirs["train"].utterances() == ["music_A_Classic_Education___NightOwl"]
    mix = Path(dirs["train"].table("wav.scp")["music_A_Classic_Education___NightOwl"])
    assert mix.parent == (data / "local" / "mixtures").resolve() and sf.info(str(mix)).channels == 2
    stems = sum(
        sf.read(str(root / "train" / tracks["train"][0] / f"{s}.wav"))[0] for s in ("drums", "bass", "other", "vocals")
    )
    np.testing.assert_allclose(sf.read(str(mix))[0], stems / max(1.0, np.abs(stems).max()), atol=1e-3)
    assert dirs["dev"].utterances() == ["music_Actions___One_Minute_Smile", "music_Johnny_Lokke___Promises___Lies"]
    assert dirs["dev"].table("utt2spk")["music_Actions___One_Minute_Smile"] == "Actions"
    assert dirs["test"].table("wav.scp")["music_Al_James___Schoolboy_Facination"].endswith("mixture.wav")


def test_folder_data_sh_splits_by_path_hash(tmp_path):
    corpus = tmp_path / "audio"
    for i in range(40):
        write_audio(corpus / ("speech" if i % 2 else "music") / f"src{i % 3}" / f"clip {i}.flac", seconds=0.2, seed=i)
    heldout = tmp_path / "held"
    for i in range(8):
        write_audio(heldout / "speech" / f"h{i}.wav", seconds=0.2, seed=i)
    dirs = data_sh("folder", corpus, tmp_path / "data", "--dev_percent", "20", "--test_percent", "20")
    split = {p: set(d.utterances()) for p, d in dirs.items()}
    assert sum(map(len, split.values())) == 40 and all(split.values())
    assert "speech-src1-clip_1" in set.union(*split.values())
    assert dirs["train"].table("utt2spk")[next(iter(split["train"]))].split("-")[0] in ("speech", "music")
    # adding files never moves the old ones
    for i in range(40, 60):
        write_audio(corpus / "speech" / "new" / f"c{i}.wav", seconds=0.2, seed=i)
    again = data_sh("folder", corpus, tmp_path / "data2", "--dev_percent", "20", "--test_percent", "20")
    for part in split:
        assert split[part] <= set(again[part].utterances())
    held = data_sh("folder", corpus, tmp_path / "data3", "--heldout_dir", str(heldout))
    assert len(held["train"].utterances()) == 60
    assert len(held["dev"].utterances()) + len(held["test"].utterances()) == 8


def test_mini_data_sh_generates_its_corpus(tmp_path):
    dirs = data_sh("mini", tmp_path / "mini", tmp_path / "data")
    assert [len(d.utterances()) for d in dirs.values()] == [36, 9, 9]
    assert "speech_spk1_001" in dirs["train"].utterances() and "music_inst1_006" in dirs["test"].utterances()


# --- the mini recipe end to end (CI) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """egs/mini copied to a temporary dir (links kept) and run through every stage it can."""
    work = tmp_path_factory.mktemp("egs") / "mini"
    (work / "local").mkdir(parents=True)
    for item in ("run.sh", "local/data.sh", "local/make_audio.py"):
        (work / item).write_bytes((EGS / "mini" / item).read_bytes())
        (work / item).chmod(0o755)
    (work / "conf").mkdir()
    (work / "conf/mini.yaml").write_text((EGS / "mini/conf/mini.yaml").read_text())
    os.symlink(RECIPES / "codec.sh", work / "codec.sh")
    os.symlink(UTILS, work / "utils")
    proc = subprocess.run(
        ["./run.sh", "--python", sys.executable, "--stop_stage", "8"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return work, proc


@pytest.mark.slow
def test_mini_recipe_end_to_end(mini_run):
    work, proc = mini_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = (work / "RESULTS.md").read_text()
    assert "mini16k" in results and "## Test set `test`" in results
    for system in ("mini16k", "opus", "codec2"):
        assert system in results
    assert (work / "exp/mini/model.safetensors").is_file()
    decoded = list((work / "exp/mini/decode_test_4.8kbps/wav").glob("*.wav"))
    assert len(decoded) == 9  # every test utterance


@pytest.mark.slow
def test_mini_recipe_tokens(mini_run):
    work, proc = mini_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for part in ("train", "test"):
        out = work / "exp/mini" / f"tokens_{part}"
        assert (out / ".done").is_file()
        assert [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".log", ".done") and p.name != ".done"]
    assert "## Tokens" in (work / "RESULTS.md").read_text()


@pytest.mark.slow
def test_mini_recipe_fits_entropy_tables_beside_the_model(mini_run):
    from codec.checkpoint import load_model
    from codec.format import entropy

    work, proc = mini_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = load_model(work / "exp/mini/model.safetensors")
    assert entropy.tables_for(model) is not None  # exp/mini/model.entropy, keyed to the exported model
