"""The .codes container: bit packing, round trips, and that damage is always detected."""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import pytest

from codec.errors import CodecError
from codec.format import bitstream
from codec.format.bitstream import CodesHeader, CodesReader, CodesWriter, pack_bits, unpack_bits


def test_pack_bits_round_trip_random_widths_and_lengths():
    rng = np.random.default_rng(0)
    for _ in range(300):
        bits = int(rng.integers(1, 33))
        count = int(rng.integers(0, 200))
        values = rng.integers(0, 2**bits, size=count, dtype=np.int64)
        packed = pack_bits(values, bits)
        assert len(packed) == (count * bits + 7) // 8
        np.testing.assert_array_equal(unpack_bits(packed, bits, count), values)


def test_pack_bits_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError):
        pack_bits(np.array([16]), 4)


def test_varints_round_trip():
    for value in [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**40 + 7]:
        data = bitstream.encode_varint(value)
        assert bitstream._read_varint(io.BytesIO(data)) == (value, data)


def _header(**kw) -> CodesHeader:
    base = dict(
        model_id="0123abcd",
        sample_rate=44100,
        model_sample_rate=16000,
        channels=2,
        hop_length=320,
        num_groups=2,
        levels=3,
        bits=10,
        num_samples=123457,
    )
    return CodesHeader(**{**base, **kw})


def _file(header: CodesHeader, frames_per_packet: list[int], seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    stream = io.BytesIO()
    writer = CodesWriter(stream, header)
    all_codes = []
    for n in frames_per_packet:
        codes = rng.integers(0, 2**header.bits, size=(n, header.channels, header.num_codebooks))
        writer.write_packet(codes)
        all_codes.append(codes)
    return stream.getvalue(), np.concatenate(all_codes)


def test_packet_checks_match_their_published_check_values():
    # the "check" value of each CRC over b"123456789" (Greg Cook's catalogue of parametrised CRC algorithms)
    assert bitstream.crc(b"123456789", 32) == 0xCBF43926  # CRC-32 (zlib)
    assert bitstream.crc(b"123456789", 16) == 0x29B1  # CRC-16/CCITT-FALSE
    assert bitstream.crc(b"123456789", 8) == 0xF4  # CRC-8 (SMBus: polynomial 0x07, init 0)
    for bits in (32, 16, 8):  # continuing a check equals checking the concatenation
        assert bitstream.crc(b"56789", bits, bitstream.crc(b"1234", bits)) == bitstream.crc(b"123456789", bits)


@pytest.mark.parametrize("crc_bits", [32, 16, 8])
def test_container_round_trip(crc_bits):
    header = _header(extra={"note": "hello"}, crc_bits=crc_bits)
    data, codes = _file(header, [5, 1, 17, 3])
    reader = CodesReader(io.BytesIO(data))
    assert reader.header == header
    packets = list(reader.packets())
    assert [p.frames for p in packets] == [5, 1, 17, 3]
    assert all(p.error is None for p in packets)
    np.testing.assert_array_equal(np.concatenate([p.codes for p in packets]), codes)
    assert data[4] == bitstream.VERSION == 4
    assert all(p.size == 1 + header.payload_bytes(p.frames) + crc_bits // 8 for p in packets)


@pytest.mark.parametrize(("version", "crc_bits"), [(1, 32), (2, 16), (2, 8)])
def test_files_of_earlier_versions_still_read(version, crc_bits):
    header = _header(extra={"note": "old"}, crc_bits=crc_bits, version=version)
    data, codes = _file(header, [5, 1, 17])
    assert data[4] == version
    reader = CodesReader(io.BytesIO(data))
    assert reader.header == header and not reader.header_verified  # until the first packet's CRC covers it
    packets = list(reader.packets())
    assert reader.header_verified and all(p.error is None for p in packets)
    np.testing.assert_array_equal(np.concatenate([p.codes for p in packets]), codes)
    with pytest.raises(ValueError, match="version-1 header"):
        _header(crc_bits=16, version=1)


def test_the_header_checks_itself_before_any_packet_is_read():
    header = _header(extra={"note": "hello"})
    data, _ = _file(header, [3, 4])
    size = len(header.to_bytes())
    assert int.from_bytes(data[size - 4 : size], "big") == bitstream.crc(data[: size - 4])
    for i in range(5, size):  # every byte after the version: a field, the metadata or the check itself
        damaged = bytearray(data)
        damaged[i] ^= 0x01
        stream = io.BytesIO(bytes(damaged) + b"<packets never read>")
        with pytest.raises(CodecError, match="x.codes has a damaged header|truncated inside its header"):
            CodesReader(stream, "x.codes")
    reader = CodesReader(io.BytesIO(data))
    assert reader.header_verified and reader.header_size == size
    # the first packet's CRC covers only the packet: a file's packets do not depend on its header's bytes
    forged = dataclasses.replace(header, extra={"note": "other"})
    swapped = forged.to_bytes() + data[size:]
    assert all(p.error is None for p in CodesReader(io.BytesIO(swapped)).packets())


@pytest.mark.parametrize("crc_bits", [32, 16, 8])
def test_streamed_file_carries_its_length_in_the_end_record(crc_bits):
    header = _header(num_samples=None, crc_bits=crc_bits)
    stream = io.BytesIO()
    writer = CodesWriter(stream, header)
    writer.write_packet(np.zeros((4, 2, 6), dtype=np.int64))
    writer.write_end(999)
    reader = CodesReader(io.BytesIO(stream.getvalue()))
    assert reader.header.num_samples is None
    assert [p.error for p in reader.packets()] == [None]
    assert reader.num_samples == 999


@pytest.mark.parametrize(("version", "crc_bits"), [(4, 32), (4, 16), (4, 8), (1, 32), (2, 8)])
def test_every_flipped_byte_is_detected(version, crc_bits):
    header = _header(crc_bits=crc_bits, version=version)
    data, _ = _file(header, [3, 4, 2])
    size = len(header.to_bytes())
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x5A
        try:
            reader = CodesReader(io.BytesIO(bytes(damaged)))
            packets = list(reader.packets())
        except CodecError:
            continue  # a damaged header is refused outright
        assert i >= size or version < 4, f"flipping header byte {i} was not refused"
        assert any(p.error for p in packets), f"flipping byte {i} went unnoticed"
        if i < size:  # an older header is caught by the first packet's CRC, and never counts as verified
            assert packets[0].error and not reader.header_verified


@pytest.mark.parametrize("crc_bits", [32, 8])
def test_truncation_at_every_byte_is_detected_or_short(crc_bits):
    header = _header(crc_bits=crc_bits)
    data, _ = _file(header, [3, 4, 2])
    boundaries = set()
    offset = len(header.to_bytes())
    for n in [3, 4, 2]:
        offset += 1 + header.payload_bytes(n) + header.crc_bytes
        boundaries.add(offset)
    for cut in range(len(data)):
        try:
            reader = CodesReader(io.BytesIO(data[:cut]))
        except CodecError as e:
            assert "empty" in str(e) or "truncated" in str(e)
            continue
        packets = list(reader.packets())
        frames = sum(p.frames for p in packets if p.error is None)
        if cut in boundaries or cut == len(header.to_bytes()):
            # a clean cut between packets: fewer frames than the header promises (the decoder reports it)
            assert all(p.error is None for p in packets)
            assert frames < header.expected_frames
        else:
            assert packets and packets[-1].error is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"RIFF" + d[4:], "not a .codes file"),
        (lambda d: d[:4] + bytes([9]) + d[5:], "version 9"),
        (lambda d: b"", "empty"),
        (lambda d: d[:7], "truncated inside its header"),
    ],
)
def test_bad_headers_are_clear_errors(mutate, message):
    data, _ = _file(_header(), [2])
    with pytest.raises(CodecError, match=message):
        CodesReader(io.BytesIO(mutate(data)), "x.codes")


@pytest.mark.parametrize("version", [2, 4])
def test_a_header_with_another_check_width_is_refused(version):
    header = _header(crc_bits=16, version=version)
    data, _ = _file(header, [2])
    size = len(header.to_bytes())
    at = size - 1 if version == 2 else size - 6  # the last varint in version 2; before the coder and CRC in 4
    assert data[at] == 16
    for width in (0, 12, 127) + ((32,) if version == 2 else ()):
        forged = bytearray(data[:size])
        forged[at] = width
        if version == 4:  # with the header's CRC recomputed, so the width itself is what is refused
            forged[-4:] = bitstream.crc(bytes(forged[:-4])).to_bytes(4, "big")
        with pytest.raises(CodecError, match=f"packet check of {width} bits"):
            CodesReader(io.BytesIO(bytes(forged) + data[size:]), "x.codes")
    with pytest.raises(CodecError, match="--packet-crc 12"):
        _header(crc_bits=12)


def test_an_unknown_coder_is_refused_with_the_fix():
    header = _header(tables_id="00c0ffee")
    forged = bytearray(header.to_bytes())
    at = len(forged) - 9  # coder, tables id (4 bytes), CRC (4 bytes)
    assert forged[at] == bitstream.ENTROPY_CODER
    forged[at] = 7
    with pytest.raises(CodecError, match="damaged header \\(it fails its CRC check\\)"):
        CodesReader(io.BytesIO(bytes(forged)), "x.codes")
    forged[-4:] = bitstream.crc(bytes(forged[:-4])).to_bytes(4, "big")  # as a later codec might write it
    with pytest.raises(CodecError, match="coder 7, which this codec does not know; upgrade the codec package"):
        CodesReader(io.BytesIO(bytes(forged)), "x.codes")


def test_overhead_is_small_for_ten_seconds_at_one_kbps():
    # 50 frames/s, 2 groups x 1 level x 10 bits = 1 kbps
    header = _header(sample_rate=16000, channels=1, levels=1, num_samples=160000)
    frames = header.expected_frames
    assert frames == 500 and header.bitrate == 1000
    overhead = bitstream.container_overhead(header, frames, bitstream.frames_per_packet(header))
    payload = (frames * header.bits_per_frame + 7) // 8
    # 29 header bytes (6 of them the check width, the coder and the header's own CRC-32), 2 packets of 6
    assert len(header.to_bytes()) == 29 and overhead == 41
    assert overhead / payload < 0.033
    data, _ = _file(header, [409, 91])
    assert len(data) - payload == overhead


class _Meter(io.BytesIO):
    """A stream that remembers the largest read it was asked for."""

    largest = 0

    def read(self, n=-1):
        self.largest = max(self.largest, n)
        return super().read(n)


def test_forged_lengths_never_size_a_read():
    header = _header(extra={"note": "x"})
    big_packet = bitstream.encode_varint(bitstream.max_packet_frames(header)) + b"\x00" * 100  # claims ~1 MiB
    stream = _Meter(header.to_bytes() + big_packet)
    packets = list(CodesReader(stream).packets())
    assert packets[-1].error is not None and "ends in the middle" in packets[-1].error
    assert stream.largest <= bitstream.READ_PIECE  # the 1 MiB payload was asked for in pieces, as bytes arrived


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sample_rate", 2**31, "sample rate 2147483648 is out of range 1000..768000"),
        ("channels", 65, "channels 65 is out of range 1..64"),
        ("levels", 0, "levels 0 is out of range 1..256"),
        ("bits", 33, "bits per code 33 is out of range 1..32"),
        ("num_samples", 2**40, "length 1099511627776 is out of range"),
    ],
)
def test_header_fields_outside_the_limits_are_clear_errors(field, value, message):
    data = _header(**{field: value}).to_bytes()
    with pytest.raises(CodecError, match=f"x.codes has a damaged header: {re.escape(message)}"):
        CodesReader(io.BytesIO(data), "x.codes")
