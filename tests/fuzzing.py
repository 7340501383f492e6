"""Mutated .codes files and the rule they are held to: the one home of the fuzz test and `tools/fuzz_codes.py`.

The rule: decoding any bytes through the library or the CLI either works or raises the project's own
`CodecError` (the CLI: exit 1 with one `codec: error:` line and no output file), within `CASE_SECONDS`,
and without the process's peak memory passing a bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import resource
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from codec.coding.compress import decode_blocks, decode_file, decode_stream, encode_audio
from codec.commands.describe import codes_info
from codec.errors import CodecError
from codec.format import bitstream
from codec.format.bitstream import CodesReader, CodesWriter

CASE_SECONDS = 5  # a case that takes longer is a hang
HEADER_FIELDS = (  # the header's varints, in order (num_samples is stored + 1; 0 = unknown)
    "sample_rate", "model_sample_rate", "channels", "hop_length", "num_groups", "levels", "bits", "num_samples",
    "extra_len",
)  # fmt: skip
EXTREMES = (0, 1, 2, 127, 128, 2**16, 2**31, 2**32 + 1, 2**40, 2**63 - 1)


# --- valid files -------------------------------------------------------------------------------------------------
def valid_files(model, seconds: float = 0.15, tables=None, plain: bool = True) -> list[bytes]:
    """A few small, valid .codes files of generated audio: mono and stereo, several rates, levels, packet sizes,
    plain (unless `plain` is False) and, with `tables` (format/entropy.py), entropy coded; each kind four times in the
    current container version, then two of them as the codec before version 4 wrote them (version 1 or 3, whose
    header is checked by the first packet's CRC)."""
    from tests.conftest import tone

    files, legacy = [], []
    for coder in ([None] if plain else []) + ([] if tables is None else [tables]):
        for i, (rate, channels, levels, packet_bytes) in enumerate(
            [(8000, 1, 4, 64), (8000, 2, 2, 32), (11025, 1, 1, 8), (16000, 1, 3, 48)]
        ):
            out = io.BytesIO()
            audio = tone(seconds, rate, channels, seed=i)
            encode_audio(model, audio, rate, out, levels=levels, packet_bytes=packet_bytes, tables=coder)
            files.append(out.getvalue())
            if i < 2:
                legacy.append(as_version(out.getvalue(), 3 if coder is not None else 1, coder))
    return files + legacy


def as_version(data: bytes, version: int, tables) -> bytes:
    """The packets of `data` under its header written as `version`."""
    reader = CodesReader(io.BytesIO(data), tables=tables)
    out = io.BytesIO()
    writer = CodesWriter(out, dataclasses.replace(reader.header, version=version), tables)
    for packet in reader.packets():
        writer.write_packet(packet.codes)
    return out.getvalue()


def layout(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Header size and (offset, size) of every packet of a valid file (entropy-coded packets are framed, not
    decoded)."""
    reader = CodesReader(io.BytesIO(data))
    return reader.header_size, [(p.offset, p.size) for p in reader.packets()]


def header_numbers(data: bytes) -> list[int]:
    stream = io.BytesIO(data[9:])
    return [bitstream._read_varint(stream)[0] for _ in HEADER_FIELDS]


def _varints_end(data: bytes) -> int:
    """Offset just past the header's varints (what follows them, up to the metadata, is kept by forge_header)."""
    stream = io.BytesIO(data[9:])
    for _ in HEADER_FIELDS:
        bitstream._read_varint(stream)
    return 9 + stream.tell()


def _checked(data: bytes, header: bytes) -> bytes:
    """`header` (without a check of its own) followed by the packets of `data`, with whichever CRC covers the header
    recomputed: the header's own (version 4) or the first packet's (versions 1 to 3)."""
    size, packets = layout(data)
    h = CodesReader(io.BytesIO(data)).header
    if h.checks_itself:
        return header + bitstream.crc(header).to_bytes(bitstream.CRC_BYTES, "big") + data[size:]
    if not packets:
        return header + data[size:]
    offset, psize = packets[0]
    body = data[offset : offset + psize - h.crc_bytes]
    check = bitstream.crc(body, h.crc_bits, bitstream.crc(header, h.crc_bits)).to_bytes(h.crc_bytes, "big")
    return header + body + check + data[offset + psize :]


def forge_header(data: bytes, **fields: int) -> bytes:
    """`data` with header varints replaced (raw values, by HEADER_FIELDS name, and in version 4 `crc_bits` and
    `coder`), and the CRC that covers the header recomputed.

    The metadata bytes stay as they are, so a forged `extra_len` claims more (or fewer) bytes than follow.
    """
    size = CodesReader(io.BytesIO(data)).header_size
    numbers = dict(zip(HEADER_FIELDS, header_numbers(data), strict=True))
    numbers.update({k: v for k, v in fields.items() if k in HEADER_FIELDS})
    varints = b"".join(bitstream.encode_varint(numbers[k]) for k in HEADER_FIELDS)
    rest = data[_varints_end(data) : size]  # version 2 to 4 fields, then the metadata (and version 4's CRC)
    if data[4] == bitstream.VERSION:
        stream = io.BytesIO(rest)
        crc_bits, coder = bitstream._read_varint(stream)[0], bitstream._read_varint(stream)[0]
        coding = bitstream.encode_varint(fields.get("crc_bits", crc_bits)) + bitstream.encode_varint(
            fields.get("coder", coder)
        )
        rest = coding + rest[stream.tell() : -bitstream.CRC_BYTES]
    return _checked(data, data[:9] + varints + rest)


def forge_frames(data: bytes, index: int, frames: int) -> bytes:
    """`data` with packet `index` claiming `frames` frames (payload kept), its CRC recomputed."""
    size, packets = layout(data)
    h = CodesReader(io.BytesIO(data)).header
    offset, psize = packets[index]
    old = io.BytesIO(data[offset:])
    _, raw = bitstream._read_varint(old)
    body = bitstream.encode_varint(frames) + data[offset + len(raw) : offset + psize - h.crc_bytes]
    covers_header = index == 0 and not h.checks_itself
    check = bitstream.crc(body, h.crc_bits, bitstream.crc(data[:size], h.crc_bits) if covers_header else None)
    return data[:offset] + body + check.to_bytes(h.crc_bytes, "big") + data[offset + psize :]


# --- mutators: (rng, valid files) -> bytes ----------------------------------------------------------------------
def _pick(rng, files):
    return files[int(rng.integers(len(files)))]


def bit_flips(rng, files):
    data = bytearray(_pick(rng, files))
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(data) * 8))
        data[i // 8] ^= 1 << (i % 8)
    return bytes(data)


def cut_at_packet(rng, files):
    data = _pick(rng, files)
    size, packets = layout(data)
    return data[: [size, *(o + s for o, s in packets)][int(rng.integers(len(packets) + 1))]]


def cut_anywhere(rng, files):
    data = _pick(rng, files)
    return data[: int(rng.integers(len(data) + 1))]


def insertion(rng, files):
    data = _pick(rng, files)
    i = int(rng.integers(len(data) + 1))
    return data[:i] + rng.bytes(int(rng.integers(1, 64))) + data[i:]


def deletion(rng, files):
    data = _pick(rng, files)
    i = int(rng.integers(len(data)))
    return data[:i] + data[i + int(rng.integers(1, 64)) :]


def splice(rng, files):
    a, b = _pick(rng, files), _pick(rng, files)
    if rng.random() < 0.5:  # at packet boundaries: every piece is a whole, CRC-valid packet of another stream
        sa, pa = layout(a)
        sb, pb = layout(b)
        i = [sa, *(o + s for o, s in pa)][int(rng.integers(len(pa) + 1))]
        j = [sb, *(o for o, _ in pb)][int(rng.integers(len(pb) + 1))]
        return a[:i] + b[j:]
    return a[: int(rng.integers(len(a) + 1))] + b[int(rng.integers(len(b) + 1)) :]


def forged_header(rng, files):
    data = _pick(rng, files)
    fields = {}
    for _ in range(int(rng.integers(1, 3))):
        name = HEADER_FIELDS[int(rng.integers(len(HEADER_FIELDS)))]
        fields[name] = int(EXTREMES[int(rng.integers(len(EXTREMES)))])
    return forge_header(data, **fields)


def forged_coding(rng, files):
    """The version-4 fields a header gained, the packet check's width and the coder, forged (header CRC recomputed)."""
    current = [data for data in files if data[4] == bitstream.VERSION]
    data = _pick(rng, current)
    field = ("crc_bits", "coder")[int(rng.integers(2))]
    value = int(rng.choice([*EXTREMES, 8, 16, 32, bitstream.PLAIN_CODER, bitstream.ENTROPY_CODER]))
    return forge_header(data, **{field: value})


def forged_frames(rng, files):
    data = _pick(rng, files)
    _, packets = layout(data)
    return forge_frames(data, int(rng.integers(len(packets))), int(EXTREMES[int(rng.integers(len(EXTREMES)))]))


def garbage_after_magic(rng, files):
    data = _pick(rng, files)
    keep = int(rng.choice([4, 5, 9, layout(data)[0]]))  # magic; + version; + model id; whole header
    return data[:keep] + rng.bytes(int(rng.integers(0, 2048)))


MUTATORS: dict[str, Callable] = {
    f.__name__: f
    for f in (bit_flips, cut_at_packet, cut_anywhere, insertion, deletion, splice, forged_header, forged_coding,
              forged_frames, garbage_after_magic)
}  # fmt: skip


def cases(seed: int, count: int, files: list[bytes]) -> Iterator[tuple[int, str, bytes]]:
    """`count` mutated files, reproducible from `seed`: (case number, mutator name, bytes)."""
    names = list(MUTATORS)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        name = names[(i + i // len(names)) % len(names)]  # every mutator in turn, also on every `cli_every`-th case
        yield i, name, MUTATORS[name](rng, files)


# --- the rule ----------------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise `Hang` in the main thread after `seconds` (SIGALRM: Unix only)."""

    def ring(signum, frame):
        raise Hang(f"took over {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decode_library(model, data: bytes, i: int, workdir: Path) -> str:
    """Decode `data` through the library, a different path per case; returns 'decoded' or 'error'."""
    way = i % 4
    try:
        if way == 0:
            decode_stream(model, io.BytesIO(data), conceal=False)
        elif way == 1:  # concealing: the header's length, exactly (or the longest silence it fills, said so)
            audio, _, report = decode_stream(model, io.BytesIO(data), conceal=True)
            length = report.header.num_samples
            assert audio.shape[1] == report.samples
            assert length is None or report.samples == length or "missing tail" in report.damaged[-1], report.damaged
        elif way == 2:  # as `codec stream-decode` does: no hold-back, concealing
            reader = CodesReader(io.BytesIO(data), "stdin")
            for _ in decode_blocks(model, reader, conceal=True, hold_back=False):
                pass
        else:  # through a file: `codec info`, then `decode_file`, which must leave no output behind on error
            path, out = workdir / "case.codes", workdir / "case.wav"
            path.write_bytes(data)
            out.unlink(missing_ok=True)
            codes_info(path)
            try:
                decode_file(model, path, out, conceal=bool(i % 8 == 3))
            except CodecError:
                assert not out.exists(), "decode_file failed but left its output behind"
                raise
    except CodecError:
        return "error"
    return "decoded"


def decode_cli(model_file: Path, data: bytes, i: int, workdir: Path) -> str:
    """Decode `data` with `codec decode` in this process; 'decoded' or 'error' (exit 1, one line, no output)."""
    from codec.cli import main

    path, out = workdir / "cli.codes", workdir / "cli.wav"
    path.write_bytes(data)
    out.unlink(missing_ok=True)
    argv = ["decode", str(path), str(out), "-m", str(model_file), "-q"]
    if i % 2:
        argv += ["--on-corrupt", "silence"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    message = err.getvalue()
    if code == 0:
        return "decoded"
    lines = [line for line in message.splitlines() if not line.startswith("codec: warning: ")]
    assert code == 1, f"exit {code}: {message.strip()}"
    assert len(lines) == 1 and lines[0].startswith("codec: error: "), message
    assert not out.exists(), "codec decode failed but left its output behind"
    return "error"


def run(
    model, model_file: Path, seed: int, count: int, workdir: Path, *, cli_every: int = 10, max_rss_mib: float = 3072
) -> tuple[Counter, list[str]]:
    """Run `count` cases; returns outcome counts and one line per failure (empty when every case kept the rule)."""
    files = valid_files(model)
    outcomes: Counter = Counter()
    failures: list[str] = []
    if cli_every:  # once, outside the time limit: `codec decode` builds the model's ONNX graphs on first use
        decode_cli(model_file, files[0], 0, workdir)
    for i, name, data in cases(seed, count, files):
        ways = [("library", decode_library, model)] + ([("cli", decode_cli, model_file)] if i % cli_every == 0 else [])
        for how, decode, target in ways:
            try:
                with time_limit(CASE_SECONDS):
                    outcomes[f"{how} {decode(target, data, i, workdir)}"] += 1
            except Exception as e:  # noqa: BLE001 - every other exception breaks the rule
                outcomes[f"{how} FAILED"] += 1
                failures.append(f"seed {seed} case {i} ({name}, {how}): {type(e).__name__}: {e}"[:300])
        if peak_rss_mib() > max_rss_mib:
            failures.append(f"seed {seed} case {i} ({name}): peak memory {peak_rss_mib():.0f} MiB > {max_rss_mib}")
            break
    return outcomes, failures
