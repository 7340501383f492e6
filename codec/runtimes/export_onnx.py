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
matmuls); the arithmetic is the model's.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from codec import __version__
from codec.errors import CodecError
from codec.models.codec import CodecModel
from codec.modules.conv import exporting
from codec.quantization.search import book_terms, dequantize, scores_from
from codec.rates import levels_or_all
from codec.runtimes.onnx_runtime import GRAPH_REVISION

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


class EncoderStep(nn.Module):
    """One frame of audio and the encoder's state -> the frame's codes and the next state."""

    def __init__(self, model: CodecModel, levels: int) -> None:
        super().__init__()
        self.model, self.levels = model, levels
        self.keys, _ = _flat_state(model, "encoder")
        q = model.quantizer
        books = q.codebooks.detach()[:, :levels].transpose(0, 1)  # [levels, G, K, D]
        L, G, K, D = books.shape
        self.lookup = q.lookup
        self.register_buffer("books_t", books.transpose(2, 3)[:, :, None].contiguous())  # [levels, G, 1, D, K]
        self.register_buffer("terms", torch.stack([book_terms(b, q.lookup) for b in books]))  # [levels, G, K]
        self.register_buffer("flat_books", books.reshape(L, G * K, D).contiguous())
        self.register_buffer("offsets", torch.arange(G)[:, None] * K)  # [G, 1]: group g's rows start at g * K

    def forward(self, audio: torch.Tensor, *state: torch.Tensor):
        q = self.model.quantizer
        states = _with_state(self.model, self.keys, state)
        with self.model.streaming_with(states):
            z = self.model.encoder(audio)
        codes = _search(q._frames(z), self)
        return (q._pack_codes(codes, audio.shape[0]), *(states[layer][key] for layer, key in self.keys))


class DecoderStep(nn.Module):
    """One frame of codes (all levels, missing ones = pad_code) and the decoder's state -> audio, next state."""

    def __init__(self, model: CodecModel) -> None:
        super().__init__()
        self.model = model
        self.keys, _ = _flat_state(model, "decoder")
        books = model.quantizer.codebooks
        self.register_buffer("books", torch.cat([books, books.new_zeros(*books.shape[:2], 1, books.shape[3])], 2))

    def forward(self, codes: torch.Tensor, *state: torch.Tensor):
        q = self.model.quantizer
        B = codes.shape[0]
        latent = q._latent(dequantize(q._unpack_codes(codes), self.books), B)
        states = _with_state(self.model, self.keys, state)
        with self.model.streaming_with(states):
            audio = self.model.decoder(latent)
        return (audio, *(states[layer][key] for layer, key in self.keys))


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
    model: CodecModel, out_dir: str | Path, *, levels: int | None = None, on_graph: Callable[[str], None] | None = None
) -> dict:
    """Write the four graphs and manifest.json for `model` into `out_dir`; returns the manifest. `on_graph` is
    called with each graph's file name once it is written (a progress bar)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to check and save the graphs)
    except ImportError:
        raise CodecError("ONNX export needs the onnx package: pip install onnx (a dependency of codec)") from None

    model = model.eval()
    model.quantizer._sync_codebooks()  # simvq: the searched codebooks are basis x map; the graphs hold constants
    if model.audio_channels != 1:
        raise CodecError(f"model {model.name} codes {model.audio_channels} channels jointly; ONNX export is mono")
    levels = levels_or_all(levels, model.num_levels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hop, C = model.hop_length, model.audio_channels
    encoder, decoder = EncoderStep(model, levels), DecoderStep(model)
    _, enc_states = _flat_state(model, "encoder")
    _, dec_states = _flat_state(model, "decoder")
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
