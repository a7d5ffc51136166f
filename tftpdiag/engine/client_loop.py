"""The client's loop: one protocol machine (ClientRead or ClientWrite) driven over its one socket until
the machine closes. engine/client.py sets the transfer up and keeps its outcome; what a datagram meets
between the socket and the machine (offload, impairment, held datagrams, socket errors) is
engine/driver.py's, shared with the server.

What is the client's own is how it waits: a lock-step peer answers within tens of microseconds, so
after a brief spin (BusyPoll) the loop blocks in the read itself, on a socket whose receive timeout the
kernel keeps (SO_RCVTIMEO): one system call per datagram. A window arrives as a burst and is read
without blocking, answering as each part is read. Events go to the bus in batches while datagrams flow
without a pause, and always before the loop sleeps.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.driver import Driver
from tftpdiag.engine.impair import ImpairSpec
from tftpdiag.engine.net import BusyPoll, normalise, receive_timeout_setter
from tftpdiag.engine.offload import DatagramReader, DatagramWriter
from tftpdiag.protocol.client import ClientRead, ClientWrite
from tftpdiag.protocol.events import Address, Event
from tftpdiag.protocol.session import Session

__all__ = ["ClientLoop"]

_POLL = 0.2  # longest wait between looks at the cancel flag and the deadline
_BURST = 64  # datagrams read without blocking after one arrives, before the bookkeeping runs
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_BATCH = 64  # events handed to the bus at once while datagrams keep coming


class ClientLoop:
    """Drives ``machine`` over ``sock``; :meth:`run` returns when the machine has closed (its dally
    included) and what the impairer held on its way out has left. ``files`` reads or stores the file's
    blocks for the machine (engine/files.py) after each turn; ``on_finished`` is called once, as soon as
    the transfer has completed or failed; ``cancel_reason`` is read once ``cancel`` is set."""

    def __init__(self, sock: socket.socket, machine: ClientRead | ClientWrite, *, bus: EventBus, session: int,
                 server: Address, impair: ImpairSpec | None, offload: bool, windowed: bool, busy_poll: float,
                 deadline: float | None, files: Callable[[float], bool], cancel: threading.Event,
                 cancel_reason: Callable[[], str], on_finished: Callable[[], None]) -> None:
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
        # Only a windowed transfer receives runs worth coalescing.
        self.read = DatagramReader(sock, self.driver.offload and windowed).read
        self.deadline_s = deadline
        # A blocking socket whose receive timeout the kernel keeps: see the module's docstring.
        sock.settimeout(None)
        self.set_wait = receive_timeout_setter(sock)
        read = self.read
        self.spin = BusyPoll(lambda: read(_DONTWAIT), busy_poll)
        # IPv4 sockets report (host, port) already; IPv6 ones a 4-tuple that normalise() shortens.
        self.plain_addr = sock.family == socket.AF_INET
        # Under --impair every event goes at once, in order with the Impaired events that explain it.
        self.batch: list[Event] = []
        self.batch_size = _BATCH if self.driver.impairer is None else 1
        self.files = files  # the engine's half of the machine (engine/files.py): True when it gave it work
        self.cancelled = cancel.is_set
        self.cancel_reason = cancel_reason
        self.on_finished = on_finished
        self.reported = False
        # Straight to the machine unless the impairer stands between.
        self.arrive = machine.receive_many if self.driver.impairer is None else self._arrive_impaired

    def run(self, now: float) -> None:
        machine, held, cancelled, spin = self.machine, self.held, self.cancelled, self.spin
        deadline = now + self.deadline_s if self.deadline_s else None
        next_timeout, take_datagrams, send, send_failed = (
            machine.next_timeout, self.take_datagrams, self.send, self.send_failed)
        files, take_events = self.files, machine.events
        with spin:
            self._send_all()
            self.bus.publish(take_events())
            while not machine.closed:
                delayed = bool(held)  # only under --impair
                if delayed:
                    now = time.time()  # held datagrams fall due by the clock, not by traffic
                if cancelled() or (deadline is not None and now >= deadline and not machine.finished) \
                        or (delayed and held.due(now)):
                    self._stop_or_release(now, deadline)
                else:
                    timer = next_timeout()
                    wait = _POLL if timer is None else min(timer - now, _POLL)
                    if delayed:
                        wait = self.driver.wait(wait, now)
                    if wait <= 0:
                        machine.handle_timeout(now)
                    else:
                        now = self._wait(now, wait)
                out = take_datagrams()
                if out:
                    send(out, send_failed)
                # Off the critical path: the reply is already on its way.
                if files(now):
                    self._send_all()  # what the file work let the machine send: DATA, the final ACK, an ERROR
                batch = self.batch
                batch += take_events()
                if len(batch) >= self.batch_size:
                    self._flush()
                if machine.finished and not self.reported:
                    self.reported = True
                    self._flush()
                    self.on_finished()
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

    def _wait(self, now: float, wait: float) -> float:
        """Wait at most ``wait`` seconds for a datagram (spinning first, then blocking) and hand it over;
        a window's burst follows without blocking. Returns the time it then is."""
        bus = self.bus
        if bus.idle_tasks:  # readers fold events in the wait (see EventBus.idle)
            self._flush()
            bus.idle()
        spin = self.spin
        try:
            got = spin(wait)
            if got is None:
                self._flush()
                self.set_wait(wait)
                run, addr = self.read(0)
                spin.waited(time.time() - now)
            else:
                run, addr = got
        except (BlockingIOError, InterruptedError):
            now = time.time()
            self.machine.handle_timeout(now)
            return now
        except OSError as exc:
            now = time.time()
            self._socket_error(exc, now)
            return now
        now = time.time()
        self.arrive(run, addr if self.plain_addr else normalise(addr), now)
        # A window arrives as a burst (one run, or several datagrams without offload): answer as each is
        # read, and leave the bookkeeping to run once for the whole burst. (In lock-step nothing else can
        # be waiting, and the extra read would only cost a system call.)
        if self.machine.windowsize > 1:
            now = self._burst(now)
        return now

    def _burst(self, now: float) -> float:
        read, arrive, plain_addr = self.read, self.arrive, self.plain_addr
        for _ in range(_BURST):
            self._send_all()
            try:
                run, addr = read(_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._socket_error(exc, now)
                break
            now = time.time()
            arrive(run, addr if plain_addr else normalise(addr), now)
        return now

    def _send_all(self) -> None:
        out = self.take_datagrams()
        if out:
            self.send(out, self.send_failed)

    def _flush(self) -> None:
        if self.batch:
            self.bus.publish(self.batch)
            self.batch = []

    # -- through the driver ------------------------------------------------------------------------

    def _arrive_impaired(self, run: list[bytes], addr: Address, now: float) -> None:
        arrives, receive, session = self.driver.arrives, self.machine.receive, self.session
        for data in run:
            if arrives(data, addr, now, session, None):
                receive(data, addr, now)

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
