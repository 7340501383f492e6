"""The `codec` command line. Each verb parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from codec import __version__
from codec.errors import CodecError

NO_DEFAULT = (
    "no pretrained default model ships with this version of codec yet; "
    "pass one with --model PATH (a model file written by `codec export` or `codec.checkpoint.save_model`)"
)


def _load(model: str | None):
    from codec import pretrained
    from codec.checkpoint import load_model

    if model is None:
        default = pretrained.default_model()
        if default is None:
            raise CodecError(NO_DEFAULT)
        model = default.name
    return load_model(model)


def _levels(model, args) -> int:
    levels, notice = model.levels_for(bitrate_kbps=args.bitrate, levels=args.levels)
    if notice:
        print(f"codec: note: {notice}", file=sys.stderr)
    return levels


def _human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def cmd_encode(args) -> None:
    from codec.compress import encode_file

    model = _load(args.model)
    levels = _levels(model, args)
    header = encode_file(model, args.input, args.output, levels=levels, packet_bytes=args.packet_bytes)
    if not args.quiet:
        size = Path(args.output).stat().st_size
        seconds = header.num_samples / header.sample_rate
        print(
            f"{args.output}: {model.name}, {levels} levels, {header.bitrate / 1000:g} kbps payload, "
            f"{size} bytes ({size * 8 / seconds / 1000:.3f} kbps measured over {seconds:.2f} s)"
        )


def cmd_decode(args) -> None:
    from codec.compress import decode_file, model_for_codes

    model = model_for_codes(args.input, args.model)
    report = decode_file(model, args.input, args.output, conceal=args.on_corrupt == "silence")
    for problem in report.damaged:
        print(f"codec: warning: {problem}; replaced by silence", file=sys.stderr)
    if not args.quiet:
        h = report.header
        print(f"{args.output}: {h.channels} channel(s), {h.sample_rate} Hz, {h.levels} levels, {report.frames} frames")


def cmd_info(args) -> None:
    from codec.describe import codes_info, model_info

    target = Path(args.target)
    with_magic = target.is_file() and target.open("rb").read(4) == b"GRVQ"
    info = codes_info(target) if with_magic or target.suffix == ".codes" else model_info(args.target)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        print(f"{key:>20}: {value}")


def cmd_models(args) -> None:
    from codec import pretrained

    models = pretrained.shipped_models()
    if args.json:
        print(json.dumps([{"name": m.name, "default": m.default, "description": m.description} for m in models]))
        return
    if not models:
        print("no models ship with this version of codec yet (the trained default arrives in a later release)")
    for m in models:
        print(f"{m.name}{' (default)' if m.default else ''}: {m.description}")


def cmd_demo(args) -> None:
    """Encode and decode the bundled speech clip, printing bitrate and sizes."""
    from codec.compress import decode_file, encode_file

    clip = Path(__file__).parent / "assets" / "speech_en.flac"
    model = _load(args.model)
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="codec-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = [args.levels] if args.levels else sorted({1, (model.num_levels + 1) // 2, model.num_levels})
    print(f"model {model.name}: {model.sample_rate} Hz, {model.num_groups} groups x {model.num_levels} levels")
    print(f"input {clip.name}: {_human(clip.stat().st_size)} (FLAC)")
    for levels in wanted:
        codes = out_dir / f"speech_en.{levels}.codes"
        wav = out_dir / f"speech_en.{levels}.wav"
        header = encode_file(model, clip, codes, levels=levels)
        decode_file(model, codes, wav)
        size = codes.stat().st_size
        seconds = header.num_samples / header.sample_rate
        print(
            f"  {header.bitrate / 1000:6g} kbps: {codes.name} {size} bytes "
            f"({size * 8 / seconds / 1000:.3f} kbps with container), decoded to {wav} ({_human(wav.stat().st_size)})"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codec", description="Streaming neural audio codec (GRVQ).")
    parser.add_argument("--version", action="version", version=f"codec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def model_option(p):
        p.add_argument("--model", "-m", default=None, help="model name (see `codec models`) or path to a model file")

    def rate_options(p):
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            "--bitrate",
            "-b",
            type=float,
            default=None,
            metavar="KBPS",
            help="bitrate in kbps; one between supported ones is rounded down (default: the highest)",
        )
        g.add_argument("--levels", "-l", type=int, default=None, metavar="N", help="residual levels to use")

    p = sub.add_parser("encode", help="compress an audio file into a .codes file")
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3; any rate and channel count)")
    p.add_argument("output", help="output .codes file")
    model_option(p)
    rate_options(p)
    p.add_argument(
        "--packet-bytes",
        type=int,
        default=1024,
        help="payload bytes per packet: smaller loses less to a damaged packet, larger costs less overhead",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decompress a .codes file into audio")
    p.add_argument("input", help=".codes file")
    p.add_argument("output", help="output audio file (.wav, .flac or .ogg)")
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
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe a model (bitrates, architecture) or a .codes file (header, bitrate)")
    p.add_argument("target", help="model name, model file, or .codes file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list the models that ship with the package")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help="encode and decode a bundled speech clip, printing bitrates and sizes")
    model_option(p)
    p.add_argument("--levels", "-l", type=int, default=None, help="one level count (default: lowest, middle, highest)")
    p.add_argument("--out-dir", default=None, help="where to write the outputs (default: a new temporary folder)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        args.func(args)
    except CodecError as e:
        if args.debug:
            raise
        print(f"codec: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("codec: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: say so in one line unless --debug
        if args.debug:
            raise
        print(f"codec: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
