"""Spinning for the next datagram before sleeping (BusyPoll), and when not to: the peer short of CPU,
a peer across a network, a machine with one CPU. The measures behind each constant are beside it."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from tftpdiag.engine.cpu_wait import ThreadDelay, others_runnable
from tftpdiag.engine.net import normalise
from tftpdiag.protocol.events import Address

__all__ = ["BUSY_POLL", "LOCAL_SPIN", "BusyPoll", "spin_limit", "on_this_machine"]

# How long a loop spins for the next datagram before it sleeps. A lock-step peer on the same machine
# or switch answers within tens of microseconds, while going to sleep and being woken again costs
# about as much (a wake-up on another CPU; on a virtual machine, an interrupt through the hypervisor):
# spinning that briefly halves the time per block. See BusyPoll for when it spins at all.
# On a machine with one CPU a spinning loop would only delay the peer it waits for: never there.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
BUSY_POLL = 0.0002 if _CPUS > 1 else 0.0

# Contention: while a loop spins, the peer it waits for may get no CPU at all when another program
# keeps one busy, and then its answer comes late or not within the budget: with one CPU-bound neighbour
# on 2 cores, spinning made a lock-step transfer 3x slower than not spinning. Two signs of it, looked at
# every _CHECK_EVERY spins; either stops spinning for a while, twice as long each time it is seen again:
# - _MISSED or more of the spins ended without the datagram (measured here: 0.1% of spins quiet, 60-80%
#   beside a CPU-bound program), or _FEW_MISSED or more while the machine is crowded (_crowded: besides
#   this process's threads, as many tasks are runnable as there are CPUs, so none is idle for the peer).
#   On the 2-core machine of 2026-12-04 a neighbour made only 5-12 of 64 spins miss: each resumption
#   spun on for the 50 ms the second sign needs, some 1,000 spins a transfer. Quiet, looks saw 0-3
#   misses (4,266 of them), but 5-8 in a busy spell of the host, and misses alone at _FEW_MISSED then
#   paused 3 of 6 quiet transfers; the count of others runnable said 2 at 83% of looks beside the
#   neighbour and at 6% quiet (a third of quiet transfers' first looks: the peer's threads starting).
#   Together, and with a pause that ends on a crowded machine renewed without a spin (see __call__):
#   a client spun 64-128 times a loaded transfer, 2-11 ms in all. 32 MiB lock-step beside a CPU-bound
#   program, 9 interleaved rounds: 3.241 s against 3.262 s before (spinning off 3.122 s); quiet 1.621 s
#   against 1.613 s (11 rounds); windowed, loaded, 0.654 s against 0.661 s (off 0.650 s). The ~3% still
#   between spinning and not beside a neighbour is not in the spinning: a build whose BusyPoll never
#   spins, the rest the same, measured level with spinning off (3.147 s and 3.151 s against this
#   build's 3.242 s, 11 rounds), its cause not found then (later: the loops asked a paused BusyPoll at
#   every wait, and each span of the second sign spun 50 ms before it could judge: see resume_at in
#   BusyPoll.__init__ and _DELAY_SPAN);
# - over the last _DELAY_SPAN seconds, the loop's own thread waited for a CPU (runnable, not running:
#   Linux's schedstat run_delay) more than _DELAYED of the time. Misses alone missed the case that cost
#   most: a long-running server whose spinning was paused and a client that spun alone, its peer woken
#   on the other CPU in time for 88% of the spins, 30% slower than neither spinning (measured: the
#   thread waited 29-47% of the time in 20 ms spans then, 0-5% quiet, at most 21%, with both ends spinning).
#   With it, 32 MiB lock-step beside a CPU-bound program, long-running servers, 11 interleaved rounds:
#   1.37 s against 1.63 s (not spinning: 1.18 s); quiet, 0.87 s against 0.86 s.
# (Counting the thread's preemptions was tried and dropped: on a quiet machine a spinning client and
# server fill both cores, and their own timer threads preempt them, which paused spinning where it pays
# most; such a preemption is short, and what it costs in waiting is what the run delay counts.) Also
# tried: timing 32 waits spinning against 32 sleeping and running the faster way for the next 1024 (a
# server's spins then measured a few microseconds and it kept spinning while its client starved: 30-45%
# behind sleeping, worse than this).
# A look comes as soon as a quarter of the spins it would count have missed (16 of 64; 4 of 16 just
# after a pause), not when the window ends: such a look can only pause. Beside a CPU-bound program
# each end's first 64 spins missed 58-63 times at the full budget, 12-13 ms of CPU a transfer while its
# peer waited for a CPU; the rest of the transfer it was paused. With this, and with the decision to
# spin taken once per run of steady turns (BusyPoll.may_spin, engine/turns.py) instead of a paused
# BusyPoll being asked every turn, 32 MiB lock-step ours/ours beside a CPU-bound program measured
# 1.115/1.155/1.127/1.214 s against 1.232/1.309/1.306/1.256 s before and 1.113/1.145/1.178/1.173 s
# with spinning off (interleaved, 3 rounds each); quiet 0.827/0.788/0.857 s against 0.869/0.890/
# 0.877 s before (spinning off: 1.017/1.098/1.104 s).
_CHECK_EVERY = 64
_MISSED = 16
_FEW_MISSED = 5
# Just after a pause the first look comes after _CHECK_SOON spins (judged by the same share of misses):
# beside a CPU-bound program each resumption had spun 64 times before it was judged, 40-49 of them
# missed at the full budget, at 4 pauses a transfer on each end; with looks this soon, 32 MiB lock-step
# beside a CPU-bound program measured 3.470 s against 3.537 s (10 interleaved rounds; spinning off
# 3.346 s), 3.205 s against 3.285 s (12 rounds; off 3.110 s); headless 3.466 s against 3.547 s, while
# the view's transfer (moved off its CPU) measured the same, 3.814 s against 3.793 s (8 rounds). Only
# after a pause: a look so soon on a quiet machine would judge its first blocks alone.
_CHECK_SOON = 16
_DELAYED = 0.2
# The span the wait is judged over. 50 ms let a loaded client spin some 1,700 times before its first
# pause, and each resumption for 50 ms more. Measured per look (64 spins, 1-2 ms) on the 2-core machine
# of 2026-12-05, 32 MiB lock-step: beside a CPU-bound program the thread waited 25-45% at every look;
# quiet 0-3%, at most 10% (a first look at 26-32% came with every spin missed: a pause either way).
# With 5 ms, beside a CPU-bound program, interleaved against 50 ms (with resume_at in both) and spinning
# off: lock-step 0.492 s against 0.516 s (off 0.507 s, 12 rounds) and 0.486 s against off 0.483 s
# (24 rounds); windowed 0.209 s against 0.2105 s (off 0.207 s, 40 rounds). The cost is on a quiet
# machine, where a 5 ms span now and then shows a brief wait (the two ends on one CPU for a moment) and
# pauses a transfer that needed none: quiet lock-step medians of the build as it was against this one,
# 40 interleaved rounds each, 0.3665 s against 0.393 s, 0.3735 s against 0.407 s and 0.3765 s against
# 0.4125 s (with the renewal of _DELAYED_PAUSED); windowed quiet unchanged (0.091 s against 0.094 s,
# 30 rounds). 2 ms paused quiet transfers more (0.3665 s against 0.3545 s, 20 rounds); a threshold of
# 30% over 5 ms measured 1.00x and 1.13x the 50 ms build's quiet time in two runs. Kept at 5 ms: the
# quiet lock-step time stays a third of tftpd-hpa + curl's (issue 16 asks at most 0.6x), while the
# 50 ms span left spinning 3-5% behind spinning off beside a CPU-bound program (the issue asks never).
_DELAY_SPAN = 0.005
# Except where the loop shares its CPU with the view on purpose (cpu_wait.share_cpu_with): the view's CPU time,
# taken out of the wait, is read from its threads' files a moment apart from the wait itself, and over
# 5 ms a frame looked like contention. In the view, quiet, 32 MiB windowed measured 0.097 s with 5 ms
# against 0.092 s with 50 ms (12 interleaved rounds; its ratio to the headless probe 1.17-1.18x in two
# runs of transfer.py --tui against 1.11-1.12x before).
_DELAY_SPAN_SHARED = 0.05
# A pause ends on a renewed pause, without a spin, when through it the thread waited for a CPU more
# than this share of the time. Paused, a loop blocks on every read, and beside a CPU-bound program it
# wakes to find a CPU busy: on the 2-core machine of 2026-12-05 the first look after a lock-step
# client's pause found it had waited 25-29% of the pause beside one, 3-7% quiet. Before, each
# resumption spun until a look could judge it (a span of _DELAY_SPAN; 4-7 ms), some 4 times a
# transfer. 32 MiB lock-step beside a CPU-bound program: 0.491 s against 0.510 s (spinning off
# 0.490 s, 30 interleaved rounds); windowed 0.212 s against 0.213 s (off 0.2085 s, 40); quiet 0.383 s
# against 0.3825 s lock-step (20), 0.095 s against 0.1075 s windowed (30).
_DELAYED_PAUSED = 0.12
# A loop starts paused for _FIRST_SPIN, and spins after it only if the end of that pause shows no
# contention (a crowded machine, or a wait for a CPU through it: see _DELAYED_PAUSED). Beside a
# CPU-bound program a fresh client's first spins all missed (16 before the first look paused it: 1.6 ms
# of a CPU its server needed) and left windowed 32 MiB some 2% behind spinning off. 100 interleaved
# rounds each on the 2-core machine of 2026-12-05, server-log times: windowed beside a CPU-bound
# program 0.2100 s against 0.2140 s before (off 0.2090 s); quiet 0.0945 s against 0.0940 s windowed,
# 0.3835 s against 0.3885 s lock-step; lock-step beside it 0.5075 s against 0.5025 s (off 0.5100 s,
# 50 rounds). Not where the loop shares its CPU with the view (10 ms is too short a span to judge its
# wait by there: see _DELAY_SPAN_SHARED), nor where the wait cannot be read (nothing to judge by).
# A server does the same as a session begins on it idle, if contention paused its spinning last
# (BusyPoll.woken): beside a CPU-bound program its pauses (4 s by then) ended between sessions, judged
# by spans in which its thread slept, and each session began spinning (a spy: 265 spins, 48 missed,
# 11 ms, over 8 windowed sessions some seconds apart). transfer.py --load 1, 30 rounds, against
# spinning off: lock-step 1.02x and windowed 1.02x before (round by round, their medians within
# 1.00-1.04x and 1.00-1.03x at 95%), 0.99x and 0.99x with it (0.96-1.01x, 0.97-1.02x). Quiet, the
# last look has found no contention, and nothing changes (a spy: the same spins, 30 sessions each).
_FIRST_SPIN = 0.010
# The first pause is short, and each one seen just after the last twice as long, up to _PAUSE_MAX (the
# eighth). Why: a fresh probe's first blocks often find the scheduler keeping both ends on one CPU for a
# moment (the spins miss, the thread waits for a CPU 30-40% of a span: both signs above), and the pair
# is apart again within milliseconds. A first pause of 0.25 s then ran that much of the transfer without
# spinning: on the 2-core machine of 2026-12-04, 1 in 3 quiet 32 MiB lock-step downloads took 0.50-0.61 s
# against 0.34-0.39 s. With 1/32 s, headless medians of 12 interleaved rounds went 0.534 -> 0.356 s
# lock-step and 0.135 -> 0.093 s windowed; beside a CPU-bound program contention lasts and the pauses
# grow as before (11 rounds each, 0.544 -> 0.527 s lock-step, 0.217 -> 0.211 s windowed).
_PAUSE_MIN, _PAUSE_MAX = 1 / 32, 4.0
# A peer on this machine answers a spinning loop within tens of microseconds, unless it is short of
# CPU, and then spinning longer only keeps the CPU it needs busy: a client whose server is on this
# machine (spin_limit) spins at most LOCAL_SPIN per wait, not the whole budget, which stays for peers
# across a network (a LAN's round trip: some 60-200 us). Measured on the 2-core machine of 2026-12-04,
# 32 MiB lock-step over loopback: a wrapper timing each spin found 99.9% of a quiet client's answers
# within 44-57 us (windowed, 80-125 us), and beside a CPU-bound program 51-158 spins a transfer that
# missed, 10-30 ms at 0.2 ms each. Interleaved, 15 rounds each, server-log times, beside a CPU-bound
# program: a first build (loopback only) 0.503 s against 0.530 s (spinning off: 0.487 s), the same with
# 0.1 ms on the server's side too 0.503 s (the client's spin is what costs the server); this one
# 0.504 s against 0.512 s lock-step (off 0.493 s), 0.211 s against 0.214 s windowed (off 0.204 s).
# Quiet, 20 rounds: lock-step 0.367 s against 0.371 s.
LOCAL_SPIN = 0.0001


def _crowded() -> bool:
    """No CPU is left idle for the peer: besides this process's threads, at least one task is runnable
    for each CPU (on 2 cores: the peer and a neighbour)."""
    others = others_runnable()
    return others is not None and others >= _CPUS


def _thread_delay() -> ThreadDelay | None:
    try:
        return ThreadDelay()
    except OSError:
        return None


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

    __slots__ = ("read", "budget", "on", "_clock", "_spins", "_check_at", "_missed", "resume_at", "_pause",
                 "pauses", "_delay_source", "_delay", "_span", "_since", "_delayed", "_crowded", "limit")
    _loops = 0  # loops in this process between __enter__ and __exit__
    _lock = threading.Lock()

    def __init__(self, read: Callable[[], T], budget: float = BUSY_POLL,
                 clock: Callable[[], float] = time.time,
                 delay_source: Callable[[], Callable[[], float] | None] = _thread_delay,
                 crowded: Callable[[], bool] = _crowded, limit: float | None = None) -> None:
        self.read = read  # (the server swaps it for a session's socket in a steady run)
        self.budget = budget  # a wait longer than this turns spinning off until a wait is shorter
        self.limit = budget if limit is None else min(limit, budget)  # a spin's longest (see LOCAL_SPIN)
        self.on = budget > 0  # spin in the next wait (the caller may skip the call when not)
        self._clock = clock
        self._spins = 0  # spins since the last look
        self._check_at = _CHECK_EVERY  # spins from one look to the next (_CHECK_SOON after a pause)
        self._missed = 0  # of those, the ones that ended without a datagram
        # No wait spins before this time: the end of a pause (the peer is short of CPU), never without a
        # budget. The loops compare their clock with it before they ask or tell anything: paused or off,
        # a wait costs them a comparison. Asking a paused BusyPoll (a call, a look at the clock) and
        # telling it of each wait cost 1.4% of a windowed 32 MiB transfer beside a CPU-bound program: a
        # build that never spun but asked measured 0.2100 s against 0.2075 s for spinning off (60
        # interleaved rounds; the build that spun, 0.2155 s).
        self.resume_at = 0.0 if budget > 0 else math.inf
        self._pause = 0.0  # the last pause; doubled while contention lasts
        self.pauses = 0  # times contention stopped the spinning (for tests and benchmarks)
        # The loop thread's wait for a CPU (see _DELAYED): its reader is made in __enter__, on that thread.
        self._delay_source = delay_source
        self._delay: Callable[[], float] | None = None
        self._span = _DELAY_SPAN  # the shortest span it is judged over (see _DELAY_SPAN_SHARED)
        self._since = 0.0  # when the span being measured began
        self._delayed = 0.0  # the thread's total wait for a CPU then
        self._crowded = crowded  # asked when some spins missed (see _FEW_MISSED) and when a pause ends

    def __enter__(self) -> BusyPoll[T]:
        with BusyPoll._lock:
            BusyPoll._loops += 1
        if self.budget > 0:
            self._delay = self._delay_source()
            self._span = _DELAY_SPAN_SHARED if getattr(self._delay, "shared", False) else _DELAY_SPAN
            self.start_over()
        return self

    def start_over(self) -> None:
        """No spin for the next _FIRST_SPIN, then spin only if the thread's wait for a CPU through it and
        the machine's load allow (as a loop starts)."""
        self._mark()
        if self._delay is not None and self._span == _DELAY_SPAN:  # (see _FIRST_SPIN)
            self.resume_at = max(self.resume_at, self._since + _FIRST_SPIN)

    def __exit__(self, *exc: object) -> None:
        with BusyPoll._lock:
            BusyPoll._loops -= 1
        close = getattr(self._delay, "close", None)
        if close is not None:
            close()
        self._delay = None

    def woken(self) -> None:
        """The loop was idle (a server between sessions) and has work again. If contention paused its
        spinning last (no look has found it gone since), start over: a pause that ended while the loop
        slept was judged by a span in which its thread never waited for a CPU, busy machine or not (see
        _FIRST_SPIN)."""
        if self._pause:
            self.start_over()

    def _mark(self) -> None:
        """Begin a span of the thread's wait for a CPU: at the start, and as spinning resumes."""
        if self._delay is not None:
            self._since, self._delayed = self._clock(), self._delay()

    def __call__(self, wait: float) -> T | None:
        """What arrived within ``min(wait, budget)``, or None: the caller then blocks, and tells
        :meth:`waited` how long the whole wait took."""
        if not self.on or BusyPoll._loops > 1:
            return None
        read, clock = self.read, self._clock
        if self.resume_at:
            now = clock()
            if now < self.resume_at:
                return None
            # The thread waited for a CPU through the pause, or still no CPU is idle for the peer: pause
            # again, without a spin to judge (see _DELAYED_PAUSED). The wait first: it is one read of a
            # file held open (1-2 us), the load a file per thread (30-50 us), and beside a CPU-bound
            # program the wait showed at every pause's end (benchmarks/spin_spy.py --load 1: 24 of 24
            # client pauses, 5 of 6 of the server's), so the load is then not read at all.
            if self._waited_through(now) or self._crowded():
                self._pause_for(now)
                return None
            self.resume_at = 0.0
            self._mark()  # (the spans of the spinning's own wait begin again)
        self._spins += 1
        until = 0.0
        while True:
            try:
                got = read()
                if got:
                    if self._spins >= self._check_at:
                        self._look(clock)
                    return got
            except (BlockingIOError, InterruptedError):
                pass
            now = clock()
            if not until:
                until = now + min(self.limit, wait)
            elif now >= until:
                self.on = False
                self._missed += 1
                # (A quarter of the spins a look counts have missed already: it can only pause. Looked
                # at now, not at the window's end: see _MISSED.)
                if self._spins >= self._check_at or self._missed * _CHECK_EVERY >= _MISSED * self._check_at:
                    self._look(clock)
                return None

    def _look(self, clock: Callable[[], float]) -> None:
        """Every _CHECK_EVERY spins (_CHECK_SOON after a pause): is the peer, or this loop, short of CPU
        (see _DELAYED)? Then pause spinning, twice as long as last time if it was seen just before."""
        missed, spins = self._missed, self._spins
        self._spins = self._missed = 0
        self._check_at = _CHECK_EVERY
        # A quarter of the spins missed, or a few while the machine is crowded (see _FEW_MISSED).
        contended = missed * _CHECK_EVERY >= _MISSED * spins or (
            missed * _CHECK_EVERY >= _FEW_MISSED * spins and self._crowded())
        delay = self._delay
        if not contended and delay is not None:
            now = clock()
            span = now - self._since
            if span < self._span:
                return  # too short a span to say: neither pause nor forget the last pause
            delayed = delay()
            contended = delayed - self._delayed > _DELAYED * span
            self._since, self._delayed = now, delayed
        if not contended:
            self._pause = 0.0
            return
        self._pause_for(clock())

    def _pause_for(self, now: float) -> None:
        """Stop spinning from ``now``, for twice as long as last time if contention was seen just before."""
        self._pause = min(self._pause * 2, _PAUSE_MAX) if self._pause else _PAUSE_MIN
        self.resume_at = now + self._pause
        self._check_at = _CHECK_SOON
        self.pauses += 1
        if self._delay is not None:  # (the pause is a span of the thread's wait of its own)
            self._since, self._delayed = now, self._delay()

    def _waited_through(self, now: float) -> bool:
        """Whether the thread waited for a CPU more than _DELAYED_PAUSED of the pause ending ``now``."""
        delay = self._delay
        return delay is not None and delay() - self._delayed > _DELAYED_PAUSED * (now - self._since)

    def may_spin(self, now: float) -> bool:
        """Whether a wait at ``now`` may spin at all: not with spinning off, paused, or another loop
        spinning. (engine/turns.py asks once per run of turns, not once per turn.)"""
        return now >= self.resume_at and BusyPoll._loops <= 1

    def waited(self, seconds: float) -> None:
        self.on = self.budget > 0 and seconds < self.budget


def spin_limit(budget: float, peer: Address) -> float | None:
    """How long a spin for ``peer`` may go on: LOCAL_SPIN when the budget is the default and the peer
    is on this machine, else None (the budget). A budget the user chose (--busy-poll) is theirs."""
    return LOCAL_SPIN if budget == BUSY_POLL and budget > LOCAL_SPIN and on_this_machine(peer) else None


def on_this_machine(peer: Address) -> bool:
    """Whether ``peer``'s host is on this machine: loopback (all of 127.0.0.0/8), or one of its own
    addresses, which the kernel routes a socket connected to from that same address (a UDP connect
    sends nothing)."""
    host = peer[0]
    if host.startswith("127.") or host == "::1":
        return True
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, peer[1] or 9))
            return normalise(sock.getsockname())[0] == host
    except (OSError, OverflowError):
        return False  # (no route at all: a peer that is not here)
