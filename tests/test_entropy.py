"""Entropy-coded .codes payloads (format/entropy.py): lossless, deterministic, packet-local, and clear when tables are
missing or foreign."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import soundfile as sf

from codec.checkpoint import load_model, save_model
from codec.coding.compress import EncodeSession, decode_stream, encode_audio, encode_blocks
from codec.errors import CodecError
from codec.format import bitstream, entropy
from codec.jobs.entropy_fit import fit_tables
from tests.conftest import make_tiny, tone


def _codes_of(model, seconds: float, seed: int) -> np.ndarray:
    import torch

    audio = torch.from_numpy(tone(seconds, model.sample_rate, seed=seed))[None]
    with torch.no_grad():
        return model.encode(audio, model.num_levels)[0].numpy()  # [levels * G, F]


def _fit(model, **kwargs):
    utterances = [_codes_of(model, 1.5, seed) for seed in range(12)]
    return fit_tables(
        utterances, model_id=model.model_id, model_name=model.name, num_groups=model.num_groups,
        num_levels=model.num_levels, codebook_size=model.codebook_size, min_count=1, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tables(tiny_model):
    return _fit(tiny_model)


@pytest.fixture(scope="module")
def model_with_tables(tmp_path_factory, tiny_model, tables):
    """The tiny model loaded from a file with its tables beside it (as `codec fit-entropy` leaves them)."""
    folder = tmp_path_factory.mktemp("entropy_model")
    save_model(tiny_model, folder / "tiny.safetensors", {"recipe": "tests"})
    tables.save(entropy.tables_path(folder / "tiny.safetensors"))
    return load_model(folder / "tiny.safetensors")


def _encode(model, audio, rate, levels, tables=None, **kw) -> bytes:
    out = io.BytesIO()
    encode_audio(model, audio, rate, out, levels=levels, tables=tables, **kw)
    return out.getvalue()


@pytest.mark.parametrize("rate,channels,levels", [(8000, 1, 4), (8000, 2, 2), (11025, 1, 1), (16000, 2, 3)])
def test_entropy_coding_is_lossless_and_smaller(tiny_model, tables, rate, channels, levels):
    audio = tone(2.0, rate, channels, seed=99)
    plain = _encode(tiny_model, audio, rate, levels)
    coded = _encode(tiny_model, audio, rate, levels, tables)
    assert bitstream.read_header(coded).tables_id == tables.tables_id
    a, _, _ = decode_stream(tiny_model, io.BytesIO(plain))
    b, _, _ = decode_stream(tiny_model, io.BytesIO(coded), tables=tables)
    assert np.array_equal(a, b)  # identical codes decode to identical audio, bit for bit
    assert len(coded) < len(plain)
    plain_codes = np.concatenate([p.codes for p in bitstream.CodesReader(io.BytesIO(plain)).packets()])
    coded_codes = np.concatenate([p.codes for p in bitstream.CodesReader(io.BytesIO(coded), tables=tables).packets()])
    assert np.array_equal(plain_codes, coded_codes)


def test_packets_round_trip_any_codes(tables):
    """Random codes (far from what the tables saw), all level counts, several channels, one-frame packets."""
    rng = np.random.default_rng(0)
    G, K = tables.num_groups, tables.codebook_size
    for levels in range(1, tables.num_levels + 1):
        for frames, channels in [(1, 1), (7, 2), (40, 3)]:
            codes = rng.integers(0, K, (frames, channels, levels * G))
            codes[frames // 2 :] = codes[: frames - frames // 2]  # some structure, some not
            payload = entropy.encode_packet(tables, codes, levels)
            assert np.array_equal(entropy.decode_packet(tables, payload, frames, channels, levels), codes)


def _outcome(decode):
    try:
        return decode()
    except ValueError as e:
        return e


def test_packets_decoded_together_are_decoded_as_alone(tables):
    """`decode_packets` (lock-step, as files are read) gives every packet what `decode_packet` gives it alone: its
    codes, or its own error; packets of fewer frames, and damaged or forged payloads beside good ones, included."""
    rng = np.random.default_rng(1)
    G, K = tables.num_groups, tables.codebook_size
    for levels in (1, 2, tables.num_levels):
        for channels in (1, 2):
            frames = [9, 9, 1, 9, 4, 9, 8]
            codes = [rng.integers(0, K, (f, channels, levels * G)) // (1 + i % 3) for i, f in enumerate(frames)]
            payloads = [entropy.encode_packet(tables, c, levels) for c in codes]
            payloads[1] = payloads[1][:-4]  # cut short
            payloads[3] = bytes(b ^ 0x5A for b in payloads[3])  # damaged throughout
            payloads[5] = payloads[5] + b"\0\0"  # not a whole number of words
            payloads.append(rng.integers(0, 2**32, 3, dtype=np.uint64).astype("<u4").tobytes())  # forged
            frames.append(6)
            together = entropy.decode_packets(tables, payloads, frames, channels, levels)
            for i, (payload, f) in enumerate(zip(payloads, frames, strict=True)):
                alone = _outcome(lambda p=payload, f=f, c=channels, n=levels: entropy.decode_packet(tables, p, f, c, n))
                if isinstance(alone, ValueError):
                    assert isinstance(together[i], ValueError) and str(together[i]) == str(alone)
                else:
                    assert np.array_equal(together[i], alone)
                if i in (0, 2, 4, 6):
                    assert np.array_equal(together[i], codes[i])  # the good ones are untouched by the bad
            assert isinstance(together[5], ValueError)


def _padded_tables(rng):
    """Tables of a codebook of 8 codes (2 high parts padded to 4 symbols) and the random walks (drawn from `rng`)
    they are fitted on."""
    walk = [np.cumsum(rng.integers(0, 2, (2, 120)), axis=1) % 8 for _ in range(4)]
    return walk, fit_tables(
        walk, model_id="89abcdef", model_name="pad", num_groups=1, num_levels=2, codebook_size=8, min_count=1,
        clusters=3, joint_clusters=4,
    )  # fmt: skip


def test_a_forged_padding_symbol_fails_only_its_packet():
    """A codebook of 8 codes is coded as 2 high parts padded to 4 symbols: a forged packet whose first high part is
    a padding symbol, decoded in lock-step with good packets, is an error of its own; the good packets decode."""
    import constriction

    walk, tables = _padded_tables(np.random.default_rng(6))
    coding = entropy._coding(tables)
    assert coding.H < coding.B
    at, contexts, codebook, starts, shape = entropy._plan(9, 1, 2, 1)
    none = np.full(int(np.prod(shape)), tables.codebook_size)  # diagonal 0: every context is "none"
    rows = entropy._rows(coding, entropy._bases(coding, codebook), none[contexts[coding.slots]])
    encoder = constriction.stream.queue.RangeEncoder()
    first = slice(0, starts[1])
    encoder.encode(np.full(starts[1], coding.H, np.int32), entropy._family(), entropy._probs(coding, rows[:, first]))
    forged = encoder.get_compressed().astype("<u4").tobytes()
    with pytest.raises(ValueError, match="a code beyond the codebook's 8"):
        entropy.decode_packet(tables, forged, 9, 1, 2)
    good = [walk[i].T[:9, None, :] for i in range(3)]
    payloads = [
        entropy.encode_packet(tables, good[0], 2),
        forged,
        *(entropy.encode_packet(tables, g, 2) for g in good[1:]),
    ]
    together = entropy.decode_packets(tables, payloads, [9, 9, 9, 5], 1, 2)
    assert isinstance(together[1], ValueError) and "a code beyond the codebook's 8" in str(together[1])
    assert np.array_equal(together[0], good[0]) and np.array_equal(together[2], good[1])
    assert isinstance(together[3], ValueError)  # 9 frames' payload read as 5: more data than its frames


def test_reading_ahead_changes_nothing_but_speed(tiny_model, tables):
    """A reader that decodes packets several at a time yields the same packets, codes and errors as one that reads
    them one by one (a damaged packet, a cut-short tail)."""
    rate = 8000
    coded = _encode(tiny_model, tone(2.0, rate, seed=8), rate, 3, tables, packet_bytes=20)
    alone = list(bitstream.CodesReader(io.BytesIO(coded), tables=tables).packets())
    damaged = bytearray(coded[: alone[-1].offset + alone[-1].size // 2])  # the last packet cut short
    damaged[alone[3].offset + alone[3].size // 2] ^= 0x08
    for data in (coded, bytes(damaged)):
        one = list(bitstream.CodesReader(io.BytesIO(data), tables=tables).packets())
        for ahead in (2, 5, 64):
            many = list(bitstream.CodesReader(io.BytesIO(data), tables=tables, read_ahead=ahead).packets())
            assert [(p.index, p.offset, p.frames, p.error, p.size) for p in many] == [
                (p.index, p.offset, p.frames, p.error, p.size) for p in one
            ]
            assert all(
                a.codes is None and b.codes is None or np.array_equal(a.codes, b.codes)
                for a, b in zip(one, many, strict=True)
            )
    assert sum(p.error is not None for p in one) == 2


def _integer_tables(G: int = 2, L: int = 4, K: int = 16) -> entropy.EntropyTables:
    """Tables made of integers drawn from a seeded generator (no fitting, so no floating point anywhere but the
    stored logarithm and power tables, which are integers too)."""
    from codec.jobs.entropy_fit import EXP2, LOG2

    rng = np.random.default_rng(11)
    P, Q = G * L, 4  # four clusters of each source's context codes (and one for none)
    components = ("prev", "coarse", "cross", "prev*coarse", "prev*cross", "coarse*cross", "coarse*coarse2", "prevx")
    J = len(components)
    arrays = {"unigram": rng.integers(1, 1000, (P, K)), "log2": LOG2, "exp2": EXP2}
    arrays["weights"] = rng.integers(-(1 << entropy.WEIGHT_BITS), 2 << entropy.WEIGHT_BITS, (P, J + 1, 2))
    for s in entropy.SOURCES:
        arrays[f"{s}.map"] = rng.integers(0, Q + 1, P * (K + 1)).astype(np.uint16)
    for j in components:
        R = 7 if "*" in j else Q + 1  # a joint component: six clusters of pairs and one for none
        if "*" in j:
            arrays[f"{j}.map"] = rng.integers(0, R, P * (Q + 1) ** 2).astype(np.uint16)
        lengths = rng.integers(0, 4, P * R)
        arrays[f"{j}.indptr"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{j}.codes"] = np.concatenate([rng.choice(K, n, replace=False) for n in lengths]).astype(np.uint16)
        arrays[f"{j}.counts"] = rng.integers(1, 500, int(lengths.sum())).astype(np.int32)
        arrays[f"{j}.extra"] = rng.integers(128, 2**12, P * R)
    return entropy.EntropyTables("01234567", "synthetic", G, L, K, arrays, {}, components=components, clusters=Q)


def test_coded_bytes_are_pinned():
    """The same codes and tables give the same bytes on every machine (integer tables, constriction's fixed point):
    a change here means files written elsewhere no longer decode."""
    tables = _integer_tables()
    codes = np.random.default_rng(7).integers(0, 16, (50, 2, 8)) // 2
    payload = entropy.encode_packet(tables, codes, 4)
    assert (tables.tables_id, hashlib.sha256(payload).hexdigest(), len(payload)) == PINNED
    assert np.array_equal(entropy.decode_packet(tables, payload, 50, 2, 4), codes)


PINNED = (
    "f485c939",
    "fa5c67d6a1a0eec3551e54c29d335889e8ff43861430806453e41b194678370f",
    756,
)  # tables format codec-entropy/3; constriction 0.5; x86-64


def test_fixed_point_log_is_integer_arithmetic():
    """The coder's log2 of a frequency is the bit length plus the stored table's value of the next 12 bits, exactly
    (no floating-point rounding anywhere, so every machine gets the same), from 1 up to the largest block sum."""
    from codec.jobs.entropy_fit import LOG2

    rng = np.random.default_rng(3)
    v = np.concatenate(
        [np.arange(1, 5000), 2 ** np.arange(62), 2 ** np.arange(1, 62) - 1, rng.integers(1, 2**61, 5000)]
    )
    want = []
    for x in v.tolist():
        e = x.bit_length() - 1
        top = x >> (e - 12) if e >= 12 else x << (12 - e)
        want.append((e << entropy.LOG_BITS) + int(LOG2[top - 4096]))
    assert np.array_equal(entropy._ilog2(v, LOG2), np.array(want))


def test_streaming_encode_equals_offline_bytes_included(tiny_model, tables):
    rate = 8000
    audio = tone(1.7, rate, 1, seed=3)
    offline = _encode(tiny_model, audio, rate, 3, tables, packet_bytes=16)
    header = bitstream.read_header(offline)
    frames = bitstream.frames_per_packet(dataclass_plain(header), 16)
    out = io.BytesIO()
    blocks = (audio[:, i : i + 37] for i in range(0, audio.shape[1], 37))  # chunks that do not divide a frame
    session = EncodeSession(
        tiny_model, out, sample_rate=rate, channels=1, levels=3, num_samples=audio.shape[1], packet_frames=frames,
        tables=tables,
    )  # fmt: skip
    encode_blocks(tiny_model, blocks, session)
    assert out.getvalue() == offline


def dataclass_plain(header):
    import dataclasses

    return dataclasses.replace(header, tables_id=None)


def test_a_damaged_packet_loses_only_its_own_frames(tiny_model, tables):
    rate = 8000
    coded = _encode(tiny_model, tone(2.0, rate, seed=5), rate, 4, tables, packet_bytes=24)
    clean, _, _ = decode_stream(tiny_model, io.BytesIO(coded), tables=tables)
    reader = bitstream.CodesReader(io.BytesIO(coded), tables=tables)
    packets = list(reader.packets())
    assert len(packets) >= 5
    damaged = bytearray(coded)
    damaged[packets[2].offset + packets[2].size // 2] ^= 0x10
    with pytest.raises(CodecError, match="--on-corrupt silence"):
        decode_stream(tiny_model, io.BytesIO(bytes(damaged)), tables=tables)
    audio, _, report = decode_stream(tiny_model, io.BytesIO(bytes(damaged)), tables=tables, conceal=True)
    assert audio.shape == clean.shape and len(report.damaged) == 1
    hop = tiny_model.hop_length
    before = sum(p.frames for p in packets[:2]) * hop
    assert np.array_equal(audio[:, :before], clean[:, :before])  # the packets before it are untouched
    reread = list(bitstream.CodesReader(io.BytesIO(bytes(damaged)), tables=tables).packets())
    assert [p.error is None for p in reread] == [i != 2 for i in range(len(packets))]
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(packets, reread, strict=True) if b.error is None)


def test_missing_or_foreign_tables_are_one_line_errors(tiny_model, tables, tmp_path):
    rate = 8000
    coded = _encode(tiny_model, tone(0.5, rate), rate, 2, tables)
    with pytest.raises(CodecError, match="no tables for this model were found.*codec fit-entropy"):
        decode_stream(tiny_model, io.BytesIO(coded))  # the in-memory model has no file, so no tables beside it
    other = make_tiny(**{"quantizer.codebook_size": 32})
    foreign = _fit(other)
    with pytest.raises(CodecError, match="needs entropy tables of model id"):
        decode_stream(tiny_model, io.BytesIO(coded), tables=foreign)
    refit = _fit(tiny_model, packet_frames=7)  # the same model's tables fitted again: another id
    assert refit.tables_id != tables.tables_id
    with pytest.raises(CodecError, match="fitted again since"):
        decode_stream(tiny_model, io.BytesIO(coded), tables=refit)
    path = tmp_path / "foreign.entropy"
    foreign.save(path)
    with pytest.raises(CodecError, match="belong to model id"):
        entropy.tables_for(tiny_model, path)
    bad = tmp_path / "bad.entropy"
    bad.write_bytes(b"\x0a\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CodecError, match="damaged.*not JSON"):
        entropy.load_tables(bad)
    with pytest.raises(CodecError, match="not found"):
        entropy.load_tables(tmp_path / "none.entropy")


def test_damaged_tables_file_is_refused(tables, tmp_path):
    path = tmp_path / "t.entropy"
    tables.save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a table value, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(CodecError, match="damaged"):
        entropy.load_tables(path)


@pytest.mark.parametrize("old", ["codec-entropy/1", "codec-entropy/2"])
def test_tables_of_another_format_are_a_one_line_error(tables, tmp_path, old):
    """Tables of format 1 (before the two-step coder) and 2 (a linear mixture, before the product of experts) are
    refused by name, not read as damaged."""
    from safetensors.numpy import load_file, save_file

    from codec.modelfile import read_metadata

    path = tmp_path / "old.entropy"
    tables.save(path)
    meta = read_metadata(path) | {"format": old}
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CodecError, match=rf"format {old}, which this codec does not read") as e:
        entropy.load_tables(path)
    assert "\n" not in str(e.value)


def test_cli_encode_entropy_decode_and_info(model_with_tables, tmp_path, capsys):
    import json

    from codec.cli import main

    model_file = model_with_tables.source
    wav = tmp_path / "in.wav"
    sf.write(wav, tone(1.3, 8000).T, 8000)
    plain, coded = tmp_path / "plain.codes", tmp_path / "coded.codes"
    assert main(["encode", str(wav), str(plain), "-m", model_file, "--runtime", "torch", "-q"]) == 0
    assert main(["encode", str(wav), str(coded), "-m", model_file, "--runtime", "torch", "--entropy"]) == 0
    assert "entropy coded" in capsys.readouterr().out
    assert coded.stat().st_size < plain.stat().st_size
    out_a, out_b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert main(["decode", str(plain), str(out_a), "-m", model_file, "--runtime", "torch", "-q"]) == 0
    assert main(["decode", str(coded), str(out_b), "-m", model_file, "--runtime", "torch", "-q"]) == 0
    assert out_a.read_bytes() == out_b.read_bytes()
    capsys.readouterr()
    assert main(["info", str(coded), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entropy_tables"] == bitstream.read_header(coded.read_bytes()).tables_id
    assert info["payload_bytes"] < info["plain_payload_bytes"] and info["bits_per_frame"] > 0
    # a model without tables: --entropy writes the plain payload with a note; decoding a coded file is an error
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(open(model_file, "rb").read())
    again = tmp_path / "again.codes"
    assert main(["encode", str(wav), str(again), "-m", str(bare), "--runtime", "torch", "-q", "--entropy"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "codec: note: --entropy: no entropy tables" in err
    assert again.read_bytes() == plain.read_bytes()
    assert main(["decode", str(coded), str(out_a), "-m", str(bare), "--runtime", "torch", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("codec: error: ") and "codec fit-entropy" in err


def test_fit_entropy_command_writes_tables_beside_the_model(tiny_model, tmp_path, capsys):
    from codec.cli import main

    model_file = tmp_path / "m.safetensors"
    save_model(tiny_model, model_file, {"recipe": "tests"})
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(4):
        sf.write(folder / f"u{i}.wav", tone(1.0, 8000, seed=i).T, 8000)
    tokens = tmp_path / "tokens"
    assert main(["tokens", "--data", str(folder), "--out", str(tokens), "-m", str(model_file), "--device", "cpu",
                 "--num-workers", "0", "-q"]) == 0  # fmt: skip
    assert main(["fit-entropy", str(tokens), "-m", str(model_file), "--min-count", "1"]) == 0
    assert "held-out bits per code" in capsys.readouterr().out
    tables = entropy.load_tables(entropy.tables_path(model_file))
    assert tables.model_id == tiny_model.model_id
    assert main(["fit-entropy", str(tmp_path), "-m", str(model_file)]) == 1
    assert "not a `codec tokens` folder" in capsys.readouterr().err


@pytest.mark.parametrize("groups,levels,size", [(1, 3, 8), (3, 2, 64), (1, 1, 2)])
def test_any_codebook_layout(groups, levels, size):
    """Plain RVQ (one group), more groups, a one-level, two-code model: fit, code and decode any layout."""
    rng = np.random.default_rng(groups * 10 + levels)
    walk = [np.cumsum(rng.integers(0, 2, (groups * levels, 200)), axis=1) % size for _ in range(6)]
    tables = fit_tables(
        walk, model_id="89abcdef", model_name="layout", num_groups=groups, num_levels=levels, codebook_size=size,
        min_count=1, clusters=4,
    )  # fmt: skip
    for used in range(1, levels + 1):
        codes = walk[0].T[:60, None, : used * groups].repeat(2, axis=1)  # two channels
        payload = entropy.encode_packet(tables, codes, used)
        assert np.array_equal(entropy.decode_packet(tables, payload, 60, 2, used), codes)


def test_random_payloads_decode_or_raise_value_error():
    """A codebook of 8 codes is coded as 2 high parts padded to 4 symbols: a forged payload that decodes a padding
    symbol (or anything else) is a ValueError, never another exception or a code outside the codebook."""
    rng = np.random.default_rng(5)
    _, tables = _padded_tables(rng)
    outcomes = {"decoded": 0, "error": 0}
    for _ in range(300):
        payload = rng.integers(0, 2**32, rng.integers(1, 4), dtype=np.uint64).astype("<u4").tobytes()
        try:
            codes = entropy.decode_packet(tables, payload, 9, 1, 2)
        except ValueError:
            outcomes["error"] += 1
        else:
            assert codes.shape == (9, 1, 2) and 0 <= codes.min() and codes.max() < 8
            outcomes["decoded"] += 1
    assert outcomes["error"] > 0


def test_the_server_decodes_entropy_coded_streams(model_with_tables, tables, tiny_model):
    import asyncio

    pytest.importorskip("websockets")
    from codec.server.serve import decode_remote
    from tests.conftest import start_server

    rate = 8000
    coded = _encode(model_with_tables, tone(1.0, rate, seed=4), rate, 3, tables, packet_bytes=16)
    expected, _, _ = decode_stream(model_with_tables, io.BytesIO(coded))
    audio, got_rate = asyncio.run(decode_remote(start_server(model_with_tables), coded))
    assert got_rate == rate and np.allclose(audio, expected, atol=1e-4)
    with pytest.raises(CodecError, match="no tables for this model"):  # a server whose model has no tables
        asyncio.run(decode_remote(start_server(tiny_model), coded))
