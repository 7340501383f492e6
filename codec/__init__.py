"""Streaming neural audio codec with group-residual vector quantization.

`load_model` and `CodecModel` are imported on first use, so `import codec` (and the torch-free modules such as
`codec.runtimes.onnx_runtime` and `codec.format.bitstream`) does not import torch.
"""

__version__ = "0.1.0"

__all__ = ["CodecModel", "load_model", "__version__"]


def __getattr__(name: str):
    if name == "load_model":
        from codec.checkpoint import load_model

        return load_model
    if name == "CodecModel":
        from codec.models.codec import CodecModel

        return CodecModel
    raise AttributeError(f"module 'codec' has no attribute {name!r}")
