"""netascii: LF <-> CR LF, CR <-> CR NUL, pairs split across blocks, a sender fed the file in chunks
cutting exact-size blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.machines import CLIENT, TID, client_read, pump
from tftpdiag.engine.files import feed_sender
from tftpdiag.protocol.netascii import (
    NetasciiDecoder,
    encode,
    netascii_size,
)
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import encode as encode_packet
from tftpdiag.protocol.server import ServerRead

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


def netascii_transfer(text: bytes, blksize: int, source: object) -> tuple[list[bytes], bytes]:
    """A netascii ServerRead fed from ``source`` (the engine's feed_sender) sending to a ClientRead: the
    payloads of the DATA blocks, in block order, and what the client stored."""
    options = RequestedOptions(blksize=blksize) if blksize != 512 else RequestedOptions()
    client, sink = client_read(options=options, mode="netascii")
    req = client.request
    server = ServerRead(2, request=req, raw=encode_packet(req), client=CLIENT, local=TID, now=0.0,
                        file_size=len(text))
    blocks: dict[int, bytes] = {}

    def log(raw: bytes, src: tuple, dst: tuple) -> bool:
        if raw[1] == 3:
            blocks[(raw[2] << 8) | raw[3]] = raw[4:]
        return False

    pump(client, server, on_datagram=log, after_step=lambda now: feed_sender(server, source, now))  # type: ignore[arg-type]
    return [blocks[n] for n in sorted(blocks)], sink.getvalue()


@pytest.mark.parametrize("size", [8, 9, 512, 1468, 5000])
def test_sender_cuts_exact_size_blocks(size):
    text = b"line\r\nbare\rcr\nlf\n" * 400
    blocks, stored = netascii_transfer(text, size, Trickle(text, 1 << 20))
    assert all(len(b) == size for b in blocks[:-1]) and len(blocks[-1]) < size
    assert b"".join(blocks) == encode(text)
    assert stored == text


class Trickle:
    """A source that hands out at most ``n`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    def read(self, size: int = -1) -> bytes:
        take = self.n if size < 0 else min(size, self.n)
        out, self.data = self.data[:take], self.data[take:]
        return out


def test_sender_fills_blocks_from_short_reads():
    text = b"\n" * 100 + b"\r" * 100
    blocks, stored = netascii_transfer(text, 150, Trickle(text, 3))
    assert [len(b) for b in blocks] == [150, 150, 100]
    assert b"".join(blocks) == encode(text) and stored == text


def test_sender_small_and_empty_files():
    assert netascii_transfer(b"a\nb\r", 512, Trickle(b"a\nb\r", 100))[0] == [b"a\r\nb\r\x00"]
    assert netascii_transfer(b"", 512, Trickle(b"", 100)) == ([b""], b"")


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


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(8, 64), st.integers(1, 40))
def test_sender_then_receiver_round_trip(text, size, chunk):
    blocks, stored = netascii_transfer(text, size, Trickle(text, chunk))
    assert b"".join(blocks) == encode(text)
    assert stored == text
