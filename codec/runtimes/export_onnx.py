"""`codec export-onnx`: the encoder step and the decoder step of a model as ONNX graphs, plus a JSON manifest.

Each graph codes whole frames and carries the streaming state as explicit inputs and outputs, so the caller owns
the state (plain arrays) exactly as `StreamingEncoder` does for the torch path. Two graphs per side:

    encoder.onnx        audio [B, C, F * hop_length] float32, state_0..n -> codes [B, levels * G, F] int64, .._next
    decoder.onnx        codes [B, num_levels * G, F] int64, state_0..m -> audio [B, C, F * hop_length], .._next
    encoder_frame.onnx  the same for B = 1, F = 1 (decoder_frame.onnx likewise)

The general graphs take any batch of streams and any number of frames per call (files: blocks of frames; the
server: one frame of many streams). The one-frame graphs have fixed shapes, which lets ONNX Runtime fold every
shape computation away: a live stream's frame costs about 1.5x less (docs/BENCHMARKS.md). The two encoder graphs
give bitwise the same codes for a frame (docs/STREAMING.md says how); the decoders agree to float rounding.

A fresh stream starts from zero states (shapes in the manifest). The encoder graphs hold the codebooks and the
residual search of the reference backend for the exported level count (all levels by default: a lower bitrate
is a prefix of the codes). The decoder graphs take all levels; the levels a stream did not send are filled
with `pad_code` (= codebook_size), which names an all-zero codeword. While tracing, the layers take the forms
ONNX Runtime runs fastest (`codec.modules.conv.exporting`: 2-d convolutions, transposed convolutions as two
matmuls); the arithmetic is the model's. The spectral family's graphs are written over rows instead (below:
`SpectralEncoderRows`, `SpectralDecoderRows`), and FSQ levels are searched by rounding (`FsqSearch`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from codec import __version__
from codec.errors import CodecError
from codec.models.codec import CodecModel
from codec.modules.conv import StreamingConv1d, exporting
from codec.modules.spectral import CausalConvNeXtBlock, SpectralDecoder, SpectralEncoder
from codec.quantization.fsq import FsqSearch
from codec.quantization.search import book_terms, dequantize, scores_from
from codec.rates import levels_or_all
from codec.runtimes.onnx_runtime import GRAPH_REVISION
from codec.runtimes.runtime import WEIGHTS

MANIFEST = "manifest.json"
FORMAT = "codec-onnx"
FORMAT_VERSION = 1
OPSET = 17


def _flat_state(model: CodecModel, side: str) -> tuple[list[tuple[str, str]], list[torch.Tensor]]:
    """(layer path, key) pairs of the `side` ('encoder' or 'decoder') in a fixed order, and their fresh state."""
    states = model.new_streaming_state(1)
    keys = [(layer, key) for layer in sorted(states) if layer.startswith(side + ".") for key in sorted(states[layer])]
    return keys, [states[layer][key] for layer, key in keys]


def _with_state(model: CodecModel, keys: list[tuple[str, str]], tensors) -> dict[str, dict[str, torch.Tensor]]:
    """A full streaming state of `model` (fresh, batch 1) with the layers in `keys` set to `tensors`."""
    states = model.new_streaming_state(1)
    for (layer, key), tensor in zip(keys, tensors, strict=True):
        states[layer][key] = tensor
    return states


def _search(residual: torch.Tensor, step: EncoderStep) -> torch.Tensor:
    """codec.quantization.search.search_torch (the reference: its scores, ties to the lowest index) written for the
    exporter's tracer and ONNX Runtime. Per level: each residual row times a constant pre-transposed codebook as its
    own matrix-vector product (rows on a batch axis), so a row's scores do not depend on how many rows the call
    holds (one MatMul over all rows takes another kernel, with other rounding, for one row than for several),
    which keeps a stream's codes the same alone or batched with others (codec.server.batching); then the codeword terms
    (constants), argmin, and one Gather of the chosen codewords from the flattened codebooks."""
    r = residual.transpose(0, 1)  # [G, N, D]
    codes = []
    for level in range(step.levels):
        dots = torch.matmul(r.unsqueeze(2), step.books_t[level]).squeeze(2)  # [G, N, 1, D] @ [G, 1, D, K]
        index = scores_from(dots, step.terms[level], step.lookup).argmin(-1)
        codes.append(index)  # [G, N]
        r = r - step.flat_books[level][index + step.offsets]
    return torch.stack(codes).permute(2, 0, 1)  # [N, levels, G]


# --- the spectral family over rows --------------------------------------------------------------------------------
# The spectral family runs at the frame rate, so a live frame is a handful of matrix-vector products; traced through
# its torch modules ([B, C, F] layout, 2-d convolutions, transposes around every LayerNorm) the one-frame graph held
# about 250 nodes after ONNX Runtime's own fusions, and their overhead, not the arithmetic, set its cost. The graphs
# compute the same layers here over rows: every frame of every stream is a row [N = B * F, C] with channels last,
# so a pointwise layer is one MatMul and bias (one Gemm in ONNX Runtime), a LayerNorm is one LayerNormalization,
# and time appears only in the causal depthwise convolutions, whose state is held frames-first ([B, k - 1, C]: the
# layout the next call concatenates). ONNX Runtime computes a row of a MatMul against a constant with the same
# arithmetic however many rows there are, and the depthwise sum is such a MatMul (ones [1, k] @ taps x window), so a
# frame's codes and states do not depend on the batch or on which of the two graphs ran it
# (tests/test_spectral_family.py, the batcher's streams against each stream alone).


def _pointwise(conv: StreamingConv1d, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A pointwise convolution as rows @ weight + bias: weight [C_in, C_out], bias [C_out] (times `scale` [C_out])."""
    weight, bias = conv.weight().detach()[:, :, 0], conv.bias.detach()
    if scale is not None:
        weight, bias = weight * scale[:, None], bias * scale
    return weight.t().contiguous(), bias.clone()


def _frame_windows(padded: torch.Tensor, frames: int, step: int, size: int) -> torch.Tensor:
    """padded [B, T, ...] (T = (frames - 1) * step + size) -> [B, frames, size, ...]: window f starts at f * step
    (for one frame: padded itself, [B, size, ...], the same numbers without the frames axis)."""
    B = padded.shape[0]
    if frames == 1:  # the one-frame graph: the window is the whole array (no index arithmetic, no copy)
        return padded
    starts = torch.arange(frames, device=padded.device)[:, None] * step
    index = (starts + torch.arange(size, device=padded.device)).reshape(-1)
    return padded.index_select(1, index).reshape(B, frames, size, *padded.shape[2:])


# `weights="int8"`: the blocks' pointwise layers (most of the weights a frame reads) as 7-bit integer weights, one
# scale per output channel, over 8-bit rows, one scale per row. Weights within +-63 keep every pair of products of
# an unsigned activation and a signed weight inside int16 (255 x 63 x 2 < 2^15), so the integer products are exact
# on every CPU (VNNI or not: no saturating instruction can clip them), and a row's result depends on that row only.
INT8_WEIGHT_MAX = 63
INT8_ROW_MAX = 127


class _MatMulInteger(torch.autograd.Function):
    """uint8 rows [N, K] (zero point `zero`) @ int8 weights [K, M] -> int32, exported as ONNX MatMulInteger."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        # exact in float64: every sum is below 2^53 (K x 127 x 63)
        return ((rows.double() - zero.double()) @ weight.double()).to(torch.int32)

    @staticmethod
    def symbolic(g, rows, weight, zero):
        return g.op("MatMulInteger", rows, weight, zero)


class _Pointwise(nn.Module):
    """rows [N, C_in] -> rows @ weight + bias [N, C_out], in fp32, or with int8 weights (above) when `int8`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, int8: bool = False) -> None:
        super().__init__()
        self.int8 = int8
        self.register_buffer("bias", bias)
        if not int8:
            self.register_buffer("weight", weight)
            return
        scale = weight.abs().amax(0).clamp_min(1e-12) / INT8_WEIGHT_MAX  # [C_out]
        self.register_buffer(
            "weight", torch.round(weight / scale).clamp(-INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).to(torch.int8)
        )
        self.register_buffer("scale", scale)
        self.register_buffer("zero", torch.tensor(128, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.int8:
            return x @ self.weight + self.bias
        step = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / INT8_ROW_MAX  # [N, 1]
        rows = (torch.round(x / step) + 128).to(torch.uint8)
        return _MatMulInteger.apply(rows, self.weight, self.zero).to(x.dtype) * step * self.scale + self.bias


class _BlockRows(nn.Module):
    """`CausalConvNeXtBlock` over rows, its output scale folded into its last pointwise layer."""

    def __init__(self, block: CausalConvNeXtBlock, *, int8: bool = False) -> None:
        super().__init__()
        depthwise = block.depthwise
        self.kernel = depthwise.kernel_size
        self.register_buffer("taps", depthwise.weight().detach()[:, 0].t().contiguous())  # [k, C]
        self.register_buffer("taps_bias", depthwise.bias.detach().clone())
        self.register_buffer("ones", torch.ones(1, self.kernel))
        norm = block.norm.norm
        self.eps = norm.eps
        self.register_buffer("norm_weight", norm.weight.detach().clone())
        self.register_buffer("norm_bias", norm.bias.detach().clone())
        self.up = _Pointwise(*_pointwise(block.up), int8=int8)
        self.down = _Pointwise(*_pointwise(block.down, block.scale.detach()[:, 0]), int8=int8)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, F, C], buffer [B, k - 1, C] -> [B, F, C], the next buffer."""
        B, frames, C = x.shape
        padded = torch.cat([buffer, x], 1)  # [B, k - 1 + F, C]
        windows = _frame_windows(padded, frames, 1, self.kernel)  # [B, F, k, C]
        y = torch.matmul(self.ones, windows * self.taps).reshape(-1, C) + self.taps_bias  # rows [N, C]
        y = F.layer_norm(y, self.norm_weight.shape, self.norm_weight, self.norm_bias, self.eps)
        y = self.down(F.gelu(self.up(y)))
        return x + y.reshape(B, frames, C), padded[:, frames:]


def _graph_state(key: tuple[str, str], state: torch.Tensor) -> torch.Tensor:
    """A layer's streaming state in the spectral graphs' layout: depthwise buffers frames-first."""
    return state.transpose(1, 2).contiguous() if key[0].endswith(".depthwise") else state


class _SpectralRows(nn.Module):
    """Shared by both sides: the ConvNeXt stack between two pointwise projections and a LayerNorm, over rows."""

    def __init__(
        self, blocks: nn.Sequential, proj_in: StreamingConv1d, norm: nn.LayerNorm, side: str, *, int8: bool = False
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_BlockRows(b, int8=int8) for b in blocks)
        self.block_keys = [(f"{side}.blocks.{i}.depthwise", "buffer") for i in range(len(blocks))]
        self.stateful = [not b.depthwise.pointwise for b in blocks]
        self.proj_in = _Pointwise(*_pointwise(proj_in))
        self.eps = norm.eps
        self.register_buffer("norm_weight", norm.weight.detach().clone())
        self.register_buffer("norm_bias", norm.bias.detach().clone())

    def stack(self, rows: torch.Tensor, B: int, states: dict) -> torch.Tensor:
        """rows [N, C_in] -> the final LayerNorm's rows [N, C]; updates the depthwise buffers in `states`."""
        x = self.proj_in(rows)
        x = x.reshape(B, -1, x.shape[-1])
        for block, key, stateful in zip(self.blocks, self.block_keys, self.stateful, strict=True):
            if stateful:
                x, states[key] = block(x, states[key])
            else:  # kernel 1: no frames before
                x, _ = block(x, x.new_zeros(B, 0, x.shape[-1]))
        x = x.reshape(-1, x.shape[-1])
        return F.layer_norm(x, self.norm_weight.shape, self.norm_weight, self.norm_bias, self.eps)


class SpectralEncoderRows(_SpectralRows):
    """`SpectralEncoder` over rows: audio [B, 1, F * hop] -> latent rows [B * F, D]. The STFT is one MatMul of each
    frame's n_fft samples with the constant windowed-DFT basis."""

    def __init__(self, encoder: SpectralEncoder, *, int8: bool = False) -> None:
        super().__init__(encoder.blocks, encoder.proj_in, encoder.norm.norm, "encoder", int8=int8)
        stft = encoder.stft
        self.hop, self.n_fft, self.bins, self.power = stft.stride, stft.kernel_size, encoder.bins, encoder.power
        self.register_buffer("basis", stft.weight().detach()[:, 0].t().contiguous())  # [n_fft, 2K]
        self.proj_out = _Pointwise(*_pointwise(encoder.proj_out))

    def forward(self, audio: torch.Tensor, states: dict) -> torch.Tensor:
        B = audio.shape[0]
        frames = audio.shape[-1] // self.hop
        padded = torch.cat([states[("encoder.stft", "buffer")], audio], -1).reshape(B, -1)  # [B, n_fft - hop + F * hop]
        windows = _frame_windows(padded, frames, self.hop, self.n_fft).reshape(-1, self.n_fft)  # rows [N, n_fft]
        states[("encoder.stft", "buffer")] = padded[:, None, frames * self.hop :]
        spectrum = (windows @ self.basis).reshape(-1, 2, self.bins)  # [N, Re / Im, K]
        # `compress` (its eps 1e-6, squared): magnitudes to the power, the phase kept
        gain = ((spectrum * spectrum).sum(1, keepdim=True) + 1e-12).pow(0.5 * (self.power - 1))
        x = self.stack((spectrum * gain).reshape(-1, 2 * self.bins), B, states)
        return self.proj_out(x)


class SpectralDecoderRows(_SpectralRows):
    """`SpectralDecoder` over rows: latent rows [B * F, D] -> audio [B, 1, F * hop]. The inverse DFT is one MatMul
    with the constant windowed basis, then the overlap-add with the state's tail."""

    def __init__(self, decoder: SpectralDecoder, *, int8: bool = False) -> None:
        super().__init__(decoder.blocks, decoder.proj_in, decoder.norm.norm, "decoder", int8=int8)
        head = decoder.head
        self.hop, self.overlap, self.bins, self.power = head.hop, head.overlap, head.bins, head.power
        self.max_magnitude = head.max_magnitude
        self.register_buffer("basis", head.basis.clone())  # [2K, h + o]
        self.head = _Pointwise(*_pointwise(head.proj))

    def forward(self, latent: torch.Tensor, B: int, states: dict) -> torch.Tensor:
        x = self.stack(latent, B, states)
        y = self.head(x).reshape(-1, 2, self.bins)  # [N, Re / Im, K]
        magnitude2 = (y * y).sum(1, keepdim=True) + 1e-12  # `SpectralSynthesis.forward`, rows instead of [B, C, F]
        limit = self.max_magnitude**2
        gain = magnitude2.clamp(max=limit).pow(0.5 / self.power - 0.5) * (limit / magnitude2).clamp(max=1.0).sqrt()
        segments = ((y * gain).reshape(-1, 2 * self.bins) @ self.basis).reshape(B, -1, self.hop + self.overlap)
        frames, h, o = segments.shape[1], self.hop, self.overlap
        tail = states[("decoder.head", "tail")]  # [B, 1, o]
        if o == 0:
            return segments.reshape(B, 1, -1)
        if frames == 1:  # the one-frame graph: no concatenation over frames
            head, own, spill = segments.split([o, h - o, o], -1)
            states[("decoder.head", "tail")] = spill
            return torch.cat([head + tail, own], -1)
        spill = segments[..., h:]  # [B, F, o]: each segment's run into the next block
        before = torch.cat([tail, spill[:, : frames - 1]], 1)
        states[("decoder.head", "tail")] = spill[:, frames - 1 :]
        return torch.cat([segments[..., :o] + before, segments[..., o:h]], -1).reshape(B, 1, frames * h)


class EncoderStep(nn.Module):
    """One frame of audio and the encoder's state -> the frame's codes and the next state."""

    def __init__(self, model: CodecModel, levels: int, *, int8: bool = False) -> None:
        super().__init__()
        self.model, self.levels = model, levels
        self.keys, _ = _flat_state(model, "encoder")
        spectral = isinstance(model.encoder, SpectralEncoder)
        self.rows = SpectralEncoderRows(model.encoder, int8=int8) if spectral else None
        q = model.quantizer
        self.fsq = FsqSearch(q, levels) if q.level_type == "fsq" else None
        if self.fsq is not None:
            return
        books = q.codebooks.detach()[:, :levels].transpose(0, 1)  # [levels, G, K, D]
        L, G, K, D = books.shape
        self.lookup = q.lookup
        self.register_buffer("books_t", books.transpose(2, 3)[:, :, None].contiguous())  # [levels, G, 1, D, K]
        self.register_buffer("terms", torch.stack([book_terms(b, q.lookup) for b in books]))  # [levels, G, K]
        self.register_buffer("flat_books", books.reshape(L, G * K, D).contiguous())
        self.register_buffer("offsets", torch.arange(G)[:, None] * K)  # [G, 1]: group g's rows start at g * K

    def graph_states(self) -> list[torch.Tensor]:
        return _graph_states(self.model, "encoder", self.rows is not None)

    def forward(self, audio: torch.Tensor, *state: torch.Tensor):
        q = self.model.quantizer
        B = audio.shape[0]
        if self.rows is not None:
            states = dict(zip(self.keys, state, strict=True))
            rows = self.rows(audio, states)  # [B * F, D]
            if not isinstance(q.in_proj, nn.Identity):
                rows = q._frames(rows.reshape(B, -1, rows.shape[-1]).transpose(1, 2)).flatten(1)
            frames = rows.reshape(rows.shape[0], q.num_groups, -1) if self.fsq is None else None
            next_state = [states[key] for key in self.keys]
        else:
            states = _with_state(self.model, self.keys, state)
            with self.model.streaming_with(states):
                frames = q._frames(self.model.encoder(audio))  # [B * F, G, d]
            rows = frames.flatten(1) if self.fsq is not None else None
            next_state = [states[layer][key] for layer, key in self.keys]
        if self.fsq is None:
            return (q._pack_codes(_search(frames, self), B), *next_state)
        codes = self.fsq(rows)  # [B * F, levels * G], level-major as the output's axis
        if audio.shape[-1] == self.model.hop_length:  # one frame per stream: no transpose
            return (codes.reshape(B, -1, 1), *next_state)
        return (codes.reshape(B, -1, codes.shape[1]).transpose(1, 2), *next_state)


class DecoderStep(nn.Module):
    """One frame of codes (all levels, missing ones = pad_code) and the decoder's state -> audio, next state."""

    def __init__(self, model: CodecModel, *, int8: bool = False) -> None:
        super().__init__()
        self.model = model
        self.keys, _ = _flat_state(model, "decoder")
        spectral = isinstance(model.decoder, SpectralDecoder)
        self.rows = SpectralDecoderRows(model.decoder, int8=int8) if spectral else None
        # a calibrated model's output gain per level count (`CodecModel.apply_level_gain`), else none in the graph
        self.gain = (10.0 ** (model.level_gain_db.detach() / 20.0)) if bool(model.level_gain_db.any()) else None
        books = model.quantizer.codebooks.detach()
        books = torch.cat([books, books.new_zeros(*books.shape[:2], 1, books.shape[3])], 2)  # [G, L, K + 1, d]
        if self.rows is None:
            self.register_buffer("books", books)
            return
        # one Gather for every level and group: code c of level l, group g is row (l * G + g) * (K + 1) + c
        G, L, K1, d = books.shape
        self.register_buffer("table", books.transpose(0, 1).reshape(L * G * K1, d))
        self.register_buffer("rows_of", torch.arange(L * G) * K1)

    def graph_states(self) -> list[torch.Tensor]:
        return _graph_states(self.model, "decoder", self.rows is not None)

    def forward(self, codes: torch.Tensor, *state: torch.Tensor):
        q = self.model.quantizer
        B = codes.shape[0]
        if self.rows is None:
            latent = q._latent(dequantize(q._unpack_codes(codes), self.books), B)
            states = _with_state(self.model, self.keys, state)
            with self.model.streaming_with(states):
                audio = self.model.decoder(latent)
            return (self._level_gain(audio, codes), *(states[layer][key] for layer, key in self.keys))
        if codes.shape[-1] == 1:  # one frame per stream: no transpose
            rows = codes.reshape(B, -1) + self.rows_of  # [B * F, L * G]
        else:
            rows = codes.transpose(1, 2).reshape(-1, codes.shape[1]) + self.rows_of
        chosen = self.table[rows].reshape(rows.shape[0], q.num_levels, -1)  # [N, L, G * d]
        latent = chosen.sum(1)  # `dequantize`: the sum over levels
        if not isinstance(q.out_proj, nn.Identity):
            latent = q._latent(latent.reshape(-1, q.num_groups, q.codebook_dim), B)
            latent = latent.transpose(1, 2).reshape(-1, latent.shape[1])
        states = dict(zip(self.keys, state, strict=True))
        audio = self.rows(latent, B, states)
        return (self._level_gain(audio, codes), *(states[key] for key in self.keys))

    def _level_gain(self, audio: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, n] times the gain of each stream's level count: its first frame's codes that are not
        pad_code, over the groups (the levels a stream decodes are the same in every frame of a call)."""
        if self.gain is None:
            return audio
        q = self.model.quantizer
        levels = (codes[:, :, 0] < q.codebook_size).sum(1) // q.num_groups  # [B]
        return audio * self.gain[levels - 1].reshape(-1, 1, 1)


def _graph_states(model: CodecModel, side: str, rows: bool) -> list[torch.Tensor]:
    """A fresh state of `side` in the layout of its graphs' inputs (the manifest's shapes): the torch layers' own,
    but for the spectral graphs' frames-first depthwise buffers."""
    keys, states = _flat_state(model, side)
    return [_graph_state(key, s) for key, s in zip(keys, states, strict=True)] if rows else states


def _export(
    step: nn.Module, example: tuple, path: Path, first: str, out: str, states: list[torch.Tensor], *, dynamic: bool
) -> list:
    """Trace `step` on `example` into `path`. `dynamic`: batch and time axes of any size; else the example's
    shapes are fixed (one frame of one stream), which lets ONNX Runtime fold every shape computation away."""
    n = len(states)
    inputs = [first] + [f"state_{i}" for i in range(n)]
    outputs = [out] + [f"state_{i}_next" for i in range(n)]
    axes = {first: {0: "batch", 2: "time"}, out: {0: "batch", 2: "time"}}
    axes.update({name: {0: "batch"} for name in inputs[1:] + outputs[1:]})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches (fixed per frame)
        with exporting():  # the layer forms ONNX Runtime runs fastest (codec/modules/conv.py)
            torch.onnx.export(
                step, example, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET, dynamo=False,
                dynamic_axes=axes if dynamic else None,
            )  # fmt: skip
    return [
        {"name": f"state_{i}", "layer": f"{layer}:{key}", "shape": list(s.shape)}
        for i, ((layer, key), s) in enumerate(zip(step.keys, states, strict=True))
    ]


def export_onnx(
    model: CodecModel,
    out_dir: str | Path,
    *,
    levels: int | None = None,
    weights: str = "fp32",
    on_graph: Callable[[str], None] | None = None,
) -> dict:
    """Write the four graphs and manifest.json for `model` into `out_dir`; returns the manifest. `weights`: "fp32"
    (the model's arithmetic) or "int8" (the spectral family's block weights as integers, docs/ONNX.md). `on_graph`
    is called with each graph's file name once it is written (a progress bar)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to check and save the graphs)
    except ImportError:
        raise CodecError("ONNX export needs the onnx package: pip install onnx (a dependency of codec)") from None

    model = model.eval()
    model.quantizer._sync_codebooks()  # simvq: the searched codebooks are basis x map; the graphs hold constants
    if model.audio_channels != 1:
        raise CodecError(f"model {model.name} codes {model.audio_channels} channels jointly; ONNX export is mono")
    if weights not in WEIGHTS:
        raise CodecError(f"weights {weights!r} is not one of: {', '.join(WEIGHTS)}")
    int8 = weights == "int8"
    if int8 and not isinstance(model.encoder, SpectralEncoder):
        raise CodecError(f"int8 weights are for the spectral family's graphs; {model.name} is a SEANet model: "
                         "export it with fp32 weights")  # fmt: skip
    levels = levels_or_all(levels, model.num_levels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hop, C = model.hop_length, model.audio_channels
    encoder, decoder = EncoderStep(model, levels, int8=int8), DecoderStep(model, int8=int8)
    enc_states, dec_states = encoder.graph_states(), decoder.graph_states()
    width = model.num_levels * model.num_groups
    for frames, suffix in ((2, ""), (1, "_frame")):  # any frames and streams per call; one frame of one stream
        audio, codes = torch.zeros(1, C, frames * hop), torch.zeros(1, width, frames, dtype=torch.long)
        dynamic = frames > 1
        enc_spec = _export(encoder, (audio, *enc_states), out / f"encoder{suffix}.onnx", "audio", "codes", enc_states,
                           dynamic=dynamic)  # fmt: skip
        if on_graph is not None:
            on_graph(f"encoder{suffix}.onnx")
        dec_spec = _export(decoder, (codes, *dec_states), out / f"decoder{suffix}.onnx", "codes", "audio", dec_states,
                           dynamic=dynamic)  # fmt: skip
        if on_graph is not None:
            on_graph(f"decoder{suffix}.onnx")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "model_id": model.model_id,
        "codec_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "graph_revision": GRAPH_REVISION,
        "weights": weights,
        "sample_rate": model.sample_rate,
        "channels": C,
        "hop_length": hop,
        "delay": model.delay,
        "frame_rate": model.frame_rate,
        "num_groups": model.num_groups,
        "num_levels": model.num_levels,
        "codebook_size": model.codebook_size,
        "bits_per_code": int(math.log2(model.codebook_size)),
        "levels": levels,
        "bitrate": model.bitrate(levels),
        "pad_code": model.codebook_size,
        "frames_per_call": "any",
        "batch": "any",
        "encoder": {
            "file": "encoder.onnx",
            "frame_file": "encoder_frame.onnx",
            "input": "audio",
            "output": "codes",
            "states": enc_spec,
        },
        "decoder": {
            "file": "decoder.onnx",
            "frame_file": "decoder_frame.onnx",
            "input": "codes",
            "output": "audio",
            "states": dec_spec,
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
