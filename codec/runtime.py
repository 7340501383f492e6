"""`--runtime torch|onnx|auto`: which engine runs a model's frames in the coding verbs and the server.

- ``torch``: the model's own streaming encoder and decoder (any device).
- ``onnx``: the graphs of `codec export-onnx`, run by ONNX Runtime on the CPU, one frame per call
  (`codec.onnx_runtime`). The graphs are built on first use into the user's cache
  (`$CODEC_CACHE_DIR`, else `$XDG_CACHE_HOME/codec`, else `~/.cache/codec`; never into the package), under
  `onnx/<model name>-<model id>-r<exporter revision>/`, and reused after that.
- ``auto`` (the default): onnx wherever it can run the model (on the CPU, a model that codes each channel as its
  own stream, onnxruntime installed: a base dependency), building the graphs on first use as ``onnx`` does, with
  a one-line notice and a progress bar; torch otherwise (`--device cuda`, a model coding channels jointly, or a
  cache folder that cannot be written: then `why_torch` says why in one line).

Live streams (`stream-encode`, `stream-decode`, `serve`) call the graphs one frame at a time, so their codes do
not depend on how the audio arrives; files (`encode`, `decode`) call them on blocks of `FILE_FRAMES_PER_CALL`
frames. Measured on one thread (docs/BENCHMARKS.md): per live frame ONNX Runtime costs 4.2-6.3x less CPU than
torch eager (0.3-0.5 ms per 20 ms frame of grvq16k), and on files 1.03-1.16x less than torch's whole-signal calls.
With the graphs cached, the CLI's coding verbs start without importing torch (`cached_onnx_codec`).

The .codes files are the same format whichever runtime wrote them. The ONNX encoder's codes equal the torch
encoder's except where the residual search meets a near-tie that rounding decides (docs/STREAMING.md), and
decoded audio agrees to within float rounding (docs/ONNX.md gives the measured difference).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from codec.errors import CodecError
from codec.rates import RateFacts

if TYPE_CHECKING:  # this module imports without torch: the CLI's ONNX path never loads it
    from codec.models.codec import CodecModel

RUNTIMES = ("auto", "torch", "onnx")
FILE_FRAMES_PER_CALL = 100  # frames per graph call when coding files (2 s at 50 Hz): ~2.4x cheaper than one


def cache_root() -> Path:
    """The user's cache folder for codec (exported ONNX graphs live under it)."""
    if os.environ.get("CODEC_CACHE_DIR"):
        return Path(os.environ["CODEC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codec"


def onnx_cache_dir(model: CodecModel, root: Path | None = None) -> Path:
    """Where the ONNX graphs of `model` are cached under `root` (default `cache_root()`): one folder per model
    name, weights id and exporter revision (`codec.onnx_runtime.GRAPH_REVISION`)."""
    return _cache_dir(model.name, model.model_id, root)


def _cache_dir(name: str, model_id: str, root: Path | None = None) -> Path:
    from codec.onnx_runtime import GRAPH_REVISION

    return (root or cache_root()) / "onnx" / f"{name}-{model_id}-r{GRAPH_REVISION}"


def _stale_cache_dirs(model: CodecModel, root: Path | None = None) -> list[Path]:
    """Folders of this model's graphs written by an older exporter (without the revision in the name, or with an
    older one)."""
    current = onnx_cache_dir(model, root)
    base = f"{model.name}-{model.model_id}"
    return [
        p
        for p in current.parent.glob(f"{base}*")
        if p != current and (p.name == base or p.name.startswith(base + "-r")) and (p / "manifest.json").is_file()
    ]


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxCodec(RateFacts):
    """A model whose frames run in ONNX Runtime: the facts of the model (name, id, rates, levels, bitrates) from
    the graphs' manifest, and the encoder and decoder steps of the graphs in `onnx_dir`.

    `StreamingEncoder` and `StreamingDecoder` (and with them `codec.compress` and `codec.serve`) take it in place
    of the `CodecModel`. ONNX Runtime sessions are made once per process and shared by every stream.
    `model`: the torch model the graphs were exported from (checked against the manifest; other attributes are
    looked up on it), or None: then nothing here needs torch (`cached_onnx_codec`).
    `frames_per_call`: 1 for live streams (codes independent of chunking), more for files (far cheaper).
    `threads`: ONNX Runtime's intra-op threads per session (the CLI's `--threads`; 1 by default).
    """

    runtime = "onnx"

    def __init__(
        self, model: CodecModel | None, onnx_dir: str | Path, *, frames_per_call: int = 1, threads: int = 1
    ) -> None:
        from codec.onnx_runtime import Sessions, load_manifest

        self.model, self.onnx_dir, self.frames_per_call = model, Path(onnx_dir), frames_per_call
        self.manifest = m = load_manifest(self.onnx_dir)
        if model is not None and (m.get("model_id") != model.model_id or m.get("levels") != model.num_levels):
            raise CodecError(
                f"{self.onnx_dir} holds graphs of model id {m.get('model_id')} for {m.get('levels')} levels, not of "
                f"{model.name} (id {model.model_id}, {model.num_levels} levels); delete the folder to export again"
            )
        self.name, self.model_id, self.sample_rate = m["model"], m["model_id"], m["sample_rate"]
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

    def session(self, side: str, *, frame: bool = False):
        """The ONNX Runtime session of `side` ('encoder' or 'decoder'), made on first use; `frame`: the one-frame
        graph of one stream (codec.onnx_runtime.Sessions)."""
        return self.sessions.get(side, frame=frame)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("model", "sessions", "manifest"):  # pickling and half-built objects
            raise AttributeError(name)
        if self.model is None:
            raise AttributeError(f"{name!r}: this model runs from its cached ONNX graphs alone (no torch model)")
        return getattr(self.model, name)

    def __setstate__(self, state: dict) -> None:  # --jobs workers: Sessions pickles without its sessions
        self.__dict__.update(state)


def cached_onnx_codec(name_or_path: str, *, live: bool = False, threads: int = 1) -> OnnxCodec | None:
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
    folder = _cache_dir(name, digest[:8])
    if not (folder / "manifest.json").is_file():
        return None
    codec = OnnxCodec(None, folder, frames_per_call=1 if live else FILE_FRAMES_PER_CALL, threads=threads)
    codec.source = str(resolve_model_path(name_or_path))
    full = codec.audio_channels == 1 and codec.manifest.get("levels") == codec.num_levels
    return codec if full else None


def export_to_cache(
    model: CodecModel, root: Path | None = None, *, notice: Callable[[str], None] | None = None, progress: bool = False
) -> Path:
    """The cached ONNX graphs of `model` (under `root`, default `cache_root()`), built now if they are not there yet
    (atomically: a folder is written beside the final one and renamed, so concurrent processes never see half a
    model). When it builds, `notice` (if given) gets one line saying so, and `progress` shows a bar over the graphs
    on stderr."""
    from codec.export_onnx import export_onnx
    from codec.onnx_runtime import load_manifest

    target = onnx_cache_dir(model, root)
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
            f"first use of {model.name} (id {model.model_id}) on ONNX Runtime: building its graphs into {target} "
            "(once; a few seconds)"
        )
    try:
        from tqdm import tqdm

        with tqdm(total=4, unit="graph", desc="codec: ONNX graphs", disable=not progress, leave=False) as bar:
            export_onnx(model, tmp, on_graph=lambda name: bar.update(1))
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
    if runtime not in RUNTIMES:
        raise CodecError(f"--runtime {runtime!r} is not one of: {', '.join(RUNTIMES)}")
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
        raise CodecError("--runtime onnx runs on the CPU; leave out --device or use --runtime torch")
    if not onnxruntime_available():
        raise CodecError("--runtime onnx needs onnxruntime: pip install onnxruntime (or use --runtime torch)")
    folder = export_to_cache(model, notice=notice, progress=progress)
    return OnnxCodec(model, folder, frames_per_call=per_call, threads=threads)
