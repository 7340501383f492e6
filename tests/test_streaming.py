"""Streaming: the Python API equals offline, files stream in bounded memory, pipes and the WebSocket server work."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.audio import fit_length, resample, resampled_length
from codec.coding.compress import decode_file, decode_stream, encode_audio, encode_file
from codec.coding.streaming import StreamingDecoder, StreamingEncoder
from codec.errors import CodecError
from codec.format.bitstream import CodesReader
from tests.conftest import make_tiny, start_server, tone
from tests.fuzzing import layout as fuzz_layout

HOP = 12  # tiny.yaml at 8 kHz


def _offline_codes(model, audio: np.ndarray, rate: int, levels: int) -> torch.Tensor:
    x = fit_length(resample(audio, rate, model.sample_rate), resampled_length(audio.shape[1], rate, model.sample_rate))
    return model.encode(torch.from_numpy(x)[:, None], levels)


@pytest.mark.parametrize("chunk", [1, 7, 13, 97, HOP // 2, HOP + HOP // 2, 10**6])
@pytest.mark.parametrize("rate", [8000, 11025])
def test_streaming_encoder_equals_offline(tiny_model, chunk, rate):
    audio = tone(0.1, rate, channels=2)
    encoder = StreamingEncoder(tiny_model, levels=3, batch_size=2, sample_rate=rate)
    parts = [encoder.push(audio[:, i : i + chunk]) for i in range(0, audio.shape[1], chunk)]
    parts.append(encoder.flush())
    assert torch.equal(torch.cat(parts, -1), _offline_codes(tiny_model, audio, rate, 3))


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_streaming_decoder_equals_offline(tiny_model, chunk):
    codes = tiny_model.encode(torch.from_numpy(tone(0.3, 8000, channels=2))[:, None])
    decoder = StreamingDecoder(tiny_model, batch_size=2)
    audio = np.concatenate([decoder.push(codes[..., i : i + chunk]) for i in range(0, codes.shape[-1], chunk)], 1)
    assert np.abs(audio - tiny_model.decode(codes)[:, 0].numpy()).max() < 1e-5  # float rounding only


def test_two_encoders_share_one_model_without_interfering(tiny_model):
    a, b = tone(0.2, 8000, seed=1), tone(0.2, 8000, seed=2) * 0.5
    enc_a, enc_b = StreamingEncoder(tiny_model), StreamingEncoder(tiny_model)
    parts_a, parts_b = [], []
    for i in range(0, a.shape[1], 50):  # interleaved pushes
        parts_a.append(enc_a.push(a[:, i : i + 50]))
        parts_b.append(enc_b.push(b[:, i : i + 50]))
    parts_a.append(enc_a.flush())
    parts_b.append(enc_b.flush())
    assert torch.equal(torch.cat(parts_a, -1), tiny_model.encode(torch.from_numpy(a)[None]))
    assert torch.equal(torch.cat(parts_b, -1), tiny_model.encode(torch.from_numpy(b)[None]))


def test_per_stream_reset(tiny_model):
    a, b = tone(0.3, 8000, seed=1), tone(0.3, 8000, seed=2)
    encoder = StreamingEncoder(tiny_model, batch_size=2)
    encoder.push(np.concatenate([a, a])[:, : 10 * HOP])
    encoder.reset([False, True])
    codes = encoder.push(np.concatenate([a[:, 10 * HOP : 110 * HOP], b[:, : 100 * HOP]]))
    assert torch.equal(codes[1:], tiny_model.encode(torch.from_numpy(b[:, : 100 * HOP])[None]))
    assert torch.equal(codes[:1], tiny_model.encode(torch.from_numpy(a)[None])[..., 10:110])


def test_long_file_streams_through_blocks_and_matches_whole_file(tmp_path, monkeypatch, tiny_model):
    import codec.coding.compress

    monkeypatch.setattr(codec.coding.compress, "BLOCK_SECONDS", 0.37)  # many blocks that do not divide frames
    audio = tone(3.3, 11025, channels=2)
    src = tmp_path / "in.wav"
    sf.write(src, audio.T, 11025, subtype="FLOAT")
    encode_file(tiny_model, src, tmp_path / "x.codes", levels=4)
    with open(tmp_path / "x.codes", "rb") as f:
        codes = np.concatenate([p.codes for p in CodesReader(f).packets()])
    assert np.array_equal(codes.transpose(1, 2, 0), _offline_codes(tiny_model, audio, 11025, 4).numpy())
    report = decode_file(tiny_model, tmp_path / "x.codes", tmp_path / "y.wav")
    decoded, rate = sf.read(tmp_path / "y.wav", dtype="float32", always_2d=True)
    assert rate == 11025 and decoded.shape == (audio.shape[1], 2) and report.samples == audio.shape[1]
    whole = tiny_model.decode(torch.from_numpy(codes.transpose(1, 2, 0)))[:, 0].numpy()
    whole = fit_length(resample(whole, 8000, 11025), audio.shape[1])
    assert np.abs(decoded.T - np.clip(whole, -1, 1)).max() < 2e-4  # 16-bit output; no seams between blocks


def test_streamed_file_without_length_decodes_to_the_exact_length(tiny_model):
    audio = tone(0.2, 8000)
    encoder_out = io.BytesIO()
    from codec.coding.compress import EncodeSession, encode_blocks

    blocks = (audio[:, i : i + 333] for i in range(0, audio.shape[1], 333))
    session = EncodeSession(tiny_model, encoder_out, sample_rate=8000, channels=1, levels=2, num_samples=None,
                            packet_frames=1)  # fmt: skip
    encode_blocks(tiny_model, blocks, session)
    decoded, rate, report = decode_stream(tiny_model, io.BytesIO(encoder_out.getvalue()))
    assert decoded.shape == audio.shape and report.frames == -(-audio.shape[1] // HOP)
    reference = io.BytesIO()
    encode_audio(tiny_model, audio, 8000, reference, levels=2)
    assert np.abs(decoded - decode_stream(tiny_model, io.BytesIO(reference.getvalue()))[0]).max() < 1e-5


# --- pipes ------------------------------------------------------------------------------------------------
def _codec(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "codec", *map(str, args)], input=stdin, capture_output=True)


def test_pipe_round_trip_wav_and_raw(tmp_path, tiny_model_file):
    audio = tone(0.8, 16000)
    src = tmp_path / "in.wav"
    sf.write(src, audio.T, 16000)
    enc = _codec("stream-encode", "-m", tiny_model_file, "--levels", 2, stdin=src.read_bytes())
    assert enc.returncode == 0, enc.stderr.decode()
    with open(tmp_path / "piped.codes", "wb") as f:
        f.write(enc.stdout)
    # the piped stream decodes like a file encoded by `codec encode`
    assert _codec("encode", src, tmp_path / "file.codes", "-m", tiny_model_file, "--levels", 2).returncode == 0
    dec = _codec("stream-decode", "-m", tiny_model_file, "--wav", stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr.decode()
    piped, rate = sf.read(io.BytesIO(dec.stdout), dtype="int16")
    assert rate == 16000 and piped.shape == (audio.shape[1],)
    assert _codec("decode", tmp_path / "file.codes", tmp_path / "file.wav", "-m", tiny_model_file).returncode == 0
    file_decoded = sf.read(tmp_path / "file.wav", dtype="int16")[0].astype(int)
    assert np.abs(piped.astype(int) - file_decoded).max() <= 1  # libsndfile scales by 32767, raw PCM by 32768
    # raw PCM in (length unknown: an end record carries it) and raw PCM out
    raw = (np.clip(audio[0], -1, 1) * 32767).astype("<i2").tobytes()
    enc = _codec("stream-encode", "-m", tiny_model_file, "--rate", 16000, "--channels", 1, stdin=raw)
    assert enc.returncode == 0, enc.stderr.decode()
    dec = _codec("stream-decode", "-m", tiny_model_file, "--format", "s16le", stdin=enc.stdout)
    assert dec.returncode == 0 and len(dec.stdout) // 2 >= audio.shape[1]  # live streams keep < 1 frame of padding


def test_pipe_with_a_light_packet_check_is_smaller_and_decodes_the_same(tiny_model_file):
    raw = (np.clip(tone(0.6, 8000)[0], -1, 1) * 32767).astype("<i2").tobytes()
    out = {}
    for crc in ("32", "16", "8"):
        enc = _codec("stream-encode", "-m", tiny_model_file, "--rate", 8000, "--packet-crc", crc, stdin=raw)
        assert enc.returncode == 0, enc.stderr.decode()
        dec = _codec("stream-decode", "-m", tiny_model_file, "--format", "s16le", stdin=enc.stdout)
        assert dec.returncode == 0, dec.stderr.decode()
        out[crc] = (enc.stdout, dec.stdout)
        packets = list(CodesReader(io.BytesIO(enc.stdout)).packets())
        assert all(p.frames == 1 and p.error is None for p in packets)
    frames = len(packets)
    assert len(out["32"][0]) - len(out["16"][0]) == 2 * (frames + 1)  # 2 bytes per packet and end record
    assert len(out["32"][0]) - len(out["8"][0]) == 3 * (frames + 1)
    assert out["32"][1] == out["16"][1] == out["8"][1]
    bad = _codec("stream-encode", "-m", tiny_model_file, "--rate", 8000, "--packet-crc", "12", stdin=raw)
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr


def test_pipe_errors_are_one_line(tmp_path, tiny_model_file):
    result = _codec("stream-encode", "-m", tiny_model_file, stdin=b"definitely not a wav")
    assert result.returncode == 1 and b"not a WAV stream" in result.stderr and b"Traceback" not in result.stderr
    result = _codec("stream-decode", "-m", tiny_model_file, stdin=b"GRVQ\x01garbage")
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1


# --- WebSocket server ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("websockets")
    from codec.server.serve import ServerLimits

    model = make_tiny()
    bounds = ServerLimits(idle_seconds=3.0, max_connections=24)  # short, so the idle test is quick
    yield start_server(model, bounds), model


def test_two_concurrent_clients_round_trip(server_url):
    from codec.server.serve import decode_remote, encode_remote

    url, model = server_url
    a = (np.round(tone(0.5, 8000, seed=1) * 32768) / 32768).astype(np.float32)  # on the s16 grid the client sends
    b = tone(0.4, 16000, channels=2, seed=2)

    async def both():
        return await asyncio.gather(encode_remote(url, a, 8000, levels=2), encode_remote(url, b, 16000, levels=3))

    data_a, data_b = asyncio.run(both())
    expected_a = io.BytesIO()
    encode_audio(model, a, 8000, expected_a, levels=2)
    codes = lambda data: np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])  # noqa: E731
    assert np.array_equal(codes(data_a), codes(expected_a.getvalue()))
    assert CodesReader(io.BytesIO(data_b)).header.channels == 2

    async def decode_both():
        return await asyncio.gather(decode_remote(url, data_a), decode_remote(url, data_b))

    (audio_a, rate_a), (audio_b, rate_b) = asyncio.run(decode_both())
    assert (audio_a.shape, rate_a) == (a.shape, 8000) and (audio_b.shape, rate_b) == (b.shape, 16000)
    assert np.abs(audio_a - decode_stream(model, io.BytesIO(data_a))[0]).max() < 1e-5


def test_server_streams_with_a_light_packet_check_and_refuses_a_bad_one(server_url):
    from codec.server.serve import encode_remote

    url, model = server_url
    audio = (np.round(tone(0.3, 8000, seed=4) * 32768) / 32768).astype(np.float32)
    full = asyncio.run(encode_remote(url, audio, 8000, levels=2))
    light = asyncio.run(encode_remote(url, audio, 8000, levels=2, packet_crc=8))
    reader = CodesReader(io.BytesIO(light))
    assert reader.header.crc_bits == 8 and len(light) < len(full)
    codes = lambda data: np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])  # noqa: E731
    assert np.array_equal(codes(light), codes(full))
    with pytest.raises(CodecError, match="packet_crc"):
        asyncio.run(encode_remote(url, audio, 8000, levels=2, packet_crc=12))


def test_garbage_client_gets_an_error_while_another_streams(server_url):
    from websockets.asyncio.client import connect

    from codec.server.serve import encode_remote

    url, model = server_url
    audio = np.round(tone(1.0, 8000) * 32768) / 32768  # on the s16 grid the client sends

    async def garbage():
        async with connect(url) as ws:
            await ws.send(b"\x00\x01 not json")
            reply = json.loads(await ws.recv())
            await ws.wait_closed()
            return reply, ws.close_code

    async def bad_packet():
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "mode": "decode"}))
            await ws.recv()
            await ws.send(b"GRVQ\x01\x00\x00\x00\x00")
            return json.loads(await ws.recv())

    async def run():
        return await asyncio.gather(encode_remote(url, audio, 8000, levels=1, chunk_seconds=0.01), garbage(),
                                    bad_packet())  # fmt: skip

    data, (reply, close_code), packet_reply = asyncio.run(run())
    assert reply["type"] == "error" and "start" in reply["message"] and close_code == 1008
    assert packet_reply["type"] == "error"
    expected = io.BytesIO()
    encode_audio(model, audio.astype(np.float32), 8000, expected, levels=1)
    codes = lambda data: np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])  # noqa: E731
    assert np.array_equal(codes(data), codes(expected.getvalue()))


# --- memory ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_memory_stays_flat_for_long_files(tmp_path, tiny_model_file):
    script = textwrap.dedent(
        """
        import resource, sys
        import numpy as np, soundfile as sf
        from codec import load_model
        from codec.coding.compress import encode_file, decode_file
        seconds, path = float(sys.argv[1]), sys.argv[2]
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
            for _ in range(int(seconds / 10)):
                f.write(0.1 * rng.standard_normal(80000).astype("float32"))
        model = load_model(sys.argv[3])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        encode_file(model, path, path + ".codes", levels=4)
        decode_file(model, path + ".codes", path + ".out.wav")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    growth = {}
    for seconds in (20, 400):
        out = subprocess.run([sys.executable, "-c", script, str(seconds), str(tmp_path / f"{seconds}.wav"),
                              str(tiny_model_file)], capture_output=True, text=True, env={**os.environ})  # fmt: skip
        assert out.returncode == 0, out.stderr
        growth[seconds] = int(out.stdout.strip())  # KiB
    # 20x more audio (400 s = 3.2 M samples, 12.8 MB as float) must not grow the peak by more than a few MB
    assert growth[400] - growth[20] < 8 * 1024, growth


def test_stream_without_its_end_record_is_reported_cut_short(tiny_model):
    from codec.coding.compress import EncodeSession, encode_blocks
    from codec.errors import CodecError

    audio = tone(0.2, 8000)
    out = io.BytesIO()
    session = EncodeSession(tiny_model, out, sample_rate=8000, channels=1, levels=2, num_samples=None, packet_frames=4)
    encode_blocks(tiny_model, [audio], session)
    data = out.getvalue()
    reader = CodesReader(io.BytesIO(data))
    last_packet_end = max(p.offset + p.size for p in reader.packets())
    assert reader.ended and last_packet_end < len(data)
    with pytest.raises(CodecError, match="without its end record"):
        decode_stream(tiny_model, io.BytesIO(data[:last_packet_end]))
    decoded, _, report = decode_stream(tiny_model, io.BytesIO(data[:last_packet_end]), conceal=True)
    assert report.damaged and decoded.shape[1] >= audio.shape[1]


def test_server_refuses_ambiguous_rates_and_partial_frames(server_url):
    from websockets.asyncio.client import connect

    url, _ = server_url

    async def session(start, pcm=b""):
        async with connect(url) as ws:
            await ws.send(json.dumps(start))
            reply = json.loads(await ws.recv())
            if reply["type"] == "ready":
                await ws.recv()  # the .codes header
                await ws.send(pcm)
                await ws.send(json.dumps({"type": "end"}))
                while isinstance(reply := await ws.recv(), bytes):
                    pass
                reply = json.loads(reply)
            await ws.wait_closed()
            return reply, ws.close_code

    both = {"type": "start", "mode": "encode", "sample_rate": 8000, "bitrate": 5.4, "levels": 2}
    reply, code = asyncio.run(session(both))
    assert reply["type"] == "error" and "not both" in reply["message"] and code == 1008
    start = {"type": "start", "mode": "encode", "sample_rate": 8000, "format": "s16le"}
    reply, code = asyncio.run(session(start, b"\x00" * 201))  # 100.5 frames of s16
    assert reply["type"] == "error" and "partial frame" in reply["message"] and code == 1008


def test_hostile_clients_leave_the_server_up_bounded_and_serving(server_url):
    """Forged lengths and rates, bad fields, NaN, oversized and garbage messages, abrupt and idle connections."""
    import resource

    from websockets.asyncio.client import connect

    from codec.server.serve import encode_remote
    from tests.fuzzing import forge_frames, forge_header

    url, model = server_url
    audio = np.round(tone(1.0, 8000) * 32768) / 32768
    good = io.BytesIO()
    encode_audio(model, audio.astype(np.float32), 8000, good, levels=2, packet_bytes=16)
    good = good.getvalue()
    header_size = CodesReader(io.BytesIO(good)).header_size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def session(start, *messages):
        """Send `start` and `messages`; the server's last JSON reply and close code."""
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps(start) if isinstance(start, dict) else start)
            reply = None
            try:
                for message in messages:
                    await ws.send(message)
                async for answer in ws:
                    if isinstance(answer, str):
                        reply = json.loads(answer)
            except Exception as e:  # noqa: BLE001 - the server may close while we still send
                if not type(e).__name__.startswith("ConnectionClosed"):
                    raise
            await ws.wait_closed()
            return reply, ws.close_code

    encode = {"type": "start", "mode": "encode", "sample_rate": 8000}
    decode = {"type": "start", "mode": "decode"}
    forged_extra = forge_header(good, extra_len=2**40)
    forged_rate = forge_header(good, sample_rate=2**27)
    forged_frames = forge_frames(good, 1, 2**40)
    (first, first_size), (second, second_size) = fuzz_layout(good)[1][:2]
    forged_second = forged_frames[second : second + second_size + len(forged_frames) - len(good)]
    hostile = {
        "sample_rate 1": (session({**encode, "sample_rate": 1}), 1008, '"sample_rate" 1 is out of range'),
        "levels 1.5": (session({**encode, "levels": 1.5}), 1008, '"levels" 1.5 is not a whole number'),
        "bitrate abc": (session({**encode, "bitrate": "abc"}), 1008, "\"bitrate\" 'abc' is not a number"),
        "channels 10**9": (session({**encode, "channels": 10**9}), 1008, '"channels" 1000000000 is out of range'),
        "nan pcm": (session({**encode, "format": "f32le"}, np.full(800, np.nan, "<f4").tobytes()), 1008, "NaN"),
        "forged extra": (session(decode, forged_extra[: header_size + 64]), 1008, "metadata length"),
        "forged rate": (
            session(decode, forged_rate[: header_size + len(forged_rate) - len(good)]),
            1008,
            "sample rate 134217728 is out of range",
        ),
        "forged frames": (
            session(decode, good[:header_size], good[first : first + first_size], forged_second),
            1008,
            "damaged frame count",
        ),
        "oversized": (session(encode, b"\x00" * (2**20 + 2048)), 1009, None),
        "garbage": (session(b"\xff\xfe garbage " * 100), 1008, "start"),
        "idle": (session(encode), 1008, "nothing received for 3 s"),
    }

    async def drop(n: int, start: bool) -> None:
        """Open `n` connections and drop them without a closing handshake."""
        for _ in range(n):
            ws = await connect(url)
            if start:
                await ws.send(json.dumps(encode))
                await ws.send(b"\x00" * 1600)
            ws.transport.abort()

    async def main():
        bystander = asyncio.create_task(encode_remote(url, audio, 8000, levels=2, chunk_seconds=0.02, realtime=True))
        results = await asyncio.gather(*(run for run, _, _ in hostile.values()), drop(20, False), drop(20, True))
        return await bystander, results

    data, results = asyncio.run(main())
    for (name, (_, code, needle)), (reply, close_code) in zip(hostile.items(), results, strict=False):
        assert close_code == code, (name, close_code, reply)
        if needle is not None:
            assert reply["type"] == "error" and needle in reply["message"], (name, reply)
    codes = lambda data: np.concatenate([p.codes for p in CodesReader(io.BytesIO(data)).packets()])  # noqa: E731
    assert np.array_equal(codes(data), codes(good))  # the bystander was served, correctly, all along
    assert np.array_equal(codes(asyncio.run(encode_remote(url, audio, 8000, levels=2))), codes(good))  # still up
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, f"the server's peak memory grew by {grown_mib:.0f} MiB"


def test_remote_encode_client_sends_at_most_two_seconds_ahead_of_the_packets_back():
    """Flow control of `encode_remote`: against a server that codes nothing (no packets come back), the client
    stops after AHEAD_SECONDS of audio instead of pushing the whole file into the connection."""
    pytest.importorskip("websockets")
    from websockets.asyncio.server import serve as ws_serve

    from codec.server.serve import AHEAD_SECONDS, encode_remote

    rate, frame = 8000, 12
    audio = np.zeros((1, 20 * rate), np.float32)  # 20 s: ten times what may go ahead
    got = {"bytes": 0}

    async def stalled(ws):
        await ws.recv()  # start
        await ws.send(json.dumps({"type": "ready", "frame_samples": frame}))
        await ws.send(b"header")
        try:
            async with asyncio.timeout(1.0):
                async for message in ws:
                    got["bytes"] += len(message)
        except TimeoutError:
            pass  # the client stopped sending: close the stream, which ends it

    async def main():
        async with ws_serve(stalled, "127.0.0.1", 0, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            return await asyncio.wait_for(encode_remote(f"ws://127.0.0.1:{port}", audio, rate), 10)

    out = asyncio.run(main())
    assert out == b"header"  # nothing coded: only the header came back
    step = int(0.02 * rate) * 2  # bytes per chunk of s16 mono
    assert 0 < got["bytes"] <= AHEAD_SECONDS * rate * 2 + step, got


def test_decoder_takes_a_push_of_no_frames(tiny_model):
    """An encoder's push may complete no frame; its codes go to the decoder as they are (docs/STREAMING.md)."""
    from codec.coding.streaming import StreamingDecoder, StreamingEncoder

    encoder, decoder = StreamingEncoder(tiny_model, batch_size=1), StreamingDecoder(tiny_model, batch_size=1)
    codes = encoder.push(np.zeros((1, 5), np.float32))  # under one frame (hop 12)
    assert codes.shape[-1] == 0 and decoder.push(codes).shape == (1, 0)
