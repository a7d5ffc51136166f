"""The pcap writer: datagrams seen by tftpdiag as a classic libpcap file (raw IP link type) that
Wireshark, tshark and tcpdump open as ordinary IP/UDP traffic. On the hot path of a 1 GiB transfer
(~730k datagrams): precompiled structs, headers built once per pair of addresses."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import IO, Final, TypeAlias

from tftpdiag.protocol.datagram import Address

__all__ = ["PcapWriter", "LINKTYPE_RAW"]


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
        # The file's header states the longest record in it, not the cut: a datagram written whole
        # (see write) may be longer than the cut, and libpcap readers (tcpdump) cut every record to
        # the header's length, a request's file name with it.
        self._interval = flush_interval
        # -inf makes the first packet flush at once, so a crashed run still leaves a valid file.
        self._flush_due = float("-inf")
        self._flush_floor = float("-inf")
        self._flows: dict[tuple[Address, Address], _Flow] = {}
        self._write(_FILE_HEADER.pack(_PCAP_MAGIC_USEC, 2, 4, 0, 0, _DEFAULT_SNAPLEN, LINKTYPE_RAW))
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

    def write(self, time: float, src: Address, dst: Address, payload: bytes, whole: bool = False) -> None:
        """Append one UDP datagram sent at ``time`` (epoch seconds) from ``src`` to ``dst``; cut to the
        snap length unless ``whole`` (a datagram a reader needs entire: a request, an OACK, an ERROR)."""
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
        if wire <= self._snaplen or whole:
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


