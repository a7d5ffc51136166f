"""IP fragments put back together by the capture reader (trace/pcap/fragments.py): a UDP datagram larger
than the MTU (an OACK with a huge value, DATA with blksize 8192 over Ethernet) is read whole, at the time
and in the place of its last fragment, as tshark reassembles it; one whose fragments do not all come
reads as before (its first fragment, cut), and the table stays bounded whatever the capture holds."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trace.test_pcap import brief, fragment, ipv4, ipv6, pcap, udp
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import Datagram, read_datagrams
from tftpdiag.trace.pcap.fragments import MAX_HELD, MAX_PENDING, WAIT, Fragments

A, B = "10.1.1.1", "10.1.1.2"
OACK = b"\x00\x06blksize\x00" + b"9" * 60_000 + b"\x00"  # what a fake server sent: 60,000 bytes of value


def v4_fragments(body: bytes, ident: int, size: int = 1480, src: str = A, dst: str = B) -> list[bytes]:
    """``body`` (a UDP header and payload) cut into IPv4 fragments of ``size`` bytes (a multiple of 8)."""
    out = []
    for start in range(0, len(body), size):
        more = start + size < len(body)
        out.append(ipv4(src, dst, body[start:start + size], frag=(0x2000 if more else 0) | start >> 3, ident=ident))
    return out


def v6_fragments(body: bytes, ident: int, size: int = 1232) -> list[bytes]:
    out = []
    for start in range(0, len(body), size):
        more = start + size < len(body)
        header = (44, b"\x00" + struct.pack("!HI", start | more, ident))
        out.append(ipv6("fd00::1", "fd00::2", body[start:start + size], ext=[header]))
    return out


def read(records: list[tuple[float, bytes]], frags: Fragments | None = None) -> list[Datagram]:
    """Raw IP packets (linktype 101) at the times given, read back."""
    data = pcap(101, [(int(t), round(t % 1 * 1e6), packet) for t, packet in records])
    return list(read_datagrams(io.BytesIO(data), frags))


def other(n: int) -> bytes:
    return ipv4(A, B, udp(7000 + n, 69, b"small %d" % n))


def test_a_fragmented_oack_is_read_whole_at_its_last_fragment_in_its_place() -> None:
    body = udp(7171, 40464, OACK)
    parts = v4_fragments(body, ident=0x1234)
    records = [(1.0, other(1))] + [(2.0 + k / 1000, p) for k, p in enumerate(parts)] + [(3.0, other(2))]
    records.insert(3, (2.0005, other(3)))  # another datagram between two fragments comes out before it
    frags = Fragments()
    got = read(records, frags)
    assert [d.payload[:7] for d in got] == [b"small 1", b"small 3", OACK[:7], b"small 2"]
    whole = got[2]
    assert (whole.payload, whole.orig_len, whole.src, whole.dst) == (OACK, len(OACK), (A, 7171), (B, 40464))
    assert whole.time == 2.0 + (len(parts) - 1) / 1000
    assert (frags.reassembled, frags.incomplete) == (1, 0)


def test_fragments_in_any_order_and_a_fragment_seen_twice() -> None:
    body = udp(1, 2, bytes(range(256)) * 40)
    parts = v4_fragments(body, ident=7)
    order = [parts[3], parts[0], parts[5], parts[1], parts[1], parts[6], parts[2], parts[4]]
    frags = Fragments()
    (got,) = read([(5.0 + k / 1000, p) for k, p in enumerate(order)], frags)
    assert got.payload == body[8:] and got.time == 5.007
    assert (frags.reassembled, frags.incomplete) == (1, 0)


def test_a_datagram_missing_a_fragment_reads_as_before_cut_in_its_place() -> None:
    body = udp(7171, 40464, OACK)
    parts = v4_fragments(body, ident=9)
    records = [(1.0, parts[0]), (1.001, other(1))] + [(1.002, p) for p in parts[2:]] + [(1.5, other(2))]
    frags = Fragments()
    got = read(records, frags)
    assert [(d.payload[:7], d.orig_len, d.time) for d in got] == [
        (OACK[:7], len(OACK), 1.0), (b"small 1", 7, 1.001), (b"small 2", 7, 1.5)]
    assert len(got[0].payload) == 1480 - 8  # the first fragment only: cut, as without reassembly
    assert (frags.reassembled, frags.incomplete) == (0, 1)


def test_a_datagram_waits_at_most_wait_seconds_for_its_fragments() -> None:
    parts = v4_fragments(udp(1, 2, bytes(4000)), ident=3)
    records = [(1.0, parts[0]), (1.1, other(1)), (1.0 + WAIT + 0.5, other(2)), (1.0 + WAIT + 0.6, parts[1]),
               (1.0 + WAIT + 0.7, parts[2])]
    frags = Fragments()
    got = read(records, frags)
    # Given up when the capture went past the wait: the first fragment cut, and later fragments complete nothing.
    assert [(d.orig_len, len(d.payload)) for d in got[:1]] == [(4000, 1472)]
    assert [d.payload for d in got[1:]] == [b"small 1", b"small 2"]
    assert frags.reassembled == 0 and frags.incomplete == 2


def test_overlapping_fragments_give_the_datagram_up() -> None:
    body = udp(1, 2, bytes(3000))
    parts = v4_fragments(body, ident=4)
    evil = ipv4(A, B, b"\xff" * 800, frag=0x2000 | 1000 >> 3, ident=4)  # over the first and second
    frags = Fragments()
    got = read([(1.0, parts[0]), (1.001, evil), (1.002, parts[1]), (1.003, parts[2])], frags)
    assert [(d.orig_len, len(d.payload)) for d in got] == [(3000, 1472)]  # never a mix of the two
    assert frags.reassembled == 0 and frags.incomplete >= 1


def test_the_table_is_bounded() -> None:
    """More datagrams in reassembly than the table holds: the oldest is given up. A fragment past 65,535
    bytes gives its datagram up. Datagrams held behind a first fragment stay under MAX_HELD."""
    firsts = [v4_fragments(udp(1, 2, bytes(3000)), ident=k)[0] for k in range(MAX_PENDING + 1)]
    frags = Fragments()
    got = read([(1.0, p) for p in firsts], frags)
    assert len(got) == MAX_PENDING + 1 and frags.incomplete == MAX_PENDING + 1
    assert all(len(d.payload) == 1472 for d in got)
    huge = ipv4(A, B, bytes(1480), frag=0x2000 | 65000 >> 3, ident=99)
    frags = Fragments()
    assert read([(1.0, huge)], frags) == [] and frags.incomplete == 1
    first = v4_fragments(udp(1, 2, bytes(3000)), ident=5)[0]
    frags = Fragments()
    records = [(1.0, first)] + [(1.0, other(n)) for n in range(MAX_HELD + 10)]
    stream = read_datagrams(io.BytesIO(pcap(101, [(1, 0, p) for _, p in records])), frags)
    seen = 0
    for _ in stream:
        seen += 1
        assert len(frags.held) <= MAX_HELD + 1
    assert seen == MAX_HELD + 11 and frags.incomplete == 1


def test_ipv6_fragments_are_read_whole() -> None:
    body = udp(7171, 40464, OACK)
    parts = v6_fragments(body, ident=0xABCDEF)
    frags = Fragments()
    (got,) = read([(1.0 + k / 1000, p) for k, p in enumerate(parts)], frags)
    assert (got.src, got.dst, got.payload, got.orig_len) == (("fd00::1", 7171), ("fd00::2", 40464), OACK, len(OACK))
    assert frags.reassembled == 1
    # The atomic fragment (offset 0, no more) and a first fragment after other headers read as before.
    atomic = ipv6("fd00::1", "fd00::2", udp(1, 2, b"x"), ext=[fragment(0, False)])
    assert brief(read([(1.0, atomic)])) == [(("fd00::1", 1), ("fd00::2", 2), b"x", 1)]


def test_trace_of_a_fragmented_oack_names_the_bad_oack_and_warns(tmp_path: Path) -> None:
    """The hugeoack exchange of a tester's capture: RRQ, the OACK in 41 fragments, the client's ERROR 8.
    Read whole, the OACK is the one the client refused (bad-oack), not an undecodable datagram."""
    client, server, tid = (B, 40464), (A, 7171), (A, 43056)
    rrq = b"\x00\x01hugeoack\x00octet\x00blksize\x001468\x00tsize\x000\x00"
    error = b"\x00\x05\x00\x08OACK gives blksize an invalid value\x00"
    records = [(1.0, ipv4(client[0], server[0], udp(client[1], server[1], rrq)))]
    records += [(1.001, p) for p in v4_fragments(udp(tid[1], client[1], OACK), ident=77, src=tid[0], dst=client[0])]
    records += [(1.002, ipv4(client[0], tid[0], udp(client[1], tid[1], error)))]
    path = tmp_path / "frag.pcap"
    path.write_bytes(pcap(101, [(1, round(t % 1 * 1e6), p) for t, p in records]))
    trace = load_trace(path)
    assert trace.warning is not None and "1 UDP datagram came in IP fragments" in trace.warning, trace.warning
    from tftpdiag.findings import analyze

    ids = {f.id for f in analyze(trace.events)}
    assert "bad-oack" in ids and "protocol-breach" not in ids, ids


_hostile = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8200), st.booleans(), st.integers(0, 2000),
                              st.floats(0, 3)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(steps=_hostile)
def test_hostile_fragments_never_raise_and_whole_datagrams_keep_their_order(
        steps: list[tuple[int, int, bool, int, float]]) -> None:
    """Fragments of any offset, length, id and order among whole datagrams: no exception, every whole
    datagram read once and in order, the held datagrams bounded, and what comes out at most the input."""
    records: list[tuple[float, bytes]] = []
    t = 1.0
    for n, (ident, offset, more, size, dt) in enumerate(steps):
        t += dt
        records.append((t, ipv4(A, B, bytes([n % 251]) * size, frag=(0x2000 if more else 0) | offset, ident=ident)))
        records.append((t, other(n)))
    frags = Fragments()
    got = read(records, frags)
    assert [d.payload for d in got if d.payload.startswith(b"small ")] == [b"small %d" % n for n in range(len(steps))]
    assert len(got) <= len(records) and not frags.held
