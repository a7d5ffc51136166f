"""Tests for tftpdiag.trace.pcap: writer/reader round trips, hand-built captures of every supported
link type and format, damage handling, and checks against tshark, tcpdump and dumpcap."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tftpdiag.trace.pcap import Address, CaptureError, Datagram, PcapWriter, read_datagrams

# --------------------------------------------------------------------------------------------
# Helpers: an independent (deliberately naive) checksum and packet/frame/file builders
# --------------------------------------------------------------------------------------------


def inet_sum(data: bytes) -> int:
    """RFC 1071 one's-complement sum, word by word, as a reference for the writer's shortcut."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def norm6(ip: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip))


def udp(sport: int, dport: int, payload: bytes, ulen: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, len(payload) + 8 if ulen is None else ulen, 0) + payload


def ipv4(
    src: str,
    dst: str,
    body: bytes,
    *,
    proto: int = 17,
    options: bytes = b"",
    frag: int = 0x4000,
    total: int | None = None,
    ident: int = 1,
) -> bytes:
    ihl = 5 + len(options) // 4
    length = 4 * ihl + len(body) if total is None else total
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            length,
            ident,
            frag,
            64,
            proto,
            0,
            socket.inet_pton(socket.AF_INET, src),
            socket.inet_pton(socket.AF_INET, dst),
        )
        + options
    )
    checksum = 0xFFFF - inet_sum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + body


def ipv6(src: str, dst: str, body: bytes, *, ext: Sequence[tuple[int, bytes]] = (), proto: int = 17) -> bytes:
    """``ext``: (header type, header bytes after the next-header byte) in order."""
    chain = b""
    types = [t for t, _ in ext] + [proto]
    for i, (_, rest) in enumerate(ext):
        chain += bytes([types[i + 1]]) + rest
    payload = chain + body
    return (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(payload),
            types[0],
            64,
            socket.inet_pton(socket.AF_INET6, src),
            socket.inet_pton(socket.AF_INET6, dst),
        )
        + payload
    )


HOP_BY_HOP = (0, b"\x00\x01\x04\x00\x00\x00\x00")  # PadN to 8 bytes
ROUTING = (43, b"\x00\x00\x00\x00\x00\x00\x00")  # type 0, no segments left
DEST_OPTS = (60, b"\x01" + b"\x01\x0c" + bytes(12))  # 16 bytes: length 1, PadN
AUTH = (51, b"\x02\x00\x00" + bytes(12))  # 16 bytes: 4-byte ICV


def fragment(offset: int, more: bool) -> tuple[int, bytes]:
    return 44, b"\x00" + struct.pack("!HI", offset << 3 | more, 0x1234)


def ether(packet: bytes, ethertype: int, *, vlans: Sequence[int] = (), pad_fcs: bool = False) -> bytes:
    frame = bytes.fromhex("0200000000010200000000 02".replace(" ", ""))
    for tpid in vlans:
        frame += struct.pack("!HH", tpid, 100)
    frame += struct.pack("!H", ethertype) + packet
    if pad_fcs:
        frame = frame.ljust(60, b"\0") + b"\xde\xad\xbe\xef"
    return frame


def sll(packet: bytes, proto: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, bytes(8), proto) + packet


def sll2(packet: bytes, proto: int) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 772, 0, 6, bytes(8)) + packet


def null(packet: bytes, family: int, endian: str) -> bytes:
    return struct.pack(endian + "I", family) + packet


def pcap(linktype: int, records: Sequence[tuple[int, int, bytes]], *, endian: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in records:
        out += struct.pack(endian + "IIII", sec, frac, len(data), len(data)) + data
    return out


def block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body = body.ljust((len(body) + 3) & ~3, b"\0")
    length = len(body) + 12
    return struct.pack(endian + "II", btype, length) + body + struct.pack(endian + "I", length)


def shb(endian: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def option(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value.ljust((len(value) + 3) & ~3, b"\0")


def idb(
    linktype: int, *, tsresol: int | None = None, tsoffset: int | None = None, snaplen: int = 0, endian: str = "<"
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += option(0, b"", endian)
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def epb(iface: int, ticks: int, data: bytes, endian: str = "<") -> bytes:
    return block(
        6, struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data, endian
    )


def spb(data: bytes, orig_len: int | None = None, endian: str = "<") -> bytes:
    return block(3, struct.pack(endian + "I", len(data) if orig_len is None else orig_len) + data, endian)


def opb(iface: int, ticks: int, data: bytes, endian: str = "<") -> bytes:
    return block(
        2,
        struct.pack(endian + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)) + data,
        endian,
    )


def read(data: bytes) -> list[Datagram]:
    return list(read_datagrams(io.BytesIO(data)))


def brief(datagrams: Sequence[Datagram]) -> list[tuple[Address, Address, bytes, int]]:
    return [(d.src, d.dst, d.payload, d.orig_len) for d in datagrams]


def write_all(items: Sequence[tuple[float, Address, Address, bytes]], **kwargs: object) -> bytes:
    out = io.BytesIO()
    with PcapWriter(out, **kwargs) as writer:  # type: ignore[arg-type]
        for item in items:
            writer.write(*item)
    return out.getvalue()


def records(data: bytes) -> Iterator[tuple[int, int, int, int, bytes]]:
    """(sec, usec, incl_len, orig_len, packet) of every record of a little-endian classic pcap."""
    pos = 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, pos)
        yield sec, usec, incl, orig, data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl


def check_packet(packet: bytes) -> None:
    """Assert that a full IP/UDP packet written by PcapWriter has consistent lengths and checksums."""
    if packet[0] >> 4 == 4:
        assert packet[0] == 0x45
        assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
        assert inet_sum(packet[:20]) == 0xFFFF
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
        segment = packet[20:]
    else:
        assert packet[0] >> 4 == 6
        assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        assert packet[6] == 17
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, 17)
        segment = packet[40:]
    assert struct.unpack_from("!H", segment, 4)[0] == len(segment)
    assert struct.unpack_from("!H", segment, 6)[0] != 0
    assert inet_sum(pseudo + segment) == 0xFFFF


# --------------------------------------------------------------------------------------------
# Writer -> reader
# --------------------------------------------------------------------------------------------

ports = st.integers(0, 65535)
v4_flows = st.tuples(st.ip_addresses(v=4).map(str), ports, st.ip_addresses(v=4).map(str), ports)
v6_flows = st.tuples(
    st.ip_addresses(v=6).map(lambda a: norm6(str(a))), ports, st.ip_addresses(v=6).map(lambda a: norm6(str(a))), ports
)
times = st.floats(min_value=0, max_value=4.2e9, allow_nan=False)


def datagrams_of(
    flows: st.SearchStrategy[tuple[str, int, str, int]],
) -> st.SearchStrategy[list[tuple[float, Address, Address, bytes]]]:
    item = st.tuples(times, flows, st.binary(max_size=1600)).map(
        lambda x: (x[0], (x[1][0], x[1][1]), (x[1][2], x[1][3]), x[2])
    )
    return st.lists(item, max_size=12)


def assert_round_trip(items: Sequence[tuple[float, Address, Address, bytes]]) -> None:
    data = write_all(items)
    got = read(data)
    assert brief(got) == [(s, d, p, len(p)) for _, s, d, p in items]
    for datagram, (t, *_rest) in zip(got, items, strict=True):
        assert abs(datagram.time - t) <= 1e-6  # microsecond resolution
    for _, _, incl, orig, packet in records(data):
        assert incl == orig == len(packet)
        check_packet(packet)
    assert struct.unpack_from("<I", data, 20)[0] == 101


@settings(max_examples=60, deadline=None)
@given(datagrams_of(v4_flows))
def test_round_trip_ipv4(items: list[tuple[float, Address, Address, bytes]]) -> None:
    assert_round_trip(items)


@settings(max_examples=60, deadline=None)
@given(datagrams_of(v6_flows))
def test_round_trip_ipv6(items: list[tuple[float, Address, Address, bytes]]) -> None:
    assert_round_trip(items)


@settings(max_examples=60, deadline=None)
@given(datagrams_of(st.one_of(v4_flows, v6_flows)))
def test_round_trip_mixed(items: list[tuple[float, Address, Address, bytes]]) -> None:
    assert_round_trip(items)


def test_round_trip_tftp_like_exchange_and_odd_sizes() -> None:
    client, server = ("192.0.2.10", 2000), ("192.0.2.1", 3000)
    items = [
        (
            1.7e9 + i * 0.001,
            server if i % 2 == 0 else client,
            client if i % 2 == 0 else server,
            bytes(range(256)) * 6 if i % 2 == 0 else b"\0\4" + bytes([0, i]) + b"x" * (i % 3),
        )
        for i in range(20)
    ]
    items.append((1.7e9 + 1, ("::ffff:192.0.2.1", 1), ("2001:db8::1", 2), b"\xff" * 65000))
    assert_round_trip(items)


def test_scoped_ipv6_address_is_written_without_scope() -> None:
    (datagram,) = read(write_all([(1.0, ("fe80::1%lo", 1), ("fe80::2", 2), b"x")]))
    assert datagram.src == ("fe80::1", 1)


def test_snaplen_cuts_captured_bytes_and_keeps_original_length() -> None:
    payload = bytes(range(200)) * 3
    data = write_all(
        [
            (5.0, ("10.0.0.1", 1), ("10.0.0.2", 2), payload),
            (6.0, ("::1", 1), ("::2", 2), payload),
            (7.0, ("10.0.0.1", 1), ("10.0.0.2", 2), b"short"),
        ],
        snaplen=100,
    )
    # The header states the longest record the file may hold (a datagram written whole), not the cut:
    # libpcap readers cut every record to it.
    assert struct.unpack_from("<I", data, 16)[0] == 262144
    assert [(incl, orig) for _, _, incl, orig, _ in records(data)] == [(100, 628), (100, 648), (33, 33)]
    got = read(data)
    assert brief(got) == [
        (("10.0.0.1", 1), ("10.0.0.2", 2), payload[:72], 600),
        (("::1", 1), ("::2", 2), payload[:52], 600),
        (("10.0.0.1", 1), ("10.0.0.2", 2), b"short", 5),
    ]
    with pytest.raises(ValueError, match="snaplen"):
        PcapWriter(io.BytesIO(), snaplen=40)


def test_writer_rejects_bad_input() -> None:
    writer = PcapWriter(io.BytesIO())
    with pytest.raises(ValueError, match="families"):
        writer.write(1.0, ("10.0.0.1", 1), ("::1", 2), b"")
    with pytest.raises(ValueError, match="not an IP address"):
        writer.write(1.0, ("host.example", 1), ("10.0.0.1", 2), b"")
    with pytest.raises(ValueError, match="port"):
        writer.write(1.0, ("10.0.0.1", 70000), ("10.0.0.1", 2), b"")
    with pytest.raises(ValueError, match="does not fit"):
        writer.write(1.0, ("10.0.0.1", 1), ("10.0.0.1", 2), bytes(65508))
    with pytest.raises(ValueError, match="flush_interval"):
        PcapWriter(io.BytesIO(), flush_interval=-1)


def test_writer_flushes_by_packet_time_and_owns_only_what_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "live.pcap"
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    writer = PcapWriter(path, flush_interval=1.0)
    assert path.stat().st_size == 24  # a valid, empty capture from the start
    writer.write(100.0, a, b, b"first")  # the first packet is flushed at once
    assert [d.payload for d in read_datagrams(path)] == [b"first"]
    writer.write(100.5, a, b, b"second")
    writer.write(101.0, a, b, b"third")  # one second of packet time later: all on disk
    assert [d.payload for d in read_datagrams(path)] == [b"first", b"second", b"third"]
    writer.write(50.0, a, b, b"clock went back")  # a jump back must not postpone flushing
    assert len(list(read_datagrams(path))) == 4
    writer.close()
    writer.close()

    every = tmp_path / "every.pcap"
    with PcapWriter(every, flush_interval=0) as writer:
        for i in range(3):
            writer.write(1.0, a, b, b"%d" % i)
            assert len(list(read_datagrams(every))) == i + 1

    borrowed = io.BytesIO()
    with PcapWriter(borrowed) as writer:
        writer.write(1.0, a, b, b"x")
    assert not borrowed.closed
    assert len(read(borrowed.getvalue())) == 1


def test_read_datagrams_opens_path_eagerly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_datagrams(tmp_path / "missing.pcap")


# --------------------------------------------------------------------------------------------
# Damaged and foreign files
# --------------------------------------------------------------------------------------------


def test_truncated_classic_capture_at_every_cut_point() -> None:
    items = [(10.0 + i, ("10.0.0.1", 1000 + i), ("10.0.0.2", 69), b"p" * (i * 7)) for i in range(5)]
    items.append((20.0, ("::1", 5), ("::1", 6), b"six"))
    data = write_all(items)
    ends = [24]
    for _, _, incl, _, _ in records(data):
        ends.append(ends[-1] + 16 + incl)
    assert ends[-1] == len(data)
    for cut in range(4, len(data) + 1):
        complete = sum(1 for end in ends[1:] if end <= cut)
        got: list[Datagram] = []
        if cut in ends:
            got.extend(read_datagrams(io.BytesIO(data[:cut])))
        else:
            with pytest.raises(CaptureError) as info:
                got.extend(read_datagrams(io.BytesIO(data[:cut])))
            broken_at = max(end for end in ends if end <= cut) if cut >= 24 else 0
            assert str(info.value) == f"capture truncated after {complete} packets at byte offset {broken_at}"
            assert (info.value.packets, info.value.offset) == (complete, broken_at)
        assert [d.payload for d in got] == [p for *_, p in items[:complete]]


def test_truncated_pcapng_at_every_cut_point() -> None:
    frames = [ipv4("10.0.0.1", "10.0.0.2", udp(1, 2, b"n%d" % i)) for i in range(3)]
    blocks = [shb(), idb(101), epb(0, 1, frames[0]), block(0x0BAD, b"custom"), epb(0, 2, frames[1]), spb(frames[2])]
    data = b"".join(blocks)
    ends = [0]
    for b in blocks:
        ends.append(ends[-1] + len(b))
    packet_ends = [ends[3], ends[5], ends[6]]
    for cut in range(4, len(data) + 1):
        complete = sum(1 for end in packet_ends if end <= cut)
        got: list[Datagram] = []
        if cut in ends:
            got.extend(read_datagrams(io.BytesIO(data[:cut])))
        else:
            with pytest.raises(CaptureError) as info:
                got.extend(read_datagrams(io.BytesIO(data[:cut])))
            broken_at = max(end for end in ends if end <= cut)
            assert str(info.value) == f"capture truncated after {complete} packets at byte offset {broken_at}"
        assert [d.payload for d in got] == [b"n%d" % i for i in range(complete)]


def test_empty_garbage_and_compressed_files_are_not_captures(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"not a pcap or pcapng file \(it is empty\)"):
        read(b"")
    with pytest.raises(CaptureError, match=r"not a pcap or pcapng file \(magic 0x3c68746d\)"):
        read(b"<html><body>not found</body></html>" * 10)
    with pytest.raises(CaptureError, match="gzip"):
        read(b"\x1f\x8b\x08\x00" + bytes(100))
    with pytest.raises(CaptureError, match="Kuznetzov"):
        read(b"\x34\xcd\xb2\xa1" + bytes(100))
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"GARBAGE!" + random.Random(1).randbytes(4096))
    with pytest.raises(CaptureError, match=r"not a pcap or pcapng file \(magic 0x47415242\)"):
        list(read_datagrams(garbage))


def test_damaged_lengths_and_unsupported_kinds() -> None:
    good = ipv4("10.0.0.1", "10.0.0.2", udp(1, 2, b"ok"))
    head = pcap(101, [(1, 0, good)])
    data = head + struct.pack("<IIII", 2, 0, 1 << 30, 1 << 30) + bytes(100)
    with pytest.raises(CaptureError, match="damaged after 1 packets at byte offset 70: record claims") as info:
        read(data)
    assert (info.value.packets, info.value.offset) == (1, len(head)) == (1, 70)
    with pytest.raises(CaptureError, match="unsupported link type 147"):
        read(pcap(147, [(1, 0, good)]))
    bad_trailer = bytearray(shb() + idb(101) + epb(0, 1, good))
    bad_trailer[-1] ^= 0xFF
    with pytest.raises(CaptureError, match="mismatched lengths"):
        read(bytes(bad_trailer))
    with pytest.raises(CaptureError, match="undeclared interface 1"):
        read(shb() + idb(101) + epb(1, 1, good))
    with pytest.raises(CaptureError, match="claims length 13"):
        read(shb() + struct.pack("<II", 6, 13) + bytes(20))
    with pytest.raises(CaptureError, match="unsupported pcap version 3.0"):
        read(struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 101))


# --------------------------------------------------------------------------------------------
# Hand-built captures: formats, link types, network-layer corner cases
# --------------------------------------------------------------------------------------------

V4_PACKET = ipv4("192.0.2.1", "192.0.2.2", udp(69, 1069, b"\x00\x01boot\x00octet\x00"))
V6_PACKET = ipv6("2001:db8::1", "2001:db8::2", udp(1069, 69, b"\x00\x04\x00\x07"))
V4_EXPECTED = (("192.0.2.1", 69), ("192.0.2.2", 1069), b"\x00\x01boot\x00octet\x00", 13)
V6_EXPECTED = (("2001:db8::1", 1069), ("2001:db8::2", 69), b"\x00\x04\x00\x07", 4)
TCP_PACKET = ipv4("192.0.2.1", "192.0.2.2", bytes(20), proto=6)
ARP = bytes(28)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(endian: str, nano: bool) -> None:
    frac = 123456789 if nano else 123456
    got = read(pcap(101, [(1_700_000_000, frac, V4_PACKET), (1_700_000_001, 0, V6_PACKET)], endian=endian, nano=nano))
    assert brief(got) == [V4_EXPECTED, V6_EXPECTED]
    assert got[0].time == (1_700_000_000 + frac / (1e9 if nano else 1e6))
    assert got[1].time == 1_700_000_001.0


@pytest.mark.parametrize(
    ("linktype", "frames"),
    [
        (1, [ether(V4_PACKET, 0x0800), ether(ARP, 0x0806), ether(V6_PACKET, 0x86DD), ether(TCP_PACKET, 0x0800)]),
        (1, [ether(V4_PACKET, 0x0800, vlans=[0x8100]), ether(V6_PACKET, 0x86DD, vlans=[0x88A8, 0x8100])]),
        (
            1,
            [
                ether(V4_PACKET, 0x0800, vlans=[0x9100, 0x8100, 0x8100], pad_fcs=True),
                ether(V6_PACKET, 0x86DD, pad_fcs=True),
            ],
        ),
        (113, [sll(V4_PACKET, 0x0800), sll(ARP, 0x0806), sll(V6_PACKET, 0x86DD)]),
        (113, [sll(struct.pack("!HH", 100, 0x0800) + V4_PACKET, 0x8100), sll(V6_PACKET, 0x86DD)]),
        (276, [sll2(V4_PACKET, 0x0800), sll2(ARP, 0x0806), sll2(V6_PACKET, 0x86DD)]),
        (0, [null(V4_PACKET, 2, "<"), null(V6_PACKET, 30, "<")]),
        (0, [null(V4_PACKET, 2, ">"), null(ARP, 99, ">"), null(V6_PACKET, 24, ">")]),
        (0, [null(V4_PACKET, 2, "<"), null(V6_PACKET, 28, "<")]),
        (108, [null(V4_PACKET, 2, ">"), null(V6_PACKET, 24, ">")]),
        (101, [V4_PACKET, TCP_PACKET, V6_PACKET]),
        (228, [V4_PACKET, TCP_PACKET]),
        (229, [V6_PACKET]),
    ],
)
def test_link_types(linktype: int, frames: list[bytes]) -> None:
    expected = [V4_EXPECTED] * (linktype != 229) + [V6_EXPECTED] * (linktype != 228)
    assert brief(read(pcap(linktype, [(1, i, f) for i, f in enumerate(frames)]))) == expected


def test_ipv4_options_fragments_and_malformed_lengths() -> None:
    body = udp(5, 6, b"abcdefgh" * 4)
    packets = [
        ipv4("10.1.1.1", "10.1.1.2", body, options=b"\x94\x04\x00\x00" + b"\x01" * 4),  # router alert + NOPs
        ipv4("10.1.1.1", "10.1.1.2", body[:16], frag=0x2000),  # first fragment: the datagram's head
        ipv4("10.1.1.1", "10.1.1.2", body[16:], frag=0x2002),  # later fragment: no UDP header
        ipv4("10.1.1.1", "10.1.1.2", body, frag=0x0003),  # last fragment
        ipv4("10.1.1.1", "10.1.1.2", udp(5, 6, b"x", ulen=4)),  # UDP length below its header
        ipv4("10.1.1.1", "10.1.1.2", body, total=0),  # offloaded: length filled in after capture
        ipv4("10.1.1.1", "10.1.1.2", body)[:24],  # snapped inside the UDP header
    ]
    got = read(pcap(101, [(1, 0, p) for p in packets]))
    addrs = (("10.1.1.1", 5), ("10.1.1.2", 6))
    assert brief(got) == [(*addrs, b"abcdefgh" * 4, 32), (*addrs, b"abcdefgh", 32), (*addrs, b"abcdefgh" * 4, 32)]


def test_ipv6_extension_headers() -> None:
    body = udp(7, 8, b"payload!")
    src, dst = "fd00::1", "fd00::2"
    packets = [
        ipv6(src, dst, body, ext=[HOP_BY_HOP, ROUTING, DEST_OPTS]),
        ipv6(src, dst, body, ext=[HOP_BY_HOP, fragment(0, True)]),
        ipv6(src, dst, body, ext=[fragment(0, False), AUTH]),
        ipv6(src, dst, body, ext=[HOP_BY_HOP, fragment(4, False)]),  # non-first fragment
        ipv6(src, dst, bytes(20), ext=[DEST_OPTS], proto=6),  # TCP
        ipv6(src, dst, b"", ext=[HOP_BY_HOP], proto=59),  # no next header
    ]
    got = read(pcap(101, [(1, 0, p) for p in packets]))
    assert brief(got) == [(("fd00::1", 7), ("fd00::2", 8), b"payload!", 8)] * 3


def test_pcapng_interfaces_resolutions_sections_and_block_kinds() -> None:
    frame = ether(V4_PACKET, 0x0800)
    data = b"".join(
        [
            shb(),
            idb(1),  # Ethernet, default microseconds
            idb(101, tsresol=9),  # raw IP, nanoseconds
            block(4, b"\x00\x00\x00\x00"),  # name resolution block: skipped
            epb(0, 1_700_000_000_250_000, frame),
            epb(1, 1_700_000_000_500_000_001, V6_PACKET),
            block(5, bytes(12)),  # interface statistics: skipped
            idb(276, tsresol=0x80 | 10, tsoffset=1_000_000_000),  # SLL2, 1/1024 s, offset
            epb(2, 700_000_000 * 1024 + 512, sll2(V4_PACKET, 0x0800)),
            spb(ether(V6_PACKET, 0x86DD)),  # always interface 0; no timestamp: inherits the previous one
            opb(1, 1_700_000_002_000_000_000, V6_PACKET),
            epb(0, 1_700_000_003_000_000, ether(ARP, 0x0806)),
            shb(">"),  # a new big-endian section renumbers the interfaces
            idb(229, tsresol=3, endian=">"),
            epb(0, 1_700_000_004_123, V6_PACKET, endian=">"),
            spb(ipv6("::1", "::2", udp(1, 2, bytes(100))), orig_len=200, endian=">"),
        ]
    )
    got = read(data)
    assert brief(got) == [
        V4_EXPECTED,
        V6_EXPECTED,
        V4_EXPECTED,
        V6_EXPECTED,
        V6_EXPECTED,
        V6_EXPECTED,
        (("::1", 1), ("::2", 2), bytes(100), 100),
    ]
    assert [d.time for d in got] == [
        1_700_000_000.25,
        1_700_000_000.500000001,
        1_700_000_000.5,
        1_700_000_000.5,
        1_700_000_002.0,
        1_700_000_004.123,
        1_700_000_004.123,
    ]


def test_pcapng_simple_packet_cut_by_interface_snaplen() -> None:
    packet = ipv6("::1", "::2", udp(1, 2, bytes(range(100))))
    data = shb() + idb(101, snaplen=60) + spb(packet[:60], orig_len=len(packet))
    assert brief(read(data)) == [(("::1", 1), ("::2", 2), bytes(range(12)), 100)]


def test_reads_from_a_pipe_like_stream_in_small_pieces() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = data

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            n = min(7, len(buffer), len(self._data))
            buffer[:n] = self._data[:n]
            self._data = self._data[n:]
            return n

    items = [(float(i), ("10.0.0.1", i), ("10.0.0.2", 69), bytes([i]) * i) for i in range(1, 40)]
    got = list(read_datagrams(Trickle(write_all(items))))  # type: ignore[arg-type]
    assert [d.payload for d in got] == [p for *_, p in items]


# --------------------------------------------------------------------------------------------
# Real tools
# --------------------------------------------------------------------------------------------


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def need_root_for_capture() -> None:
    if os.geteuid() != 0:
        message = "live capture needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def tshark_fields(path: Path, port: int, fields: Sequence[str]) -> list[dict[str, str]]:
    argv = [
        need_tool("tshark"),
        "-r",
        str(path),
        "-d",
        f"udp.port=={port},tftp",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
    ]
    for field in fields:
        argv += ["-e", field]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in result.stdout.splitlines()]


def tftp_exchange(
    client: Address, server: Address, transfer_port: int, start: float
) -> list[tuple[float, Address, Address, bytes, int, int | None]]:
    """A read request answered from a new port, as real servers do: (time, src, dst, payload, opcode, block)."""
    transfer = (server[0], transfer_port)
    items: list[tuple[float, Address, Address, bytes, int, int | None]] = [
        (start, client, server, b"\x00\x01boot.img\x00octet\x00", 1, None)
    ]
    for block_number, size in [(1, 512), (2, 512), (3, 77)]:
        t = start + block_number * 0.01
        items.append(
            (t, transfer, client, struct.pack("!HH", 3, block_number) + bytes([block_number]) * size, 3, block_number)
        )
        items.append((t + 0.001, client, transfer, struct.pack("!HH", 4, block_number), 4, block_number))
    # A second request that the server refuses.
    items.append((start + 1, client, server, b"\x00\x02upload.bin\x00octet\x00", 2, None))
    items.append((start + 1.001, transfer, client, b"\x00\x05\x00\x02access violation\x00", 5, None))
    return items


@pytest.mark.peers
def test_tshark_decodes_written_tftp_exchange(tmp_path: Path) -> None:
    port = 6969  # not 69: the decode-as rule and the conversation tracking must do the work
    items = tftp_exchange(("192.0.2.10", 50001), ("192.0.2.1", port), 50002, 1_700_000_000.0)
    items += tftp_exchange(("2001:db8::10", 50003), ("2001:db8::1", port), 50004, 1_700_000_010.0)
    path = tmp_path / "tftp.pcap"
    with PcapWriter(path) as writer:
        for t, src, dst, payload, _, _ in items:
            writer.write(t, src, dst, payload)
    rows = tshark_fields(
        path,
        port,
        [
            "frame.number",
            "ip.src",
            "ipv6.src",
            "udp.srcport",
            "tftp.opcode",
            "tftp.block",
            "udp.checksum.status",
            "ip.checksum.status",
            "_ws.expert",
            "_ws.malformed",
            "frame.protocols",
        ],
    )
    assert len(rows) == len(items)
    for i, (row, (_, src, _, _, opcode, block_number)) in enumerate(zip(rows, items, strict=True), start=1):
        assert row["frame.number"] == str(i)
        v4 = "." in src[0]
        assert row["ip.src" if v4 else "ipv6.src"] == src[0]
        assert row["udp.srcport"] == str(src[1])
        assert ":udp:tftp" in row["frame.protocols"], row
        assert row["tftp.opcode"] == str(opcode), row
        assert row["tftp.block"] == ("" if block_number is None else str(block_number)), row
        assert row["udp.checksum.status"] == "1", row  # 1 = Good
        assert row["ip.checksum.status"] == ("1" if v4 else ""), row
        # Wireshark flags every TFTP ERROR as a response warning; anything else would be our fault.
        expert = "Expert Info (Warning/Response): TFTP ERROR packet" if opcode == 5 else ""
        assert row["_ws.expert"] == expert and row["_ws.malformed"] == "", row


def test_snaplen_spares_a_datagram_written_whole() -> None:
    request = b"\x00\x01" + b"n" * 200 + b"\x00octet\x00"
    out = io.BytesIO()
    with PcapWriter(out, snaplen=64) as writer:
        writer.write(1.0, ("10.0.0.1", 1000), ("10.0.0.2", 69), request, whole=True)
        writer.write(2.0, ("10.0.0.2", 69), ("10.0.0.1", 1000), b"\x00\x03\x00\x01" + bytes(512))
    data = out.getvalue()
    assert [(incl, orig) for _, _, incl, orig, _ in records(data)] == [(237, 237), (64, 544)]
    assert [d.payload for d in read(data)][0] == request


@pytest.mark.peers
def test_tcpdump_reads_a_request_kept_whole_in_a_snapped_capture(tmp_path: Path) -> None:
    path = tmp_path / "snapped.pcap"
    name = "firmware/" + "x" * 120 + ".bin"
    with PcapWriter(path, snaplen=64) as writer:
        writer.write(1.0, ("10.0.0.1", 1000), ("10.0.0.2", 69), b"\x00\x01" + name.encode() + b"\x00octet\x00",
                     whole=True)
    shown = subprocess.run([need_tool("tcpdump"), "-r", str(path), "-nn"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert f'RRQ "{name}" octet' in shown.stdout, shown.stdout


@pytest.mark.peers
def test_tshark_reads_snapped_capture(tmp_path: Path) -> None:
    path = tmp_path / "snapped.pcap"
    with PcapWriter(path, snaplen=64) as writer:
        writer.write(1.0, ("10.0.0.1", 1000), ("10.0.0.2", 69), b"\x00\x03\x00\x01" + bytes(512))
        writer.write(2.0, ("::1", 1000), ("::1", 69), b"\x00\x03\x00\x01" + bytes(512))
    rows = tshark_fields(path, 69, ["frame.len", "frame.cap_len", "udp.length"])
    assert rows == [
        {"frame.len": "544", "frame.cap_len": "64", "udp.length": "524"},
        {"frame.len": "564", "frame.cap_len": "64", "udp.length": "524"},
    ]


class LiveCapture:
    """A capture tool running in the background, started and stopped by conditions, not sleeps."""

    def __init__(self, argv: list[str], path: Path, ready_text: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.stderr: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                if ready_text in line:
                    ready.set()
            ready.set()  # the tool died: let the waiter see that

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"{argv[0]} did not start: {''.join(self.stderr)}")

    def datagrams(self) -> list[Datagram]:
        """What is in the file so far; a half-written last record is simply not there yet."""
        got: list[Datagram] = []
        with contextlib.suppress(CaptureError, FileNotFoundError):
            got.extend(read_datagrams(self.path))
        return got

    def wait_for(self, send: socket.socket, to: Address, marker: bytes, timeout: float = 30) -> None:
        """Send ``marker`` until it shows up in the file: proof that capture and writing work."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            send.sendto(marker, to)
            poll_until = time.monotonic() + 0.5
            while time.monotonic() < poll_until:
                if any(d.payload == marker for d in self.datagrams()):
                    return
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"marker {marker!r} never reached {self.path}: {''.join(self.stderr)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def udp_socket(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


@pytest.mark.peers
@pytest.mark.parametrize(
    ("tool", "options", "suffix", "magic", "linktype"),
    [
        ("tcpdump", ["-i", "lo"], "pcap", b"\xd4\xc3\xb2\xa1", 1),
        ("tcpdump", ["-i", "lo", "--time-stamp-precision=nano"], "pcap", b"\x4d\x3c\xb2\xa1", 1),
        ("tcpdump", ["-i", "any", "-y", "LINUX_SLL"], "pcap", b"\xd4\xc3\xb2\xa1", 113),
        ("tcpdump", ["-i", "any", "-y", "LINUX_SLL2"], "pcap", b"\xd4\xc3\xb2\xa1", 276),
        ("dumpcap", ["-i", "lo"], "pcapng", b"\x0a\x0d\x0d\x0a", None),
    ],
    ids=["tcpdump-usec", "tcpdump-nsec", "tcpdump-sll", "tcpdump-sll2", "dumpcap-pcapng"],
)
def test_live_capture_of_loopback_udp(
    tmp_path: Path, tool: str, options: list[str], suffix: str, magic: bytes, linktype: int | None
) -> None:
    binary = need_tool(tool)
    need_root_for_capture()
    receivers = [udp_socket(socket.AF_INET, "127.0.0.1"), udp_socket(socket.AF_INET6, "::1")]
    senders = [udp_socket(socket.AF_INET, "127.0.0.1"), udp_socket(socket.AF_INET6, "::1")]
    targets = [r.getsockname()[:2] for r in receivers]
    capture_filter = "udp and (" + " or ".join(f"port {port}" for _, port in targets) + ")"
    path = tmp_path / f"live.{suffix}"
    # A small snap length and a bigger buffer: the kernel ring holds about buffer / snaplen
    # packets, only ~8 with the defaults (2 MiB / 256 KiB), so a short burst on "any" (which sees
    # every loopback packet twice) overflows it and the kernel drops packets.
    if tool == "tcpdump":
        # -U and --immediate-mode put each packet in the file as it comes, so waiting for the
        # marker in the file is a real readiness check; -Z root keeps access to pytest's tmp dir.
        argv = [
            binary,
            *options,
            "-s",
            "4096",
            "-B",
            "8192",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            str(path),
            capture_filter,
        ]
        ready_text = "listening on"
    else:
        argv = [binary, *options, "-s", "4096", "-B", "8", "-f", capture_filter, "-w", str(path)]
        ready_text = "Capturing on"
    capture = LiveCapture(argv, path, ready_text)
    try:
        capture.wait_for(senders[0], targets[0], b"marker-start")
        started = time.time()
        expected: list[tuple[Address, Address, bytes, int]] = []
        for i in range(6):
            which = i % 2
            payload = b"\x00\x03" + struct.pack("!H", i + 1) + os.urandom(1 + i * 97)
            senders[which].sendto(payload, targets[which])
            while (received := receivers[which].recvfrom(65535)[0]).startswith(b"marker"):
                pass
            assert received == payload
            expected.append((senders[which].getsockname()[:2], targets[which], payload, len(payload)))
        capture.wait_for(senders[1], targets[1], b"marker-end")
        finished = time.time()
    finally:
        capture.stop()
        for sock in receivers + senders:
            sock.close()
    assert capture.proc.returncode == 0, "".join(capture.stderr)
    data = path.read_bytes()
    assert data[:4] == magic
    if linktype is not None:
        assert struct.unpack_from("<I", data, 20)[0] == linktype
    got = [d for d in read_datagrams(path) if not d.payload.startswith(b"marker")]
    assert brief(got) == expected
    for d in got:
        assert started - 1 <= d.time <= finished + 1
