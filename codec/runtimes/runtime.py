"""`--runtime torch|onnx|onnx-int8|auto`: which engine runs a model's frames in the coding verbs and the server.

- ``torch``: the model's own streaming encoder and decoder (any device).
- ``onnx``: the graphs of `codec export-onnx`, run by ONNX Runtime on the CPU, one frame per call
  (`codec.runtimes.onnx_runtime`). The graphs are built on first use into the user's cache
  (`$CODEC_CACHE_DIR`, else `$XDG_CACHE_HOME/codec`, else `~/.cache/codec`; never into the package), under
  `onnx/<model name>-<model id>-r<exporter revision>/`, and reused after that.
- ``onnx-int8``: the same with the spectral family's block weights as 7-bit integers over 8-bit rows
  (`codec export-onnx --weights int8`, docs/ONNX.md), cached in `...-r<revision>-int8/`: a live frame reads about
  a third of the bytes and costs about 1.4x less CPU; the codes are valid codes of the same model (any decoder
  reads them) but not the fp32 graphs' codes, and the audio is not bit-equal to theirs. Never picked by ``auto``.
- ``auto`` (the default): onnx wherever it can run the model (on the CPU, a model that codes each channel as its
  own stream, onnxruntime installed: a base dependency), building the graphs on first use as ``onnx`` does, with
  a one-line notice and a progress bar; torch otherwise (`--device cuda`, a model coding channels jointly, or a
  cache folder that cannot be written: then `why_torch` says why in one line).

Live streams (`stream-encode`, `stream-decode`, `serve`) call the graphs one frame at a time, so their codes do
not depend on how the audio arrives; files (`encode`, `decode`) call them on blocks of `FILE_FRAMES_PER_CALL`
frames. Measured on one thread (docs/BENCHMARKS.md): per live frame ONNX Runtime costs 4.2-6.3x less CPU than
torch eager (0.3-0.5 ms per 20 ms frame of grvq16k), and on files 1.03-1.16x less than torch's whole-signal calls.
With the graphs cached, the CLI's coding verbs start without importing torch (`cached_onnx_codec`).

This module owns the policy every coding verb follows (`codec encode`/`decode` of one file or many, the pipes, the
server, the demo): `coding_model` picks what runs a model (its cached graphs without torch, else the torch model
on the engine `--runtime` asks for), and `search_backend` picks the residual search of a torch encode. Both the
torch model and `OnnxCodec` are a `RunnableCodec`: the facts of the model and an explicit `runtime` attribute.

The .codes files are the same format whichever runtime wrote them. The ONNX encoder's codes equal the torch
encoder's except where the residual search meets a near-tie that rounding decides (docs/STREAMING.md), and
decoded audio agrees to within float rounding (docs/ONNX.md gives the measured difference).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from codec.errors import CodecError
from codec.rates import RateFacts

if TYPE_CHECKING:  # this module imports without torch: the CLI's ONNX path never loads it
    from codec.frames import FrameCoder
    from codec.models.codec import CodecModel

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
WEIGHTS = ("fp32", "int8")  # the ONNX graphs' weights (manifest "weights", `codec export-onnx --weights`)
FILE_FRAMES_PER_CALL = 100  # frames per graph call when coding files (2 s at 50 Hz): ~2.4x cheaper than one
NUMBA_PAYS_OFF_SECONDS = 600  # audio below which loading numba's search costs more than it saves (docs/BENCHMARKS.md)


@runtime_checkable
class RunnableCodec(Protocol):
    """What the coding paths (coding/compress.py, streaming.py; server/batching.py, serve.py; jobs/batch.py) ask of a
    model, whichever engine runs it: the torch `CodecModel` (`runtime` "torch") and `OnnxCodec` ("onnx"; "onnx-int8"
    for int8 graphs) both implement it. `source` is the model file (its entropy tables sit beside it), or None."""

    runtime: str
    name: str
    model_id: str
    sample_rate: int
    hop_length: int
    audio_channels: int
    num_groups: int
    num_levels: int
    codebook_size: int
    bits_per_code: int
    source: str | None

    @property
    def frame_rate(self) -> float: ...

    @property
    def delay(self) -> int: ...

    def bitrate(self, levels: int) -> float: ...

    def supported_bitrates(self) -> list[float]: ...

    def levels_for(
        self, *, bitrate_kbps: float | None = None, levels: int | None = None, names: tuple[str, str] = ...
    ) -> tuple[int, str | None]: ...

    def frame_coder(self, live: bool | None = None) -> FrameCoder:
        """The model's frame-coding core (codec.frames): `live` for one frame per call (the server's batcher)."""
        ...


def cache_root() -> Path:
    """The user's cache folder for codec (exported ONNX graphs live under it)."""
    if os.environ.get("CODEC_CACHE_DIR"):
        return Path(os.environ["CODEC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codec"


def onnx_cache_dir(model: CodecModel, root: Path | None = None, weights: str = "fp32") -> Path:
    """Where the ONNX graphs of `model` are cached under `root` (default `cache_root()`): one folder per model
    name, weights id, exporter revision (`codec.runtimes.onnx_runtime.GRAPH_REVISION`) and graph weights."""
    return _cache_dir(model.name, model.model_id, root, weights)


def _cache_dir(name: str, model_id: str, root: Path | None = None, weights: str = "fp32") -> Path:
    from codec.runtimes.onnx_runtime import GRAPH_REVISION

    suffix = "" if weights == "fp32" else f"-{weights}"
    return (root or cache_root()) / "onnx" / f"{name}-{model_id}-r{GRAPH_REVISION}{suffix}"


def _stale_cache_dirs(model: CodecModel, root: Path | None = None) -> list[Path]:
    """Folders of this model's graphs written by an older exporter (without the revision in the name, or with an
    older one), whatever their weights."""
    from codec.runtimes.onnx_runtime import GRAPH_REVISION

    base = f"{model.name}-{model.model_id}"

    def stale(name: str) -> bool:  # `base`, or `base-r<N>` / `base-r<N>-<weights>` with N not this revision
        return name == base or (
            name.startswith(base + "-r") and name[len(base) + 2 :].split("-")[0] != str(GRAPH_REVISION)
        )

    folders = onnx_cache_dir(model, root).parent.glob(f"{base}*")
    return [p for p in folders if stale(p.name) and (p / "manifest.json").is_file()]


def graph_weights(runtime: str) -> str:
    """The graphs' weights (one of WEIGHTS) a `--runtime` runs: "int8" for onnx-int8, else "fp32"."""
    return "int8" if runtime == "onnx-int8" else "fp32"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxCodec(RateFacts):
    """A model whose frames run in ONNX Runtime (a `RunnableCodec`): the facts of the model (name, id, rates,
    levels, bitrates, delay) from the graphs' manifest, and the encoder and decoder steps of the graphs in
    `onnx_dir`.

    `StreamingEncoder` and `StreamingDecoder` (and with them `compress` and `serve`) take it in place
    of the `CodecModel`. ONNX Runtime sessions are made once per process and shared by every stream.
    `model`: the torch model the graphs were exported from (checked against the manifest), or None: then nothing
    here needs torch (`cached_onnx_codec`).
    `frames_per_call`: 1 for live streams (codes independent of chunking), more for files (far cheaper).
    `threads`: ONNX Runtime's intra-op threads per session (the CLI's `--threads`; 1 by default).
    """

    runtime = "onnx"

    def __init__(
        self, model: CodecModel | None, onnx_dir: str | Path, *, frames_per_call: int = 1, threads: int = 1
    ) -> None:
        from codec.runtimes.onnx_runtime import Sessions, load_manifest

        self.model, self.onnx_dir, self.frames_per_call = model, Path(onnx_dir), frames_per_call
        self.manifest = m = load_manifest(self.onnx_dir)
        if model is not None and (m.get("model_id") != model.model_id or m.get("levels") != model.num_levels):
            raise CodecError(
                f"{self.onnx_dir} holds graphs of model id {m.get('model_id')} for {m.get('levels')} levels, not of "
                f"{model.name} (id {model.model_id}, {model.num_levels} levels); delete the folder to export again"
            )
        self.name, self.model_id, self.sample_rate = m["model"], m["model_id"], m["sample_rate"]
        self.runtime = "onnx-int8" if m.get("weights") == "int8" else "onnx"  # the `--runtime` that runs these graphs
        self.hop_length, self.audio_channels, self.num_groups = m["hop_length"], m["channels"], m["num_groups"]
        self.num_levels, self.codebook_size, self.bits_per_code = (
            m["num_levels"],
            m["codebook_size"],
            m["bits_per_code"],
        )
        self.frame_rate = self.sample_rate / self.hop_length
        self.delay = m.get("delay", 0)  # samples the decoder graphs' stream lags the input (manifests before it: 0)
        self.source = getattr(model, "source", None)  # the model file (its entropy tables sit beside it)
        self.sessions = Sessions(
            self.onnx_dir, self.manifest, threads=threads,
            damaged="delete that folder (it is exported again on the next --runtime onnx run) or use --runtime torch",
        )  # fmt: skip

    def frame_coder(self, live: bool | None = None):
        """This model's `codec.frames.FrameCoder` (`codec.runtimes.onnx_runtime.OnnxCoder`): blocks of `frames_per_call`
        frames per graph call, or one frame with `live` (the server's batcher)."""
        from codec.runtimes.onnx_runtime import OnnxCoder

        return OnnxCoder(self.sessions, frames_per_call=1 if live else self.frames_per_call)

    def session(self, side: str, *, frame: bool = False):
        """The ONNX Runtime session of `side` ('encoder' or 'decoder'), made on first use; `frame`: the one-frame
        graph of one stream (codec.runtimes.onnx_runtime.Sessions)."""
        return self.sessions.get(side, frame=frame)

    def __setstate__(self, state: dict) -> None:  # --jobs workers: Sessions pickles without its sessions
        self.__dict__.update(state)


def cached_onnx_codec(
    name_or_path: str, *, live: bool = False, threads: int = 1, weights: str = "fp32"
) -> OnnxCodec | None:
    """The `OnnxCodec` of a model (a shipped model's name or a model file) from graphs already in the user's
    cache, found and opened without importing torch; None when there are none of this exporter revision (or no
    onnxruntime, or the file's metadata names no weights hash): the caller then loads the torch model.

    The cache folder is named by the weights hash recorded in the model file; the graphs in it were exported from
    the weights after `load_model` had checked them against that hash."""
    from codec.modelfile import read_metadata, resolve_model_path

    if not onnxruntime_available():
        return None
    metadata = read_metadata(resolve_model_path(name_or_path))
    name, digest = metadata.get("name"), metadata.get("weights_hash", "")
    if not name or len(digest) < 8:
        return None
    folder = _cache_dir(name, digest[:8], None, weights)
    if not (folder / "manifest.json").is_file():
        return None
    codec = OnnxCodec(None, folder, frames_per_call=1 if live else FILE_FRAMES_PER_CALL, threads=threads)
    codec.source = str(resolve_model_path(name_or_path))
    full = codec.audio_channels == 1 and codec.manifest.get("levels") == codec.num_levels
    return codec if full else None


def export_to_cache(
    model: CodecModel,
    root: Path | None = None,
    *,
    notice: Callable[[str], None] | None = None,
    progress: bool = False,
    weights: str = "fp32",
) -> Path:
    """The cached ONNX graphs of `model` (under `root`, default `cache_root()`) with `weights` ("fp32" or "int8"),
    built now if they are not there yet (atomically: a folder is written beside the final one and renamed, so
    concurrent processes never see half a model). When it builds, `notice` (if given) gets one line saying so, and
    `progress` shows a bar over the graphs on stderr."""
    from codec.runtimes.export_onnx import export_onnx
    from codec.runtimes.onnx_runtime import load_manifest

    target = onnx_cache_dir(model, root, weights)
    if (target / "manifest.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as e:
        raise CodecError(
            f"cannot write the ONNX cache under {target.parent} ({e.strerror}); set CODEC_CACHE_DIR to a folder "
            "you can write, or use --runtime torch"
        ) from None
    if notice is not None:
        notice(
            f"first use of {model.name} (id {model.model_id}) on ONNX Runtime"
            f"{' with int8 weights' if weights == 'int8' else ''}: building its graphs into {target} "
            "(once; a few seconds)"
        )
    try:
        from tqdm import tqdm

        with tqdm(total=4, unit="graph", desc="codec: ONNX graphs", disable=not progress, leave=False) as bar:
            export_onnx(model, tmp, weights=weights, on_graph=lambda name: bar.update(1))
        load_manifest(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process got there first: keep its graphs
            if not (target / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in _stale_cache_dirs(model, root):  # superseded: a later run never reads them
        shutil.rmtree(stale, ignore_errors=True)
    return target


def why_torch(model: CodecModel) -> str | None:
    """Why `--runtime auto` must run `model` on torch (one line), or None when ONNX Runtime can run it."""
    if next(model.parameters()).device.type != "cpu":
        return "ONNX Runtime runs on the CPU and the model is on another device"
    if model.audio_channels != 1:
        return f"{model.name} codes {model.audio_channels} channels jointly, and the ONNX graphs are mono"
    if not onnxruntime_available():
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise CodecError(f"--runtime {runtime!r} is not one of: {', '.join(RUNTIMES)}")
    return runtime


def with_runtime(
    model: CodecModel,
    runtime: str = "auto",
    *,
    live: bool = False,
    threads: int = 1,
    notice: Callable[[str], None] | None = None,
    progress: bool = False,
):
    """`model` itself (torch) or an `OnnxCodec` over its cached graphs, as `--runtime` asks; `live`: for coding
    as audio arrives (one frame per graph call), not whole files (blocks of frames). `auto` and `onnx` build the
    graphs on first use (`export_to_cache`: `notice` gets a line saying so, `progress` shows a bar); `auto` falls
    back to torch where ONNX Runtime cannot run the model (`why_torch`) or the cache cannot be written, and then
    tells `notice` why."""
    check_runtime(runtime)
    if runtime == "torch" or isinstance(model, OnnxCodec):
        return model
    per_call = 1 if live else FILE_FRAMES_PER_CALL
    if runtime == "auto":
        reason = why_torch(model)
        if reason is None:
            try:
                folder = export_to_cache(model, notice=notice, progress=progress)
            except CodecError as e:  # e.g. a cache folder that cannot be written: torch still codes
                reason = str(e).split("; ")[0]
        if reason is not None:
            if notice is not None and next(model.parameters()).device.type == "cpu":
                notice(f"running on torch: {reason}")
            return model
        return OnnxCodec(model, folder, frames_per_call=per_call, threads=threads)
    if next(model.parameters()).device.type != "cpu":
        raise CodecError(f"--runtime {runtime} runs on the CPU; leave out --device or use --runtime torch")
    if not onnxruntime_available():
        raise CodecError(f"--runtime {runtime} needs onnxruntime: pip install onnxruntime (or use --runtime torch)")
    if runtime == "onnx-int8" and getattr(model.config, "family", None) != "spectral":
        raise CodecError(f"--runtime onnx-int8 is for the spectral family's models; {model.name} is not one: "
                         "use --runtime onnx")  # fmt: skip
    folder = export_to_cache(model, notice=notice, progress=progress, weights=graph_weights(runtime))
    return OnnxCodec(model, folder, frames_per_call=per_call, threads=threads)


def coding_model(
    name: str,
    runtime: str = "auto",
    *,
    device: str = "cpu",
    live: bool = False,
    threads: int = 1,
    load: Callable[[str], CodecModel] | None = None,
    notice: Callable[[str], None] | None = None,
    progress: bool = False,
) -> RunnableCodec:
    """The model `name` (a shipped model's name or a model file) as every coding verb runs it. With `runtime`
    "onnx" or "auto" on the CPU and the model's graphs already in the cache, its `OnnxCodec`, found without
    importing torch (`cached_onnx_codec`: a process that codes one short file starts in a fraction of torch's
    import time); else the torch model (`load(name)`, default `codec.checkpoint.load_model` on `device`) run by
    the engine `runtime` picks (`with_runtime`, which builds the graphs on first use, telling `notice`).
    `live`: for coding as audio arrives (one frame per graph call), not whole files."""
    check_runtime(runtime)
    if runtime != "torch" and str(device) == "cpu":
        cached = cached_onnx_codec(name, live=live, threads=threads, weights=graph_weights(runtime))
        if cached is not None:
            return cached
    if load is None:
        from codec.checkpoint import load_model

        def load(name: str) -> CodecModel:
            return load_model(name, device=device)

    return with_runtime(load(name), runtime, live=live, threads=threads, notice=notice, progress=progress)


def search_backend(model: RunnableCodec, seconds: float | None) -> contextlib.AbstractContextManager:
    """The residual-search backend a torch encode of `seconds` of audio runs with (a context manager): on the torch
    runtime on the CPU, less than NUMBA_PAYS_OFF_SECONDS of audio is searched by the torch backend
    (codec.quantization.search.preferred_backend), so a process that codes a 1 s clip costs 1.6 s of CPU, not
    2.4; its codes equal numba's except at near-ties, as any two backends' do. Nothing changes otherwise: on ONNX
    Runtime (its graphs hold their own search), on another device, or for audio of unknown length (`seconds`
    None: a batch of files, which loads numba once for all of them)."""
    if model.runtime != "torch" or seconds is None or seconds >= NUMBA_PAYS_OFF_SECONDS:
        return contextlib.nullcontext()
    if next(model.parameters()).device.type != "cpu":
        return contextlib.nullcontext()
    from codec.quantization.search import preferred_backend

    return preferred_backend("torch")
