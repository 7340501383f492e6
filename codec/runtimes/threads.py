"""How many CPU threads the CLI's verbs code with, how idle threads wait, and the line that says what ran.

Every verb but `codec train` codes on **one thread** unless `--threads N` says otherwise. Live verbs
(`stream-encode`, `stream-decode`, `serve`, `stream-client`) call the model once per 20 ms frame with well under
a millisecond of work: a second thread cannot pay for waking it. Offline verbs (`encode`, `decode`, `demo`,
`eval`, `tokens`, `bench`) spend most of a short file's time starting up (a 5 s clip is about 0.06 s of ONNX
Runtime compute against 0.5 s of start-up), and two threads measured no faster than one beside busy processes
(docs/BENCHMARKS.md, "Every verb beside busy processes"); torch's old default of one thread per core, whose
waiting threads spin, made verbs several times slower beside one busy process. Many files go faster with
`--jobs N` (N processes of one thread each). `codec train` keeps torch's own choice (a machine given to it,
often a GPU; `codec --threads 1 train` on a shared CPU).

With `--threads N` above 1, waiting threads sleep instead of spinning: ONNX Runtime's sessions are made with
`session.intra_op.allow_spinning = 0` (codec.runtimes.onnx_runtime.new_session) and OpenMP (torch's CPU threads) gets
`OMP_WAIT_POLICY=PASSIVE` before torch loads (`prepare`), unless the user set it.
"""

from __future__ import annotations

import os
import sys

DEFAULT_THREADS = 1
TORCH_CHOICE_VERBS = ("train",)  # torch's own thread count unless --threads says otherwise


def threads_for(verb: str, requested: int | None) -> int | None:
    """The thread count a verb codes with: `requested` (--threads), else 1, else None (torch's choice) for the
    verbs in TORCH_CHOICE_VERBS."""
    if requested is not None:
        return requested
    return None if verb in TORCH_CHOICE_VERBS else DEFAULT_THREADS


def prepare(threads: int | None) -> None:
    """Before torch and numba load (a verb that never needs torch never imports it): torch's threads
    (`OMP_NUM_THREADS`, which torch reads when it loads), passive waits for OpenMP threads and numba's pool no
    larger than `threads`. `OMP_WAIT_POLICY` and `NUMBA_NUM_THREADS` are left as the user set them; once torch is
    imported, OpenMP has read its settings already (the CLI then calls `torch.set_num_threads`)."""
    if threads is None:
        return
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))


def describe_run(model, threads: int) -> str:
    """`model grvq16k (id 62310a0b), runtime onnx (onnxruntime 1.32.0), 1 thread`: what codes, for --verbose and
    the server's log. `model`: a CodecModel or an OnnxCodec."""
    if model.runtime != "torch":  # onnx, onnx-int8
        import onnxruntime

        engine = f"{model.runtime} (onnxruntime {onnxruntime.__version__}, graphs in {model.onnx_dir})"
    else:
        import torch

        device = next(model.parameters()).device
        engine = f"torch ({torch.__version__}, {device})"
    return f"model {model.name} (id {model.model_id}), runtime {engine}, {threads} thread{'s' * (threads != 1)}"
