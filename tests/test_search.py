"""Residual-search backends agree with the torch reference, up to the near-tie policy of search.py.

Every comparison goes through `assert_matches_reference`: frames whose codes differ from the
reference's must be rare, and replaying them (fp32 residuals, float64 scores) must show that
(1) where the codes first part, the two choices are a near-tie, and (2) every code the backend
chose is the best for the residual it was chosen from, within TIE_RTOL. The quantized sum must be
the sum of the chosen codewords.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from codec.errors import CodecError
from codec.quantization import search
from codec.quantization.codebook import kmeans
from codec.quantization.grvq import GroupResidualVQ
from codec.quantization.search import TIE_RTOL, dequantize, rvq_search, search_torch, select_backend

numba_only = pytest.mark.skipif("numba" not in search.available_backends(), reason="numba is not installed")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_gap(score, sq, r, a, b, lookup):
    """|score(a) - score(b)| [n, G] in units of the tie tolerance's scale (search.py, "Near-ties")."""
    diff = (score.gather(-1, a[..., None]) - score.gather(-1, b[..., None]))[..., 0].abs()
    if lookup == "cosine":
        return diff / r.norm(dim=-1).clamp_min(1e-30)
    c2 = torch.maximum(sq.gather(1, a.T).T, sq.gather(1, b.T).T)  # sq [G, K], a and b [n, G]
    return diff / ((r * r).sum(-1) + c2).clamp_min(1e-30)


def assert_matches_reference(residual, codebooks, levels, lookup, codes, quantized, ref_codes, max_tied=0.01):
    N, G, _ = residual.shape
    assert codes.shape == ref_codes.shape == (N, levels, G) and codes.dtype == torch.int64
    codes, ref_codes = codes.cpu(), ref_codes.cpu()
    books = codebooks.cpu().double()
    # Frames whose codes equal the reference's need nothing more; the others are replayed.
    differ = (codes != ref_codes).flatten(1).any(1).nonzero()[:, 0]
    assert differ.numel() <= max_tied * N, f"{differ.numel()} of {N} frames differ from the reference"
    for start in range(0, differ.numel(), 8192):  # chunks keep the float64 score matrix small
        rows = differ[start : start + 8192]
        # The residual is replayed in fp32 as every backend computes it (one fp32 subtraction per
        # level, so it is bit-identical until the codes part); only the scores are taken in float64.
        r32 = residual.cpu()[rows].float()  # [n, G, D]
        got_all, ref_all = codes[rows], ref_codes[rows]
        parted = torch.zeros(r32.shape[:2], dtype=torch.bool)
        for level in range(levels):
            book, r = books[:, level], r32.double()  # [G, K, D], [n, G, D]
            dots = torch.einsum("ngd,gkd->ngk", r, book)
            sq = (book * book).sum(-1)  # [G, K]
            # The reference's clamp: a zero codeword (a dead code) scores 0 under cosine.
            score = sq - 2 * dots if lookup == "euclidean" else -dots / sq.sqrt().clamp_min(1e-12)
            got, ref = got_all[:, level], ref_all[:, level]  # [n, G]
            best = score.argmin(-1)
            worst = relative_gap(score, sq, r, got, best, lookup).max().item()
            assert worst <= TIE_RTOL, f"level {level}: a code is {worst:.2e} (relative) worse than the best"
            first = (got != ref) & ~parted
            if first.any():
                worst = relative_gap(score, sq, r, got, ref, lookup)[first].max().item()
                assert worst <= TIE_RTOL, f"level {level}: codes differ from the reference by {worst:.2e}, not a tie"
            parted |= first
            r32 = r32 - codebooks[:, level].cpu()[torch.arange(G)[None, :], got]
    expected = dequantize(codes, codebooks.cpu())
    scale = expected.abs().max().item() + residual.abs().max().item()
    torch.testing.assert_close(quantized.cpu(), expected, atol=1e-5 * scale * levels, rtol=0)


def random_case(N, G, L, K, D, seed=0):
    """Gaussian frames and codebooks whose scale shrinks with the level, as residuals do."""
    g = torch.Generator().manual_seed(seed)
    residual = torch.randn(N, G, D, generator=g)
    scale = 0.8 ** torch.arange(L, dtype=torch.float32)[None, :, None, None]
    return residual, torch.randn(G, L, K, D, generator=g) * scale


def trained_like_case(N, G, L, K, D, seed=0):
    """Clustered, temporally smooth latents and codebooks fitted level by level with k-means, like a trained RVQ."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(64, G, D, generator=g) * 2
    path = torch.randint(64, (N // 8 + 1,), generator=g).repeat_interleave(8)[:N]  # a cluster per 8 frames
    residual = centers[path] + 0.3 * torch.randn(N, G, D, generator=g) * torch.rand(N, 1, 1, generator=g)
    fit = residual[torch.randperm(N, generator=g)[: max(K, 2048)]].clone()
    codebooks = torch.empty(G, L, K, D)
    torch.manual_seed(seed)
    for level in range(L):
        for group in range(G):
            codebooks[group, level], _ = kmeans(fit[:, group], K, iters=3, generator=g)
        _, q = search_torch(fit, codebooks[:, level : level + 1], 1, "euclidean")
        fit = fit - q
    return residual, codebooks


def shape_grid():
    """G x K x D of the issue, with L and N sized so each case is a few tens of MFLOP."""
    for G in (1, 2, 4):
        for K in (256, 1024, 4096):
            for D in (8, 64, 128, 256):
                L = 32 if K * D <= 256 * 64 else 8 if K * D <= 1024 * 128 else 3
                N = max(5, (1 << 23) // (G * L * K * D)) | 1  # odd: the last tile of frames is partial
                yield pytest.param(N, G, L, K, D, id=f"G{G}-L{L}-K{K}-D{D}-N{N}")


def run_both(backend, residual, codebooks, levels, lookup):
    ref = rvq_search(residual, codebooks, levels, lookup=lookup, backend="torch")
    got = rvq_search(residual, codebooks, levels, lookup=lookup, backend=backend)
    return ref, got


@numba_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
@pytest.mark.parametrize("N, G, L, K, D", list(shape_grid()))
def test_numba_matches_reference(N, G, L, K, D, lookup):
    residual, codebooks = random_case(N, G, L, K, D, seed=N + K + D)
    (ref, _), (codes, quantized) = run_both("numba", residual, codebooks, L, lookup)
    assert_matches_reference(residual, codebooks, L, lookup, codes, quantized, ref)


@numba_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
@pytest.mark.parametrize("N", [1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 4099])
def test_numba_any_number_of_frames(N, lookup):
    residual, codebooks = random_case(N, 2, 6, 256, 16, seed=N)
    for levels in (1, 6):  # a prefix of the levels, and all of them
        (ref, _), (codes, quantized) = run_both("numba", residual, codebooks, levels, lookup)
        assert_matches_reference(residual, codebooks, levels, lookup, codes, quantized, ref)


@numba_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
def test_numba_on_trained_like_latents(lookup):
    residual, codebooks = trained_like_case(6001, 2, 8, 256, 32)
    (ref, _), (codes, quantized) = run_both("numba", residual, codebooks, 8, lookup)
    assert_matches_reference(residual, codebooks, 8, lookup, codes, quantized, ref)
    # Clustered data is where exact duplicates of codewords' scores would show up: still no drift.
    assert (codes == ref).float().mean().item() > 0.99


@numba_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
def test_exact_ties_go_to_the_lowest_index(lookup):
    residual, codebooks = random_case(37, 2, 3, 64, 8)
    codebooks[:, :, 40:] = codebooks[:, :, 8:32]  # every codeword from 40 on repeats one of 8..31
    for backend in ("torch", "numba"):
        codes, _ = rvq_search(residual, codebooks, 3, lookup=lookup, backend=backend)
        assert codes.max().item() < 40, backend


@numba_only
def test_codebook_cache_sees_in_place_updates():
    residual, codebooks = random_case(9, 1, 2, 64, 8)
    first, _ = rvq_search(residual, codebooks, 2, backend="numba")
    codebooks.mul_(-1)  # an EMA step updates the buffer in place; the cached norms must follow
    codebooks[0, 0, 5] = residual[0, 0]
    again, _ = rvq_search(residual, codebooks, 2, backend="numba")
    ref, _ = rvq_search(residual, codebooks, 2, backend="torch")
    assert again[0, 0, 0].item() == 5
    torch.testing.assert_close(again, ref)
    assert not torch.equal(first, again)


@numba_only
@pytest.mark.slow
def test_numba_million_frames():
    # Small codebooks: the reference (about 1 GFLOP/s at D = 8) takes most of the time.
    N, G, L, K, D = 1_000_000, 1, 2, 256, 8
    residual, codebooks = random_case(N, G, L, K, D, seed=1)
    for lookup in ("euclidean", "cosine"):
        ref = torch.cat([search_torch(chunk, codebooks, L, lookup)[0] for chunk in residual.split(1 << 16)])
        codes, quantized = rvq_search(residual, codebooks, L, lookup=lookup, backend="numba")
        assert_matches_reference(residual, codebooks, L, lookup, codes, quantized, ref, max_tied=1e-3)


@numba_only
def test_grvq_encode_is_the_same_with_every_cpu_backend(monkeypatch):
    torch.manual_seed(0)
    vq = GroupResidualVQ(dim=32, num_groups=2, num_levels=4, codebook_size=64, kmeans_iters=2).train()
    z = torch.randn(3, 32, 50)
    vq(z)  # k-means init and one EMA step
    vq.eval()
    out = {}
    for backend in ("torch", "numba"):
        monkeypatch.setenv("CODEC_RVQ_BACKEND", backend)
        out[backend] = vq.encode(z, levels=3)
    torch.testing.assert_close(out["numba"], out["torch"])
    assert out["torch"].shape == (3, 3 * 2, 50)


# --- selection -----------------------------------------------------------------------------------


def test_automatic_choice_on_cpu(monkeypatch):
    monkeypatch.delenv("CODEC_RVQ_BACKEND", raising=False)
    expected = "numba" if "numba" in search.available_backends() else "torch"
    assert select_backend(torch.device("cpu")) == expected


def test_forced_backend_is_used(monkeypatch):
    calls = []

    def spy(residual, codebooks, levels, lookup):
        calls.append(levels)
        return search_torch(residual, codebooks, levels, lookup)

    monkeypatch.setitem(search._BACKENDS, "spy", spy)
    monkeypatch.setenv("CODEC_RVQ_BACKEND", "spy")
    residual, codebooks = random_case(4, 1, 3, 16, 4)
    rvq_search(residual, codebooks, 2)
    assert calls == [2]
    monkeypatch.setenv("CODEC_RVQ_BACKEND", "torch")
    assert select_backend(torch.device("cpu")) == "torch"


def test_preferred_backend_is_the_cpu_choice_inside_its_context_only(monkeypatch):
    monkeypatch.delenv("CODEC_RVQ_BACKEND", raising=False)
    before = select_backend(torch.device("cpu"))
    with search.preferred_backend("torch"):
        assert select_backend(torch.device("cpu")) == "torch"
        monkeypatch.setenv("CODEC_RVQ_BACKEND", "numba" if "numba" in search.available_backends() else "torch")
        assert select_backend(torch.device("cpu")) == os.environ["CODEC_RVQ_BACKEND"]  # the variable still wins
        monkeypatch.delenv("CODEC_RVQ_BACKEND")
    assert select_backend(torch.device("cpu")) == before
    with pytest.raises(ValueError, match="unknown search backend"):
        with search.preferred_backend("fastest"):
            pass


def test_encoding_a_short_file_on_torch_does_not_load_numba(tmp_path, tiny_model_file):
    """`codec encode` of a short file searches with torch: loading numba would cost more than it saves."""
    import subprocess
    import sys

    import soundfile as sf
    from conftest import tone

    wav = tmp_path / "short.wav"
    sf.write(wav, tone(1.0, 8000).T, 8000)
    script = (
        "import sys\nfrom codec.cli import main\n"
        f"code = main(['encode', {str(wav)!r}, {str(tmp_path / 'short.codes')!r}, '-m', {str(tiny_model_file)!r}, "
        "'--runtime', 'torch', '-q'])\n"
        "print('numba' in sys.modules)\nsys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CODEC_RVQ_BACKEND"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    "value, device, words",
    [("fastest", "cpu", "not a search backend"), ("cuda", "cpu", "needs CUDA tensors")],
)
def test_forced_backend_errors_are_one_line(monkeypatch, value, device, words):
    monkeypatch.setenv("CODEC_RVQ_BACKEND", value)
    with pytest.raises(CodecError, match=words) as info:
        select_backend(torch.device(device))
    assert "\n" not in str(info.value) and "CODEC_RVQ_BACKEND" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_falls_back_with_one_notice(monkeypatch, caplog):
    monkeypatch.delenv("CODEC_RVQ_BACKEND", raising=False)
    monkeypatch.setattr(search, "_NOTIFIED", set())
    with caplog.at_level(logging.WARNING, logger=search.__name__):
        assert select_backend(torch.device("cuda")) == "torch"
        assert select_backend(torch.device("cuda")) == "torch"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "\n" not in notices[0] and "CUDA" in notices[0]
    monkeypatch.setenv("CODEC_RVQ_BACKEND", "cuda")
    with pytest.raises(CodecError, match="cannot run here"):
        select_backend(torch.device("cuda"))


def test_unavailable_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(search._UNAVAILABLE, "numba", "numba is broken here")
    monkeypatch.delitem(search._BACKENDS, "numba", raising=False)
    residual, codebooks = random_case(4, 1, 2, 16, 4)
    with pytest.raises(CodecError, match="numba is broken here"):
        rvq_search(residual, codebooks, backend="numba")


# --- CUDA (run on the accelerator machine: pytest -m gpu) ----------------------------------------


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
@pytest.mark.parametrize("N, G, L, K, D", list(shape_grid()))
def test_cuda_matches_reference(N, G, L, K, D, lookup):
    assert "cuda" in search.available_backends(), search._UNAVAILABLE.get("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference must be fp32 too
    residual, codebooks = random_case(max(N, 4097), G, L, K, D, seed=N + K + D)
    residual, codebooks = residual.cuda(), codebooks.cuda()
    (ref, _), (codes, quantized) = run_both("cuda", residual, codebooks, L, lookup)
    assert_matches_reference(residual, codebooks, L, lookup, codes, quantized, ref)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("N", [1, 2, 63, 64, 65, 1000])
@pytest.mark.parametrize("levels", [1, 5, 32])
def test_cuda_frames_and_level_prefixes(N, levels):
    residual, codebooks = random_case(N, 4, 32, 16, 12, seed=levels)  # K < one tile, D not a multiple of 4
    residual, codebooks = residual.cuda(), codebooks.cuda()
    for lookup in ("euclidean", "cosine"):
        (ref, _), (codes, quantized) = run_both("cuda", residual, codebooks, levels, lookup)
        assert_matches_reference(residual, codebooks, levels, lookup, codes, quantized, ref)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("lookup", ["euclidean", "cosine"])
def test_cuda_trained_like_and_million_frames(lookup):
    torch.backends.cuda.matmul.allow_tf32 = False
    residual, codebooks = trained_like_case(1_000_000, 2, 8, 1024, 64)
    residual, codebooks = residual.cuda(), codebooks.cuda()
    ref = torch.cat([search_torch(c, codebooks, 8, lookup)[0] for c in residual.split(1 << 16)])
    codes, quantized = rvq_search(residual, codebooks, 8, lookup=lookup, backend="cuda")
    assert_matches_reference(residual, codebooks, 8, lookup, codes, quantized, ref, max_tied=1e-3)
    assert select_backend(residual.device) == "cuda"


@pytest.mark.gpu
@cuda_only
def test_cuda_exact_ties_go_to_the_lowest_index():
    residual, codebooks = random_case(300, 2, 3, 512, 8)
    codebooks[:, :, 300:] = codebooks[:, :, 10:222]
    codes, _ = rvq_search(residual.cuda(), codebooks.cuda(), 3, backend="cuda")
    assert codes.max().item() < 300


def test_non_contiguous_codebooks():
    """A non-contiguous codebook view (k-means init passes one) gives the same codes on every CPU backend."""
    residual, codebooks = random_case(33, 2, 4, 32, 8)
    view = codebooks[:, 1:3]
    assert not view.is_contiguous()
    ref, _ = rvq_search(residual, view, backend="torch")
    for backend in search.available_backends():
        if backend != "cuda":
            got, _ = rvq_search(residual, view, backend=backend)
            assert np.array_equal(got.numpy(), ref.numpy()), backend
