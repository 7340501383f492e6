"""Batch coding: many files through one loaded model. The library behind `codec encode` and `codec decode`
when their input names many files and their output is a folder.

What names many files (`is_batch_input`):

    folder                   a Kaldi data dir if it holds a wav.scp (segments honoured); otherwise every audio
                             file (encode) or every .codes file (decode) under it, recursively. A file's id is
                             its path relative to the folder without its suffix, so the outputs mirror the tree.
    *.scp                    a Kaldi table of `id path` lines; for encode a path may be a command ending in `|`
    *.txt, *.list, *.lst     one path per line; a file's id is its name without its suffix

All of it is read by `codec.datadir`, as training, `codec tokens` and `codec eval` read their data. Each input
becomes `OUT_DIR/<id>.codes` (encode) or `OUT_DIR/<id>.wav` (decode).

A run that is stopped (even by `kill -9`) and started again carries on: outputs are written through
`codec.atomic` (a temporary file, fsync, rename), so a file under its final name is always whole; the rerun
removes the temporary files the stopped run left and keeps the outputs it finished, after checking them (newer
than their input; a `.codes` output must be complete, every packet passing its CRC, and made by the same model at
the same levels and entropy tables; a `.wav` output must open as audio). An output that fails the check is coded
again, and `overwrite` codes every input again.

What can be checked before any coding is checked first, as a one-line `CodecError` that stops the run: an input
that is missing, empty or malformed, an output folder that is a file, an id that would write outside it or
two inputs that would write one output. Then every input is coded; one that fails is recorded with its problem
and the others go on, and the caller reports the failures. `jobs` > 1 codes the inputs in that many processes;
each holds one copy of the model for the whole run and runs one torch thread.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from codec import limits
from codec.atomic import atomic_output, partial_outputs
from codec.audio import WRITE_FORMATS
from codec.datadir import AUDIO_SUFFIXES, Utterance, read_data_dir, read_folder, read_list, read_span, read_wav_scp
from codec.errors import CodecError

if TYPE_CHECKING:  # torch loads only when a model does: `is_batch_input` serves the torch-free CLI path
    import torch

    from codec.models.codec import CodecModel

SCP_SUFFIX = ".scp"
LIST_SUFFIXES = (".txt", ".list", ".lst")
CODES_SUFFIX = ".codes"
DECODED_SUFFIX = ".wav"


@dataclass(frozen=True)
class Item:
    """One input and the output it is coded to."""

    source: Utterance  # id, and the file (for encode also a pipe command or a segment of a recording)
    output: Path

    @property
    def name(self) -> str:
        """The input as a message names it: its path, with its id when the path alone does not say it."""
        utt = self.source
        whole_file = not utt.is_pipe and not utt.start and utt.end is None
        return utt.path if whole_file else f"{utt.id} ({utt.path.strip()})"


@dataclass
class Outcome:
    item: Item
    error: str | None = None  # why the input failed; None when its output was written or kept
    seconds: float = 0.0  # audio coded
    bytes: int = 0  # size of the output file
    warnings: list[str] = field(default_factory=list)  # decode with conceal: the damage replaced by silence
    kept: bool = False  # the output of an earlier run was whole and is kept, not coded again
    removed: int = 0  # temporary files of a stopped run removed beside the output


@dataclass
class BatchResult:
    outcomes: list[Outcome]  # one per input, in input order

    @property
    def done(self) -> list[Outcome]:
        """Every input whose output is there: coded now or kept."""
        return [o for o in self.outcomes if o.error is None]

    @property
    def coded(self) -> list[Outcome]:
        return [o for o in self.done if not o.kept]

    @property
    def kept(self) -> list[Outcome]:
        return [o for o in self.done if o.kept]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def removed(self) -> int:
        return sum(o.removed for o in self.outcomes)


def is_batch_input(path: str | Path) -> bool:
    """True when `path` names many inputs: a folder, a `.scp` table or a list file (see the module docstring).
    An empty path is not a folder here (Path("") reads as "."): it stays the single-file error it always was."""
    if not str(path).strip():
        return False
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in (SCP_SUFFIX, *LIST_SUFFIXES)


# --- planning: every check that needs no model ----------------------------------------------------------------
def plan_encode(source: str | Path, out_dir: str | Path) -> list[Item]:
    """The inputs of a batch encode and their `.codes` outputs; a `CodecError` for anything unsafe."""
    return _plan(_inputs(source, AUDIO_SUFFIXES, "audio"), Path(out_dir), CODES_SUFFIX)


def plan_decode(source: str | Path, out_dir: str | Path) -> list[Item]:
    """The `.codes` inputs of a batch decode and their `.wav` outputs; a `CodecError` for anything unsafe."""
    return _plan(_inputs(source, (CODES_SUFFIX,), ".codes"), Path(out_dir), DECODED_SUFFIX)


def _inputs(source: str | Path, suffixes: tuple[str, ...], what: str) -> list[Utterance]:
    if not str(source).strip():
        raise CodecError("input path is empty; pass a folder, a wav.scp or a list file")
    source = Path(source)
    if source.is_dir():
        if (source / "wav.scp").is_file():
            utts = read_data_dir(source)
        else:
            utts = read_folder(source, suffixes)
            if not utts:
                raise CodecError(f"no {what} files in {source} or its subfolders ({', '.join(suffixes)})")
    elif not source.is_file():
        raise CodecError(f"input {source} not found")
    else:
        try:
            if source.suffix.lower() == SCP_SUFFIX:
                utts = [Utterance(key, where) for key, where in read_wav_scp(source).items()]
            else:
                utts = read_list(source)
        except UnicodeDecodeError:
            raise CodecError(f"{source} is not a text file; a {source.suffix} input lists one file per line") from None
    if not utts:
        raise CodecError(f"{source} lists no files")
    return utts


def _plan(utts: list[Utterance], out_dir: Path, suffix: str) -> list[Item]:
    if out_dir.exists() and not out_dir.is_dir():
        raise CodecError(f"output {out_dir} is a file; with many inputs the output is a folder (one file per input)")
    if not out_dir.exists() and out_dir.suffix.lower() in (CODES_SUFFIX, *WRITE_FORMATS):
        raise CodecError(
            f"output {out_dir} looks like a file name; with many inputs the output is a folder (one file per input)"
        )
    items, writers = [], {}
    for utt in utts:
        output = _output_path(out_dir, utt.id, suffix)
        if output in writers:
            raise CodecError(f"{writers[output].path} and {utt.path} would both write {output}; give them distinct ids")
        if not utt.is_pipe and Path(utt.path).resolve() == output.resolve():
            raise CodecError(f"{utt.path} would be overwritten by its own output; choose another output folder")
        writers[output] = utt
        items.append(Item(utt, output))
    return items


def _output_path(out_dir: Path, key: str, suffix: str) -> Path:
    """OUT_DIR/<id><suffix>; an id with `/` writes into a subfolder, and one that leaves OUT_DIR is refused."""
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or ".." in parts or "\\" in key:
        raise CodecError(f"id {key!r} would write outside the output folder {out_dir}; rename it")
    return out_dir.joinpath(*parts[:-1], parts[-1] + suffix)


# --- running ----------------------------------------------------------------------------------------------------
def encode_many(
    model: CodecModel,
    items: list[Item],
    *,
    levels: int,
    packet_bytes: int,
    jobs: int = 1,
    progress: bool = False,
    tables=None,
    overwrite: bool = False,
) -> BatchResult:
    """Encode every item at `levels`, as `codec encode` does one file (entropy coded with `tables` if given);
    failures are recorded, not raised. Outputs of an earlier run are kept if whole and alike, unless `overwrite`."""
    limits.check_int(packet_bytes, "--packet-bytes", 1, limits.MAX_PACKET_BYTES)  # once, not once per input
    kept = None if overwrite else _kept_codes
    state = (model, levels, packet_bytes, tables)
    return _run(items, _encode_item, state, kept, jobs=jobs, progress=progress, verb="encode")


def decode_many(
    model: CodecModel | None,
    items: list[Item],
    *,
    device: str | torch.device = "cpu",
    runtime: str = "torch",
    conceal: bool = False,
    jobs: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> BatchResult:
    """Decode every item, as `codec decode` does one file: with `model`, or (None) with the shipped model that
    made each file, else the default, each loaded once per process and run by `runtime` (`codec.runtimes.runtime`).
    Failures are recorded, not raised. Outputs of an earlier run are kept if they open as audio, unless `overwrite`."""
    kept = None if overwrite else _kept_audio
    return _run(items, _decode_item, (_DecodeModels(model, device, runtime), conceal), kept, jobs=jobs,
                progress=progress, verb="decode")  # fmt: skip


def _run(
    items: list[Item], task: Callable, state: tuple, kept: Callable | None, *, jobs: int, progress: bool, verb: str
) -> BatchResult:
    from tqdm import tqdm

    jobs = limits.check_int(jobs, "--jobs", 1, limits.MAX_JOBS)
    pool = None
    if jobs > 1 and len(items) > 1:
        import multiprocessing

        # spawn, not fork: a forked torch (OpenMP threads, CUDA) can hang in the child
        pool = multiprocessing.get_context("spawn").Pool(
            min(jobs, len(items)), initializer=_init_worker, initargs=(task, state, kept)
        )
        results: Iterable[Outcome] = pool.imap(_worker_item, items)  # in input order, whatever order they finish in
    else:
        results = (_attempt(task, item, state, kept) for item in items)
    outcomes = []
    try:
        for outcome in tqdm(results, total=len(items), desc=verb, unit="file", disable=not progress, file=sys.stderr):
            outcomes.append(outcome)
    finally:
        if pool is not None:
            pool.terminate()
    return BatchResult(outcomes)


_WORKER: tuple = ()  # (task, state, kept) of a --jobs worker process, set once when it starts


def _init_worker(task: Callable, state: tuple, kept: Callable | None) -> None:
    global _WORKER
    torch = sys.modules.get("torch")  # loaded when the state held a torch model (ONNX Runtime's needs none)
    if torch is not None:
        torch.set_num_threads(1)  # one process per core
    _WORKER = (task, state, kept)


def _worker_item(item: Item) -> Outcome:
    return _attempt(_WORKER[0], item, _WORKER[1], _WORKER[2])


def _attempt(task: Callable, item: Item, state: tuple, kept: Callable | None = None) -> Outcome:
    """`task(item, *state)`, or an `Outcome` holding its one-line problem: one bad input never stops the rest.

    First the temporary files a stopped run left beside the output are removed; then, with `kept`, an output of an
    earlier run that `kept(item, *state)` accepts is kept (that function returns its `Outcome`, or None)."""
    try:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        removed = 0
        for partial in partial_outputs(item.output):
            partial.unlink(missing_ok=True)
            removed += 1
        outcome = kept(item, *state) if kept is not None and _newer_than_its_input(item) else None
        if outcome is None:
            outcome = task(item, *state)
        outcome.removed = removed
        return outcome
    except CodecError as e:
        return Outcome(item, error=str(e))
    except OSError as e:
        return Outcome(item, error=f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}")
    except Exception as e:  # noqa: BLE001 - a bug on one input is reported with the others, not fatal to the run
        lines = str(e).splitlines()
        return Outcome(item, error=f"internal error: {type(e).__name__}: {lines[0] if lines else ''}")


def _encode_item(item: Item, model: CodecModel, levels: int, packet_bytes: int, tables=None) -> Outcome:
    from codec.coding.compress import encode_audio, encode_file

    utt = item.source
    if utt.is_pipe or utt.start or utt.end is not None:  # a command's output or a segment: read it whole
        audio, rate = read_span(utt)
        with atomic_output(item.output) as tmp, open(tmp, "wb") as out:
            header = encode_audio(model, audio, rate, out, levels=levels, packet_bytes=packet_bytes, tables=tables)
    else:  # a whole file: block by block, memory bounded whatever its length
        header = encode_file(model, utt.path, item.output, levels=levels, packet_bytes=packet_bytes, tables=tables)
    return Outcome(item, seconds=header.num_samples / header.sample_rate, bytes=item.output.stat().st_size)


def _newer_than_its_input(item: Item) -> bool:
    """The output is there and was written after its input last changed (a command's output always counts)."""
    if not item.output.is_file():
        return False
    if item.source.is_pipe:
        return True
    try:
        return item.output.stat().st_mtime >= Path(item.source.path).stat().st_mtime
    except OSError:
        return False


def _kept_codes(item: Item, model: CodecModel, levels: int, packet_bytes: int, tables=None) -> Outcome | None:
    """The `.codes` output of an earlier run, if it is whole (every packet there and passing its CRC) and coded as
    this run would code it (the same model, levels and entropy tables); else None."""
    import dataclasses

    from codec.format.bitstream import CodesReader

    try:
        with open(item.output, "rb") as f:
            reader = CodesReader(f, str(item.output))
            h = reader.header
            wanted = (model.model_id, levels, tables.tables_id if tables is not None else None)
            if (h.model_id, h.levels, h.tables_id) != wanted:
                return None
            frames = 0
            for packet in reader.packets():
                if packet.error is not None:
                    return None
                frames += packet.frames
    except (CodecError, OSError):
        return None
    if reader.num_samples is None or frames < dataclasses.replace(h, num_samples=reader.num_samples).expected_frames:
        return None
    seconds = reader.num_samples / h.sample_rate
    return Outcome(item, seconds=seconds, bytes=item.output.stat().st_size, kept=True)


def _kept_audio(item: Item, *state) -> Outcome | None:
    """The audio output of an earlier run, if it opens as audio; else None."""
    import soundfile as sf

    try:
        info = sf.info(str(item.output))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None
    if info.frames <= 0:
        return None
    return Outcome(item, seconds=info.frames / info.samplerate, bytes=item.output.stat().st_size, kept=True)


class _DecodeModels:
    """The model that decodes each .codes file: the one given, else the shipped model that made the file, else
    the default (as `codec decode` picks it for one file); each model is loaded once per process."""

    def __init__(self, model: CodecModel | None, device: str | torch.device, runtime: str = "torch") -> None:
        self.model, self.device, self.runtime = model, device, runtime
        self.loaded: dict[str, CodecModel] = {}

    def __call__(self, path: Path) -> CodecModel:
        from codec.coding.compress import model_name_for_header
        from codec.format import bitstream

        if self.model is not None:
            return self.model
        if not path.is_file():
            raise CodecError(f"input file {path} not found")
        with open(path, "rb") as f:
            name = model_name_for_header(bitstream.read_header(f, str(path)), str(path))
        if name not in self.loaded:
            self.loaded[name] = self._load(name)
        return self.loaded[name]

    def _load(self, name: str):
        """The model `name` on `self.runtime`, as every coding verb picks it (`runtime.coding_model`: its cached
        ONNX graphs without torch where they are, else the torch model; on `auto` and `onnx`, its graphs are built on
        first use)."""
        from codec.runtimes.runtime import coding_model

        return coding_model(name, self.runtime, device=self.device)


def _decode_item(item: Item, models: _DecodeModels, conceal: bool) -> Outcome:
    from codec.coding.compress import decode_file

    if item.source.is_pipe:
        raise CodecError("decode reads .codes files, not commands; write the command's output to a file first")
    path = Path(item.source.path)
    report = decode_file(models(path), path, item.output, conceal=conceal)
    seconds = report.samples / report.header.sample_rate
    return Outcome(item, seconds=seconds, bytes=item.output.stat().st_size, warnings=report.damaged)
