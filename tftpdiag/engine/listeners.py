"""The server's listening sockets: what is set on them, and what the kernel says beside each request
(the address it was sent to, and when it arrived)."""

from __future__ import annotations

import contextlib
import socket
import struct

from tftpdiag.engine.net import normalise

__all__ = ["IP_PKTINFO", "prepare_listener", "arrival", "destination"]

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_REQUEST_BUFFER = 8 << 20


def prepare_listener(sock: socket.socket) -> None:
    """Ask for each request's destination address and arrival time, make room for a storm of requests,
    and make the socket non-blocking. Works on sockets bound here and on sockets systemd bound."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    # An IPv6 socket that also takes IPv4 (a dual-stack socket systemd made) tells IPv4 destinations
    # this way; on an IPv4 socket it is the only way.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # A storm's requests arrive together: room for thousands of them (the session sockets take the
    # transfers). FORCE passes net.core.rmem_max for root; others get what rmem_max allows.
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _REQUEST_BUFFER)
            break
    sock.setblocking(False)


def arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel took the datagram in (SO_TIMESTAMPNS: the same clock as time.time())."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return seconds + nanoseconds / 1e9
    return None


def destination(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    """The address a request was sent to, from IP_PKTINFO / IPV6_PKTINFO."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[8:12])
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 16:
            addr = socket.inet_ntop(socket.AF_INET6, data[:16])
            return None if addr.startswith("fe80:") else normalise((addr, 0))[0]
    return None


