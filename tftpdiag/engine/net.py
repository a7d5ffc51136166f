"""Socket helpers shared by the client and the server: name resolution, address normalising, and
the ICMP errors Linux reports to a UDP socket that asks for them (IP_RECVERR)."""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import struct
from collections.abc import Callable

from tftpdiag.protocol.events import Address

__all__ = ["receive_timeout_setter", "resolve", "udp_socket", "normalise", "errored_destination", "describe_errno",
           "ResolveError"]

# Not exported by the socket module; the values are Linux's.
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)


class ResolveError(Exception):
    pass


def normalise(addr: tuple) -> Address:
    """(host, port) from any sockaddr; IPv4-mapped IPv6 addresses become plain IPv4."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def resolve(host: str, port: int, family: int = 0) -> tuple[int, Address]:
    """Resolve ``host`` for UDP; ``family`` 0 lets the resolver choose (IPv4 first, as tftp-hpa)."""
    host = host.strip("[]")
    # An ASCII name (an address, most names) goes to the resolver as bytes: as a str it would go through
    # the IDNA codec, whose import is 2 ms of every probe's start, and whose refusals (an empty label:
    # "a..b") came out as a codec's error instead of a word on the name.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(name, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except UnicodeError:
        raise ResolveError(f"cannot resolve {host!r}: not a valid host name") from None
    if not infos:
        raise ResolveError(f"cannot resolve {host!r}")
    infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
    fam, _, _, _, sockaddr = infos[0]
    return fam, normalise(sockaddr)


def udp_socket(family: int, bind: Address | None = None, *, recverr: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if recverr and hasattr(os, "uname") and os.uname().sysname == "Linux":
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        # Large windows of large blocks arrive in bursts; a bigger buffer keeps them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if bind is not None:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(bind)
    except OSError:
        sock.close()
        raise
    return sock


def errored_destination(sock: socket.socket) -> Address | None:
    """After a recv raised an ICMP-borne error, the destination of the datagram that drew it.

    The error queue's message name is that address; reading it also empties the queue.
    """
    try:
        _, _, _, addr = sock.recvmsg(1, 1024, MSG_ERRQUEUE)
    except OSError:
        return None
    return normalise(addr) if addr else None


def describe_errno(err: int) -> str:
    if err == errno_mod.ECONNREFUSED:
        return "port unreachable (nothing listens there)"
    if err in (errno_mod.EHOSTUNREACH, errno_mod.ENETUNREACH):
        return "host or network unreachable"
    return os.strerror(err)


def receive_timeout_setter(sock: socket.socket) -> Callable[[float], None]:
    """A setter of a blocking socket's receive timeout (SO_RCVTIMEO), which the kernel keeps: one system
    call per datagram, where settimeout() would poll first. It changes the timeout only when it must."""
    current = 0.0

    def set_wait(seconds: float) -> None:
        nonlocal current
        # Wake earlier when needed; later only when it saves many early wake-ups.
        if seconds < current or seconds > current * 1.5:
            seconds = max(seconds, 0.001)
            whole = int(seconds)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))
            current = seconds

    return set_wait
