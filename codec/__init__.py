"""Streaming neural audio codec with group-residual vector quantization."""

__version__ = "0.1.0"

from codec.checkpoint import load_model  # noqa: E402
from codec.models.codec import CodecModel  # noqa: E402

__all__ = ["CodecModel", "load_model", "__version__"]
