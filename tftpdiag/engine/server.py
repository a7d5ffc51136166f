"""The TFTP server: one worker thread runs a loop over the listening sockets and every session's socket
(engine/poller.py tells which are ready), and drives a protocol machine per session. What a datagram
meets between a socket and a machine (offload, impairment, held datagrams, socket errors) is
engine/driver.py's, shared with the client; what is the server's own is finding the session a datagram
or an error belongs to, and reading one datagram per socket per turn (a burst from a listener).

Each session answers from a fresh port of its own, as RFC 1350 says, bound to the address the request
was sent to (so a multi-homed server replies from the address the client knows); in single-port mode
every session answers from the listening port instead, which passes NAT and strict firewalls.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import threading
import time
from functools import partial
from typing import Any

from tftpdiag.engine import broken
from tftpdiag.engine.activation import privileged_port_help
from tftpdiag.engine.admission import WaitingRoom, default_capacity
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.driver import Driver
from tftpdiag.engine.listeners import arrival, destination, prepare_listener
from tftpdiag.engine.net import normalise, udp_socket
from tftpdiag.engine.partfiles import Removal, remove_stale
from tftpdiag.engine.poller import Poller
from tftpdiag.engine.server_endings import _MAX_WAIT, ServerEndings
from tftpdiag.engine.server_requests import ERROR_ACKED, ServerRequests
from tftpdiag.engine.server_state import (
    SERVE_TIMING,
    ServerConfig,
    ServerSetupError,
    _Active,
    _HeldIn,
    _Listener,
    _PollData,
)
from tftpdiag.engine.server_steady import ServerSteadyRuns
from tftpdiag.engine.spin import BusyPoll
from tftpdiag.engine.suggest import NameSuggester
from tftpdiag.fmt import address
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.server import GIVE_UP
from tftpdiag.protocol.session import Session

__all__ = ["ServerConfig", "TftpServer", "ServerSetupError", "SERVE_TIMING", "GIVE_UP", "ERROR_ACKED"]

_PATIENCE = 15.0  # a queued request whose client has not asked again for this long has given up
_ROOM_CHECK = 0.1  # while requests wait and every session is taken, how often to look for one to drop
_LISTENER_BURST = 32  # requests read from a listening socket per turn of the loop (a storm's come together)


_REQUEST_OPCODES = (b"\x01", b"\x02")  # the low byte of RRQ and WRQ: a repeated request proves nothing

class TftpServer(ServerRequests, ServerSteadyRuns, ServerEndings):
    def __init__(self, config: ServerConfig, bus: EventBus | None = None) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.root = config.root
        self.listeners: list[_Listener] = []
        self._sessions: dict[int, _Active] = {}
        # Clients just refused with an ERROR from a listening port, and when: tftp-hpa's client ACKs
        # that ERROR, to the same port, and its ACK is the end of that refusal, not a request of its own.
        self._refused_at: dict[Address, float] = {}
        self._by_peer: dict[tuple[Address, Address], _Active] = {}  # (listener, client) -> session
        self._by_request: dict[tuple[Address, bytes], _Active] = {}  # (client, request) -> session
        self._half_open: dict[int, _Active] = {}  # sessions not yet heard from, oldest first (see _make_room)
        # (client, request) -> when its session ended: a repeat of the request that reached the kernel
        # before then was sent while the session ran (it waited behind a storm's datagrams), not a new ask.
        self._ended: dict[tuple[Address, bytes], float] = {}
        self._arrival: float | None = None  # when the datagram being handled reached the listening socket
        self._next_room_check = 0.0
        self.capacity = config.max_sessions or default_capacity()
        self._waiting: WaitingRoom[tuple[_Listener, bytes, Address, str | None]] = WaitingRoom(
            config.waiting_room, _PATIENCE)
        self._sel: Poller[_PollData] = Poller()
        # The loop's spin for the next datagram (entered by serve(); told of sessions begun on it idle).
        self._busy: BusyPoll[Any] = BusyPoll(partial(self._sel.poll, 0), config.busy_poll)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False  # stop() was called (a flag the loop reads every turn, so not an Event)
        self._thread: threading.Thread | None = None
        self._next_check = 0.0
        self._own_ids: set[int] = set()
        self.skipped_ipv6 = False  # the default bind's [::] was not available on this machine
        # Offload, impairment, held datagrams and socket errors, as the client has them (engine/driver.py).
        self._driver: Driver[_HeldIn] = Driver(self.bus, config.impair, config.offload, alone=False,
                                               label="client ")
        self.suggester = NameSuggester()  # hints for missing names, on a budget: this loop serves everyone
        self.stopped = threading.Event()
        self.crashed: str | None = None  # why serve() ended by itself, if it did (engine/broken.py)
        self.stale_parts: list[Removal] = []  # temporary uploads of a killed server, removed at bind()

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def addresses(self) -> list[Address]:
        return [listener.local for listener in self.listeners]

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def queued_total(self) -> int:
        """Requests that had to wait for a free session (none refused for it while the queue had room)."""
        return self._waiting.queued_total

    def owns(self, session_id: int) -> bool:
        """Whether a session id on the bus is one of this server's (a client may share the bus)."""
        return session_id in self._own_ids

    def _remember(self, session_id: int) -> None:
        # Only recent ids matter (their events are still being read); a long run must not grow.
        if len(self._own_ids) >= 100_000:
            self._own_ids = set(sorted(self._own_ids)[50_000:])
        self._own_ids.add(session_id)

    def start(self) -> TftpServer:
        """Check the root, bind every address, then serve on a worker thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve, name="tftp-server", daemon=True)
        self._thread.start()
        return self

    def bind(self) -> None:
        self._check_root()
        default = self.config.bind == ("0.0.0.0", "::")
        for sock in self.config.inherited:
            self._add_listener(sock)
        for host in (() if self.config.inherited else self.config.bind):
            try:
                self._listen(host)
            except ServerSetupError:
                # The default asks for IPv6 too; a machine with IPv6 switched off still serves IPv4.
                if default and host == "::" and self.listeners:
                    self.skipped_ipv6 = True
                    continue
                self._close_listeners()
                raise
        self._sel.register(self._wake_r, self._read_wake)
        # Only once the addresses are ours: a second server that cannot bind touches nothing.
        self.stale_parts = remove_stale(self.root, recursive=True)

    def stop(self, timeout: float = 5.0) -> None:
        """End every session (their clients get ERROR 0), close all sockets, remove partial uploads."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> TftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_root(self) -> None:
        root = self.config.root
        if not root.exists():
            raise ServerSetupError(f"the directory to serve, {root}, does not exist")
        if not root.is_dir():
            raise ServerSetupError(f"{root} is not a directory")
        if not os.access(root, os.R_OK | os.X_OK):
            raise ServerSetupError(f"{root} cannot be read by this user")
        if self.config.allow_upload and not os.access(root, os.W_OK):
            raise ServerSetupError(f"uploads were allowed but {root} is not writable by this user")

    def _listen(self, host: str) -> None:
        port = self.config.port
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host.strip("[]")).version == 6 else socket.AF_INET
        except ValueError:
            raise ServerSetupError(f"{host!r} is not an IP address to bind to") from None
        shown = address((host.strip("[]"), port))
        try:
            sock = udp_socket(family, (host.strip("[]"), port))
        except PermissionError:
            raise ServerSetupError(privileged_port_help(shown, port)) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerSetupError(
                    f"cannot bind {shown}: address already in use (is another TFTP server running, "
                    f"such as tftpd-hpa, atftpd or dnsmasq?)") from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                raise ServerSetupError(f"cannot bind {shown}: that address is not available on this machine") from None
            raise ServerSetupError(f"cannot bind {shown}: {exc.strerror}") from None
        self._add_listener(sock)

    def _add_listener(self, sock: socket.socket) -> None:
        prepare_listener(sock)
        listener = _Listener(sock, normalise(sock.getsockname()), sock.family)
        self.listeners.append(listener)
        self._sel.register(sock, partial(self._read_listener, listener))

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(listener.sock)
            listener.sock.close()
        self.listeners.clear()

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until :meth:`stop` (on the calling thread)."""
        # Once per datagram in lock-step: what the loop asks each turn is in locals.
        poll = self._sel.poll
        bus = self.bus
        busy = self._busy
        driver = self._driver
        held = driver.held
        impaired = driver.impairer is not None  # only the impairer holds datagrams back
        clock = time.time
        waiting = self._waiting
        try:
            with busy:
                while not self._stopping:
                    now = clock()
                    wait = self._next_check - now
                    if wait > _MAX_WAIT:
                        wait = _MAX_WAIT
                    elif wait < 0.0:
                        wait = 0.0
                    if impaired and held:
                        wait = max(driver.wait(wait, now), 0.0)
                    if wait > 0 and bus.idle_tasks:  # readers fold events in the wait (see EventBus.idle)
                        bus.idle()
                    # (Paused, or off: the spin is neither asked nor told of this wait.)
                    live = now >= busy.resume_at
                    ready = busy(wait) if live and busy.on and wait > 0 else None
                    if ready is None:
                        ready = poll(wait)
                        if live:
                            busy.waited(clock() - now)
                    for read in ready:  # each ready socket's reader: a session's, a listener's, the wake-up's
                        try:
                            read()
                        except Exception as exc:  # noqa: BLE001 - one session's error ends it alone
                            self._read_broken(read, exc)
                    now = clock()
                    if impaired and held.due(now):
                        driver.release(now, self._deliver_held)
                    if now >= self._next_check:
                        self._check_timers(now)
                    # (Nothing ever waited: the room is empty, and the loop need not ask it.)
                    if waiting.queued_total and waiting and (len(self._sessions) < self.capacity
                                                              or now >= self._next_room_check):
                        self._admit_waiting(now)
        except Exception as exc:  # noqa: BLE001 - the server's own, not a session's: it stops, and says why
            self.crashed = broken.reason(exc)
        finally:
            self._shutdown()

    def _read_wake(self) -> None:
        """stop() wrote to the wake-up socket: the loop looks at its flag next."""
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def _shutdown(self) -> None:
        now = time.time()
        for active in list(self._sessions.values()):
            self._settle(active)
            active.machine.abort(now, "server shutting down")
            self._flush(active, now)
            self._end(active)
        self._close_listeners()
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._wake_r)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.stopped.set()

    def _admit_waiting(self, now: float) -> None:
        """Start queued requests, oldest first, while there is room or a session gives its place up."""
        self._next_room_check = now + _ROOM_CHECK
        while self._waiting and (len(self._sessions) < self.capacity or self._make_room(scan=True)):
            waiting = self._waiting.take(now)
            if waiting is None:
                return
            self._arrival = None
            self._on_request(*waiting[0])

    def _recv(self, sock: socket.socket) -> tuple[bytes, Address, str | None] | None:
        """One datagram from a listening socket, the address it was sent to and when it arrived
        (self._arrival), or None (nothing waiting, or a socket error, which is published).

        After an error it does not read again: the error may have ended the session and closed the
        socket; whatever else is waiting is reported by the next select(). (A session's socket is read
        by _read_session, the same way, without the ancillary data.)
        """
        try:
            data, ancillary, _, addr = sock.recvmsg(65536, 256)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._socket_error(sock, exc)
            return None
        self._arrival = arrival(ancillary)
        return data, normalise(addr), destination(ancillary)

    def _send_failed(self, sock: socket.socket, dest: Address, exc: OSError) -> None:
        self._socket_error(sock, exc, sending=True)

    def _socket_error(self, sock: socket.socket, exc: OSError, sending: bool = False,
                      dest: Address | None = None) -> None:
        """What the error means is engine/driver.py's; which session it is about, the server's: the one on
        that socket whose client it blames (with none blamed, the socket's first, for the event only)."""
        def about(blamed: Address | None) -> tuple[int, Session, Address] | None:
            for candidate in self._sessions.values():
                if candidate.sock is sock and (blamed is None or candidate.client == blamed):
                    return candidate.machine.session_id, candidate.machine, candidate.client
            return None

        for on_sock in self._sessions.values():
            if on_sock.sock is sock:
                self._settle(on_sock)
        now = time.time()
        ended = self._driver.socket_error(sock, exc, now, about, dest=dest, sending=sending)
        active = self._sessions.get(ended.session_id) if ended is not None else None
        if active is not None:
            self._flush(active, now)

    # One datagram per readable socket per turn of the loop: the next select() reports what is left,
    # which is cheaper than a second recv that fails with EAGAIN after every lock-step datagram.

    def _read_listener(self, listener: _Listener) -> None:
        # Several per turn: a storm's requests arrive together, and one per turn (a turn serving hundreds
        # of sessions) left them queued for seconds, until the devices resent them.
        for _ in range(_LISTENER_BURST):
            got = self._recv(listener.sock)
            if got is None:
                return
            data, client, dest = got
            if self._driver.impairer is not None:
                active = self._by_peer.get((listener.local, client)) if self.config.single_port else None
                session = active.machine.session_id if active is not None else 0
                if not self._driver.arrives(data, client, time.time(), session, (listener, dest)):
                    continue
            self._arrive_at_listener(listener, data, client, dest)
            if self._stopping or listener not in self.listeners:
                return

    def _arrive_at_listener(self, listener: _Listener, data: bytes, client: Address, dest: str | None) -> None:
        if self.config.single_port:
            active = self._by_peer.get((listener.local, client))
            if active is not None:
                try:
                    self._deliver(active, data, client)
                except Exception as exc:  # noqa: BLE001 - see _end_broken
                    self._end_broken(active, exc)
                return
        try:
            self._on_request(listener, data, client, dest)
        except Exception as exc:  # noqa: BLE001 - one request's error refuses it alone (engine/broken.py)
            self._request_broken(listener, data, client, dest, exc)

    def _read_session(self, active: _Active) -> None:
        if active.finalised and active.machine.closed:
            return
        try:
            data, addr = active.sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # as _recv: published, and no second read
            self._socket_error(active.sock, exc)
            return
        # The client's address is kept normalised: only another form needs it. The client's own tuple goes
        # on, so that the comparisons after this one (the session's, the machine's) find the same strings.
        client = active.client
        addr = client if addr == client else normalise(addr)
        if active.steady is not None and addr is client and self._steady_turn(active, data):
            return
        driver = self._driver
        if driver.impairer is None or driver.arrives(data, addr, time.time(), active.machine.session_id, active):
            self._deliver(active, data, addr)

    def _deliver_held(self, raw: bytes, addr: Address, target: _HeldIn) -> None:
        """An arriving datagram the impairer held has fallen due: to its session, if it still runs, or to
        the listener it reached."""
        if isinstance(target, _Active):
            if target.machine.session_id in self._sessions:
                self._deliver(target, raw, addr)
        else:
            listener, dest = target
            self._arrive_at_listener(listener, raw, addr, dest)

    def _deliver(self, active: _Active, data: bytes, addr: Address) -> None:
        self._settle(active)
        now = time.time()
        if addr == active.client:
            active.last_heard = now
            if not active.heard and data[1:2] not in _REQUEST_OPCODES:
                active.heard = True
                self._half_open.pop(active.machine.session_id, None)
        active.machine.receive(data, addr, now)
        self._flush(active, now)

    def _flush(self, active: _Active, now: float) -> None:
        machine = active.machine
        out = machine.datagrams_to_send()
        if out:
            active.send(out, active.send_failed)
        if active.files is not None and active.files(now):  # read or stored while the client answers
            self._flush(active, now)  # what that let the machine send: DATA, the final ACK, an ERROR
            return
        if machine.state.finished:
            if not active.finalised:
                # Before the events that say the session ended: whoever reads them finds the files
                # settled (a failed upload's temporary file already gone).
                self._finalise(active)
            self.bus.publish(self._driver.placed(machine.events()))
            if machine.closed:
                self._end(active)
                return
        else:
            self.bus.publish(self._driver.placed(machine.events()))
            if active.steadies and active.heard:  # (a steady turn is not how a session hears its client first)
                active.steady = machine.steady()
        deadline = machine.next_timeout()
        if deadline is not None and deadline < self._next_check:
            self._next_check = deadline

    def _add(self, active: _Active, listener: _Listener) -> None:
        if not self._sessions:  # (the loop was idle until now)
            self._busy.woken()
        self._sessions[active.machine.session_id] = active
        self._by_request[(active.client, active.request_raw)] = active
        self._half_open[active.machine.session_id] = active
        active.mapped = not active.own_socket and listener.family == socket.AF_INET6 and ":" not in active.client[0]
        active.send = self._driver.sender(active.sock, active.writer, active.machine.session_id, active.mapped)
        active.send_failed = partial(self._send_failed, active.sock)
        self._may_steady(active)
        if active.own_socket:
            self._sel.register(active.sock, partial(self._read_session, active))
        else:
            self._by_peer[(listener.local, active.client)] = active
        self._flush(active, time.time())
