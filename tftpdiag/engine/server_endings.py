"""How a server's sessions end: their timers (a retransmit due, a client silent too long), an error of
ours that ends one session alone (engine/broken.py), and the bookkeeping once one has ended (its file
closed, its socket let go, its request remembered so a late repeat of it is known). A part of
TftpServer (engine/server.py), kept apart so each file holds one concern; what it needs of the server
is declared below."""

from __future__ import annotations

import contextlib
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from tftpdiag.engine import broken
from tftpdiag.engine.poller import Poller
from tftpdiag.engine.server_state import ServerConfig, _Active, _PollData
from tftpdiag.protocol.events import Address

__all__ = ["ServerEndings"]

_MAX_WAIT = 0.5  # s: the longest the loop waits before it looks at the timers again
_ENDED_REMEMBERED = 4096  # ended sessions whose request is remembered, to know a late repeat of it


class ServerEndings:
    """See the module docstring; the server's state it reads and the methods it calls are TftpServer's."""

    config: ServerConfig
    _sessions: dict[int, _Active]
    _half_open: dict[int, _Active]
    _by_request: dict[tuple[Address, bytes], _Active]
    _by_peer: dict[tuple[Address, Address], _Active]
    _ended: dict[tuple[Address, bytes], float]
    _sel: Poller[_PollData]
    _next_check: float

    if TYPE_CHECKING:  # defined by TftpServer and its other parts
        def _flush(self, active: _Active, now: float) -> None: ...
        def _settle(self, active: _Active) -> None: ...

    def _check_timers(self, now: float) -> None:
        next_check = now + _MAX_WAIT
        idle = self.config.idle_timeout
        for active in list(self._sessions.values()):
            steady = active.steady
            if steady is not None:
                # Mid-run, nothing of this session can fall due yet: its turns stay out (settled here, on
                # every look, they cost each session a settle and a new steady object ten times a second).
                quiet = active.machine.quiet_until(steady)
                if quiet is not None and now < quiet:
                    if quiet < next_check:
                        next_check = quiet
                    continue
            try:
                self._settle(active)
                machine = active.machine
                deadline = machine.next_timeout()
                if deadline is not None and deadline <= now:
                    machine.handle_timeout(now)
                elif now - active.last_heard > idle and not machine.finished:
                    machine.abort(now, f"no word from the client for {idle:g} s")
                self._flush(active, now)
            except Exception as exc:  # noqa: BLE001 - see _end_broken
                self._end_broken(active, exc)
                continue
            deadline = machine.next_timeout()
            if deadline is not None and deadline < next_check:
                next_check = deadline
        self._next_check = next_check

    def _read_broken(self, read: Any, exc: Exception) -> None:
        """A reader raised what nothing expected (engine/broken.py): a session's reader ends that session
        alone (a request's error is caught where the request is known: _arrive_at_listener); any other
        reader's error is the server's own, and stops it."""
        target = read.args[0] if isinstance(read, partial) and read.args else None
        if not isinstance(target, _Active):
            raise exc
        self._end_broken(target, exc)

    def _end_broken(self, active: _Active, exc: Exception) -> None:
        """End ``active`` on an error of ours: its client told with ERROR 0, its record given the reason;
        the other sessions go on. Why: one session's bug used to end the server's thread, and with it
        every other session, while `serve` went on running without serving, then exited 0."""
        now = time.time()
        active.files = None  # its file is read or stored no more: that may be what raised
        try:
            with contextlib.suppress(Exception):
                self._settle(active)
            active.machine.broken(now, broken.reason(exc), broken.TOLD_BY_SERVER, broken.kind(exc))
            self._flush(active, now)  # its ERROR sent, its files settled (a failed upload's part file gone)
        except Exception:  # noqa: BLE001 - ending it in order raised too: it ends below as it stands
            pass
        if self._sessions.get(active.machine.session_id) is active:
            try:
                self._end(active)
            except Exception:  # noqa: BLE001 - its files could not be settled: it is let go all the same
                active.finalised = True
                self._end(active)

    def _finalise(self, active: _Active) -> None:
        """Close the file. A completed upload was already put in place by its sink before the final
        ACK; anything else leaves the target as it was."""
        active.finalised = True
        file, active.file = active.file, None
        if active.upload is not None:
            active.upload.discard()
        elif file is not None:
            file.close()

    def _end(self, active: _Active) -> None:
        if not active.finalised:
            self._finalise(active)
        self._sessions.pop(active.machine.session_id, None)
        self._half_open.pop(active.machine.session_id, None)
        key = (active.client, active.request_raw)
        if self._by_request.get(key) is active:
            del self._by_request[key]
        if len(self._ended) >= _ENDED_REMEMBERED:
            self._ended.pop(next(iter(self._ended)))  # the oldest
        self._ended[key] = time.time()
        if active.own_socket:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(active.sock)
            active.sock.close()
        else:
            for peer_key, value in list(self._by_peer.items()):
                if value is active:
                    del self._by_peer[peer_key]
