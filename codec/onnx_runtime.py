"""`codec.onnx_runtime` is a documented import path: since issue 26, `codec/runtimes/onnx_runtime.py` itself."""

import sys

from codec.runtimes import onnx_runtime

sys.modules[__name__] = onnx_runtime
