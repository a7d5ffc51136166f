"""The client's loop: one protocol machine (ClientRead or ClientWrite) driven over its one socket until
the machine closes. engine/client.py sets the transfer up and keeps its outcome; what a datagram meets
between the socket and the machine (offload, impairment, held datagrams, socket errors) is
engine/driver.py's, shared with the server.

What is the client's own is how it waits: a lock-step peer answers within tens of microseconds, so
after a brief spin (BusyPoll) the loop blocks in the read itself, on a socket whose receive timeout the
kernel keeps (SO_RCVTIMEO): one system call per datagram. That timeout counts in the kernel's ticks
(rounded up to whole ticks, 4 ms at HZ=250: a 2 ms timeout ran out after 8 ms), close enough for a
retransmit timer that a reply nearly always beats, not for a datagram the impairer holds (--impair
delay): while one is held, the wait is select()'s, to the microsecond. A window arrives as a burst and
is read without blocking, answering as each part is read.

Events go to the bus in batches, before a wait, which is then lent to the bus's idle tasks (readers
fold the events there). In lock-step, while the peer answers quickly, a batch waits until it holds
_HAND_OVER events: the loop waits for every block, and handing over its two events each time (and
lending every wait) cost as much as a third of the engine's work per block. A wait is thought long
when the last one was (or ran out): when the peer stops answering, a reader sees the last events one
wait late (at most _POLL). A windowed transfer hands over before every wait, each of which
follows a window, and so lends every wait: a burst may bring more events than a task folds at a time.

With ``runs`` (a transfer whose events cross to another process: engine/apart.py), and in lock-step,
the machine keeps its DATA and ACK in columns (protocol/runs.py): each turn takes only what has
settled, which is a run of runs.HOLD packets or an event of another kind, and that goes at once; a
hand-over before a long wait, and the end, take the run still growing too. Not under --impair: the
Impaired events the driver publishes must stay in order with the packets they explain.

In lock-step, mid-transfer, the blocks that come in order are taken as steady turns
(protocol/steady.py) by engine/turns.py, up to steady.room_for the block size at a time (256 turns of
1468 bytes), without the machine, which then settles them: the loop below runs once per run of turns,
not once per block.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.driver import Driver
from tftpdiag.engine.net import normalise, receive_timeout_setter
from tftpdiag.engine.offload import DatagramReader, DatagramWriter
from tftpdiag.engine.spin import BusyPoll, spin_limit
from tftpdiag.engine.turns import TIMED_OUT, connected_turns, take_turns
from tftpdiag.protocol.client import ClientRead, ClientWrite
from tftpdiag.protocol.events import Address, Event
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.steady import Steady

if TYPE_CHECKING:
    from tftpdiag.engine.impair import ImpairSpec

__all__ = ["ClientLoop"]

_POLL = 0.2  # longest wait between looks at the cancel flag and the deadline
_BURST = 64  # datagrams read without blocking after one arrives, before the bookkeeping runs
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_HAND_OVER = 32  # events that go to the bus before a wait, however quick it is expected to be
_QUICK = 0.002  # a wait that ended sooner was quick: the next is expected to be as well
_clock = time.time


class ClientLoop:
    """Drives ``machine`` over ``sock``; :meth:`run` returns when the machine has closed (its dally
    included) and what the impairer held on its way out has left. ``files`` reads or stores the file's
    blocks for the machine (engine/files.py) after each turn; ``on_finished`` is called once, as soon as
    the transfer has completed or failed; ``cancel_reason`` is read once ``cancel`` is set."""

    def __init__(self, sock: socket.socket, machine: ClientRead | ClientWrite, *, bus: EventBus, session: int,
                 server: Address, impair: ImpairSpec | None, offload: bool, windowed: bool, busy_poll: float,
                 deadline: float | None, files: Callable[[float], bool], cancel: threading.Event,
                 cancel_reason: Callable[[], str], on_finished: Callable[[], None], runs: bool = False) -> None:
        self.sock = sock
        self.machine = machine
        self.bus = bus
        self.session = session
        self.server = server
        self.driver: Driver[None] = Driver(bus, impair, offload, alone=True)
        self.held = self.driver.held
        self.send = self.driver.sender(sock, DatagramWriter(sock, self.driver.offload), session)
        self.take_datagrams = machine.datagrams_to_send
        self.send_failed = self._send_failed  # bound once: it goes with every send
        # What a read returns, (arrived, address), and what takes it are chosen together: only a
        # windowed transfer receives runs worth coalescing (a list of datagrams, for receive_many);
        # otherwise a read is one recvfrom and its datagram goes to receive, with no list between.
        reader = DatagramReader(sock, self.driver.offload and windowed)
        self.read: Callable[[int], tuple[Any, tuple]] = reader.read if reader.gro else partial(sock.recvfrom, 65536)
        self.deadline_s = deadline
        # A blocking socket whose receive timeout the kernel keeps: see the module's docstring.
        sock.settimeout(None)
        self.set_wait = receive_timeout_setter(sock)
        self.readable: Callable[[float], bool] = partial(_readable, sock)  # (see the module's docstring)
        read = self.read
        self.spin = BusyPoll(lambda: read(_DONTWAIT), busy_poll, limit=spin_limit(busy_poll, server))
        self.quick = False  # the last wait ended within _QUICK (see the module's docstring)
        # IPv4 sockets report (host, port) already; IPv6 ones a 4-tuple that normalise() shortens.
        self.plain_addr = sock.family == socket.AF_INET
        # Under --impair every event goes at once, in order with the Impaired events that explain it.
        self.batch: list[Event] = []
        self.batch_size = _HAND_OVER if self.driver.impairer is None else 1
        # (See the module's docstring.) A lock-step transfer records runs too, in this process as well:
        # its steady turns are taken in columns (protocol/steady.py).
        self.runs = (runs or not windowed) and self.driver.impairer is None
        self.take_events = machine.events
        if self.runs:
            machine.record_runs()
            self.take_events = machine.settled_events
            self.batch_size = 1  # what settles each turn is a whole run, or a rare event
        self.files = files  # the engine's half of the machine (engine/files.py): True when it gave it work
        self.cancelled = cancel.is_set
        self.cancel_reason = cancel_reason
        self.on_finished = on_finished
        # Straight to the machine unless the impairer stands between (it reads one datagram at a time:
        # no offload under --impair).
        self.arrive: Callable[[Any, Address, float], None] = (
            self._arrive_impaired if self.driver.impairer is not None
            else machine.receive_many if reader.gro else machine.receive)

    def run(self, now: float) -> None:
        machine, held, cancelled, spin = self.machine, self.held, self.cancelled, self.spin
        deadline = now + self.deadline_s if self.deadline_s else None
        next_timeout, take_datagrams, send, send_failed = (
            machine.next_timeout, self.take_datagrams, self.send, self.send_failed)
        files, take_events, batch_size = self.files, self.take_events, self.batch_size
        impaired = self.driver.impairer is not None  # (only then can anything be held)
        reported = False
        with spin:
            self._send_all()
            self.bus.publish(self.driver.placed(machine.events()))
            running = not machine.closed  # (asked again only once the machine has finished)
            while running:
                delayed = impaired and bool(held)
                if delayed:
                    now = time.time()  # held datagrams fall due by the clock, not by traffic
                if cancelled() or (deadline is not None and now >= deadline and not machine.finished) \
                        or (delayed and held.due(now)):
                    self._stop_or_release(now, deadline)
                else:
                    timer = next_timeout()
                    wait = _POLL if timer is None else timer - now
                    if wait > _POLL:
                        wait = _POLL
                    if delayed:
                        wait = self.driver.wait(wait, now)
                    if wait <= 0:
                        machine.handle_timeout(now)
                    else:
                        now = self._wait(now, wait, delayed)
                out = take_datagrams()
                if out:
                    send(out, send_failed)
                # Off the critical path: the reply is already on its way.
                if files(now):
                    self._send_all()  # what the file work let the machine send: DATA, the final ACK, an ERROR
                batch = self.batch
                batch += take_events()
                if len(batch) >= batch_size:
                    self._hand_over()
                if machine.finished:
                    if not reported:
                        reported = True
                        self._flush()
                        self.on_finished()
                    running = not machine.closed
            self._flush()
        self.driver.drain()

    def _stop_or_release(self, now: float, deadline: float | None) -> None:
        """Cancelled, past the deadline, or a held datagram has fallen due."""
        machine = self.machine
        if self.cancelled():
            machine.abort(time.time(), self.cancel_reason())
        elif deadline is not None and now >= deadline and not machine.finished:
            machine.abort(now, f"gave up after the {self.deadline_s:g} s deadline")
        else:
            receive = machine.receive
            self.driver.release(now, lambda raw, addr, _: receive(raw, addr, now))

    def _wait(self, now: float, wait: float, delayed: bool = False) -> float:
        """Wait at most ``wait`` seconds for a datagram (spinning first, then blocking) and hand it over;
        a window's burst follows without blocking. ``delayed``: the impairer holds a datagram, which
        may fall due within the wait. Returns the time it then is."""
        machine = self.machine
        if not self.quick or machine.windowsize > 1:
            self._hand_over()  # the wait may be long, or follows a window: see the module's docstring
        if self.runs:
            steady = machine.steady()
            if steady is not None:
                return self._steady(wait, steady)
        spin = self.spin
        live = now >= spin.resume_at  # (paused, or off: the spin is neither asked nor told of this wait)
        try:
            got = spin(wait) if live and spin.on else None
            if got is None:
                # A held datagram falls due within the wait (the driver shortened it): wait to that time
                # itself, what the spin and the hand-over took of it deducted. Nothing came: as a read
                # that timed out.
                if delayed and not self.readable(max(now + wait - _clock(), 0.0)):
                    raise BlockingIOError
                self.set_wait(wait)
                got = self.read(0)
                then = _clock()
                if live:
                    spin.waited(then - now)
                self.quick = then - now < _QUICK
                now = then
            else:
                now = _clock()
        except (BlockingIOError, InterruptedError):
            now = time.time()
            self.quick = False
            machine.handle_timeout(now)
            return now
        except OSError as exc:
            now = time.time()
            self._socket_error(exc, now)
            return now
        arrived, addr = got
        self.arrive(arrived, addr if self.plain_addr else normalise(addr), now)
        # A window arrives as a burst (one run, or several datagrams without offload): answer as each is
        # read, and leave the bookkeeping to run once for the whole burst. (In lock-step nothing else can
        # be waiting, and the extra read would only cost a system call.)
        if machine.windowsize > 1:
            now = self._burst(now)
        return now

    def _steady(self, wait: float, steady: Steady) -> float:
        """Steady lock-step turns without the machine (engine/turns.py); then the machine settles, and
        takes what ended them. Returns the time it then is."""
        taken = connected_turns(self.sock, steady, self.spin, wait)
        if taken is None:  # (no twin: on the socket itself)
            self.set_wait(wait)
            taken = take_turns(steady, self.read, self.sock.sendto, self.spin, wait, self.plain_addr)
        now, ended = taken
        machine = self.machine
        machine.settle(steady)
        self.quick = ended is None or ended.error is None  # (a datagram came, or the room ran out)
        if ended is not None:
            error = ended.error
            if error is None:
                self.arrive(ended.datagram, ended.addr, now)  # type: ignore[arg-type]  # (always set with a datagram)
            elif error is TIMED_OUT:
                machine.handle_timeout(now)
            elif ended.sending:
                self._send_failed(steady.peer, error)  # type: ignore[arg-type]  # (an OSError)
            else:
                self._socket_error(error, now)  # type: ignore[arg-type]
            for datagram, addr in ended.more:  # what the twin held as it closed (engine/turns.py)
                self.arrive(datagram, addr, now)
        return now

    def _burst(self, now: float) -> float:
        read, arrive, plain_addr = self.read, self.arrive, self.plain_addr
        for _ in range(_BURST):
            self._send_all()
            try:
                arrived, addr = read(_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._socket_error(exc, now)
                break
            now = _clock()
            arrive(arrived, addr if plain_addr else normalise(addr), now)
        return now

    def _send_all(self) -> None:
        out = self.take_datagrams()
        if out:
            self.send(out, self.send_failed)

    def _flush(self) -> None:
        if self.runs:
            self.batch += self.machine.events()  # the run still growing too (settled_events leaves it)
        if self.batch:
            self.bus.publish(self.driver.placed(self.batch))
            self.batch = []

    def _hand_over(self) -> None:
        """Hand the batch to the bus before a wait, and lend the wait to its idle tasks: readers fold
        the events there (see EventBus.idle)."""
        self._flush()
        bus = self.bus
        if bus.idle_tasks:
            bus.idle()

    # -- through the driver ------------------------------------------------------------------------

    def _arrive_impaired(self, data: bytes, addr: Address, now: float) -> None:
        if self.driver.arrives(data, addr, now, self.session, None):
            self.machine.receive(data, addr, now)

    def _send_failed(self, dest: Address, exc: OSError) -> None:
        self._flush()
        self.driver.socket_error(self.sock, exc, time.time(), self._about, dest, sending=True)

    def _socket_error(self, exc: OSError, now: float) -> None:
        self._flush()
        self.driver.socket_error(self.sock, exc, now, self._about)

    def _about(self, blamed: Address | None) -> tuple[int, Session, Address]:
        # Only an error about our peer (or, before it answered, about the server) ends the transfer: one
        # drawn by an ERROR 5 sent to a stray source does not.
        machine = self.machine
        return self.session, machine, machine.peer if machine.locked else self.server


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether a datagram (or an error) waits on ``sock`` within ``timeout`` seconds, timed to the
    microsecond (select's timeout is a high-resolution timer's, not a count of the kernel's ticks)."""
    return bool(select.select((sock,), (), (), timeout)[0])
