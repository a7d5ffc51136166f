"""The network and link layers of a captured frame: Ethernet (VLAN tags), Linux cooked SLL/SLL2, raw
IP and BSD loopback, IPv4 and IPv6 (extension headers, fragments) down to the UDP datagram. The file
reader and the live capture (engine/capture.py) decode frames with the same functions; given a
:class:`~tftpdiag.trace.pcap.fragments.Fragments` table, fragments of a UDP datagram are put back
together there (without one, a first fragment reads as a cut datagram and the others as nothing)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Final, TypeAlias

from tftpdiag.protocol.datagram import Datagram
from tftpdiag.trace.pcap.fragments import Fragments

__all__ = ["link_decoder", "Decoder"]

_UDP: Final = 17
# A decoder takes (buffer, start, end, time) of one captured frame and returns its Datagram, or None
# if the frame holds no UDP datagram (or only a fragment of one still in reassembly).
Decoder: TypeAlias = Callable[[bytes, int, int, float], "Datagram | None"]

_IP4 = struct.Struct("!BxH2xHxB2x4s4s")  # ver/ihl, total length, flags+offset, proto, src, dst
_IP6 = struct.Struct("!4xHB1x16s16s")  # payload length, next header, src, dst
_UDP_HEADER = struct.Struct("!HHH")


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
    return Datagram(t, (sa, sport), (da, dport), buf[u + 8 : stop], ulen - 8)


def _ipv4(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 20 > end:
        return None
    vihl, total, frag, proto, sa, da = _IP4.unpack_from(buf, off)
    if proto != _UDP or vihl >> 4 != 4:
        return None
    if frag & 0x3FFF:  # more fragments, or an offset: a fragment
        if frags is not None and total:
            return _ipv4_fragment(frags, buf, off, end, t)
        if frag & 0x1FFF:
            return None  # no UDP header: its bytes belong to the first fragment's datagram
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


def _ipv4_fragment(frags: Fragments, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    vihl, total, frag, _proto, sa, da = _IP4.unpack_from(buf, off)
    hl = (vihl & 15) << 2
    if hl < 20 or total < hl:
        return None
    ip_end = off + total
    sn = _names.get(sa) or _name(sa, socket.AF_INET)
    dn = _names.get(da) or _name(da, socket.AF_INET)
    offset = (frag & 0x1FFF) << 3
    first = _udp(buf, off + hl, ip_end, end, sn, dn, t) if offset == 0 else None
    key = (sa, da, buf[off + 4 : off + 6])
    return frags.add(key, offset, bool(frag & 0x2000), buf[off + hl : min(ip_end, end)], end < ip_end, t, sn, dn,
                     first)


_IP6_SKIPPABLE: Final = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options


def _ipv6(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
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
            field = buf[p + 2] << 8 | buf[p + 3]
            if frags is not None and buf[p] == _UDP and plen:
                return _ipv6_fragment(frags, buf, p, ip_end, end, t, field, sa, da)
            if field & 0xFFF8:
                return None  # non-first fragment
            nh, p = buf[p], p + 8
        elif nh == 51:  # authentication header counts in 4-byte units
            nh, p = buf[p], p + ((buf[p + 1] + 2) << 2)
        else:
            return None
    sn = _names.get(sa) or _name(sa, socket.AF_INET6)
    dn = _names.get(da) or _name(da, socket.AF_INET6)
    return _udp(buf, p, ip_end, end, sn, dn, t)


def _ipv6_fragment(frags: Fragments, buf: bytes, p: int, ip_end: int, end: int, t: float, field: int, sa: bytes,
                   da: bytes) -> Datagram | None:
    """A fragment of a UDP datagram (its fragment header at ``p``, UDP next): what follows the header is
    the fragmented part, from the UDP header on."""
    sn = _names.get(sa) or _name(sa, socket.AF_INET6)
    dn = _names.get(da) or _name(da, socket.AF_INET6)
    offset = field & 0xFFF8
    u = p + 8
    first = _udp(buf, u, ip_end, end, sn, dn, t) if offset == 0 else None
    key = (sa, da, buf[p + 4 : p + 8])
    return frags.add(key, offset, bool(field & 1), buf[u : min(ip_end, end)], end < ip_end, t, sn, dn, first)


def _ip_by_ethertype(frags: Fragments | None, etype: int, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    # 802.1Q, 802.1ad and the pre-standard QinQ type; tags may be stacked.
    while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
        if off + 4 > end:
            return None
        etype = buf[off + 2] << 8 | buf[off + 3]
        off += 4
    if etype == 0x0800:
        return _ipv4(frags, buf, off, end, t)
    if etype == 0x86DD:
        return _ipv6(frags, buf, off, end, t)
    return None


def _link_raw(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off >= end:
        return None
    version = buf[off] >> 4
    if version == 4:
        return _ipv4(frags, buf, off, end, t)
    if version == 6:
        return _ipv6(frags, buf, off, end, t)
    return None


def _link_ethernet(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 14 > end:
        return None
    return _ip_by_ethertype(frags, buf[off + 12] << 8 | buf[off + 13], buf, off + 14, end, t)


def _link_sll(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 16 > end:
        return None
    return _ip_by_ethertype(frags, buf[off + 14] << 8 | buf[off + 15], buf, off + 16, end, t)


def _link_sll2(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    if off + 20 > end:
        return None
    return _ip_by_ethertype(frags, buf[off] << 8 | buf[off + 1], buf, off + 20, end, t)


# AF_INET6 differs by OS: 10 Linux, 23 Windows, 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS.
_BSD_AF_INET6: Final = frozenset((10, 23, 24, 28, 30))


def _link_null(frags: Fragments | None, buf: bytes, off: int, end: int, t: float) -> Datagram | None:
    # The 4-byte family is in the capturing host's byte order (DLT_NULL) or big-endian (DLT_LOOP);
    # the values are small, so one end byte holds the value and the other three are zero.
    if off + 4 > end:
        return None
    b0, b1, b2, b3 = buf[off], buf[off + 1], buf[off + 2], buf[off + 3]
    if b1 or b2 or (b0 and b3):
        return None
    family = b0 | b3
    if family == 2:
        return _ipv4(frags, buf, off + 4, end, t)
    if family in _BSD_AF_INET6:
        return _ipv6(frags, buf, off + 4, end, t)
    return None


_LINK_DECODERS: Final[dict[int, Callable[[Fragments | None, bytes, int, int, float], Datagram | None]]] = {
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


def link_decoder(linktype: int, fragments: Fragments | None = None) -> Decoder | None:
    """The decoder of one packet record of this link type (``decode(buf, start, end, time)``), or None.
    Live capture (engine/capture.py) decodes with the same functions as the file reader. With
    ``fragments``, fragments of UDP datagrams are reassembled in that table (whoever reads must then
    release what it holds: files.py)."""
    decode = _LINK_DECODERS.get(linktype & 0xFFFF)
    return None if decode is None else partial(decode, fragments)


