"""The steady half of TftpServer: a lock-step session's steady turns (protocol/steady.py), taken
without its machine as its client's datagrams come, one per turn of the server's loop; and, while the
session is the server's only work, the rest of a run on blocking reads (engine/turns.py)."""

from __future__ import annotations

import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from tftpdiag.engine.admission import WaitingRoom
from tftpdiag.engine.driver import Driver
from tftpdiag.engine.net import receive_timeout_setter
from tftpdiag.engine.server_state import _Active, _HeldIn, _Listener
from tftpdiag.engine.spin import BusyPoll
from tftpdiag.engine.turns import TIMED_OUT, connected_turns, dontwait, take_turns
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.steady import Steady

__all__ = ["ServerSteadyRuns"]

_STEADY_WAIT = 0.05  # the longest a steady run waits for its client while listeners are not read


class ServerSteadyRuns:
    """See the module docstring; the server's state it reads and the methods it calls are TftpServer's."""

    _sessions: dict[int, _Active]
    _waiting: WaitingRoom[tuple[_Listener, bytes, Address, str | None]]
    _driver: Driver[_HeldIn]
    _next_check: float
    _busy: BusyPoll[Any]

    if TYPE_CHECKING:  # defined by TftpServer
        def _flush(self, active: _Active, now: float) -> None: ...
        def _deliver(self, active: _Active, data: bytes, addr: Address) -> None: ...
        def _socket_error(self, sock: socket.socket, exc: OSError, sending: bool = False,
                          dest: Address | None = None) -> None: ...

    def _may_steady(self, active: _Active) -> None:
        """A new session takes steady turns when it is lock-step on a socket of its own, not impaired
        (its machine then records runs: the turns are kept in columns)."""
        if active.own_socket and not active.mapped and self._driver.impairer is None \
                and active.machine.windowsize == 1:
            active.steadies = True
            active.machine.record_runs()
            active.read = partial(active.sock.recvfrom, 65536)
            active.set_wait = receive_timeout_setter(active.sock)

    def _steady_turn(self, active: _Active, data: bytes) -> bool:
        """``data`` from the session's client, as a turn of its steady object; False when it is not one
        (the machine takes it, once it has settled)."""
        steady = active.steady
        assert steady is not None
        now = time.time()
        answer = steady.take(data, now)
        if answer is None:
            return False
        active.last_heard = now
        try:
            active.sock.sendto(answer, active.client)
        except OSError as exc:  # (the turn was taken: the machine sent its answer, which failed)
            self._socket_error(active.sock, exc, sending=True)
            return True
        if steady.left and len(self._sessions) == 1 and not self._waiting:
            now = self._steady_run(active, steady, now)
        if active.steady is steady and not steady.left:
            self._settle(active)
            self._flush(active, now)
        return True

    def _steady_run(self, active: _Active, steady: Steady, now: float) -> float:
        """The server's only session, in steady turns: the rest of them taken as the client takes its
        own (engine/turns.py), blocking on the session's socket instead of polling every socket for each
        datagram (a poll and a turn of the loop, 4-8 us a block on a 2-core laptop). Listeners wait
        meanwhile: at most steady.room_for the block size in turns (256 of 1468 bytes, some 12 ms on a
        quiet 2-core machine: 256 x 45 us), never longer than the progress interval (0.1 s) and a turn,
        and _STEADY_WAIT when the client is slow to answer (the run then ends, and the loop goes on).
        Returns the time of the last turn."""
        wait = min(self._next_check - now, _STEADY_WAIT)
        if wait <= 0:
            return now
        sock = active.sock
        busy = self._busy
        taken = connected_turns(sock, steady, busy, wait)
        twinned = taken is not None
        if taken is None:  # (no twin: on the session's socket itself, blocking meanwhile)
            spin_read = busy.read
            read, set_wait = active.read, active.set_wait
            assert read is not None and set_wait is not None  # (set with steadies)
            sock.setblocking(True)
            try:
                set_wait(wait)
                busy.read = dontwait(read)
                taken = take_turns(steady, read, sock.sendto, busy, wait, sock.family == socket.AF_INET)
            finally:
                busy.read = spin_read
                sock.setblocking(False)
        then, ended = taken
        if then > now:
            active.last_heard = now = then
        if ended is not None:
            self._settle(active)
            error = ended.error
            if error is None:
                self._deliver(active, ended.datagram, ended.addr)  # type: ignore[arg-type]  # (set with a datagram)
            elif error is not TIMED_OUT:  # (a timeout is only the end of the run: the loop looks at the timers)
                # On the twin, connected to the client, any error is about the client (no error queue says so).
                self._socket_error(sock, error, sending=ended.sending,  # type: ignore[arg-type]  # (an OSError)
                                   dest=active.client if twinned else None)
            else:
                self._flush(active, then)
            for datagram, addr in ended.more:  # what the twin held as it closed (engine/turns.py)
                if active.machine.session_id in self._sessions:
                    self._deliver(active, datagram, active.client if addr == active.client else addr)
        return now

    def _settle(self, active: _Active) -> None:
        """The machine takes back its steady turns (protocol/steady.py), before anything else asks it."""
        steady = active.steady
        if steady is not None:
            active.steady = None
            active.machine.settle(steady)

