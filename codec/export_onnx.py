"""`codec export-onnx`: the encoder step and the decoder step of a model as ONNX graphs, plus a JSON manifest.

Each graph codes a block of whole frames per call (one, or any number) and carries the streaming state as
explicit inputs and outputs, so the caller owns the state (plain arrays) exactly as `StreamingEncoder` does for
the torch path:

    encoder.onnx  audio [B, C, F * hop_length] float32, enc_state_0..n  -> codes [B, levels * G, F] int64, ..._next
    decoder.onnx  codes [B, num_levels * G, F] int64, dec_state_0..m  -> audio [B, C, F * hop_length] float32, ..._next

A fresh stream starts from zero states (shapes in the manifest). The encoder graph holds the codebooks and the
residual search of the reference backend for the exported level count (all levels by default: a lower bitrate
is a prefix of the codes). The decoder graph takes all levels; the levels a stream did not send are filled
with `pad_code` (= codebook_size), which names an all-zero codeword. Live coding calls the graphs one frame
at a time (codec.onnx_runtime.OnnxEncoder), so every frame is the same call and the codes do not depend on how
the audio is chunked (docs/STREAMING.md); coding a file calls them on blocks of many frames, which costs 7-12x
less per frame (docs/BENCHMARKS.md). No separate offline graphs are written.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from codec import __version__
from codec.errors import CodecError
from codec.models.codec import CodecModel
from codec.modules.conv import exporting
from codec.quantization.search import dequantize, level_scores

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


def _search(residual: torch.Tensor, codebooks: torch.Tensor, levels: int, lookup: str) -> torch.Tensor:
    """codec.quantization.search.search_torch (the reference: its level_scores, ties to the lowest index) written for
    the exporter's tracer: codes gathered in a list, not written into a preallocated tensor."""
    r = residual.transpose(0, 1).contiguous()  # [G, N, D]
    group_index = torch.arange(residual.shape[1])[:, None]
    codes = []
    for level in range(levels):
        book = codebooks[:, level]  # [G, K, D]
        index = level_scores(r, book, lookup).argmin(-1)  # [G, N]
        codes.append(index)
        r = r - book[group_index, index]
    return torch.stack(codes).permute(2, 0, 1)  # [N, levels, G]


class EncoderStep(nn.Module):
    """One frame of audio and the encoder's state -> the frame's codes and the next state."""

    def __init__(self, model: CodecModel, levels: int) -> None:
        super().__init__()
        self.model, self.levels = model, levels
        self.keys, _ = _flat_state(model, "encoder")

    def forward(self, audio: torch.Tensor, *state: torch.Tensor):
        q = self.model.quantizer
        states = _with_state(self.model, self.keys, state)
        with self.model.streaming_with(states):
            z = self.model.encoder(audio)
        codes = _search(q._frames(z), q.codebooks, self.levels, q.lookup)
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


def _export(step: nn.Module, example: tuple, path: Path, first: str, out: str, states: list[torch.Tensor]) -> list:
    n = len(states)
    inputs = [first] + [f"state_{i}" for i in range(n)]
    outputs = [out] + [f"state_{i}_next" for i in range(n)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches (fixed per frame)
        with exporting():  # plain Conv nodes, no in-place writes (codec/modules/conv.py)
            torch.onnx.export(
                step, example, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET, dynamo=False,
                dynamic_axes={first: {0: "batch", 2: "time"}, out: {0: "batch", 2: "time"},
                              **{name: {0: "batch"} for name in inputs[1:] + outputs[1:]}},
            )  # fmt: skip
    return [
        {"name": f"state_{i}", "layer": f"{layer}:{key}", "shape": list(s.shape)}
        for i, ((layer, key), s) in enumerate(zip(step.keys, states, strict=True))
    ]


def export_onnx(model: CodecModel, out_dir: str | Path, *, levels: int | None = None) -> dict:
    """Write encoder.onnx, decoder.onnx and manifest.json for `model` into `out_dir`; returns the manifest."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it to check and save the graphs)
    except ImportError:
        raise CodecError("ONNX export needs the onnx extra: pip install -e '.[onnx]'") from None

    model = model.eval()
    model.quantizer._sync_codebooks()  # simvq: the searched codebooks are basis x map; the graphs hold constants
    if model.audio_channels != 1:
        raise CodecError(f"model {model.name} codes {model.audio_channels} channels jointly; ONNX export is mono")
    levels = levels or model.num_levels
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hop, C = model.hop_length, model.audio_channels
    encoder, decoder = EncoderStep(model, levels), DecoderStep(model)
    _, enc_states = _flat_state(model, "encoder")
    _, dec_states = _flat_state(model, "decoder")
    audio = torch.zeros(1, C, 2 * hop)  # two frames: the graphs take any whole number of frames per call
    codes = torch.zeros(1, model.num_levels * model.num_groups, 2, dtype=torch.long)
    enc_spec = _export(encoder, (audio, *enc_states), out / "encoder.onnx", "audio", "codes", enc_states)
    dec_spec = _export(decoder, (codes, *dec_states), out / "decoder.onnx", "codes", "audio", dec_states)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "model_id": model.model_id,
        "codec_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "sample_rate": model.sample_rate,
        "channels": C,
        "hop_length": hop,
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
        "encoder": {"file": "encoder.onnx", "input": "audio", "output": "codes", "states": enc_spec},
        "decoder": {"file": "decoder.onnx", "input": "codes", "output": "audio", "states": dec_spec},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
