"""The spectral model family (model.family: spectral) and the FSQ level type, through everything the toolkit does.

Each property runs on the tiny spectral model (tiny_spectral.yaml: 8 kHz, hop 16) with free codebooks (vq) and
with FSQ levels (fsq), warm-started as training starts them (tests/conftest.py `make_spectral`). The waveform
family's own versions of these tests live beside the features (test_core_model, test_streaming, test_onnx, ...).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.checkpoint import load_model, read_metadata, save_model
from codec.cli import main
from codec.coding.streaming import StreamingDecoder, StreamingEncoder
from codec.config import ModelConfig, from_dict, to_dict
from codec.format.bitstream import CodesReader
from codec.modelfile import resolve_model_path
from codec.modules.spectral import SpectralDecoder, SpectralEncoder
from codec.quantization.search import TIE_RTOL, available_backends, rvq_search
from tests.conftest import make_spectral, tone
from tests.near_ties import parting_gaps

HOP = 16  # tiny_spectral.yaml at 8 kHz
LEVEL_TYPES = ["vq", "fsq"]


@pytest.fixture(scope="module", params=LEVEL_TYPES)
def spectral(request):
    return make_spectral(request.param)


@pytest.fixture(scope="module")
def spectral_file(tmp_path_factory, spectral):
    path = tmp_path_factory.mktemp("models") / f"{spectral.name}.safetensors"
    save_model(spectral, path, {"recipe": "tests (random init, warm-started codebooks)"})
    return path


def _audio(batch: int = 2, seconds: float = 0.4, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(tone(seconds, 8000, channels=batch, seed=seed))[:, None, :]


def assert_codes_of(model, x: torch.Tensor, codes, levels: int | None = None) -> None:
    """`codes` are model.encode(x, levels)'s, bit for bit but at near-ties of the search: one frame's latent
    computed alone (a one-frame matmul) and within a block (a many-frame matmul) differ in the last float bits,
    on any CPU, by an amount that depends on its vector units (tests/near_ties.py)."""
    differ, frames, gap = parting_gaps(model, x, codes, levels)
    assert gap <= TIE_RTOL and differ <= max(1, frames // 50), f"{differ} of {frames} frames part at a gap of {gap:.1e}"


def test_tiny_configs_build_the_spectral_family(spectral):
    assert spectral.config.family == "spectral" and spectral.hop_length == HOP == spectral.config.spectral.hop_length
    assert isinstance(spectral.encoder, SpectralEncoder) and isinstance(spectral.decoder, SpectralDecoder)
    assert spectral.config.algorithmic_latency == HOP
    assert spectral.supported_bitrates()[0] == pytest.approx(8000 / HOP * 2 * 4)  # 2 groups x 4 bits per level


# --- streaming equals offline -----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, HOP // 2, HOP - 1, HOP + 5, 2 * HOP + 3, 10_000])
def test_streaming_encode_equals_offline(spectral, chunk):
    x = _audio(batch=3)
    offline = spectral.encode(x)
    assert offline.shape == (3, 8, -(-x.shape[-1] // HOP))
    with spectral.streaming(3):
        parts = [spectral.encode(x[..., i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
        parts.append(spectral.flush())
    assert_codes_of(spectral, x, torch.cat(parts, -1))


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
def test_streaming_decode_equals_offline(spectral, chunk):
    codes = spectral.encode(_audio())
    offline = spectral.decode(codes)
    assert offline.shape == (2, 1, codes.shape[-1] * HOP) and offline.abs().max() > 0
    with spectral.streaming(2):
        parts = [spectral.decode(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)]
    assert torch.allclose(torch.cat(parts, -1), offline, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 13, 97])
def test_public_streaming_coders_equal_offline(spectral, chunk):
    """codec.coding.streaming (what the pipes and the server use), at the model's rate and through a resampler."""
    audio = tone(0.2, 8000, channels=2)
    offline = spectral.encode(torch.from_numpy(audio)[:, None], 3)
    encoder = StreamingEncoder(spectral, levels=3, batch_size=2, sample_rate=8000)
    parts = [encoder.push(audio[:, i : i + chunk]) for i in range(0, audio.shape[1], chunk)]
    assert_codes_of(spectral, torch.from_numpy(audio)[:, None], torch.cat([*parts, encoder.flush()], -1), 3)
    decoder = StreamingDecoder(spectral, batch_size=2)
    streamed = np.concatenate(
        [decoder.push(offline[..., i : i + chunk]) for i in range(0, offline.shape[-1], chunk)], 1
    )
    assert np.abs(streamed - spectral.decode(offline)[:, 0].numpy()).max() < 1e-5


def test_per_item_reset_and_restorable_state(spectral):
    a, b = _audio(batch=1, seed=1), _audio(batch=1, seed=2)
    with spectral.streaming(2):
        spectral.encode(torch.cat([a, a])[..., : 5 * HOP])  # resets happen at frame boundaries
        spectral.reset_streaming(torch.tensor([False, True]))
        codes = spectral.encode(torch.cat([a[..., 5 * HOP : 185 * HOP], b[..., : 180 * HOP]]))
    assert_codes_of(spectral, b[..., : 180 * HOP], codes[1:])  # afresh, as if b were alone
    assert_codes_of(spectral, a[..., : 185 * HOP], torch.cat([spectral.encode(a[..., : 5 * HOP]), codes[:1]], -1))
    with spectral.streaming(1):
        spectral.encode(a[..., :100])
        saved = spectral.get_streaming_state()
        first = spectral.encode(a[..., 100:])
        spectral.set_streaming_state(saved)
        again = spectral.encode(a[..., 100:])
    assert all(isinstance(v, torch.Tensor) for v in saved.values())
    assert torch.equal(first, again)


# --- causality ----------------------------------------------------------------------------------------------------
def test_encoder_frame_depends_on_no_later_sample(spectral):
    """Frame j is computed from samples before (j + 1) * hop only: by gradient, and appending input never changes
    an earlier frame's codes (a partial last frame may change once completed)."""
    x = _audio(batch=1, seconds=0.1).requires_grad_(True)
    z = spectral.encoder(x[..., : 20 * HOP])
    for j in (0, 3, 11):
        (grad,) = torch.autograd.grad(z[..., j].sum(), x, retain_graph=True)
        assert grad[..., (j + 1) * HOP :].abs().max() == 0 and grad[..., j * HOP : (j + 1) * HOP].abs().max() > 0
    x = _audio(seconds=0.3).detach()
    full = spectral.encode(x)
    for frames in (1, 5, 17):
        assert_codes_of(spectral, x[..., : frames * HOP], full[..., :frames])
        changed = x.clone()
        changed[..., frames * HOP :] = torch.randn_like(changed[..., frames * HOP :])
        assert_codes_of(spectral, x[..., : frames * HOP], spectral.encode(changed)[..., :frames])
    assert_codes_of(spectral, x[..., : 10 * HOP], spectral.encode(x[..., : 10 * HOP + 5])[..., :10])


def test_decoder_output_block_depends_on_no_later_frame(spectral):
    torch.manual_seed(1)
    z = torch.randn(1, spectral.config.latent_dim, 20)
    with torch.no_grad():
        y = spectral.decoder(z)
        for k in (1, 7, 19):
            changed = z.clone()
            changed[..., k:] = 3 * torch.randn_like(changed[..., k:])
            assert torch.equal(spectral.decoder(changed)[..., : k * HOP], y[..., : k * HOP])
    codes = spectral.encode(_audio())
    assert torch.allclose(spectral.decode(codes[..., :7]), spectral.decode(codes)[..., : 7 * HOP], atol=1e-6)
    x = torch.randn(1, 1, 8 * HOP, requires_grad=True)  # end to end, quantizer bypassed
    out, _ = spectral(x, quantize=False)
    (grad,) = torch.autograd.grad(out[..., : 4 * HOP].sum(), x)
    assert grad[..., 4 * HOP :].abs().max() == 0 and grad[..., : 4 * HOP].abs().max() > 0


# --- level prefixes -----------------------------------------------------------------------------------------------
def test_level_prefixes(spectral):
    x = _audio()
    full = spectral.encode(x)
    G, L = spectral.num_groups, spectral.num_levels
    z = spectral.encoder(spectral._pad_to_frames(x)).detach()
    errors = []
    for n in range(1, L + 1):
        prefix = full[:, : n * G]
        assert torch.equal(spectral.encode(x, levels=n), prefix)
        assert len(torch.unique(prefix[:, -G:])) > 4, "a level whose codes barely vary proves little"
        y = spectral.decode(prefix)
        assert y.shape == (2, 1, full.shape[-1] * HOP) and torch.isfinite(y).all()
        errors.append(((spectral.quantizer.decode(prefix) - z) ** 2).mean().item())
    assert errors == sorted(errors, reverse=True), f"latent error does not fall with levels: {errors}"


# --- model files and the CLI --------------------------------------------------------------------------------------
def test_model_file_rebuilds_the_family(spectral, spectral_file):
    loaded = load_model(spectral_file)
    assert loaded.config == spectral.config and loaded.config.family == "spectral"
    assert isinstance(loaded.encoder, SpectralEncoder) and isinstance(loaded.decoder, SpectralDecoder)
    assert loaded.quantizer.level_type == spectral.config.quantizer.level_type
    state = spectral.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(loaded.state_dict()[k], state[k]) for k in state)
    x = _audio()
    assert torch.equal(loaded.encode(x), spectral.encode(x))
    assert torch.equal(loaded.decode(spectral.encode(x)), spectral.decode(spectral.encode(x)))


def test_old_waveform_model_files_still_load():
    """Files written before the spectral family and FSQ existed have no family, spectral or level_type keys; they
    load as what they are (the shipped grvq16k is one)."""
    config = json.loads(read_metadata(resolve_model_path("grvq16k"))["config"])
    assert "family" not in config and "spectral" not in config and "level_type" not in config["quantizer"]
    model = load_model("grvq16k")
    assert model.config.family == "seanet" and model.quantizer.level_type == "vq"
    assert model.hop_length == model.config.encoder.patch_size * int(np.prod(model.config.encoder.ratios))
    old = {"name": "old", "latent_dim": 8, "encoder": {"channels": 4, "ratios": [3, 4]},
           "decoder": {"channels": 4, "ratios": [3, 4]}}  # fmt: skip
    assert from_dict(ModelConfig, old).family == "seanet"


@pytest.mark.parametrize("kbps", [None, 4, 12])
def test_codes_files_round_trip_through_the_cli(tmp_path, capsys, spectral, spectral_file, kbps):
    src = tmp_path / "in.wav"
    sf.write(src, tone(0.77, 8000).T, 8000)
    levels = spectral.num_levels if kbps is None else int(kbps * 1000 / spectral.supported_bitrates()[0])
    rate = [] if kbps is None else ["-b", str(kbps)]
    assert main(["encode", str(src), str(tmp_path / "x.codes"), "-m", str(spectral_file), *rate, "-q"]) == 0
    with open(tmp_path / "x.codes", "rb") as f:
        reader = CodesReader(f)
        codes = np.concatenate([p.codes for p in reader.packets()])  # [F, C, N]
    audio, _ = sf.read(src, dtype="float32")
    expected = spectral.encode(torch.from_numpy(audio)[None, None], levels)[0].T.numpy()
    assert codes.shape == (expected.shape[0], 1, levels * spectral.num_groups)
    assert np.array_equal(codes[:, 0], expected)
    assert main(["decode", str(tmp_path / "x.codes"), str(tmp_path / "out.wav"), "-m", str(spectral_file), "-q"]) == 0
    decoded, rate_out = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate_out == 8000 and decoded.shape == audio.shape
    direct = spectral.decode(torch.from_numpy(expected.T)[None])[0, 0, : audio.size].numpy()
    assert np.abs(decoded - np.clip(direct, -1, 1)).max() < 2 / 32768  # 16-bit rounding
    capsys.readouterr()


# --- FSQ ----------------------------------------------------------------------------------------------------------
def _fsq_quantizer(seed: int = 0):
    """The tiny FSQ model's quantizer with random (not warm-started, not identity) directions, steps and centre."""
    quantizer = make_spectral("fsq").quantizer
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (quantizer.fsq_directions, quantizer.fsq_log_step, quantizer.fsq_center):
            p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if p is quantizer.fsq_log_step else 1.0))
    return quantizer


def _fsq_rounding(quantizer, residual: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FSQ by hand: codes [N, G] of residual [N, G, d] at `level`, and each coordinate's distance to a rounding
    boundary [N, G, k] (in steps)."""
    steps = (2 * quantizer.fsq_grid.max(0).values + 1).double()  # [k] steps per direction
    directions = torch.linalg.qr(quantizer.fsq_directions[:, level].double()).Q  # [G, d, k]
    step = quantizer.fsq_log_step[:, level].double().exp()  # [G, k]
    centred = residual.double() - quantizer.fsq_center[None, :, level].double()
    position = torch.einsum("ngd,gdk->ngk", centred, directions) / step[None] + (steps - 1) / 2
    digits = position.round().clamp(torch.zeros_like(steps), steps - 1).long()
    place = torch.cumprod(torch.cat([torch.ones(1), steps[:-1]]), 0).long()  # first direction fastest
    inside = (position > -0.5) & (position < steps - 0.5)
    margin = torch.where(inside, 0.5 - (position - position.round()).abs(), torch.full_like(position, 1.0))
    return (digits * place).sum(-1), margin


@pytest.mark.parametrize("backend", [b for b in ("torch", "numba") if b in available_backends()])
def test_fsq_search_is_rounding_along_each_direction(backend):
    """Nearest-codeword search over the stored FSQ codebook gives exactly per-direction rounding of the projected
    residual (clipped to the grid), on random residuals inside, around and far outside the grid, every level."""
    quantizer = _fsq_quantizer()
    quantizer._sync_codebooks()
    generator = torch.Generator().manual_seed(1)
    G, d = quantizer.num_groups, quantizer.codebook_dim
    residual = (
        torch.randn(4000, G, d, generator=generator) * torch.tensor([0.3, 1.0, 4.0, 20.0]).repeat(1000)[:, None, None]
    )
    for level in range(quantizer.num_levels):
        books = quantizer.codebooks[:, level : level + 1]
        codes, _ = rvq_search(residual, books, 1, backend=backend)
        expected, margin = _fsq_rounding(quantizer, residual, level)
        clear = (margin > 1e-4).all(-1)  # away from a rounding boundary (float rounding decides exact ties)
        assert clear.float().mean() > 0.99
        assert torch.equal(codes[:, 0][clear], expected[clear]), f"level {level}"
        assert len(torch.unique(expected)) == quantizer.codebook_size  # every cell of the grid was visited


def test_fsq_forward_and_encode_round_and_find_the_codes_of_a_codebook_scan(monkeypatch):
    """The training forward and `encode` search FSQ levels by rounding (`FsqSearch`: no scan of the codebook, which
    took a tenth of a CPU training step and half of an 8 kbps encode) and pick the codes that a scan of every
    codeword picks (`rvq_search`, every backend), but at near-ties. The search is built once per value of the FSQ
    parameters (a streaming encode asks for it every frame) and again after they change."""
    import codec.quantization.grvq as grvq

    quantizer = _fsq_quantizer(seed=3)
    quantizer.dropout = 0.0
    quantizer.initialized.fill_(True)
    generator = torch.Generator().manual_seed(4)
    z = torch.randn(4, quantizer.dim, 250, generator=generator) * 3
    quantizer.eval()._sync_codebooks()
    frames = quantizer._frames(z)
    for backend in available_backends():
        scanned, _ = rvq_search(frames, quantizer.codebooks, None, backend=backend)  # [N, L, G]
        expected = quantizer._pack_codes(scanned, z.shape[0])
        assert (quantizer.encode(z) == expected).float().mean() > 0.99, backend
    scans, builds = [], []
    original, build = grvq.rvq_search, grvq.FsqSearch
    monkeypatch.setattr(grvq, "rvq_search", lambda *a, **k: scans.append(1) or original(*a, **k))
    monkeypatch.setattr(grvq, "FsqSearch", lambda *a: builds.append(1) or build(*a))
    for mode in (quantizer.train, quantizer.eval):
        mode()
        codes = quantizer(z).codes
        assert codes.shape == expected.shape
        assert (codes == expected).float().mean() > 0.99
    assert torch.equal(quantizer.encode(z), quantizer(z).codes)
    assert torch.equal(quantizer.encode(z[..., :3], 2), quantizer.encode(z)[:, :4, :3])  # a prefix of the levels
    assert not scans and len(builds) == 1  # only the two-level search is new: the parameters did not change
    with torch.no_grad():
        quantizer.fsq_center.add_(0.5)  # a new value (as an optimizer step or a load): built again
    assert not torch.equal(quantizer.encode(z), expected) and len(builds) == 2


def test_fsq_codebooks_stay_synced_after_an_optimizer_step():
    model = make_spectral("fsq", **{"quantizer.dropout": 0.0}).train()
    quantizer = model.quantizer
    x = _audio(batch=4)
    z = model.encoder(model._pad_to_frames(x)).detach()
    params = [quantizer.fsq_directions, quantizer.fsq_log_step, quantizer.fsq_center]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    before = quantizer.codebooks.clone()
    for _ in range(3):
        optimizer.zero_grad()
        quantizer(z).commitment_loss.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    model.eval()
    codes = model.encode(x)  # must search the codebooks of the latest parameters, not the last forward's
    books = quantizer._gradient_codebooks().detach()
    assert not torch.allclose(books, before)
    assert torch.equal(quantizer.codebooks, books)
    state = model.state_dict()
    assert torch.equal(state["quantizer.codebooks"], books)
    clone = make_spectral("fsq", **{"quantizer.dropout": 0.0})
    clone.load_state_dict(state)
    assert torch.equal(clone.encode(x), codes)
    with torch.no_grad():  # a parameter changed in place (an EMA of weights, a load) is seen too
        quantizer.fsq_center.add_(0.5)
    model.encode(x)
    assert torch.allclose(quantizer.codebooks, quantizer._gradient_codebooks().detach())


def test_fsq_warm_start_is_a_pca_of_each_levels_residuals():
    """init_codebooks: level 1's centre is the frames' mean, its directions the leading principal axes, its steps
    span about two standard deviations each side; each later level the same on what the levels before leave."""
    quantizer = make_spectral("fsq").quantizer
    G, d, k = quantizer.num_groups, quantizer.codebook_dim, 2
    generator = torch.Generator().manual_seed(2)
    axes = torch.linalg.qr(torch.randn(G, d, d, generator=generator)).Q  # random principal axes per group
    spread = torch.tensor([3.0, 1.5, 0.2, 0.1])  # two dominant axes
    frames = torch.einsum("ngd,ged->nge", torch.randn(20000, G, d, generator=generator) * spread, axes) + 0.7
    z = frames.reshape(1, -1, G * d).transpose(1, 2)  # [1, D, N] with in_proj the identity (not factorized)
    quantizer.init_codebooks(z)
    assert bool(quantizer.initialized)
    for g in range(G):
        assert torch.allclose(quantizer.fsq_center[g, 0], frames[:, g].mean(0), atol=1e-5)
        directions = quantizer.fsq_directions[g, 0]
        assert torch.allclose(directions.T @ directions, torch.eye(k), atol=1e-5)
        cosines = (directions.T @ axes[g][:, :k]).abs()  # each direction along its principal axis, in order
        assert torch.allclose(cosines, torch.eye(k), atol=0.02), cosines
        assert torch.allclose(quantizer.fsq_log_step[g, 0].exp(), spread[:k], rtol=0.05)  # 4 steps over 4 std
    residual = frames - quantizer.decode(quantizer.encode(z)[:, :G]).transpose(1, 2).reshape(-1, G, d)
    assert torch.allclose(quantizer.fsq_center[:, 1], residual.mean(0), atol=1e-4)
    assert (quantizer.fsq_log_step[:, 1] < quantizer.fsq_log_step[:, 0]).all()  # later levels refine


def test_warmup_noise_acts_only_while_bypassed_in_training(spectral):
    x = _audio(batch=2, seconds=0.1)

    def forward(train: bool, quantize: bool, noise: float):
        spectral.train(train)
        torch.manual_seed(3)
        with torch.no_grad():
            y, _ = spectral(x, quantize=quantize, noise=noise)
        spectral.eval()
        return y

    state = {k: v.clone() for k, v in spectral.state_dict().items()}  # training forwards move EMA statistics
    try:
        clean = forward(True, False, 0.0)
        assert not torch.allclose(forward(True, False, 0.5), clean, atol=1e-4)  # bypassed in training: noisy
        assert torch.equal(forward(False, False, 0.5), forward(False, False, 0.0))  # evaluation: never
        spectral.load_state_dict(state)
        quantized = forward(True, True, 0.0)
        spectral.load_state_dict(state)
        assert torch.equal(forward(True, True, 0.5), quantized)  # quantized: the codes are not noised
    finally:
        spectral.load_state_dict(state)


# --- ONNX, the one-frame runtime and the batching server --------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_spectral(spectral, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from codec.runtimes.runtime import OnnxCodec, export_to_cache

    return OnnxCodec(spectral, export_to_cache(spectral, tmp_path_factory.mktemp("cache")))


def test_one_frame_onnx_runtime_gives_torchs_codes_and_audio(spectral, onnx_spectral):
    from tests.near_ties import ONNX_TIE_RTOL

    audio = tone(0.5, 8000, channels=2, seed=4)
    whole = StreamingEncoder(onnx_spectral, levels=3, batch_size=2)
    expected = np.concatenate([whole.push(audio), whole.flush()], -1)
    rng, got, i = np.random.default_rng(0), [], 0
    chunked = StreamingEncoder(onnx_spectral, levels=3, batch_size=2)
    while i < audio.shape[1]:  # one graph call per frame whatever the chunking: bit for bit
        n = int(rng.choice([1, 7, HOP - 1, HOP + 1, 250]))
        got.append(chunked.push(audio[:, i : i + n]))
        i += n
    assert np.array_equal(np.concatenate([*got, chunked.flush()], -1), expected)
    differ, frames, gap = parting_gaps(spectral, torch.from_numpy(audio)[:, None], expected, 3)
    assert gap <= ONNX_TIE_RTOL, f"{differ} of {frames} frames part from torch's codes at a gap of {gap:.1e}"
    decoder = StreamingDecoder(onnx_spectral, batch_size=2)
    decoded = np.concatenate([decoder.push(expected[..., f : f + 1]) for f in range(expected.shape[-1])], 1)
    torch_audio = spectral.decode(torch.from_numpy(expected))[:, 0].numpy()
    assert np.abs(decoded - torch_audio).max() < 1e-4


def test_batched_streams_give_each_stream_its_own_codes(spectral, onnx_spectral):
    """The server's batcher: streams joining at different times, rates, levels and channel counts get the codes
    of each stream coded alone, bit for bit on ONNX Runtime, and torch's offline codes but at near-ties."""
    from tests.test_batching import STREAMS, _alone, _run_all
    from tests.test_batching import _audio as stream_audio

    got, batcher = _run_all(onnx_spectral)
    assert batcher.rows_coded / batcher.ticks > 2, "the streams were not coded together"
    for i, codes in enumerate(got):
        assert torch.equal(codes, _alone(onnx_spectral, i)), f"stream {i} {STREAMS[i]}"
    got, batcher = _run_all(spectral)
    for i, codes in enumerate(got):
        levels, rate, channels, _ = STREAMS[i]
        if rate == spectral.sample_rate:
            assert_codes_of(spectral, torch.from_numpy(stream_audio(i, rate, channels))[:, None], codes, levels)
        else:
            assert codes.shape == _alone(spectral, i).shape


@pytest.fixture(scope="module")
def onnx_int8(spectral, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from codec.runtimes.runtime import with_runtime

    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODEC_CACHE_DIR", str(root))
        return with_runtime(spectral, "onnx-int8")


def test_int8_graphs_hold_integer_weights_and_compute_their_torch_reference(spectral, onnx_int8):
    """`--weights int8`: the blocks' pointwise layers run as MatMulInteger over 7-bit weights; the graph computes
    what its torch reference (`DecoderStep(int8=True)`) computes, and stays close to the fp32 model."""
    import onnx

    from codec.runtimes.export_onnx import INT8_WEIGHT_MAX, DecoderStep

    assert onnx_int8.manifest["weights"] == "int8" and str(onnx_int8.onnx_dir).endswith("-int8")
    graph = onnx.load(str(onnx_int8.onnx_dir / "encoder_frame.onnx")).graph
    blocks = len(spectral.encoder.blocks)
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 2 * blocks
    weights = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) == 2 * blocks and all(np.abs(w).max() == INT8_WEIGHT_MAX for w in weights)
    codes = spectral.encode(_audio(1, 0.3), 4)
    decoder = StreamingDecoder(onnx_int8)
    onnx_audio = np.concatenate([decoder.push(codes[..., f : f + 1].numpy()) for f in range(codes.shape[-1])], -1)
    reference = DecoderStep(spectral, int8=True).eval()
    states = reference.graph_states()
    ref = []
    with torch.no_grad():
        for f in range(codes.shape[-1]):
            frame = torch.full((1, spectral.num_levels * spectral.num_groups, 1), spectral.codebook_size)
            frame[:, : codes.shape[1]] = codes[..., f : f + 1]
            audio, *states = reference(frame, *states)
            ref.append(audio[:, 0].numpy())
    ref = np.concatenate(ref, -1)
    assert np.abs(onnx_audio - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    fp32 = spectral.decode(codes)[:, 0].numpy()
    error = np.sqrt(np.mean((onnx_audio - fp32) ** 2) / np.mean(fp32**2))
    assert error < 0.1, f"int8 decode is {20 * np.log10(error):.1f} dB from fp32's"


def test_int8_graphs_code_each_frame_and_stream_on_its_own(spectral, onnx_int8):
    """Each row is quantized with its own scale: the codes do not depend on chunking or on the batch."""
    from tests.test_batching import STREAMS, _alone, _run_all

    audio = tone(0.5, 8000, channels=2, seed=4)
    whole = StreamingEncoder(onnx_int8, levels=3, batch_size=2)
    expected = np.concatenate([whole.push(audio), whole.flush()], -1)
    chunked = StreamingEncoder(onnx_int8, levels=3, batch_size=2)
    got = [chunked.push(audio[:, i : i + 7]) for i in range(0, audio.shape[1], 7)]
    assert np.array_equal(np.concatenate([*got, chunked.flush()], -1), expected)
    files = type(onnx_int8)(spectral, onnx_int8.onnx_dir, frames_per_call=100)  # blocks of frames, as `encode`
    blocks = StreamingEncoder(files, levels=3, batch_size=2)
    assert np.array_equal(np.concatenate([blocks.push(audio), blocks.flush()], -1), expected)
    got, _ = _run_all(onnx_int8)
    for i, codes in enumerate(got):
        assert torch.equal(codes, _alone(onnx_int8, i)), f"stream {i} {STREAMS[i]}"


def test_int8_is_only_for_the_spectral_family(tiny_model, tmp_path, monkeypatch):
    from codec.errors import CodecError
    from codec.runtimes.export_onnx import export_onnx
    from codec.runtimes.runtime import with_runtime

    monkeypatch.setenv("CODEC_CACHE_DIR", str(tmp_path))
    with pytest.raises(CodecError, match="spectral family.*use --runtime onnx"):
        with_runtime(tiny_model, "onnx-int8")
    with pytest.raises(CodecError, match="spectral family"):
        export_onnx(tiny_model, tmp_path / "out", weights="int8")
    with pytest.raises(CodecError, match="not one of: fp32, int8"):
        export_onnx(tiny_model, tmp_path / "out", weights="fp16")


def test_fp32_and_int8_graphs_share_the_cache(spectral, tmp_path, monkeypatch):
    """Building one kind of graphs keeps the other (only older exporter revisions are cleared)."""
    from codec.runtimes.runtime import onnx_cache_dir, with_runtime

    monkeypatch.setenv("CODEC_CACHE_DIR", str(tmp_path))
    fp32 = with_runtime(spectral, "onnx").onnx_dir
    int8 = with_runtime(spectral, "onnx-int8").onnx_dir
    old = onnx_cache_dir(spectral).parent / f"{spectral.name}-{spectral.model_id}-r1-int8"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    assert fp32 == onnx_cache_dir(spectral) and int8 == onnx_cache_dir(spectral, weights="int8") and fp32 != int8
    assert (fp32 / "manifest.json").is_file() and (int8 / "manifest.json").is_file()
    shutil.rmtree(fp32)
    assert with_runtime(spectral, "onnx").onnx_dir == fp32 and (int8 / "manifest.json").is_file() and not old.exists()


# --- synthesis delay (model.spectral.delay) ------------------------------------------------------------------------
DELAY = 8  # half a hop: each segment starts 8 samples before its frame's hop, the cross-fade covers seen samples


@pytest.fixture(scope="module")
def delayed():
    return make_spectral("vq", **{"spectral.overlap": DELAY, "spectral.delay": DELAY})


def test_delay_is_checked_and_counted_in_the_latency(delayed):
    from codec.errors import CodecError

    assert delayed.delay == DELAY and delayed.config.algorithmic_latency == HOP + DELAY
    assert make_spectral("vq").delay == 0
    with pytest.raises(CodecError, match="delay 9 must lie in 0..overlap"):
        from_dict(ModelConfig, {**to_dict(delayed.config), "spectral": {"overlap": 8, "delay": 9}})


def test_delayed_decoding_lines_up_with_the_input_on_every_path(delayed):
    """forward() (training) trains the output against the input itself; the decoded stream lags by `delay`
    samples and codec.coding.streaming's decoder takes it out again, so files and pipes keep the input's timing."""
    x = _audio(batch=2, seconds=0.4)  # 200 frames of 16
    T = x.shape[-1]
    with torch.no_grad():
        trained = delayed(x, levels=3)[0][:, 0].numpy()
    codes = delayed.encode(x, 3)
    raw = delayed.decode(codes)[:, 0].numpy()  # the model's own stream: `delay` samples late
    assert np.abs(raw[:, DELAY : T - HOP] - trained[:, : T - HOP - DELAY]).max() < 1e-5
    for chunk in (1, 3, 1000):
        decoder = StreamingDecoder(delayed, batch_size=2)
        parts = [decoder.push(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)]
        first = parts[0].shape[1]
        assert first == min(chunk, codes.shape[-1]) * HOP - DELAY
        streamed = np.concatenate([*parts, decoder.flush()], 1)
        assert streamed.shape == (2, T)
        assert np.abs(streamed[:, : T - HOP] - trained[:, : T - HOP]).max() < 1e-5
        assert not streamed[:, T - DELAY :].any()  # the last frame's cross-fade partner never comes: silence
    with torch.no_grad():
        undelayed = make_spectral("vq")(x, levels=3)[0][:, 0].numpy()
    assert np.abs(undelayed - trained).max() > 1e-3  # the test can tell the two layouts apart


def test_delayed_model_codes_files_to_the_inputs_length(tmp_path, delayed):
    from codec.coding.compress import decode_stream, encode_audio

    audio = tone(0.37, 8000, channels=2, seed=5)  # not a whole number of frames
    path = tmp_path / "a.codes"
    with open(path, "wb") as f:
        encode_audio(delayed, audio, 8000, f, levels=4)
    with open(path, "rb") as f:
        decoded, rate, _ = decode_stream(delayed, f)
    with torch.no_grad():
        trained = delayed(torch.from_numpy(audio)[:, None], levels=4)[0][:, 0].numpy()
    assert rate == 8000 and decoded.shape == audio.shape
    assert np.abs(decoded[:, :-HOP] - trained[:, :-HOP]).max() < 1e-4


def test_delayed_model_through_onnx_and_the_batcher(delayed, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import asyncio

    from codec.runtimes.runtime import OnnxCodec, export_to_cache
    from codec.server.batching import FrameBatcher

    onnx = OnnxCodec(None, export_to_cache(delayed, tmp_path))  # torch-free: the delay comes from the manifest
    assert onnx.delay == DELAY
    codes = delayed.encode(_audio(batch=2), 3).numpy()
    expected = StreamingDecoder(delayed, batch_size=2)
    expected = np.concatenate([expected.push(codes), expected.flush()], 1)
    decoder = StreamingDecoder(onnx, batch_size=2)
    got = np.concatenate([*[decoder.push(codes[..., f : f + 1]) for f in range(codes.shape[-1])], decoder.flush()], 1)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4

    async def batched():
        batcher = FrameBatcher(onnx)
        stream = batcher.decoder(rows=2)
        out = [await stream.push(codes[..., f : f + 5]) for f in range(0, codes.shape[-1], 5)]
        batcher.close()
        return np.concatenate([*out, stream.flush()], 1)

    got = asyncio.run(batched())
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


# --- tokens, evaluation ---------------------------------------------------------------------------------------------
def test_tokens_are_the_models_codes(tmp_path, spectral):
    from codec.tokens import extract_tokens, open_tokens

    clips = {"a": 0.31, "b": 0.07, "c/d": 0.5, "e": 0.013}  # none a whole number of frames
    for i, (name, seconds) in enumerate(clips.items()):
        (tmp_path / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "audio" / f"{name}.wav", tone(seconds, 8000, seed=i).T, 8000)
    extract_tokens(spectral, tmp_path / "audio", tmp_path / "out", levels=3, fmt="packed", pattern="delay",
                   batch_size=3, num_workers=0, progress=False)  # fmt: skip
    reader = open_tokens(tmp_path / "out")
    assert reader.ids == sorted(clips)
    for utt in reader.ids:
        audio, _ = sf.read(tmp_path / "audio" / f"{utt}.wav", dtype="float32")
        codes = reader.codes(utt)
        assert codes.shape == (3 * spectral.num_groups, -(-audio.size // HOP))
        assert_codes_of(spectral, torch.from_numpy(audio)[None, None], codes[None], 3)


def test_eval_continuous_adds_the_unquantized_row(tmp_path, spectral, spectral_file):
    (tmp_path / "clips" / "speech").mkdir(parents=True)
    sf.write(tmp_path / "clips" / "speech" / "talk.wav", tone(0.6, 16000).T, 16000)  # resampled to the model
    args = ["eval", "--data", str(tmp_path / "clips"), "--model", str(spectral_file), "--bitrates", "4",
            "--baselines", "none", "--metrics", "si_sdr", "--out", str(tmp_path / "eval"), "--quiet"]  # fmt: skip
    assert main([*args, "--continuous"]) == 0
    with open(tmp_path / "eval" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    systems = [row["system"] for row in rows]
    assert systems == ["original", spectral.name, f"{spectral.name} continuous"], systems
    assert all(row["si_sdr"] not in ("", "nan") and not row["error"] for row in rows[1:])
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())  # strict JSON: no NaN for "no target"
    assert [s["target_kbps"] for s in summary["run"]["systems"]] == [4.0, None]
    assert main([*args[:-2], str(tmp_path / "plain"), "--quiet"]) == 0
    with open(tmp_path / "plain" / "results.csv", newline="") as f:
        assert [row["system"] for row in csv.DictReader(f)] == [s for s in systems if "continuous" not in s]


# --- training: resume exactness, torchrun DDP ---------------------------------------------------------------------
SPECTRAL_RUN = ("discriminator.kinds=[mpd]", "train.quantizer_warmup_steps=2", "train.quantizer_warmup_noise=0.3",
                "train.kmeans_batches=2", "train.checkpoint_every=100", "train.batch_size=2")  # fmt: skip


@pytest.mark.parametrize("level_type", LEVEL_TYPES)
def test_training_resumes_exactly_across_the_quantizer_warm_start(tmp_path, level_type):
    """2 bypassed steps with latent noise, then the warm start (k-means or PCA) and quantized steps: stopping after
    the bypassed steps and resuming gives the straight run's losses and weights, bit for bit."""
    from tests.test_train_resume import assert_same_state, run
    from tests.train_fixtures import make_data_dir, tiny_training_config

    data = make_data_dir(tmp_path / "data", count=4, seconds=0.4, rate=8000)
    model = "tiny_spectral" if level_type == "vq" else "tiny_spectral_fsq"
    losses: dict[str, list] = {"straight": [], "resumed": []}

    def config(name):
        (tmp_path / name).mkdir()
        return tiny_training_config(tmp_path / name, data, *SPECTRAL_RUN, "train.max_steps=4", valid=False,
                                    model=model)  # fmt: skip

    straight = run(config("straight"), callback=lambda s, m: losses["straight"].append((m["mel"], m["commitment"])))
    resumed_config = config("resumed")
    run(resumed_config, steps=2, callback=lambda s, m: losses["resumed"].append((m["mel"], m["commitment"])))
    resumed = run(
        resumed_config, resume=True, callback=lambda s, m: losses["resumed"].append((m["mel"], m["commitment"]))
    )
    assert straight.step == resumed.step == 4 and bool(resumed.model.quantizer.initialized)
    assert losses["resumed"] == losses["straight"] and losses["straight"][-1][1] > 0  # quantized at the end
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.cpu_seconds > 0


WORKER_CHECK = r"""
import sys, torch
from pathlib import Path
from codec.config import from_dict
from codec.train.config import Config
from codec.train.trainer import Trainer
import yaml

out = Path(sys.argv[2])
trainer = Trainer(from_dict(Config, yaml.safe_load(Path(sys.argv[1]).read_text())), progress_bar=False)
trainer.fit()
state = {f"g.{k}": v for k, v in trainer.model.state_dict().items()}
state["adam_exp_avg"] = torch.cat([s["exp_avg"].flatten() for s in trainer.opt_g.state_dict()["state"].values()])
state["first_batch_sum"] = torch.tensor(float(next(iter(trainer.loader))["audio"].sum()))
state["fsq_adam_steps"] = torch.as_tensor(trainer.opt_g.state[trainer.model.quantizer.fsq_center]["step"])
torch.save(state, out / f"rank{trainer.dist.rank}.pt")
trainer.close()
trainer.dist.close()
"""


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_through_the_fsq_warm_start(tmp_path):
    """torchrun, 2 ranks on gloo: the PCA warm start is broadcast and FSQ parameters learn by all-reduced
    gradients, so both ranks end with identical weights, codebooks and optimizer state."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from codec.config import to_dict
    from tests.test_train_ddp import free_port
    from tests.train_fixtures import make_data_dir, tiny_training_config

    data = make_data_dir(tmp_path / "data", count=6, seconds=0.4, rate=8000)
    config = tiny_training_config(tmp_path, data, *SPECTRAL_RUN, "train.max_steps=3", "train.batch_size=1",
                                  valid=False, model="tiny_spectral_fsq")  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(to_dict(config)))
    (tmp_path / "worker.py").write_text(WORKER_CHECK)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"), str(tmp_path),
    ]  # fmt: skip
    here = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])  # this checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": here}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a["first_batch_sum"] != b["first_batch_sum"]  # the ranks trained on different data
    # the FSQ parameters had no gradient in the 2 bypassed steps (as in one process: Adam did not count them)
    assert int(a["fsq_adam_steps"]) == 1
    assert bool(a["g.quantizer.initialized"]) and not torch.equal(a["g.quantizer.fsq_center"], torch.zeros(1))
    for key in a:
        if key != "first_batch_sum":
            assert torch.equal(a[key], b[key]), key
