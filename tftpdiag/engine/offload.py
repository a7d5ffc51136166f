"""UDP segmentation offload (Linux): a window of DATA leaves in one system call and arrives in one.

Sending a datagram costs about 3.5 us of kernel time on loopback, most of it the per-datagram walk
through the IP stack; with UDP GSO the kernel walks it once for a run of equal-sized datagrams and cuts
the run into datagrams at the end (in the network card, or just before the receiving socket). With UDP
GRO a receiving socket takes such a run, or consecutive datagrams the card coalesced, in one read, with
the datagram size beside it. A windowed transfer (RFC 7440) is exactly such a run: sending a 16-block
window this way costs 0.6 us per block instead of 3.5.

What the peer receives is unchanged: separate datagrams, byte for byte. What a capture taken on this
host shows may not be: where the kernel cuts the run after the capture point (always on loopback), a
capture shows one large datagram per run. tftpdiag's own traces record each datagram; ``--no-offload``
sends and reads them one by one (and an --impair run always does, as it decides each datagram's fate).

Kernels or sockets without it (not Linux, before 4.18, a route whose MTU is below the datagram size)
refuse the first run with an error; the writer then sends one by one from then on.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Callable, Sequence

from tftpdiag.protocol.events import Address

__all__ = ["DatagramWriter", "DatagramReader"]

# Not exported by the socket module; the values are Linux's (include/uapi/linux/udp.h).
UDP_SEGMENT = 103
UDP_GRO = 104
_LINUX = sys.platform.startswith("linux")
# The kernel takes at most 64 segments per send (128 since Linux 6.9) and at most 64 KiB in all.
_MAX_SEGMENTS = 64
_MAX_RUN_BYTES = 65000
# What a kernel or route that cannot segment this run answers; anything else is a real send error.
_NO_GSO = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE, errno.ENOTSUP)


class DatagramWriter:
    """Sends a machine's output (a list of (datagram, destination)) on one socket.

    Runs of two or more datagrams to one destination, all of one size but the last (which may be
    shorter), go as one UDP GSO send; everything else one datagram per call. ``send`` calls
    ``on_error(dest, exc)`` for each failed system call and carries on with the rest.
    """

    __slots__ = ("_sendto", "_sendmsg", "gso", "_cmsg")

    def __init__(self, sock: socket.socket, offload: bool = True) -> None:
        self._sendto = sock.sendto
        self._sendmsg = sock.sendmsg
        self.gso = offload and _LINUX
        self._cmsg: dict[int, list[tuple[int, int, bytes]]] = {}

    def send(self, out: list[tuple[bytes, Address]], on_error: Callable[[Address, OSError], None]) -> None:
        if len(out) == 1:  # lock-step: one datagram a turn
            raw, dest = out[0]
            try:
                self._sendto(raw, dest)
            except OSError as exc:
                on_error(dest, exc)
            return
        count = len(out)
        if count > 1 and self.gso:
            raws, dests = zip(*out, strict=True)  # pairs of (datagram, destination)
            dest = dests[0]
            size = len(raws[0])
            if count <= _MAX_SEGMENTS and count * size <= _MAX_RUN_BYTES and dests.count(dest) == count \
                    and len(raws[-1]) <= size and set(map(len, raws[:-1])) == {size}:
                self._send_run(raws, size, dest, on_error)  # the usual case: a window to one peer
            else:
                self._send_runs(out, on_error)
            return
        sendto = self._sendto
        for raw, dest in out:
            try:
                sendto(raw, dest)
            except OSError as exc:
                on_error(dest, exc)

    def _send_runs(self, out: list[tuple[bytes, Address]], on_error: Callable[[Address, OSError], None]) -> None:
        """Cut ``out`` into runs (one destination, one size but for a shorter last one) and send each."""
        count = len(out)
        i = 0
        while i < count:
            raw, dest = out[i]
            size = len(raw)
            end = i + 1
            limit = min(count, i + _MAX_SEGMENTS, i + _MAX_RUN_BYTES // max(size, 1))
            while end < limit:
                nxt, to = out[end]
                if to != dest or len(nxt) > size:
                    break
                end += 1
                if len(nxt) < size:
                    break  # a shorter datagram can only end a run
            if end - i > 1 and self.gso:
                self._send_run([raw for raw, _ in out[i:end]], size, dest, on_error)
            else:
                self.send(out[i:end], on_error)
            i = end

    def _send_run(self, run: Sequence[bytes], size: int, dest: Address,
                  on_error: Callable[[Address, OSError], None]) -> None:
        cmsg = self._cmsg.get(size)
        if cmsg is None:
            cmsg = self._cmsg[size] = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        try:
            self._sendmsg(run, cmsg, 0, dest)
        except OSError as exc:
            if exc.errno not in _NO_GSO:
                on_error(dest, exc)
                return
            # No GSO on this kernel, socket or route: this run and all after it go one by one.
            self.gso = False
            self.send([(raw, dest) for raw in run], on_error)


class DatagramReader:
    """Reads what arrived on one socket as runs: ``read()`` returns a list of datagrams from one
    source. Without offload (or off Linux) a run is one datagram, as ``recvfrom`` reads it; with it,
    the socket takes coalesced runs (UDP GRO) and a read returns all of a run's datagrams.
    """

    __slots__ = ("_recvfrom", "_recvmsg", "gro", "_space")

    def __init__(self, sock: socket.socket, offload: bool = True) -> None:
        self._recvfrom = sock.recvfrom
        self._recvmsg = sock.recvmsg
        self.gro = False
        if offload and _LINUX:
            try:
                sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self._space = socket.CMSG_SPACE(4)

    def read(self, flags: int = 0) -> tuple[list[bytes], tuple]:
        """One run and its source address (as the socket gives it); raises what recvfrom raises."""
        if not self.gro:
            data, addr = self._recvfrom(65536, flags)
            return [data], addr
        data, ancillary, _, addr = self._recvmsg(65536, self._space, flags)
        if ancillary:
            level, kind, value = ancillary[0]
            if level == socket.IPPROTO_UDP and kind == UDP_GRO:
                size = int.from_bytes(value[:4], sys.byteorder)
                if 0 < size < len(data):
                    return [data[start:start + size] for start in range(0, len(data), size)], addr
        return [data], addr
