"""Socket helpers shared by the client and the server: name resolution, address normalising, and
the ICMP errors Linux reports to a UDP socket that asks for them (IP_RECVERR)."""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import threading
import time
from typing import Callable, Generic, TypeVar

from tftpdiag.protocol.events import Address

__all__ = ["BUSY_POLL", "BusyPoll", "preemptions", "resolve", "udp_socket", "normalise", "errored_destination", "describe_errno", "ResolveError"]

# Not exported by the socket module; the values are Linux's.
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)


class ResolveError(Exception):
    pass


# How long a loop spins for the next datagram before it sleeps. A lock-step peer on the same machine
# or switch answers within tens of microseconds, while going to sleep and being woken again costs
# about as much (a wake-up on another CPU; on a virtual machine, an interrupt through the hypervisor):
# spinning that briefly halves the time per block. See BusyPoll for when it spins at all.
# On a machine with one CPU a spinning loop would only delay the peer it waits for: never there.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
BUSY_POLL = 0.0002 if _CPUS > 1 else 0.0

# Contention: a spinning thread that another program wants the CPU of is preempted (an involuntary
# context switch), and while it spins the peer it waits for may get no CPU at all. With one CPU-bound
# neighbour on 2 cores, spinning made a lock-step transfer 3x slower than not spinning. So the spinner
# counts its own preemptions (getrusage of the thread, about a microsecond) every _CHECK_EVERY spins,
# and past _PREEMPTED of them it stops spinning for a while, longer each time contention persists.
_CHECK_EVERY = 64
_PREEMPTED = 2
_PAUSE_MIN, _PAUSE_MAX = 0.25, 4.0

try:
    import resource

    _RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # pragma: no cover - not on Linux
    resource = None  # type: ignore[assignment]
    _RUSAGE_THREAD = None


def preemptions() -> int:
    """Involuntary context switches of the calling thread so far (0 where the system does not say)."""
    if _RUSAGE_THREAD is None:
        return 0
    return resource.getrusage(_RUSAGE_THREAD).ru_nivcsw

T = TypeVar("T")


class BusyPoll(Generic[T]):
    """Spins on a non-blocking read for at most ``budget`` seconds, and only while the last wait for
    a datagram was shorter than that: on a slow link (a reply takes milliseconds) it never spins, so
    it burns CPU only where it pays.

    Only one loop in a process spins at a time. Threads of one process share the interpreter lock, and
    a spinning thread holds it between its reads: a second engine loop (a probe and a server in one
    process, as in ``tftpdiag demo``) would then wait for the lock instead of answering its peer.

    ``read`` returns what arrived, or raises BlockingIOError or returns something empty when nothing
    has; other errors reach the caller. Use it as a context manager around the loop that calls it.
    """

    __slots__ = ("_read", "budget", "_on", "_preempted", "_clock", "_spins", "_mark", "_paused_until", "_pause",
                 "pauses")
    _loops = 0  # loops in this process between __enter__ and __exit__
    _lock = threading.Lock()

    def __init__(self, read: Callable[[], T], budget: float = BUSY_POLL,
                 preempted: Callable[[], int] = preemptions, clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self.budget = budget
        self._on = budget > 0
        self._preempted = preempted
        self._clock = clock
        self._spins = 0
        self._mark = 0  # preemptions counted at the last look
        self._paused_until = 0.0  # no spinning before this time: another program wants the CPU
        self._pause = 0.0  # the last pause; doubled while contention lasts
        self.pauses = 0  # times contention stopped the spinning (for tests and benchmarks)

    def __enter__(self) -> BusyPoll[T]:
        with BusyPoll._lock:
            BusyPoll._loops += 1
        self._mark = self._preempted()  # counted on the thread that runs the loop
        return self

    def __exit__(self, *exc: object) -> None:
        with BusyPoll._lock:
            BusyPoll._loops -= 1

    def __call__(self, wait: float) -> T | None:
        """What arrived within ``min(wait, budget)``, or None: the caller then blocks, and tells
        :meth:`waited` how long the whole wait took."""
        if not self._on or BusyPoll._loops > 1:
            return None
        read, clock = self._read, self._clock
        if self._paused_until:
            if clock() < self._paused_until:
                return None
            self._paused_until = 0.0
            self._mark = self._preempted()  # a fresh look, from now
        self._spins += 1
        if self._spins >= _CHECK_EVERY and self._contended(clock):
            return None
        until = 0.0
        while True:
            try:
                got = read()
                if got:
                    return got
            except (BlockingIOError, InterruptedError):
                pass
            now = clock()
            if not until:
                until = now + min(self.budget, wait)
            elif now >= until:
                self._on = False
                return None

    def _contended(self, clock: Callable[[], float]) -> bool:
        """Every _CHECK_EVERY spins: was this thread preempted often enough since the last look that
        another program wants this CPU? Then pause spinning, twice as long as last time."""
        self._spins = 0
        count = self._preempted()
        preempted, self._mark = count - self._mark, count
        if preempted < _PREEMPTED:
            self._pause = 0.0
            return False
        self._pause = min(self._pause * 2, _PAUSE_MAX) if self._pause else _PAUSE_MIN
        self._paused_until = clock() + self._pause
        self.pauses += 1
        return True

    def waited(self, seconds: float) -> None:
        self._on = 0 < self.budget and seconds < self.budget


def normalise(addr: tuple) -> Address:
    """(host, port) from any sockaddr; IPv4-mapped IPv6 addresses become plain IPv4."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, port


def resolve(host: str, port: int, family: int = 0) -> tuple[int, Address]:
    """Resolve ``host`` for UDP; ``family`` 0 lets the resolver choose (IPv4 first, as tftp-hpa)."""
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host!r}: {exc.strerror}") from None
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
