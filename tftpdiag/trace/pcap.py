"""Dependency-free pcap/pcapng codec for UDP datagrams.

:class:`PcapWriter` turns datagrams seen by tftpdiag into a classic libpcap file that Wireshark,
tshark and tcpdump open as ordinary IP/UDP traffic. :func:`read_datagrams` pulls the UDP datagrams
out of captures made by other tools (tcpdump, dumpcap/Wireshark, or this writer) and ignores
everything else in them.

Both ends are on the hot path of a 1 GiB transfer (~730k datagrams), so they avoid per-packet
allocations beyond what they hand out and use precompiled :mod:`struct` objects throughout.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any, Final, TypeAlias

from tftpdiag.protocol.datagram import Address, Datagram

__all__ = ["Address", "Datagram", "PcapWriter", "CaptureError", "read_datagrams", "link_decoder"]


class CaptureError(Exception):
    """A capture file that is damaged, truncated or of an unsupported kind.

    ``packets`` counts the packet records read (of any protocol) before the problem and ``offset``
    is the byte offset in the file where the damage starts, so a caller can say how much of a
    capture was usable.
    """

    def __init__(self, message: str, *, packets: int = 0, offset: int = 0) -> None:
        super().__init__(message)
        self.packets = packets
        self.offset = offset


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

# LINKTYPE_RAW: every record starts with the IP header and the version nibble tells IPv4 from
# IPv6, so both families share one file. Wireshark, tshark and tcpdump all decode it directly,
# and unlike a fake Ethernet header it invents no MAC addresses that could mislead a reader.
LINKTYPE_RAW: Final = 101
_PCAP_MAGIC_USEC: Final = 0xA1B2C3D4
_DEFAULT_SNAPLEN: Final = 262144  # libpcap's default; nothing we write is longer
_BUFFER: Final = 256 * 1024
_MIN_SNAPLEN: Final = 48  # IPv6 + UDP headers: shorter would cut off the ports
_TTL: Final = 64
_UDP: Final = 17

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_LE = struct.Struct("<IIII")
# IPv4 header (ver/ihl, tos, total length, id, flags+fragment, ttl, proto, checksum, src, dst)
# followed by the UDP header, packed in one call.
_V4_HEADERS = struct.Struct("!BBHHHBBH4s4sHHHH")
# IPv6 header (ver/class/flow, payload length, next header, hop limit, src, dst) + UDP header.
_V6_HEADERS = struct.Struct("!IHBB16s16sHHHH")

# Per (src, dst) pair: is_ipv6, packed src, packed dst, sport, dport, the constant part of the UDP
# checksum sum (pseudo-header addresses, protocol, ports) and of the IPv4 header checksum sum.
_Flow: TypeAlias = tuple[bool, bytes, bytes, int, int, int, int]


def _pack_ip(ip: str) -> tuple[bool, bytes]:
    # A scope ("fe80::1%eth0") means nothing in a file and inet_pton rejects it.
    host = ip.partition("%")[0]
    try:
        if ":" in host:
            return True, socket.inet_pton(socket.AF_INET6, host)
        return False, socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError) as exc:
        raise ValueError(f"not an IP address: {ip!r}") from exc


class PcapWriter:
    """Write UDP datagrams as a classic pcap file (LINKTYPE_RAW, microsecond timestamps).

    Nothing is kept in memory beyond the file object's own buffer. The buffer is flushed
    whenever ``flush_interval`` seconds of *packet* time have passed since the last flush (and
    when time jumps backwards), so a crash loses at most about that much of the trace; if traffic
    stops, call :meth:`flush` yourself. A file object passed in is flushed but not closed by
    :meth:`close`; a path is opened (truncated) and closed by the writer.

    Microseconds rather than nanoseconds: a float epoch time only resolves ~0.24 µs today, so
    nanosecond fields would record rounding noise, and every pcap reader understands the
    microsecond format.
    """

    __slots__ = ("_file", "_owned", "_write", "_snaplen", "_interval", "_flush_due", "_flush_floor", "_flows")

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | IO[bytes],
        *,
        snaplen: int | None = None,
        flush_interval: float = 1.0,
    ) -> None:
        if snaplen is not None and snaplen < _MIN_SNAPLEN:
            raise ValueError(f"snaplen must be at least {_MIN_SNAPLEN} (IPv6 + UDP headers), got {snaplen}")
        if flush_interval < 0:
            raise ValueError(f"flush_interval must not be negative, got {flush_interval}")
        self._file: IO[bytes]
        if isinstance(path_or_file, (str, os.PathLike)):
            # A bigger buffer than the default 8 KiB: at ~1.5 KB a datagram the default means a
            # write(2) every few packets, which costs more than building them. The flush interval
            # still bounds what a crash can lose.
            self._file = open(path_or_file, "wb", buffering=_BUFFER)  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self._file = path_or_file
            self._owned = False
        self._write: Callable[[bytes], object] = self._file.write
        self._snaplen = snaplen if snaplen is not None else _DEFAULT_SNAPLEN
        self._interval = flush_interval
        # -inf makes the first packet flush at once, so a crashed run still leaves a valid file.
        self._flush_due = float("-inf")
        self._flush_floor = float("-inf")
        self._flows: dict[tuple[Address, Address], _Flow] = {}
        self._write(_FILE_HEADER.pack(_PCAP_MAGIC_USEC, 2, 4, 0, 0, self._snaplen, LINKTYPE_RAW))
        self._file.flush()

    def _add_flow(self, src: Address, dst: Address) -> _Flow:
        v6, a = _pack_ip(src[0])
        v6_dst, b = _pack_ip(dst[0])
        if v6 != v6_dst:
            raise ValueError(f"source {src[0]!r} and destination {dst[0]!r} are of different IP families")
        sport, dport = src[1], dst[1]
        for port in (sport, dport):
            if not (isinstance(port, int) and 0 <= port <= 0xFFFF):
                raise ValueError(f"not a UDP port: {port!r}")
        # One's-complement sums are sums modulo 0xFFFF (2**16 == 1 mod 0xFFFF), so whole byte
        # strings can be summed as one big integer; see write().
        addr_sum = int.from_bytes(a, "big") + int.from_bytes(b, "big")
        udp_sum = (addr_sum + _UDP + sport + dport) % 0xFFFF
        ip_sum = (addr_sum + 0x4500 + 0x4000 + (_TTL << 8 | _UDP)) % 0xFFFF
        flow = (v6, a, b, sport, dport, udp_sum, ip_sum)
        if len(self._flows) >= 4096:  # a scan of many peers must not grow this without bound
            self._flows.clear()
        self._flows[src, dst] = flow
        return flow

    def write(self, time: float, src: Address, dst: Address, payload: bytes) -> None:
        """Append one UDP datagram sent at ``time`` (epoch seconds) from ``src`` to ``dst``."""
        try:
            v6, a, b, sport, dport, udp_sum, ip_sum = self._flows[src, dst]
        except KeyError:
            v6, a, b, sport, dport, udp_sum, ip_sum = self._add_flow(src, dst)
        n = len(payload)
        ulen = n + 8
        # The payload's 16-bit words summed mod 0xFFFF equal the payload read as one big-endian
        # integer mod 0xFFFF; an odd byte is padded with a zero on the right. This runs in C
        # and is an order of magnitude faster than summing words in Python.
        word = int.from_bytes(payload, "big") % 0xFFFF
        if n & 1:
            word = (word << 8) % 0xFFFF
        # 0xFFFF - s is never 0, which is what UDP wants: 0 would mean "no checksum".
        ucs = 0xFFFF - (udp_sum + ulen + ulen + word) % 0xFFFF
        if v6:
            if ulen > 0xFFFF:
                raise ValueError(f"UDP payload of {n} bytes does not fit an IPv6 packet without jumbograms")
            headers = _V6_HEADERS.pack(0x60000000, ulen, _UDP, _TTL, a, b, sport, dport, ulen, ucs)
        else:
            total = ulen + 20
            if total > 0xFFFF:
                raise ValueError(f"UDP payload of {n} bytes does not fit an IPv4 packet")
            s = (ip_sum + total) % 0xFFFF
            headers = _V4_HEADERS.pack(
                0x45, 0, total, 0, 0x4000, _TTL, _UDP, 0xFFFF - s if s else 0, a, b, sport, dport, ulen, ucs
            )
        wire = len(headers) + n
        sec, usec = divmod(round(time * 1_000_000), 1_000_000)
        if wire <= self._snaplen:
            self._write(b"".join((_RECORD_LE.pack(sec, usec, wire, wire), headers, payload)))
        else:
            self._write(_RECORD_LE.pack(sec, usec, self._snaplen, wire) + headers)
            self._write(payload[: self._snaplen - len(headers)])
        if not (self._flush_floor <= time < self._flush_due):
            self._file.flush()
            self._flush_due = time + self._interval
            self._flush_floor = time - self._interval

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reader: network and link layers
# --------------------------------------------------------------------------------------------

# A decoder takes (buffer, start, end, time) of one captured frame and returns its Datagram, or None
# if the frame holds no UDP datagram (or only a non-first fragment of one).
_Decoder: TypeAlias = Callable[[bytes, int, int, float], "Datagram | None"]

_IP4 = struct.Struct("!BxH2xHxB2x4s4s")  # ver/ihl, total length, flags+offset, proto, src, dst
_IP6 = struct.Struct("!4xHB1x16s16s")  # payload length, next header, src, dst
_UDP_HEADER = struct.Struct("!HHH")


# Datagram's generated __init__ goes through object.__setattr__ once per field because the class
# is frozen; setting the slots directly halves the cost of the one object made per packet.
def _slot_setter(name: str) -> Callable[[Datagram, Any], None]:
    setter: Callable[[Datagram, Any], None] = vars(Datagram)[name].__set__
    return setter


_alloc = object.__new__
_set_time = _slot_setter("time")
_set_src = _slot_setter("src")
_set_dst = _slot_setter("dst")
_set_payload = _slot_setter("payload")
_set_orig_len = _slot_setter("orig_len")

# Addresses repeat on every packet of a transfer; inet_ntop costs more than a dict hit.
_names: dict[bytes, str] = {}


def _name(raw: bytes, family: int) -> str:
    if len(_names) >= 65536:  # a capture of a scan must not grow this without bound
        _names.clear()
    name = _names[raw] = socket.inet_ntop(family, raw)
    return name


def _udp(buf: bytes, u: int, ip_end: int, end: int, sa: str, da: str, t: float) -> Datagram | None:
    if u + 8 > end:
        return None
    sport, dport, ulen = _UDP_HEADER.unpack_from(buf, u)
    if ulen < 8:
        return None  # malformed; no stack would have delivered it
    stop = u + ulen
    # ip_end drops Ethernet padding and FCS; end drops what the snap length cut off.
    if stop > ip_end:
        stop = ip_end
    if stop > end:
        stop = end
    d = _alloc(Datagram)
    _set_time(d, t)
    _set_src(d, (sa, sport))
    _set_dst(d, (da, dport))
    _set_payload(d, buf[u + 8 : stop])
    _set_orig_len(d, ulen - 8)
    return d


def _ipv4(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 20 > end:
        return None
    vihl, total, frag, proto, sa, da = _IP4.unpack_from(buf, off)
    # A non-first fragment has no UDP header; its bytes belong to the first fragment's datagram.
    if proto != _UDP or frag & 0x1FFF or vihl >> 4 != 4:
        return None
    hl = (vihl & 15) << 2
    if hl < 20:
        return None
    if total == 0:  # segmentation offload: the kernel fills the length in after capture
        ip_end = end
    elif total < hl + 8:
        return None
    else:
        ip_end = off + total
    sn = _names.get(sa) or _name(sa, socket.AF_INET)
    dn = _names.get(da) or _name(da, socket.AF_INET)
    return _udp(buf, off + hl, ip_end, end, sn, dn, t)


_IP6_SKIPPABLE: Final = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options


def _ipv6(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 40 > end:
        return None
    plen, nh, sa, da = _IP6.unpack_from(buf, off)
    if buf[off] >> 4 != 6:
        return None
    p = off + 40
    ip_end = p + plen if plen else end  # 0: jumbogram, the real length is in hop-by-hop
    while nh != _UDP:
        if p + 8 > end:
            return None
        if nh in _IP6_SKIPPABLE:
            nh, p = buf[p], p + ((buf[p + 1] + 1) << 3)
        elif nh == 44:  # fragment header
            if (buf[p + 2] << 8 | buf[p + 3]) & 0xFFF8:
                return None  # non-first fragment
            nh, p = buf[p], p + 8
        elif nh == 51:  # authentication header counts in 4-byte units
            nh, p = buf[p], p + ((buf[p + 1] + 2) << 2)
        else:
            return None
    sn = _names.get(sa) or _name(sa, socket.AF_INET6)
    dn = _names.get(da) or _name(da, socket.AF_INET6)
    return _udp(buf, p, ip_end, end, sn, dn, t)


def _ip_by_ethertype(etype: int, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    # 802.1Q, 802.1ad and the pre-standard QinQ type; tags may be stacked.
    while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
        if off + 4 > end:
            return None
        etype = buf[off + 2] << 8 | buf[off + 3]
        off += 4
    if etype == 0x0800:
        return _ipv4(buf, off, end, t)
    if etype == 0x86DD:
        return _ipv6(buf, off, end, t)
    return None


def _link_raw(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off >= end:
        return None
    version = buf[off] >> 4
    if version == 4:
        return _ipv4(buf, off, end, t)
    if version == 6:
        return _ipv6(buf, off, end, t)
    return None


def _link_ethernet(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 14 > end:
        return None
    return _ip_by_ethertype(buf[off + 12] << 8 | buf[off + 13], buf, off + 14, end, t)


def _link_sll(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 16 > end:
        return None
    return _ip_by_ethertype(buf[off + 14] << 8 | buf[off + 15], buf, off + 16, end, t)


def _link_sll2(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 20 > end:
        return None
    return _ip_by_ethertype(buf[off] << 8 | buf[off + 1], buf, off + 20, end, t)


# AF_INET6 differs by OS: 10 Linux, 23 Windows, 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS.
_BSD_AF_INET6: Final = frozenset((10, 23, 24, 28, 30))


def _link_null(buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    # The 4-byte family is in the capturing host's byte order (DLT_NULL) or big-endian (DLT_LOOP);
    # the values are small, so one end byte holds the value and the other three are zero.
    if off + 4 > end:
        return None
    b0, b1, b2, b3 = buf[off], buf[off + 1], buf[off + 2], buf[off + 3]
    if b1 or b2 or (b0 and b3):
        return None
    family = b0 | b3
    if family == 2:
        return _ipv4(buf, off + 4, end, t)
    if family in _BSD_AF_INET6:
        return _ipv6(buf, off + 4, end, t)
    return None


_LINK_DECODERS: Final[dict[int, _Decoder]] = {
    0: _link_null,  # BSD loopback
    1: _link_ethernet,
    12: _link_raw,  # DLT_RAW as some systems number it, found in old files
    14: _link_raw,  # DLT_RAW on OpenBSD
    101: _link_raw,
    108: _link_null,  # OpenBSD loopback
    113: _link_sll,
    228: _link_raw,  # IPv4 only; the version check still applies
    229: _link_raw,  # IPv6 only
    276: _link_sll2,
}


def link_decoder(linktype: int) -> _Decoder | None:
    """The decoder of one packet record of this link type (``decode(buf, start, end, time)``), or None.
    Live capture (engine/capture.py) decodes with the same functions as the file reader."""
    return _LINK_DECODERS.get(linktype & 0xFFFF)


# --------------------------------------------------------------------------------------------
# Reader: file formats
# --------------------------------------------------------------------------------------------

_CHUNK: Final = 1 << 20
_MAX_RECORD: Final = 64 << 20  # far above any real packet; a bigger length means damage

_PCAPNG_SHB: Final = 0x0A0D0D0A
_PCAPNG_IDB: Final = 1
_PCAPNG_OPB: Final = 2  # obsolete Packet Block, still written by old tools
_PCAPNG_SPB: Final = 3
_PCAPNG_EPB: Final = 6


class _Source:
    """A file read in large chunks; the parsers index into ``buf`` and ask for more at its end."""

    __slots__ = ("_file", "base", "eof")

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.base = 0  # file offset of buf[0]
        self.eof = False

    def refill(self, buf: bytes, pos: int, need: int) -> bytes:
        """Return a buffer that starts at old ``buf[pos]`` and holds ``need`` bytes unless EOF."""
        parts = [buf[pos:]]
        have = len(parts[0])
        self.base += pos
        while have < need and not self.eof:
            data = self._file.read(max(_CHUNK, need - have))
            if not data:
                self.eof = True
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)


def _truncated(packets: int, offset: int) -> CaptureError:
    return CaptureError(
        f"capture truncated after {packets} packets at byte offset {offset}", packets=packets, offset=offset
    )


def _damaged(packets: int, offset: int, what: str) -> CaptureError:
    return CaptureError(
        f"capture damaged after {packets} packets at byte offset {offset}: {what}", packets=packets, offset=offset
    )


def _read_pcap(src: _Source, buf: bytes, endian: str, ticks: int) -> Iterator[Datagram]:
    if len(buf) < 24:
        raise _truncated(0, 0)
    major, minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(endian + "HHiIII", buf, 4)
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}.{minor}")
    # The upper bits of the link type field can carry FCS information (pcap 2.4 extension).
    linktype = network & 0xFFFF
    decode = _LINK_DECODERS.get(linktype)
    if decode is None:
        raise CaptureError(f"unsupported link type {linktype} in pcap file (no IP/UDP decoder for it)")
    unpack_record = struct.Struct(endian + "IIII").unpack_from
    packets = 0
    pos = 24
    size = len(buf)
    while True:
        if pos + 16 > size:
            buf = src.refill(buf, pos, 16)
            pos, size = 0, len(buf)
            if size < 16:
                if size:
                    raise _truncated(packets, src.base)
                return
        sec, frac, incl, _orig = unpack_record(buf, pos)
        start = pos + 16
        stop = start + incl
        if stop > size:
            if incl > _MAX_RECORD:
                raise _damaged(packets, src.base + pos, f"record claims {incl} captured bytes")
            buf = src.refill(buf, pos, 16 + incl)
            pos, size = 0, len(buf)
            start, stop = 16, 16 + incl
            if stop > size:
                raise _truncated(packets, src.base)
        # Integer arithmetic first, one rounding: the float is the nearest to the true time.
        datagram = decode(buf, start, stop, (sec * ticks + frac) / ticks)
        packets += 1
        pos = stop
        if datagram is not None:
            yield datagram


def _parse_idb(buf: bytes, pos: int, blen: int, endian: str) -> tuple[_Decoder | None, int, int, int]:
    """(decoder, timestamp ticks per second, timestamp offset in seconds, snaplen) of an IDB."""
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    ticks, ts_offset = 1_000_000, 0
    opt, opt_end = pos + 16, pos + blen - 4
    unpack_opt = struct.Struct(endian + "HH").unpack_from
    while opt + 4 <= opt_end:
        code, length = unpack_opt(buf, opt)
        value = opt + 4
        if code == 0 or value + length > opt_end:
            break
        if code == 9 and length >= 1:  # if_tsresol: 10**-n, or 2**-n if the top bit is set
            res = buf[value]
            ticks = 2 ** (res & 0x7F) if res & 0x80 else 10**res
        elif code == 14 and length >= 8:  # if_tsoffset, whole seconds added to every timestamp
            ts_offset = struct.unpack_from(endian + "q", buf, value)[0]
        opt = value + ((length + 3) & ~3)
    return _LINK_DECODERS.get(linktype), ticks, ts_offset, snaplen


def _read_pcapng(src: _Source, buf: bytes) -> Iterator[Datagram]:
    packets = 0
    pos = 0
    size = len(buf)
    endian = "<"
    unpack_head = struct.Struct("<II").unpack_from
    unpack_u32 = struct.Struct("<I").unpack_from
    unpack_epb = struct.Struct("<IIIII").unpack_from
    unpack_opb = struct.Struct("<HHIIII").unpack_from
    # Interfaces are numbered per section: (decoder or None if unsupported, ticks, offset, snaplen)
    interfaces: list[tuple[_Decoder | None, int, int, int]] = []
    last_time = 0.0
    while True:
        if pos + 12 > size:
            buf = src.refill(buf, pos, 12)
            pos, size = 0, len(buf)
            if size < 12:
                if size:
                    raise _truncated(packets, src.base)
                return
        btype, blen = unpack_head(buf, pos)
        if btype == _PCAPNG_SHB:
            # The block type reads the same in both byte orders; the byte-order magic decides.
            bom = buf[pos + 8 : pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise _damaged(packets, src.base + pos, "section header with a bad byte-order magic")
            unpack_head = struct.Struct(endian + "II").unpack_from
            unpack_u32 = struct.Struct(endian + "I").unpack_from
            unpack_epb = struct.Struct(endian + "IIIII").unpack_from
            unpack_opb = struct.Struct(endian + "HHIIII").unpack_from
            interfaces = []
            btype, blen = unpack_head(buf, pos)
        if blen < 12 or blen & 3 or blen > _MAX_RECORD:
            raise _damaged(packets, src.base + pos, f"block of type {btype:#x} claims length {blen}")
        if pos + blen > size:
            buf = src.refill(buf, pos, blen)
            pos, size = 0, len(buf)
            if blen > size:
                raise _truncated(packets, src.base)
        if unpack_u32(buf, pos + blen - 4)[0] != blen:
            raise _damaged(packets, src.base + pos, f"block of type {btype:#x} has mismatched lengths")
        if btype in (_PCAPNG_EPB, _PCAPNG_OPB):
            if btype == _PCAPNG_EPB:
                ifid, hi, lo, cap, _orig = unpack_epb(buf, pos + 8)
            else:
                ifid, _drops, hi, lo, cap, _orig = unpack_opb(buf, pos + 8)
            if cap > blen - 32:
                raise _damaged(packets, src.base + pos, f"packet claims {cap} bytes in a {blen}-byte block")
            try:
                decode, ticks, ts_offset, _snap = interfaces[ifid]
            except IndexError:
                raise _damaged(packets, src.base + pos, f"packet on undeclared interface {ifid}") from None
            packets += 1
            if decode is not None:
                start = pos + 28
                last_time = (hi << 32 | lo) / ticks + ts_offset
                datagram = decode(buf, start, start + cap, last_time)
                if datagram is not None:
                    yield datagram
        elif btype == _PCAPNG_SPB:
            if not interfaces:
                raise _damaged(packets, src.base + pos, "simple packet before any interface")
            decode, _ticks, _offset, snap = interfaces[0]
            orig = unpack_u32(buf, pos + 8)[0]
            cap = min(orig, blen - 16, snap or orig)
            packets += 1
            if decode is not None:
                # A simple packet has no timestamp; the previous one keeps the order plausible.
                datagram = decode(buf, pos + 12, pos + 12 + cap, last_time)
                if datagram is not None:
                    yield datagram
        elif btype == _PCAPNG_IDB:
            if blen < 20:
                raise _damaged(packets, src.base + pos, "interface description too short")
            interfaces.append(_parse_idb(buf, pos, blen, endian))
        elif btype == _PCAPNG_SHB:
            if blen < 28:
                raise _damaged(packets, src.base + pos, "section header too short")
            major, minor = struct.unpack_from(endian + "HH", buf, pos + 12)
            if major != 1:
                raise CaptureError(
                    f"unsupported pcapng version {major}.{minor}", packets=packets, offset=src.base + pos
                )
        pos += blen


_PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}


def _read(file: IO[bytes]) -> Iterator[Datagram]:
    src = _Source(file)
    buf = src.refill(b"", 0, 24)
    magic = buf[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _read_pcapng(src, buf)
    elif magic in _PCAP_MAGICS:
        endian, ticks = _PCAP_MAGICS[magic]
        yield from _read_pcap(src, buf, endian, ticks)
    elif not buf:
        raise CaptureError("not a pcap or pcapng file (it is empty)")
    elif magic in (b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34"):
        raise CaptureError("unsupported pcap variant: Kuznetzov's modified libpcap format (magic 0xa1b2cd34)")
    elif magic[:2] == b"\x1f\x8b":
        raise CaptureError(f"not a pcap or pcapng file (magic 0x{magic.hex()}: gzip-compressed, unpack it first)")
    else:
        raise CaptureError(f"not a pcap or pcapng file (magic 0x{magic.hex()})")


def read_datagrams(path_or_file: str | os.PathLike[str] | IO[bytes]) -> Iterator[Datagram]:
    """Yield every UDP datagram in a pcap or pcapng capture, in file order; skip all other traffic.

    A path is opened at once (so a missing file fails here) and closed when the iterator ends or
    is closed; a binary file object is read from its current position and left open. Damage
    raises :class:`CaptureError` after the datagrams before it have been yielded.

    A classic pcap of a link type without a decoder raises at once; in pcapng, packets of such an
    interface are skipped like any other non-UDP traffic. pcapng Simple Packet Blocks carry no
    timestamp and get the time of the packet before them (0.0 if there is none).
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        return _read_and_close(open(path_or_file, "rb"))  # noqa: SIM115 - closed by the generator
    return _read(path_or_file)


def _read_and_close(file: IO[bytes]) -> Iterator[Datagram]:
    with file:
        yield from _read(file)
