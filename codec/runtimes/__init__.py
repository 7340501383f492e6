"""What runs a model: the runtime policy (`runtime.py`: torch or ONNX Runtime, the search backend, the graph cache),
ONNX Runtime's frame coder (`onnx_runtime.py`), the ONNX export (`export_onnx.py`) and `--threads` (`threads.py`)."""
