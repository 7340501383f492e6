"""The `codec` command line.

Layout: every verb is a top-level `cmd_<verb>(args)` that turns its arguments into calls of library functions
and prints their results (no coding logic lives here); the `_add_<group>_commands(sub)` functions only declare
the verbs' arguments; `main` maps `CodecError` to a one-line error and exit status 1. Heavy modules (torch,
training, evaluation, the server) are imported inside the verbs that need them, so `codec --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from codec import __version__
from codec.errors import CodecError

NO_DEFAULT = (
    "no default model: this installation's codec/pretrained/registry.json marks none as the default; "
    "pass one with --model NAME or PATH (`codec models` lists the shipped ones; a model file comes from `codec export`)"
)


# --threads (or the verb's default, codec.runtimes.threads): set in torch when a verb first needs torch (`main`), and
# given to ONNX Runtime's sessions; None leaves torch its own choice (`codec train`)
_THREADS: int | None = None
_VERBOSE = False


def _set_torch_threads() -> None:
    if _THREADS:
        import torch

        torch.set_num_threads(_THREADS)


def _note(line: str) -> None:
    print(f"codec: {line}", file=sys.stderr)


def _announce(model) -> None:
    """With --verbose: one stderr line naming the model, the runtime and the threads that code (runtimes/threads.py)."""
    if _VERBOSE:
        from codec.runtimes.threads import describe_run

        _note(describe_run(model, _THREADS or 1))


def _load(model: str | None, device: str = "cpu"):
    from codec.checkpoint import load_model
    from codec.modelfile import default_model_name

    _set_torch_threads()
    return load_model(default_model_name(NO_DEFAULT) if model is None else model, device=_device(device))


def _coding_model(model: str | None, args, *, live: bool = False):
    """The model a coding verb runs, as the runtime policy picks it (`runtime.coding_model`: its cached ONNX
    graphs without torch, else the torch model on the engine `--runtime` asks for); `live` for the verbs that code
    as audio arrives (one frame per graph call)."""
    from codec.modelfile import default_model_name
    from codec.runtimes.runtime import coding_model

    name = default_model_name(NO_DEFAULT) if model is None else model
    model = coding_model(
        name, args.runtime, device=args.device, live=live, threads=_THREADS or 1,
        load=lambda name: _load(name, args.device), notice=_note, progress=sys.stderr.isatty(),
    )  # fmt: skip
    _announce(model)
    return model


CODES_SUFFIX = ".codes"


def _need_websockets() -> None:
    try:
        import websockets  # noqa: F401
    except ImportError:
        raise CodecError("the WebSocket server and client need the serve extra: pip install -e '.[serve]'") from None


def _device(name: str):
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CodecError(f"--device {name}: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CodecError(f"--device {name} is not a device torch knows (use cpu, cuda or cuda:N)") from None


def _levels(model, args) -> int:
    """--bitrate or --levels resolved, once, to the checked level count the library is given (codec.rates)."""
    levels, notice = model.levels_for(bitrate_kbps=args.bitrate, levels=args.levels)
    if notice:
        print(f"codec: note: {notice}", file=sys.stderr)
    return levels


def _per_channel(header) -> str:
    """--bitrate is per channel: a file of many channels says how its total comes about."""
    if header.channels == 1:
        return ""
    return f" ({header.channels} channels x {header.bitrate / header.channels / 1000:g} kbps)"


def _human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _progress(args) -> bool:
    """A progress bar for many files: on a terminal, unless --quiet."""
    return not args.quiet and sys.stderr.isatty()


def _finish_batch(result, total_what: str) -> None:
    """One line per failed input, then a one-line error (exit status 1) if any failed."""
    failures = result.failures
    for outcome in failures:
        print(f"codec: failed: {outcome.item.name}: {outcome.error}", file=sys.stderr)
    if failures:
        raise CodecError(f"{len(failures)} of {len(result.outcomes)} {total_what} failed (listed above)")


def _entropy_tables(model, args):
    """The entropy tables `--entropy` asks for (codec.format.entropy), or None: without tables for this model the plain
    payload is written, with a one-line note."""
    if not getattr(args, "entropy", False):
        return None
    from codec.format import entropy

    tables = entropy.tables_for(model, args.tables)
    if tables is None:
        print(
            f"codec: note: --entropy: no entropy tables for model {model.name} (id {model.model_id}) beside its file; "
            "writing the plain payload (fit tables with `codec fit-entropy`)",
            file=sys.stderr,
        )
    return tables


def cmd_encode(args) -> None:
    from codec.audio import duration, open_audio
    from codec.coding.compress import encode_file
    from codec.jobs.batch import is_batch_input
    from codec.modelfile import default_model_name, resolve_model_path
    from codec.runtimes.runtime import search_backend

    if is_batch_input(args.input):
        return _encode_batch(args)
    resolve_model_path(default_model_name(NO_DEFAULT) if args.model is None else args.model)  # before any work:
    with open_audio(args.input):  # a missing model, then a missing or unreadable input
        pass
    if Path(args.output).suffix != CODES_SUFFIX:  # written anyway: a name is the user's choice
        _note(f"warning: {args.output} does not end in {CODES_SUFFIX}; writing a .codes file under that name "
              f"(`codec decode` and batch runs look for {CODES_SUFFIX})")  # fmt: skip
    model = _coding_model(args.model, args)
    levels = _levels(model, args)
    tables = _entropy_tables(model, args)
    with search_backend(model, duration(args.input)):
        header = encode_file(
            model, args.input, args.output, levels=levels, packet_bytes=args.packet_bytes, tables=tables
        )
    if not args.quiet:
        size = Path(args.output).stat().st_size
        seconds = header.num_samples / header.sample_rate
        coded = ", entropy coded" if header.entropy_coded else ""
        print(
            f"{args.output}: {model.name} on {model.runtime}, {levels} levels, "
            f"{header.bitrate / 1000:g} kbps payload{_per_channel(header)}{coded}, "
            f"{size} bytes ({size * 8 / seconds / 1000:.3f} kbps measured over {seconds:.2f} s)"
        )


def _encode_batch(args) -> None:
    from codec.jobs import batch

    items = batch.plan_encode(args.input, args.output)  # checked before the model loads
    model = _coding_model(args.model, args)
    levels = _levels(model, args)
    result = batch.encode_many(
        model, items, levels=levels, packet_bytes=args.packet_bytes, jobs=args.jobs, progress=_progress(args),
        tables=_entropy_tables(model, args), overwrite=args.overwrite,
    )  # fmt: skip
    done = result.done
    if done and not args.quiet:
        size, seconds = sum(o.bytes for o in done), sum(o.seconds for o in done)
        measured = f" ({size * 8 / seconds / 1000:.3f} kbps measured)" if seconds else ""
        print(
            f"{args.output}: {len(done)} .codes files ({_coded_and_kept(result)}), {model.name}, {levels} levels, "
            f"{model.bitrate(levels) / 1000:g} kbps payload, {size} bytes for {seconds:.2f} s of audio{measured}"
        )
    _finish_batch(result, "inputs")


def _coded_and_kept(result) -> str:
    """How a batch run's outputs came about: `N coded, M kept from an earlier run[, K partial files removed]`."""
    removed = f", {result.removed} partial files of a stopped run removed" if result.removed else ""
    return f"{len(result.coded)} coded, {len(result.kept)} kept from an earlier run{removed}"


def cmd_decode(args) -> None:
    from codec.audio import check_output_format
    from codec.coding.compress import decode_file, model_name_for_codes
    from codec.jobs.batch import is_batch_input

    if is_batch_input(args.input):
        return _decode_batch(args)
    check_output_format(args.output)  # before any work
    name = model_name_for_codes(args.input, args.model)
    _refuse_codes_of_another_model(args.input, name)  # before building that model's graphs
    model = _coding_model(name, args)
    report = decode_file(model, args.input, args.output, conceal=args.on_corrupt == "silence", tables=args.tables)
    for problem in report.damaged:
        print(f"codec: warning: {problem}; replaced by silence", file=sys.stderr)
    if not args.quiet:
        h = report.header
        print(
            f"{args.output}: {h.channels} channel(s), {h.sample_rate} Hz, {h.levels} levels, {report.frames} frames "
            f"({model.name} on {model.runtime})"
        )


def _refuse_codes_of_another_model(path: str, name: str) -> None:
    """The one-line error of `codec.coding.compress.check_compatible` when the .codes file at `path` was made by another
    model than `name`, found from the two headers (no torch; the torch model loads only to word the error)."""
    from codec.coding.compress import check_compatible
    from codec.format import bitstream
    from codec.modelfile import read_metadata, resolve_model_path

    try:
        with open(path, "rb") as f:
            header = bitstream.read_header(f, path)
    except OSError:
        return  # decode_file reports it
    digest = read_metadata(resolve_model_path(name)).get("weights_hash", "")
    if digest and not digest.startswith(header.model_id):
        check_compatible(_load(name), header, path)


def _decode_batch(args) -> None:
    from codec.jobs import batch

    items = batch.plan_decode(args.input, args.output)  # checked before a model loads
    device = args.device if args.runtime != "torch" and args.device == "cpu" else _device(args.device)
    model = _coding_model(args.model, args) if args.model else None  # None: the one in each file
    result = batch.decode_many(
        model,
        items,
        device=device,
        runtime=args.runtime,
        conceal=args.on_corrupt == "silence",
        jobs=args.jobs,
        progress=_progress(args),
        overwrite=args.overwrite,
    )
    for outcome in result.done:
        for problem in outcome.warnings:
            print(f"codec: warning: {outcome.item.name}: {problem}; replaced by silence", file=sys.stderr)
    done = result.done
    if done and not args.quiet:
        seconds = sum(o.seconds for o in done)
        files = f"{len(done)} {batch.DECODED_SUFFIX} files ({_coded_and_kept(result)})"
        print(f"{args.output}: {files}, {seconds:.2f} s of audio")
    _finish_batch(result, "inputs")


def cmd_info(args) -> None:
    from codec.commands.describe import describe, info_lines

    info = describe(args.target)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print("\n".join(info_lines(info, args.target)))


def cmd_models(args) -> None:
    from codec import pretrained

    models = pretrained.shipped_models()
    if args.json:
        print(json.dumps([{"name": m.name, "default": m.default, "description": m.description} for m in models]))
        return
    if not models:
        print(
            "no models ship with this installation (codec/pretrained/registry.json lists none); "
            "pass a model file with --model PATH"
        )
    for m in models:
        print(f"{m.name}{' (default)' if m.default else ''}: {m.description}")


def cmd_demo(args) -> None:
    """Encode and decode the bundled speech clip, printing bitrate and sizes."""
    from codec.commands.demo import CLIP, run_demo

    model = _coding_model(args.model, args)
    print(
        f"model {model.name}: {model.sample_rate} Hz, {model.num_groups} groups x {model.num_levels} levels, "
        f"on {model.runtime}, {_THREADS or 1} thread{'s' * ((_THREADS or 1) != 1)}"
    )
    print(f"input {CLIP.name}: {_human(CLIP.stat().st_size)} (FLAC)")

    def show(row) -> None:
        print(
            f"  {row.bitrate / 1000:6g} kbps: {row.codes.name} {row.codes_bytes} bytes "
            f"({row.measured_kbps:.3f} kbps with container), decoded to {row.wav} ({_human(row.wav_bytes)})"
        )

    run_demo(model, args.out_dir, levels=args.levels, on_row=show)


def cmd_eval(args) -> None:
    from codec.eval.runner import run_eval

    model = _load(args.model) if args.model != "none" else None
    result = run_eval(
        data=args.data,
        out_dir=args.out,
        model=model,
        bitrates=args.bitrates,
        baselines=args.baselines,
        metrics=args.metrics,
        content=args.content,
        limit=args.limit,
        listen_clips=args.listen_clips,
        listen_seconds=args.listen_seconds,
        progress=not args.quiet,
        jobs=args.jobs,
        continuous=args.continuous,
        skip_missing_baselines=args.missing_baselines == "skip",
    )
    failed = len(result["failures"])
    print(
        f"{args.out}: results.csv, summary.json, summary.md, plots/, listen.html "
        f"({result['run']['clips']} clips, {failed} failed, {result['run']['seconds']} s)"
    )


def cmd_train(args) -> None:
    from codec.train.trainer import train_from_cli

    train_from_cli(args.config, args.overrides, resume=args.resume, resume_from=args.resume_from)


def cmd_export(args) -> None:
    from codec.train.export import export_model

    info = export_model(args.checkpoint, args.output, use_ema=not args.no_ema, name=args.name)
    print(
        f"{info['output']}: step {info['steps']} {'generator EMA' if info['ema'] else 'generator'} "
        f"from {info['checkpoint']} (weights {info['hash'][:12]})"
    )


def cmd_calibrate_level(args) -> None:
    from codec import limits
    from codec.checkpoint import save_model
    from codec.datadir import list_utterances
    from codec.jobs.calibrate import calibrate_level
    from codec.train.export import portable_paths

    limits.check_int(args.max_clips, "--max-clips", 10, 100000)
    if not 0.5 <= args.seconds <= 600:
        raise CodecError(f"--seconds must lie in [0.5, 600], got {args.seconds}")
    import numpy as np

    if not args.out.endswith(".safetensors"):
        raise CodecError(f"{args.out}: a model file is written as .safetensors; name the output <name>.safetensors")
    model = _load(args.model)
    utts = list_utterances(args.data)
    pick = np.unique(np.linspace(0, len(utts) - 1, min(args.max_clips, len(utts))).round().astype(int))
    gains, count = calibrate_level(model, [utts[i] for i in pick], seconds=args.seconds)
    provenance = {**model.provenance, "level_calibration": {"data": str(args.data), "clips": count,
                                                              "gain_db": [float(g) for g in gains]}}  # fmt: skip
    digest = save_model(model, args.out, portable_paths(provenance))
    gains_text = " / ".join(f"{g:+.2f}" for g in gains)
    print(f"{args.out}: {model.name} (id {digest[:8]}), output gain {gains_text} dB at 1..{model.num_levels} levels, "
          f"measured on {count} clips")  # fmt: skip


def cmd_fit_entropy(args) -> None:
    from codec import limits
    from codec.format import entropy
    from codec.jobs.entropy_fit import fit_tables, read_token_dir
    from codec.modelfile import default_model_name, read_metadata, resolve_model_path

    limits.check_int(args.min_count, "--min-count", 1, 2**31)
    path = resolve_model_path(default_model_name(NO_DEFAULT) if args.model is None else args.model)
    meta = read_metadata(path)

    class _Facts:  # what fitting needs of the model, read without loading its weights
        name = meta.get("name", path.stem)
        model_id = meta.get("weights_hash", "")[:8]
        config = json.loads(meta.get("config", "{}")).get("quantizer", {})
        num_groups, num_levels = config.get("num_groups"), config.get("num_levels")
        codebook_size = config.get("codebook_size")

    model = _Facts
    if not model.model_id or not all((model.num_groups, model.num_levels, model.codebook_size)):
        model = _load(str(path))
    utterances = read_token_dir(args.tokens, model)
    tables = fit_tables(
        utterances, model_id=model.model_id, model_name=model.name, num_groups=model.num_groups,
        num_levels=model.num_levels, codebook_size=model.codebook_size, min_count=args.min_count,
        clusters=limits.check_int(args.clusters, "--clusters", 1, 2**16),
    )  # fmt: skip
    out = Path(args.out) if args.out else entropy.tables_path(path)
    tables.save(out)
    bits = tables.info["held_out_bits_per_codebook"]
    print(
        f"{out}: tables {tables.tables_id} for {model.name} (id {model.model_id}), {out.stat().st_size} bytes, "
        f"{tables.info['frames']} frames; held-out bits per code by codebook: {' '.join(f'{b:.2f}' for b in bits)} "
        f"(of {int(model.codebook_size).bit_length() - 1})"
    )


def cmd_stream_encode(args) -> None:
    from codec.coding.compress import EncodeSession, encode_blocks
    from codec.format.encode_session import InputNames
    from codec.format.pcmio import FrameReader, PcmFormat, check_format, read_wav_header

    model = _coding_model(args.model, args, live=True)
    levels = _levels(model, args)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    names = InputNames()
    if args.rate is not None:  # --rate and --channels are checked where every path checks them: the encode session
        fmt, frames = PcmFormat(args.rate, args.channels, check_format(args.format)), None
        names = InputNames(sample_rate="--rate", channels="--channels")
    else:
        fmt, frames = read_wav_header(stdin)
    reader = FrameReader(stdin, fmt, limit_frames=frames)
    blocks = reader.blocks(fmt.frame_bytes * max(1, fmt.sample_rate // 100))
    session = EncodeSession(
        model, stdout, sample_rate=fmt.sample_rate, channels=fmt.channels, levels=levels, num_samples=frames,
        packet_frames=args.packet_frames, crc_bits=args.packet_crc, flush=stdout.flush,
        tables=_entropy_tables(model, args), names=names,
    )  # fmt: skip
    encode_blocks(model, blocks, session)
    stdout.flush()


def cmd_stream_decode(args) -> None:
    from codec.coding.compress import decode_blocks, model_name_for_header
    from codec.format.bitstream import CodesReader
    from codec.format.pcmio import PcmFormat, check_format, wav_header

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    reader = CodesReader(stdin, "stdin")
    h = reader.header
    model = _coding_model(args.model or model_name_for_header(h, "stdin"), args, live=True)
    fmt = PcmFormat(h.sample_rate, h.channels, check_format(args.format))
    if args.wav:
        stdout.write(wav_header(fmt, h.num_samples))
    blocks = decode_blocks(model, reader, conceal=args.on_corrupt == "silence", hold_back=False, tables=args.tables)
    for block in blocks:
        stdout.write(fmt.encode(block))
        stdout.flush()


def cmd_serve(args) -> None:
    import asyncio
    import logging

    _need_websockets()
    from codec.server.access import Access, check_exposure, parse_origins, resolve_token
    from codec.server.serve import serve

    access = Access(resolve_token(args.token, args.token_file), parse_origins(args.allow_origin))
    check_exposure(args.host, access.token, args.insecure_no_token)  # before the model loads: a fast, clear refusal
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model = _coding_model(args.model, args, live=True)
    from codec.runtimes.threads import describe_run

    log = logging.getLogger("codec.serve")
    log.info(describe_run(model, _THREADS or 1))
    log.info("access: %s; browser origins allowed: %s", "token required" if access.token else "no token",
             ", ".join(access.origins) or "none")  # fmt: skip
    try:
        asyncio.run(serve(model, args.host, args.port, access=access))
    except OSError as e:
        where = f"{args.host}:{args.port}"
        raise CodecError(f"cannot listen on {where} ({e.strerror}); choose another --port") from None


def cmd_stream_client(args) -> None:
    _need_websockets()
    from codec.server.access import resolve_token
    from codec.server.client import decode_file_remote, encode_file_remote

    token = resolve_token(args.token, args.token_file)
    if args.mode == "encode":
        size = encode_file_remote(args.url, args.input, args.output, bitrate=args.bitrate, levels=args.levels,
                                  realtime=args.realtime, token=token)  # fmt: skip
        print(f"{args.output}: {size} bytes from {args.url}")
    else:
        channels, samples, rate = decode_file_remote(args.url, args.input, args.output, token=token)
        print(f"{args.output}: {samples} samples x {channels} channel(s) at {rate} Hz")


def cmd_bench(args) -> None:
    import torch

    from codec.commands import bench
    from codec.config import builtin_config_path, load_model_config
    from codec.models.codec import build_model

    if args.model:
        model = _load(args.model, args.device)
    else:
        path = Path(args.config) if Path(args.config).is_file() else builtin_config_path(args.config)
        torch.manual_seed(0)
        model = build_model(load_model_config(path)).eval().to(_device(args.device))
    bench.describe(model)
    if args.onnx:  # torch eager against ONNX Runtime, side by side (exports into a temporary folder)
        from codec.runtimes.export_onnx import export_onnx

        with tempfile.TemporaryDirectory(prefix="codec-onnx-") as onnx_dir:
            export_onnx(model, onnx_dir)
            bench.onnx_versus_torch(model, onnx_dir, frames=args.frames, seconds=args.seconds)
        bench.process_costs(model, repeats=3)
    elif args.entropy:
        from codec.format.entropy import tables_for

        tables = tables_for(model, args.tables)
        if tables is None:
            raise CodecError(f"--entropy: model {model.name} has no entropy tables; pass --model with one that has")
        bench.entropy_cost(model, tables, seconds=args.seconds, repeats=args.repeats)
    elif args.streaming:
        bench.streaming(model, frames=args.frames)
    else:
        bench.offline(model, seconds=args.seconds, repeats=args.repeats)


def cmd_export_onnx(args) -> None:
    from codec.runtimes.export_onnx import export_onnx

    model = _load(args.model)
    manifest = export_onnx(model, args.out_dir, levels=_levels(model, args), weights=args.weights)
    files = [manifest[side][key] for side in ("encoder", "decoder") for key in ("file", "frame_file")]
    print(f"{args.out_dir}: {', '.join(files)}, manifest.json ({manifest['model']} {manifest['model_id']}, "
          f"{manifest['levels']} levels, {manifest['bitrate'] / 1000:g} kbps at most, "
          f"{manifest['weights']} weights)")  # fmt: skip


def cmd_tokens(args) -> None:
    from codec.tokens.extract import extract_tokens

    model = _load(args.model, "cpu")  # extract_tokens moves it to --device (auto; cuda:LOCAL_RANK under torchrun)
    levels = _levels(model, args)
    summary = extract_tokens(
        model, args.data, args.out, levels=levels, fmt=args.format, pattern=args.pattern, offsets=args.offsets,
        batch_size=args.batch_size, max_batch_seconds=args.max_batch_seconds, num_workers=args.num_workers,
        device=args.device, min_frames=args.min_frames, progress=not args.quiet,
    )  # fmt: skip
    if "rank" in summary:  # torchrun: rank 0 reports for everyone
        return
    run = summary.get("this_run", {})
    speed = f", {run['audio_hours_per_hour']:.1f} audio-hours/hour" if run.get("utterances") else ""
    state = " (already up to date)" if summary.get("up_to_date") else ""
    print(
        f"{args.out}: {summary['extracted']} of {summary['utterances']} utterances, {summary['frames']} frames, "
        f"{summary['audio_hours']:.3f} h{state}; failed {summary['failed']}, empty {summary['skipped_empty']}, "
        f"too short {summary['skipped_short']} (see failed.list){speed}"
    )


def model_argument(p) -> None:
    from codec import pretrained

    default = pretrained.default_model()  # the registry is the one place that says which
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="model name (see `codec models`) or path to a model file (default: the shipped default"
        + (f", {default.name})" if default else ")"),
    )


def model_option(p) -> None:
    model_argument(p)
    device_option(p)


def token_options(p, what: str) -> None:
    from codec.server.access import TOKEN_ENV

    p.add_argument("--token", default=None, help=f"{what} (visible to other users in `ps`: prefer --token-file)")
    p.add_argument(
        "--token-file", metavar="FILE", help=f"read the token from FILE's first line (default: ${TOKEN_ENV})"
    )


def device_option(p) -> None:
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or cuda:N (default: cpu)")


MANY_INPUTS = (
    "Many inputs: a folder (every matching file under it, recursively, the outputs mirroring its tree; a Kaldi "
    "data dir if it holds a wav.scp), a Kaldi table of `id path` lines (*.scp; for encode a path may be a command "
    "ending in |), or a list file of one path per line (*.txt, *.list, *.lst; the id is the file name without "
    "its suffix). The model loads once; an input that fails is reported at the end and the rest go on "
    "(exit status 1 if any failed). Run again after an interruption, it keeps the outputs already finished "
    "(checked; --overwrite codes them again) and codes the rest."
)


def runtime_option(p) -> None:
    from codec.runtimes.runtime import RUNTIMES

    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the model: onnx (ONNX Runtime on the CPU; the model's graphs are built into the user's "
        "cache on first use, with a notice; 4.2-6.3x less CPU per live frame, no torch import once built), "
        "onnx-int8 (the same with a spectral model's block weights as integers: about 1.4x less CPU per live frame "
        "again; its codes and audio are close to onnx's, not equal), or torch; auto (default): onnx wherever it can "
        "run the model, else torch (--device cuda, a model that codes channels jointly)",
    )


def tables_option(p) -> None:
    p.add_argument(
        "--tables",
        default=None,
        metavar="PATH",
        help="entropy tables (codec fit-entropy) to use instead of the ones beside the model file (<model>.entropy)",
    )


def entropy_options(p, live: bool = False) -> None:
    p.add_argument(
        "--entropy",
        action="store_true",
        help="entropy-code the payload with the model's context tables (lossless, same audio; fewer bytes as the "
        "model's codes are predictable: on dev 4-14%% for the default spectral16k, 20-23%% for grvq16k, "
        "docs/ENTROPY.md); without tables for the model the plain payload is written"
        + (" (live streams: variable-size packets)" if live else ""),
    )
    tables_option(p)


def jobs_option(p) -> None:
    p.add_argument(
        "--jobs", "-j", type=int, default=1, metavar="N",
        help="many inputs: code them in N processes, each with its own copy of the model and one thread",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="many inputs: code every input again; by default a rerun keeps the outputs an earlier (perhaps "
        "interrupted) run finished, after checking them",
    )  # fmt: skip


def rate_options(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--bitrate",
        "-b",
        type=float,
        default=None,
        metavar="KBPS",
        help="bitrate in kbps per channel (every channel is its own stream: a stereo file at -b 1 is 2 kbps); "
        "one between supported ones is rounded down (default: the highest)",
    )
    g.add_argument("--levels", "-l", type=int, default=None, metavar="N", help="residual levels to use (per channel)")


def _add_coding_commands(sub) -> None:
    """`encode`, `decode` (one file or many), `info`, `models` and `demo`."""
    p = sub.add_parser(
        "encode",
        help="compress an audio file (or many) into .codes",
        description="Compress an audio file into a .codes file, or many audio files into a folder of them. "
        f"{MANY_INPUTS} Each input becomes OUTPUT/<id>.codes.",
    )
    p.add_argument(
        "input",
        help="audio file (wav, flac, ogg, mp3; any rate and channel count), or many: a folder, a wav.scp (*.scp) "
        "or a list file (*.txt, *.list, *.lst)",
    )
    p.add_argument(
        "output", help="output .codes file (another name is written, with a warning); for many inputs, an output folder"
    )
    model_option(p)
    runtime_option(p)
    rate_options(p)
    p.add_argument(
        "--packet-bytes",
        type=int,
        default=1024,
        help="plain payload bytes per packet: smaller loses less to a damaged packet, larger costs less overhead "
        "(entropy-coded packets hold the same frames in fewer bytes)",
    )
    entropy_options(p)
    jobs_option(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no summary line and no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode",
        help="decompress a .codes file (or many) into audio",
        description="Decompress a .codes file into audio, or many .codes files into a folder of .wav files. "
        f"{MANY_INPUTS} Each input becomes OUTPUT/<id>.wav.",
    )
    p.add_argument("input", help=".codes file, or many: a folder, a *.scp table or a list file (*.txt, *.list, *.lst)")
    p.add_argument("output", help="output audio file (.wav, .flac or .ogg); for many inputs, an output folder")
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="model that encoded the file (default: the shipped model named in the file, else the default)",
    )
    p.add_argument(
        "--on-corrupt",
        choices=["error", "silence"],
        default="error",
        help="damaged or missing packets: stop with an error, or decode the rest with silence in their place",
    )
    tables_option(p)
    device_option(p)
    runtime_option(p)
    jobs_option(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no summary line and no progress bar")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe a model (bitrates, architecture) or a .codes file (header, bitrate)")
    p.add_argument("target", help="model name, model file, or .codes file")
    p.add_argument("--json", action="store_true", help="print everything as JSON (a model's training config too)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list the models that ship with the package")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="encode and decode a bundled speech clip, printing bitrates and sizes")
    model_option(p)
    runtime_option(p)
    p.add_argument("--levels", "-l", type=int, default=None, help="one level count (default: lowest, middle, highest)")
    p.add_argument("--out-dir", default=None, help="where to write the outputs (default: a new temporary folder)")
    p.set_defaults(func=cmd_demo)


def _add_eval_commands(sub) -> None:
    """`codec eval`: rate-quality evaluation against classical codecs (imports codec.eval only when run)."""

    p = sub.add_parser("eval", help="score the model at several bitrates against Opus and Codec2 on a set of clips")
    p.add_argument("--data", required=True, help="folder of audio files (searched recursively) or a Kaldi wav.scp")
    p.add_argument("--out", required=True, help="output folder for the CSV, JSON, Markdown, plots and listening page")
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help="model name or file (default: the shipped default); 'none' to score only the baselines",
    )
    p.add_argument("--bitrates", default="all", help="model bitrates in kbps, comma-separated (default: all)")
    p.add_argument("--baselines", default="opus,codec2", help="comma-separated: opus, codec2; or none")
    p.add_argument(
        "--missing-baselines", choices=["error", "skip"], default="error",
        help="a baseline whose tool is not installed: stop before starting (error), or score the rest and list it "
        "as not run (skip, as the recipes do)",
    )  # fmt: skip
    p.add_argument(
        "--metrics",
        default="all",
        help="comma-separated: pesq_wb, pesq_nb, stoi, estoi, si_sdr, mel_distance, stft_distance, level_db, dnsmos",
    )
    p.add_argument(
        "--content",
        choices=["auto", "speech", "music"],
        default="auto",
        help="content type of every clip; auto: from a 'speech' or 'music' path component (else speech)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips")
    p.add_argument("--listen-clips", type=int, default=6, help="clips with players on the listening page")
    p.add_argument("--listen-seconds", type=float, default=10.0, help="seconds of each clip on the listening page")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="clips scored in parallel processes (one thread each); the results do not change",
    )
    p.add_argument(
        "--continuous",
        action="store_true",
        help="also score the model with its quantizer bypassed (the autoencoder's ceiling; needs the torch model)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _add_training_commands(sub) -> None:
    """`codec train` and `codec export` (import codec.train only when run; inference never loads it)."""

    p = sub.add_parser(
        "train",
        help="train a codec from a config (one process, or one per GPU under torchrun)",
        description="Train a codec. Multi-GPU / multi-node: torchrun --nproc_per_node N -m codec train ...",
    )
    p.add_argument("--config", "-c", required=True, help="YAML config file, or a built-in config name (e.g. grvq16k)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides, e.g. data.train_dir=data/train train.batch_size=8",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.output_dir")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT", help="continue from this step_*.pt file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "fit-entropy",
        help="fit a model's entropy tables (for `codec encode --entropy`) on its codes of a training set",
        description="Fit the context model that entropy-codes a model's .codes payloads (docs/ENTROPY.md) on "
        "codes from `codec tokens --format npy` (default pattern, all levels) of that model, and write it beside "
        "the model file as <model>.entropy (or --out).",
    )
    p.add_argument("tokens", help="output folder of `codec tokens --data TRAIN --model MODEL --format npy`")
    model_argument(p)
    p.add_argument("--out", "-o", default=None, help="tables file to write (default: beside the model, .entropy)")
    p.add_argument(
        "--min-count",
        type=int,
        default=3,
        help="context pairs seen fewer times are pruned: larger makes a smaller file at a small cost in bits",
    )
    p.add_argument(
        "--clusters",
        type=int,
        default=32,
        help="clusters of context codes per codebook and source: fewer make a smaller file (docs/ENTROPY.md)",
    )
    p.set_defaults(func=cmd_fit_entropy)

    p = sub.add_parser(
        "calibrate-level",
        help="set a model's output gain per bitrate so its output level matches its input's, measured on audio",
        description="Code the clips of --data at every level count, measure the mean output level against the "
        "input's (as `codec eval` reports it) and write a copy of the model whose decoder applies the gain that "
        "brings it to 0 dB at each bitrate (codec/jobs/calibrate.py). Codes are unchanged; the model id changes, "
        "so fit entropy tables after calibrating.",
    )
    p.add_argument("model", help="model file (.safetensors) or shipped model name to calibrate")
    p.add_argument("out", help="calibrated model file to write (.safetensors)")
    p.add_argument("--data", required=True, help="Kaldi data dir, wav.scp or folder of audio (training audio)")
    p.add_argument("--max-clips", type=int, default=300, help="clips used, evenly spaced over --data (default 300)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each clip used, from its start")
    p.set_defaults(func=cmd_calibrate_level)

    p = sub.add_parser("export", help="write the inference model file of a training checkpoint")
    p.add_argument("checkpoint", help="training checkpoint (step_*.pt) or training output dir (its newest checkpoint)")
    p.add_argument("output", help="model file to write (.safetensors)")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator even if the run kept an EMA")
    p.add_argument("--name", default=None, help="model name recorded in the file (default: model.name of the config)")
    p.set_defaults(func=cmd_export)


def _add_streaming_commands(sub) -> None:
    """Pipes (`stream-encode`, `stream-decode`), the WebSocket server and its client, and `bench`."""

    formats = "s16le, s32le or f32le"
    p = sub.add_parser("stream-encode", help="encode PCM or WAV from stdin to .codes packets on stdout, as it arrives")
    model_option(p)
    runtime_option(p)
    rate_options(p)
    p.add_argument("--rate", type=int, default=None, help="raw PCM input at this sample rate (default: expect WAV)")
    p.add_argument("--channels", type=int, default=1, help="channels of raw PCM input")
    p.add_argument("--format", default="s16le", help=f"raw PCM sample format: {formats}")
    p.add_argument("--packet-frames", type=int, default=1, help="frames per packet (1 = lowest latency)")
    p.add_argument(
        "--packet-crc",
        type=int,
        choices=[32, 16, 8],
        default=32,
        help="bits of each packet's check: 16 or 8 cost less per packet on a live link (a version-2 .codes "
        "stream; docs/STREAMING.md has the overhead table)",
    )
    entropy_options(p, live=True)
    p.set_defaults(func=cmd_stream_encode)

    p = sub.add_parser("stream-decode", help="decode .codes packets from stdin to raw PCM (or WAV) on stdout")
    p.add_argument("--model", "-m", default=None, help="model that encoded the stream (default: as `codec decode`)")
    device_option(p)
    runtime_option(p)
    p.add_argument("--format", default="s16le", help=f"output sample format: {formats}")
    p.add_argument("--wav", action="store_true", help="write a WAV header first (length unknown if the stream's is)")
    p.add_argument("--on-corrupt", choices=["error", "silence"], default="error")
    tables_option(p)
    p.set_defaults(func=cmd_stream_decode)

    p = sub.add_parser("serve", help="serve streaming encode/decode over WebSockets (protocol: docs/STREAMING.md)")
    model_option(p)
    runtime_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    token_options(p, "require this shared secret of every client (sent as `Authorization: Bearer TOKEN`)")
    p.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="let web pages from this origin (scheme://host[:port]) connect; repeat it or give a comma list. "
        "Requests with any other browser Origin are refused (HTTP 403); programs send none",
    )
    p.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="listen on an address other machines reach (--host 0.0.0.0, say) without a token",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stream-client", help="stream a file through a `codec serve` server")
    p.add_argument("mode", choices=["encode", "decode"], help="encode: audio -> .codes; decode: .codes -> audio")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--url", default="ws://127.0.0.1:8765")
    rate_options(p)
    p.add_argument("--realtime", action="store_true", help="send audio no faster than real time (20 ms chunks)")
    token_options(p, "the server's token")
    p.set_defaults(func=cmd_stream_client)

    p = sub.add_parser("bench", help="speed figures as JSON lines: real-time factors, overhead, streaming latency")
    model_option(p)
    p.add_argument("--config", default="grvq16k", help="built-in config or YAML to benchmark (random weights)")
    p.add_argument("--streaming", action="store_true", help="per-frame streaming compute time instead")
    p.add_argument(
        "--entropy",
        action="store_true",
        help="the CPU cost of entropy coding in file encode/decode (plain vs --entropy, side by side) and the bytes",
    )
    tables_option(p)
    p.add_argument("--seconds", type=float, default=10.0, help="audio length for the offline figures")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--frames", type=int, default=500, help="frames for the streaming figures")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="torch eager vs ONNX Runtime (fp32 graphs, and int8 ones for a spectral model): per frame, offline, "
        "cold start of a 1 s encode and stream-encode of 60 s",
    )
    p.set_defaults(func=cmd_bench)


def _add_onnx_commands(sub) -> None:
    """`codec export-onnx`: the encoder and decoder steps as ONNX graphs (docs/ONNX.md)."""

    p = sub.add_parser("export-onnx", help="write the encoder and decoder steps as ONNX graphs with a manifest")
    p.add_argument("model", help="model name (see `codec models`) or model file")
    p.add_argument("out_dir", help="folder for encoder.onnx, decoder.onnx and manifest.json")
    from codec.runtimes.runtime import WEIGHTS

    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="fp32",
        help="fp32 (default): the model's arithmetic; int8: a spectral model's block weights as 7-bit integers over "
        "8-bit rows (a live frame reads a third of the bytes; codes and audio close to fp32's, not equal; "
        "docs/ONNX.md)",
    )
    rate_options(p)
    p.set_defaults(func=cmd_export_onnx)


def _add_tokens_commands(sub) -> None:
    """`codec tokens`: corpus -> LM token shards (imports codec.tokens only when run); works under torchrun."""

    p = sub.add_parser(
        "tokens",
        help="extract codec tokens of a corpus for language models (resumable; torchrun for many processes)",
        description="Extract tokens. Many GPUs or processes: torchrun --nproc_per_node N -m codec tokens ...",
    )
    p.add_argument("--data", required=True, help="Kaldi data dir, wav.scp, or folder of audio files")
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    model_argument(p)  # tokens has its own --device (default auto)
    rate_options(p)
    p.add_argument("--format", choices=["npy", "ark", "packed"], default="npy", help="see docs/TOKENS.md")
    patterns = ["parallel", "flatten", "delay", "stack-delay", "coarse-first"]
    p.add_argument("--pattern", choices=patterns, default="parallel", help="codebook interleaving (docs/TOKENS.md)")
    p.add_argument("--offsets", action="store_true", help="shift codebook n by n*K: one shared vocabulary")
    p.add_argument("--batch-size", type=int, default=16, help="utterances per batch (length-bucketed)")
    p.add_argument("--max-batch-seconds", type=float, default=320.0, help="cap on count x longest in a batch")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader processes reading and resampling audio")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--min-frames", type=int, default=1, help="skip audio under N whole frames (failed.list)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codec", description="Streaming neural audio codec (GRVQ).")
    parser.add_argument("--version", action="version", version=f"codec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads that code, for ONNX Runtime and torch, 1 or more (default: 1, which a busy machine does "
        "not slow down; train: torch's choice); more threads wait without spinning",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="say on stderr which model, runtime and threads code"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_coding_commands(sub)
    _add_streaming_commands(sub)
    _add_eval_commands(sub)
    _add_training_commands(sub)
    _add_tokens_commands(sub)
    _add_onnx_commands(sub)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail on the closed pipe too."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it): nothing will be flushed to it
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise CodecError(f"--threads {args.threads} is not possible; give 1 or more (or leave it out)")
        from codec.runtimes import threads

        global _THREADS, _VERBOSE
        _THREADS, _VERBOSE = threads.threads_for(args.command, args.threads), args.verbose
        threads.prepare(_THREADS)
        if sys.modules.get("torch") is not None:  # else torch reads the count from the environment when it loads
            _set_torch_threads()
        args.func(args)
    except CodecError as e:
        if args.debug:
            raise
        print(f"codec: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("codec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our stdout went away (`| head`): stop quietly, as `cat` does
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a process killed by the signal
    except Exception as e:  # a bug, not bad input: say so in one line unless --debug
        if args.debug:
            raise
        print(f"codec: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
