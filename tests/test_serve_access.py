"""Who may use `codec serve` (browser origins, a token, where it listens) and what a client that stops reading costs.

The clients are real WebSocket clients (the websockets library, the package's own client and `codec stream-client`).
"""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from codec.cli import main
from codec.coding.compress import encode_audio
from codec.errors import CodecError
from codec.server.access import Access, check_exposure, is_loopback, parse_origins, resolve_token
from tests import live_server
from tests.conftest import start_server, tone
from tests.live_server import codes_of, foreign_origin, refused_status, wrong_token

pytest.importorskip("websockets")
TOKEN = "t0ken-for-the-tests_0123456789"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def guarded(tiny_model):
    """A server that needs TOKEN and allows pages from ORIGIN, and a count of the streams its batcher opened."""
    from codec.server import batching

    opened = {"streams": 0}
    streams = batching.FrameBatcher.encoder, batching.FrameBatcher.decoder

    def counted(make):
        def open_stream(self, **kwargs):
            opened["streams"] += 1
            return make(self, **kwargs)

        return open_stream

    batching.FrameBatcher.encoder, batching.FrameBatcher.decoder = (counted(f) for f in streams)
    try:
        url = start_server(tiny_model, access=Access(token=TOKEN, origins=(ORIGIN,)))
        opened["streams"] = 0  # those of the warm-up
        yield url, opened
    finally:
        batching.FrameBatcher.encoder, batching.FrameBatcher.decoder = streams


def _audio(seconds: float = 0.4, seed: int = 0) -> np.ndarray:
    return (np.round(tone(seconds, 8000, seed=seed) * 32768) / 32768).astype(np.float32)  # on the s16 grid


def _expected(model, audio, levels) -> np.ndarray:
    out = io.BytesIO()
    encode_audio(model, audio, 8000, out, levels=levels)
    return codes_of(out.getvalue())


def test_foreign_origins_and_missing_or_wrong_tokens_are_refused_before_any_model_work(guarded, tiny_model):
    url, opened = guarded
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def attempts():
        return await asyncio.gather(
            foreign_origin(url, TOKEN),  # a web page elsewhere, even with the token
            refused_status(url, {**bearer, "Origin": "null"}),  # a sandboxed page or a file:// page
            refused_status(url, {**bearer, "Origin": ORIGIN + ".evil.example"}),
            refused_status(url, None),  # no token
            wrong_token(url),
            refused_status(url, {"Authorization": f"Basic {TOKEN}"}),  # the right secret in the wrong scheme
            refused_status(url, {"Authorization": f"Bearer {TOKEN[:-1]}"}),
            refused_status(url, {"Authorization": f"Bearer {TOKEN}x"}),
        )

    assert asyncio.run(attempts()) == [403, 403, 403, 401, 401, 401, 401, 401]
    assert opened["streams"] == 0  # no stream was opened for any of them

    async def allowed():
        return await asyncio.gather(
            refused_status(url, bearer),  # a program: no Origin
            refused_status(url, {**bearer, "Origin": ORIGIN}),  # the page that was allowed
            refused_status(url, {"Authorization": f"bearer  {TOKEN} "}),  # scheme in any case, spaces around
        )

    assert asyncio.run(allowed()) == [None, None, None]
    from codec.server.serve import encode_remote

    audio = _audio()
    data = asyncio.run(encode_remote(url, audio, 8000, levels=2, token=TOKEN))
    assert opened["streams"] == 1
    assert np.array_equal(codes_of(data), _expected(tiny_model, audio, 2))  # the right token is served, exactly


def test_clients_send_the_token_and_report_a_refusal_in_one_line(guarded, tiny_model, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from codec.server.serve import decode_remote_sync, encode_remote, encode_remote_sync

    url, _ = guarded
    audio = _audio(0.3, seed=1)
    monkeypatch.delenv("CODEC_SERVE_TOKEN", raising=False)
    with pytest.raises(CodecError, match=r"refused the connection \(HTTP 401\): this server needs a token"):
        encode_remote_sync(url, audio, 8000, levels=2)
    with pytest.raises(CodecError, match=r"\(HTTP 401\): wrong token"):
        asyncio.run(encode_remote(url, audio, 8000, levels=2, token="wrong"))
    monkeypatch.setenv("CODEC_SERVE_TOKEN", TOKEN)  # the clients' default
    data = encode_remote_sync(url, audio, 8000, levels=2)
    assert np.array_equal(codes_of(data), _expected(tiny_model, audio, 2))
    decoded, rate = decode_remote_sync(url, data)
    assert decoded.shape == audio.shape and rate == 8000
    monkeypatch.delenv("CODEC_SERVE_TOKEN")

    sf.write(tmp_path / "in.wav", audio[0], 8000, subtype="PCM_16")
    (tmp_path / "token").write_text(TOKEN + "\n")
    wav, codes = str(tmp_path / "in.wav"), str(tmp_path / "out.codes")
    assert (
        main(["stream-client", "encode", wav, codes, "--url", url, "-l", "2", "--token-file", str(tmp_path / "token")])
        == 0
    )
    assert np.array_equal(codes_of((tmp_path / "out.codes").read_bytes()), codes_of(data))
    capsys.readouterr()
    assert main(["stream-client", "decode", codes, str(tmp_path / "out.wav"), "--url", url, "--token", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HTTP 401" in err and "wrong token" in err and "Traceback" not in err
    assert not (tmp_path / "out.wav").exists()


def test_token_and_origin_options_are_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEC_SERVE_TOKEN", raising=False)
    assert resolve_token() is None
    monkeypatch.setenv("CODEC_SERVE_TOKEN", " from-env ")
    assert resolve_token() == "from-env"
    (tmp_path / "t").write_text("from-file\nignored\n")
    assert resolve_token(token_file=tmp_path / "t") == "from-file" and resolve_token("flag") == "flag"
    for bad in ("", "two words", "caf\u00e9"):
        with pytest.raises(CodecError, match="token"):
            resolve_token(bad)
    with pytest.raises(CodecError, match="cannot read the token file"):
        resolve_token(token_file=tmp_path / "missing")
    assert parse_origins(["https://A.example, http://localhost:3000", "null"]) == (
        "https://a.example", "http://localhost:3000", "null")  # fmt: skip
    for bad in ("a.example", "ftp://a.example", "https://a.example/path"):
        with pytest.raises(CodecError, match="is not an origin"):
            parse_origins([bad])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("::")
    check_exposure("127.0.0.1", None, False)
    check_exposure("0.0.0.0", "a-token", False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(CodecError, match="--insecure-no-token"):
        check_exposure("0.0.0.0", None, False)


def test_serve_refuses_a_public_address_without_a_token_before_loading_a_model(capsys, monkeypatch):
    monkeypatch.delenv("CODEC_SERVE_TOKEN", raising=False)
    assert main(["serve", "-m", "no-such-model", "--host", "0.0.0.0"]) == 1  # the model is never looked up
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reachable from other machines" in err and "--token-file" in err


def test_a_client_that_stops_reading_is_closed_and_costs_bounded_memory(tiny_model, tiny_model_file):
    """A decode client sends packets and reads nothing (each asks for 2.4 MB of f32 PCM at 768 kHz, 120x its size)
    beside a well-behaved real-time client: the server stops reading it, closes it with 1008 "not reading" after
    the send timeout, keeps its own memory flat, and the other client's codes are exact."""
    from codec.format.bitstream import CodesReader
    from codec.server.serve import NOT_READING

    hop, frames = tiny_model.hop_length, 512
    coded = io.BytesIO()  # two packets of 512 frames (0.8 s at 8 kHz; 2.4 MB of f32 PCM at 768 kHz each)
    encode_audio(tiny_model, tone(2 * frames * hop / 8000, 8000), 8000, coded, levels=4, packet_bytes=frames * 4)
    data = coded.getvalue()
    reader = CodesReader(io.BytesIO(data))
    first, second = ((p.offset, p.offset + p.size) for p in reader.packets())
    assert first[1] == second[0]
    # the first packet's check covers the header; a later packet's only itself, so it can be sent again and again
    packets = [data[slice(*first)]] + [data[slice(*second)]] * 10  # 24 MB of PCM asked for, 20 kB sent
    header = data[: reader.header_size]
    audio = _audio(2.0, seed=3)
    send_seconds = 2.0
    server = live_server.ServerProcess(tiny_model_file, token=TOKEN,
                                       bounds={"send_seconds": send_seconds, "idle_seconds": 20.0})  # fmt: skip
    try:
        start_rss = server.status_mib("VmRSS")

        async def run():
            stalled = lambda: any("took no reply" in line for line in server.log)  # noqa: E731
            # read again once the server gave up on us, to see the close frame it queued behind the data
            stuck = asyncio.create_task(live_server.slow_reader(server.url, TOKEN, header, packets, 120, stalled))
            good = await live_server.good_session(server.url, audio, 8000, 2, TOKEN)
            return good, await stuck

        good, (sent, code, reason) = asyncio.run(run())
        peak_growth = server.status_mib("VmHWM") - start_rss
        assert server.alive
    finally:
        server.stop()
    assert np.array_equal(codes_of(good), _expected(tiny_model, audio, 2))
    assert (code, reason) == (1008, NOT_READING), "\n".join(server.log)
    # unbounded buffering would hold what the server decoded for us: 100x real time (its pacing) x 3 MB/s of PCM
    assert sent > 0 and peak_growth < 100, (sent, peak_growth)
    assert any("took no reply for 2 s" in line for line in server.log)
