"""Steady lock-step turns on a socket (protocol/steady.py): the engine's one loop for them, the client's
and the server's alike.

Each turn is a read that blocks (after a spin, when spinning is on) on a socket whose receive timeout
the kernel keeps (SO_RCVTIMEO: one system call per datagram), the datagram handed to the steady object,
and its answer sent. Nothing else happens per turn: the events, the file, the clock's other uses and the
cancel flag wait for the machine to settle, at most steady.room_for the block size in turns later (and
never more than the progress interval: protocol/steady.py). The turns go through a connected twin of
the socket where the system allows (:func:`connected_turns`).

Measured on a 2-core machine with a CPU-bound program beside it, 32 MiB lock-step (blksize 1468)
between our client and server, each a fresh process: through the machines each end spent 46-54 us of
CPU a block and the transfer took 3.2 s; with steady turns on both ends 1.95 s, and through twins
1.67 s (benchmarks/transfer.py and benchmarks/HISTORY.md).

A datagram from anyone but the peer that arrives during a run through a twin waits on the socket
itself, and the machine reads it when the run ends: at most a run's turns, or the wait, later.
"""
from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from tftpdiag.engine.net import normalise, receive_timeout_setter
from tftpdiag.engine.spin import BusyPoll
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.steady import Steady

__all__ = ["take_turns", "connected_turns", "Ended", "TIMED_OUT"]

_clock = time.time
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)

TIMED_OUT = "timed out"  # the wait ran out: no datagram came
_REUSEPORT: int | None = getattr(socket, "SO_REUSEPORT", None) if sys.platform == "linux" else None


class Ended:
    """Why the turns ended, when the steady object did not simply use up its room: a datagram it did
    not take (the machine's to take next), the wait running out (TIMED_OUT), or a socket error. ``more``:
    datagrams from the peer found on the twin as it closed (see connected_turns), the machine's next."""

    __slots__ = ("datagram", "addr", "error", "sending", "more")

    def __init__(self, datagram: bytes = b"", addr: Address | None = None, error: OSError | str | None = None,
                 sending: bool = False) -> None:
        self.datagram, self.addr, self.error, self.sending = datagram, addr, error, sending
        self.more: list[tuple[bytes, Address]] = []


def take_turns(steady: Steady, read: Callable[[int], tuple[Any, tuple]], send: Callable[[bytes, Address], Any],
               spin: BusyPoll[Any] | None, wait: float, plain: bool, *,
               first: tuple[bytes, tuple] | None = None,
               last: Callable[[bytes], object] | None = None) -> tuple[float, Ended | None]:
    """Take turns until ``steady`` has no room left or takes no more. ``read(flags)`` is the socket's
    recvfrom (it must block, with the receive timeout already set to ``wait``); ``spin`` spins on a read
    with MSG_DONTWAIT first (None: never); ``plain``: the socket gives addresses as (host, port)
    already; ``first``: a datagram already read, taken before any is read; ``last``: sends the answer of
    the steady object's last turn, in place of ``send``. Returns the time of the last turn (or of the
    end) and why it ended (None: out of room)."""
    take, peer = steady.take, steady.peer
    now = _clock()
    if spin is not None and not spin.may_spin(now):
        spin = None  # (off or paused: this run blocks on every read, and asks it nothing each turn)
    try:
        for _ in range(steady.left):
            got, first = first, None
            if got is None and spin is not None and spin.on:
                got = spin(wait)
            if got is None:
                then = now
                got = read(0)
                now = _clock()
                if spin is not None:
                    spin.waited(now - then)
            else:
                now = _clock()
            datagram, addr = got
            if not plain:
                addr = normalise(addr)
            answer = take(datagram, now) if addr == peer else None
            if answer is None:
                return now, Ended(datagram, addr)
            try:
                if last is not None and not steady.left:
                    last(answer)
                else:
                    send(answer, peer)
            except OSError as exc:  # (the turn was taken: the machine sent its answer, which failed)
                return now, Ended(error=exc, sending=True)
    except (BlockingIOError, InterruptedError):
        return _clock(), Ended(error=TIMED_OUT)
    except OSError as exc:
        return _clock(), Ended(error=exc)
    return now, None


def dontwait(read: Callable[[int], tuple[Any, tuple]]) -> Callable[[], tuple[Any, tuple]]:
    """What a spin reads with: ``read`` without blocking."""
    return lambda: read(_DONTWAIT)


def connected_turns(sock: socket.socket, steady: Steady, spin: BusyPoll[Any] | None,
                    wait: float) -> tuple[float, Ended | None] | None:
    """:func:`take_turns` through a twin of ``sock``: a second socket on its address, connected to the
    peer, for this run alone; None (nothing done) where no twin can be made.

    Why: a connected UDP socket sends without the kernel looking the route up and the address parsed,
    and receives without the sender's address being formatted, each time. Beside a CPU-bound program,
    32 MiB lock-step from benchmarks/floor.py's server took our client 1.374 s and 1.357 s through a
    twin against 1.579 s and 1.527 s without (interleaved, 3 rounds each). Connecting ``sock`` itself
    would do as much, but the kernel then drops what others send it (answering with ICMP): a stray,
    which the machine must see, record and answer with ERROR 5. Beside the twin, ``sock`` still gets
    everything from anyone else; the kernel gives the peer's datagrams to the connected twin
    (SO_REUSEPORT lets both share the port, set on ``sock`` only while the twin binds, so no other
    socket can join them). What reached ``sock`` before the twin was connected is read first (more than
    one datagram there, and the machine takes them all, the run ends before it began); the last
    turn's answer leaves from ``sock`` once the twin is closed, so that the peer's reply to it finds
    ``sock``; whatever the twin still holds as it closes goes to the machine (``Ended.more``)."""
    peer = steady.peer
    twin = _twin(sock, peer, wait)
    if twin is None:
        return None
    closed = False
    late: list[tuple[bytes, Address]] = []
    recv, tsend = twin.recv, twin.send

    def read(flags: int) -> tuple[bytes, Address]:
        return recv(65536, flags), peer

    def send(answer: bytes, _: Address) -> None:
        tsend(answer)

    def last(answer: bytes) -> None:
        nonlocal closed
        closed = True
        late.extend(_retire(twin, peer))
        sock.sendto(answer, peer)

    spin_read = spin.read if spin is not None else None
    ended: Ended | None
    try:
        backlog = _waiting(sock)
        if len(backlog) > 1:  # (they go to the machine in order, before what the twin got meanwhile)
            now, ended = _clock(), Ended(*backlog[0])
            late.extend(backlog[1:])
        else:
            if spin is not None:
                spin.read = dontwait(read)
            now, ended = take_turns(steady, read, send, spin, wait, True, first=backlog[0] if backlog else None,
                                    last=last)
    except OSError as exc:  # (reading sock: as take_turns would report it)
        now, ended = _clock(), Ended(error=exc)
    finally:
        if spin is not None and spin_read is not None:
            spin.read = spin_read
        if not closed:
            late.extend(_retire(twin, peer))
    if late:
        if ended is None:
            ended = Ended(*late[0])
            late = late[1:]
        ended.more = late
    return now, ended


def _twin(sock: socket.socket, peer: Address, wait: float) -> socket.socket | None:
    """A socket on ``sock``'s address connected to ``peer``, with ``wait`` as its receive timeout; None
    where the system refuses (no SO_REUSEPORT, a scoped address the peer's form leaves out)."""
    if _REUSEPORT is None:
        return None
    twin = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 1)
        try:
            twin.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 1)
            twin.bind(sock.getsockname())
        finally:
            sock.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 0)
        twin.connect(peer)
        receive_timeout_setter(twin)(wait)
    except OSError:
        twin.close()
        return None
    return twin


def _retire(twin: socket.socket, peer: Address) -> list[tuple[bytes, Address]]:
    """Close ``twin``; what it still held, in order. First it is connected to itself (an address no
    one else can send from): the peer's datagrams go to the transfer's socket from then on, and what
    the twin took before is read out before it closes. Read out and closed without that, a datagram
    of the peer's that came between the last read and the close was lost: a duplicate ACK missing from
    the record (tests/findings/test_findings_server.py saw 11 of 12 once), or an answer the peer then
    had to send again after its timeout."""
    try:
        twin.connect(twin.getsockname())
    except OSError:
        pass  # (left connected to the peer: read out and closed as before)
    out = _empty(twin, peer)
    out.extend(_empty(twin, peer))  # (one already on its way to the twin as it was connected elsewhere)
    twin.close()
    return out


def _empty(twin: socket.socket, peer: Address) -> list[tuple[bytes, Address]]:
    """What waits on the twin, read without blocking (the peer's: it is connected)."""
    out: list[tuple[bytes, Address]] = []
    while True:
        try:
            out.append((twin.recv(65536, _DONTWAIT), peer))
        except OSError:  # (EAGAIN: empty; anything else, an ICMP error, the machine learns by its timer)
            return out


def _waiting(sock: socket.socket) -> list[tuple[bytes, Address]]:
    """What reached ``sock`` before its twin was connected, read without blocking, in order (raises
    OSError as a read does)."""
    out: list[tuple[bytes, Address]] = []
    while True:
        try:
            raw, addr = sock.recvfrom(65536, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return out
        out.append((raw, normalise(addr)))
