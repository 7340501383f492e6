"""ONNX export: every shipped config (shrunk, random weights) exports; ONNX Runtime gives torch's codes and audio."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.config import builtin_config_path, load_model_config
from codec.errors import CodecError
from codec.models.codec import build_model
from codec.quantization.search import TIE_RTOL
from tests.conftest import tone
from tests.near_ties import ONNX_TIE_RTOL, parting_gaps

pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from codec.runtimes.export_onnx import export_onnx  # noqa: E402
from codec.runtimes.onnx_runtime import OnnxDecoder, OnnxEncoder, OnnxSide  # noqa: E402

CONFIGS = sorted(p.stem for p in (Path(builtin_config_path("tiny")).parent).glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[1]
# every config under codec/configs/, the istft decoder head (the recipe's arm and on tiny), and the quantizer's
# training-only choices (simvq codebooks, the rotation trick), which must not change inference
VARIANTS = {name: (builtin_config_path(name), []) for name in CONFIGS} | {
    "grvq16k_cpu_istft": (ROOT / "egs" / "folder" / "conf" / "grvq16k_cpu_istft.yaml", []),
    "tiny_istft": (builtin_config_path("tiny"), ["decoder.head=istft", "decoder.istft_stage=1"]),
    "tiny_simvq_rotation": (
        builtin_config_path("tiny"),
        ["quantizer.codebook_update=simvq", "quantizer.gradient=rotation"],
    ),
}
AUDIO_TOLERANCE = 1e-4  # decoded audio, ONNX Runtime against torch, max abs (float rounding of other kernels)
SHRINK = ["encoder.channels=4", "decoder.channels=4", "encoder.max_channels=16", "decoder.max_channels=16",
          "quantizer.codebook_size=16", "latent_dim=16"]  # fmt: skip
# the spectral family keeps its STFT sizes (hop, n_fft, overlap) and shrinks its blocks; FSQ levels for 16 codes
SHRINK_SPECTRAL = ["spectral.encoder_channels=16", "spectral.decoder_channels=16", "spectral.encoder_blocks=1",
                   "spectral.decoder_blocks=1"]  # fmt: skip


def shrunk(name: str):
    """The variant's architecture (patching, skips, LSTMs, factorized codes, ratios, head; or the spectral
    family's STFT sizes and level type) at a test's size."""
    path, extra = VARIANTS[name]
    full = load_model_config(path, [f"model.{o}" for o in extra])
    shrink = SHRINK + (SHRINK_SPECTRAL if full.family == "spectral" else [])
    if full.quantizer.level_type == "fsq":
        shrink = [*shrink, "quantizer.fsq_levels=[4, 4]"]
    torch.manual_seed(0)
    model = build_model(load_model_config(path, [f"model.{o}" for o in shrink + extra])).eval()
    q = model.quantizer
    with torch.no_grad():
        if q.codebook_update == "simvq":  # a learned map that is not the identity: the codebooks are basis @ map
            q.transform.add_(0.3 * torch.randn_like(q.transform))
        if q.level_type == "fsq":  # FSQ off its identity start: turned directions, other steps, a centre
            for p in (q.fsq_directions, q.fsq_log_step, q.fsq_center):
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_config_exports_and_onnx_runtime_matches_torch(tmp_path, name):
    model = shrunk(name)
    manifest = export_onnx(model, tmp_path)
    assert manifest["hop_length"] == model.hop_length and manifest["levels"] == model.num_levels
    frames = 12
    audio = tone(frames * model.hop_length / model.sample_rate, model.sample_rate)
    x = torch.from_numpy(audio)[None]
    assert manifest["frames_per_call"] == "any"
    for per_call in (1, 5, 100):  # one frame per graph call (live), or blocks of frames (files)
        codes = OnnxEncoder(tmp_path, frames_per_call=per_call).encode(audio)
        differ, total, gap = parting_gaps(model, x, codes)
        assert gap <= ONNX_TIE_RTOL, f"{differ} of {total} frames part from torch's codes at a gap of {gap:.1e}"
    reference = model.encode(x).numpy()  # the decoders get the same codes
    for levels in (1, model.num_levels):
        prefix = reference[:, : levels * model.num_groups]
        expected = model.decode(torch.from_numpy(prefix)).numpy()
        for decoder in (OnnxDecoder(tmp_path), OnnxDecoder(tmp_path, frames_per_call=5)):
            decoded = decoder.decode(prefix)
            assert decoded.shape == expected.shape
            assert np.abs(decoded - expected).max() < AUDIO_TOLERANCE, f"levels={levels}"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, tiny_model_file):
    out = tmp_path_factory.mktemp("onnx")
    done = subprocess.run([sys.executable, "-m", "codec", "export-onnx", str(tiny_model_file), str(out), "-l", "3"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 levels" in done.stdout
    return out


def test_cli_manifest_names_shapes_and_model(tiny_onnx, tiny_model):
    manifest = json.loads((tiny_onnx / "manifest.json").read_text())
    assert manifest["model_id"] == tiny_model.model_id and manifest["levels"] == 3
    assert manifest["pad_code"] == tiny_model.codebook_size
    state = dict(tiny_model.new_streaming_state(1))
    for spec in manifest["encoder"]["states"] + manifest["decoder"]["states"]:
        layer, key = spec["layer"].split(":")
        assert spec["shape"] == list(state[layer][key].shape)


def test_bad_onnx_dirs_are_one_line_errors(tmp_path, tiny_onnx):
    with pytest.raises(CodecError, match="export-onnx"):
        OnnxSide(tmp_path, "encoder")  # no manifest
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((tiny_onnx / "manifest.json").read_text())
    (broken / "encoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(CodecError, match="export the model again"):
        OnnxSide(broken, "encoder")


def test_docs_example_streams_a_wav_without_torch(tmp_path, tiny_onnx, tiny_model):
    """The example in docs/ONNX.md runs with numpy and onnxruntime alone and gives the runner's codes."""
    text = (Path(__file__).parents[1] / "docs" / "ONNX.md").read_text()
    example = re.search(r"```python\n(# onnx_stream\.py.*?)```", text, re.S).group(1)
    script = tmp_path / "onnx_stream.py"
    script.write_text(example)
    sf.write(tmp_path / "in.wav", tone(0.5, 8000).T, 8000, subtype="PCM_16")
    audio = sf.read(tmp_path / "in.wav", dtype="float32")[0][None]  # what the example reads: int16 / 32768
    block_torch = "import sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; exec(open(sys.argv[0]).read())"
    args = [script, tiny_onnx, tmp_path / "in.wav", tmp_path / "codes.npy", tmp_path / "out.wav"]
    done = subprocess.run([sys.executable, "-c", block_torch, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    codes = np.load(tmp_path / "codes.npy")
    assert np.array_equal(codes, OnnxEncoder(tiny_onnx).encode(audio)[0])  # the runner's codes, bit for bit
    _, _, gap = parting_gaps(tiny_model, torch.from_numpy(audio)[None], codes[None], 3)
    assert gap <= ONNX_TIE_RTOL  # and torch's but at near-ties
    decoded, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 8000 and decoded.shape == (codes.shape[-1] * tiny_model.hop_length,)


def test_the_package_runner_works_with_torch_unimportable(tiny_onnx, tmp_path):
    """`import codec` does not import torch: a service with the package installed runs the graphs without it."""
    audio = tone(0.3, 8000)
    np.save(tmp_path / "audio.npy", audio)
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, codec\n"
        "from codec.runtimes.onnx_runtime import OnnxDecoder, OnnxEncoder\n"
        f"codes = OnnxEncoder({str(tiny_onnx)!r}).encode(np.load({str(tmp_path / 'audio.npy')!r}))\n"
        f"np.save({str(tmp_path / 'codes.npy')!r}, codes)\n"
        f"print(OnnxDecoder({str(tiny_onnx)!r}).decode(codes).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.load(tmp_path / "codes.npy"), OnnxEncoder(tiny_onnx).encode(audio))


@pytest.mark.parametrize("fsq_levels", [[4, 4], [2, 8], [2, 2, 2, 2]])
def test_fsq_search_by_rounding_gives_the_reference_codes_but_at_near_ties(fsq_levels):
    """The graphs search FSQ levels by rounding the projected residual (`FsqSearch`), not over the codebook: the
    reference search's codes, but where two codewords score within rounding of each other."""
    from codec.quantization.fsq import FsqSearch
    from codec.quantization.search import search_torch

    path, _ = VARIANTS["spectral16k"]
    shrink = SHRINK + SHRINK_SPECTRAL + [f"quantizer.fsq_levels={fsq_levels}"]
    torch.manual_seed(1)
    model = build_model(load_model_config(path, [f"model.{o}" for o in shrink])).eval()
    q = model.quantizer
    with torch.no_grad():
        for p in (q.fsq_directions, q.fsq_log_step, q.fsq_center):
            p.add_(0.3 * torch.randn_like(p))
    q._sync_codebooks()
    residual = 2 * torch.randn(3000, q.num_groups, q.codebook_dim)
    with torch.no_grad():
        got = FsqSearch(q, q.num_levels)(residual.flatten(1)).view(-1, q.num_levels, q.num_groups)
    ref, _ = search_torch(residual, q.codebooks, q.num_levels, "euclidean")
    assert len(torch.unique(got[:, 0])) > q.codebook_size // 2  # the rounding reaches most of the codebook
    r, books, groups = residual.double(), q.codebooks.double(), torch.arange(q.num_groups)[None]
    parted = torch.zeros(r.shape[0], q.num_groups, dtype=torch.bool)
    for level in range(q.num_levels):  # the first level where a row parts from the reference: a near-tie
        book = books[:, level]
        score = (book * book).sum(-1)[None] - 2 * torch.einsum("ngd,gkd->ngk", r, book)  # [N, G, K]
        a, b = got[:, level], ref[:, level]
        gap = (score.gather(-1, a[..., None]) - score.gather(-1, b[..., None]))[..., 0].abs()
        scale = (r * r).sum(-1) + (book * book).sum(-1).max()
        first = (a != b) & ~parted
        assert (gap[first] <= TIE_RTOL * scale[first]).all(), f"level {level}: parts at a gap, not a near-tie"
        parted |= first
        r = r - book[groups, b]
    assert parted.float().mean() < 0.01


def test_spectral_graphs_are_rows_and_their_fsq_search_has_no_codebook_scan(tmp_path):
    """The spectral family's graphs compute over rows (no convolution, no transposes but one per general graph) and
    search FSQ levels without scoring every codeword (no ArgMin): the few-node forms of graph revision 3."""
    import onnx

    model = shrunk("spectral16k")
    export_onnx(model, tmp_path)
    for name in ("encoder_frame", "decoder_frame", "encoder", "decoder"):
        ops = [n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node]
        assert not {"Conv", "ArgMin", "ConvTranspose"} & set(ops), name
        assert ops.count("Transpose") <= (0 if name.endswith("_frame") else 1), name
        assert ops.count("LayerNormalization") == 2, name  # one block and the stack's final norm
