"""netascii: LF <-> CR LF, CR <-> CR NUL, pairs split across blocks, exact-size reads."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tftpdiag.protocol.netascii import (
    NetasciiDecoder,
    NetasciiReader,
    encode,
    netascii_size,
)

CASES = [
    (b"", b""),
    (b"plain", b"plain"),
    (b"a\nb", b"a\r\nb"),
    (b"a\rb", b"a\r\x00b"),
    (b"a\r\nb", b"a\r\x00\r\nb"),
    (b"\n\n", b"\r\n\r\n"),
    (b"\r\r", b"\r\x00\r\x00"),
    (b"end\r", b"end\r\x00"),
    (b"end\n", b"end\r\n"),
    (b"\x00\r\x00", b"\x00\r\x00\x00"),
    (b"\n\r", b"\r\n\r\x00"),
]


def decode_all(chunks: list[bytes]) -> bytes:
    decoder = NetasciiDecoder()
    return b"".join(decoder.feed(c) for c in chunks) + decoder.finish()


@pytest.mark.parametrize(("local", "wire"), CASES)
def test_encode_and_decode_exact(local, wire):
    assert encode(local) == wire
    assert netascii_size(local) == len(wire)
    assert decode_all([wire]) == local


@pytest.mark.parametrize(("local", "wire"), CASES)
def test_every_split_point(local, wire):
    for cut in range(len(wire) + 1):
        assert decode_all([wire[:cut], wire[cut:]]) == local, cut
    # and one byte at a time
    assert decode_all([wire[i:i + 1] for i in range(len(wire))]) == local


def test_crlf_pair_split_across_two_chunks():
    decoder = NetasciiDecoder()
    assert decoder.feed(b"line one\r") == b"line one"  # the CR waits for its partner
    assert decoder.feed(b"\nline two\r") == b"\nline two"
    assert decoder.feed(b"\x00tail") == b"\rtail"
    assert decoder.finish() == b""


def test_cr_held_over_an_empty_chunk():
    decoder = NetasciiDecoder()
    assert decoder.feed(b"x\r") == b"x"
    assert decoder.feed(b"") == b""  # e.g. a zero-length final DATA
    assert decoder.feed(b"\n") == b"\n"


def test_bare_cr_at_the_very_end_stands_alone():
    decoder = NetasciiDecoder()
    assert decoder.feed(b"abc\r") == b"abc"
    assert decoder.finish() == b"\r"
    assert decoder.finish() == b""  # and only once


def test_invalid_cr_sequence_kept_as_it_came():
    assert decode_all([b"a\rb"]) == b"a\rb"
    assert decode_all([b"a\r", b"b"]) == b"a\rb"


def test_encode_is_chunk_independent():
    text = b"a\r\nb\rc\n" * 50
    assert b"".join(encode(text[i:i + 7]) for i in range(0, len(text), 7)) == encode(text)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 512, 1468, 5000])
def test_reader_returns_exact_size_chunks(size):
    text = b"line\r\nbare\rcr\nlf\n" * 400
    reader = NetasciiReader(io.BytesIO(text))
    chunks = []
    while True:
        chunk = reader.read(size)
        chunks.append(chunk)
        if len(chunk) < size:
            break
    assert all(len(c) == size for c in chunks[:-1])
    assert b"".join(chunks) == encode(text)
    assert reader.read(size) == b""


class Trickle:
    """A source that hands out at most ``n`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    def read(self, size: int = -1) -> bytes:
        take = self.n if size < 0 else min(size, self.n)
        out, self.data = self.data[:take], self.data[take:]
        return out


def test_reader_fills_from_short_reads():
    text = b"\n" * 100 + b"\r" * 100
    reader = NetasciiReader(Trickle(text, 3))
    first = reader.read(150)
    assert len(first) == 150
    assert first + reader.read(1000) == encode(text)


def test_reader_read_all():
    assert NetasciiReader(io.BytesIO(b"a\nb\r")).read() == b"a\r\nb\r\x00"
    assert NetasciiReader(io.BytesIO(b"")).read(512) == b""


texts = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00", b"a", b"\xff", b"\n\r", b"\r\r"]),
                 max_size=80).map(b"".join) | st.binary(max_size=300)


@settings(max_examples=300, deadline=None)
@given(texts, st.lists(st.integers(0, 40), max_size=30))
def test_round_trip_with_random_chunking(text, cuts):
    wire = encode(text)
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(wire[pos:pos + cut])
        pos += cut
    chunks.append(wire[pos:])
    assert decode_all(chunks) == text
    assert len(wire) == netascii_size(text)


@settings(max_examples=150, deadline=None)
@given(texts, st.integers(1, 64))
def test_reader_then_decoder_round_trip(text, size):
    reader = NetasciiReader(Trickle(text, 5))
    decoder = NetasciiDecoder()
    out = []
    while True:
        block = reader.read(size)
        out.append(decoder.feed(block))
        if len(block) < size:
            break
    out.append(decoder.finish())
    assert b"".join(out) == text
