"""The TFTP server: one worker thread runs a selector loop over the listening sockets and every
session's socket, and drives a protocol machine per session.

Each session answers from a fresh port of its own, as RFC 1350 says, bound to the address the request
was sent to (so a multi-homed server replies from the address the client knows); in single-port mode
every session answers from the listening port instead, which passes NAT and strict firewalls.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Final

from tftpdiag.engine.activation import privileged_port_help
from tftpdiag.engine.admission import WaitingRoom, default_capacity
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.files import FileSource, UploadSink
from tftpdiag.engine.impair import Held, Impairer, ImpairSpec
from tftpdiag.engine.listeners import arrival, destination, prepare_listener
from tftpdiag.engine.net import BUSY_POLL, BusyPoll, describe_errno, errored_destination, normalise, udp_socket
from tftpdiag.engine.offload import DatagramWriter
from tftpdiag.engine.partfiles import Removal, create_part, remove_stale
from tftpdiag.engine.paths import Refusal, check_for_write, open_for_read
from tftpdiag.engine.suggest import NameSuggester
from tftpdiag.protocol.events import Address, Note, PacketReceived, SocketError
from tftpdiag.protocol.options import ServerPolicy
from tftpdiag.protocol.packets import Ack, ErrorCode, Packet, ProtocolError, Request, decode
from tftpdiag.protocol.server import GIVE_UP, ServerRead, ServerWrite, refuse
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.timer import Timing

__all__ = ["ServerConfig", "TftpServer", "ServerSetupError", "SERVE_TIMING", "GIVE_UP", "ERROR_ACKED"]

_MAX_WAIT = 0.5
SERVE_TIMING = Timing(give_up=GIVE_UP)  # a session keeps a silent client a minute (see GIVE_UP)
ERROR_ACKED = "error-acked"  # RequestRefused.why of a client's ACK of the ERROR that refused it: not a refusal
_ERROR_ACK_WITHIN = 10.0  # seconds after our ERROR in which the client's ACK counts as its answer
_REFUSED_REMEMBERED = 4096  # clients remembered for that; the oldest go first
_PATIENCE = 15.0  # a queued request whose client has not asked again for this long has given up
_HALF_OPEN_GRACE = 1.0  # seconds a new session's client has to answer before the session may be dropped
_ROOM_CHECK = 0.1  # while requests wait and every session is taken, how often to look for one to drop
_ROOM_TRIES = 8  # sessions looked at per request that needs room (each may turn out to have heard back)
_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0x40)
_LISTENER_BURST = 32  # requests read from a listening socket per turn of the loop (a storm's come together)
_ENDED_REMEMBERED = 4096  # ended sessions whose request is remembered, to know a late repeat of it


_REQUEST_OPCODES = (b"\x01", b"\x02")  # the low byte of RRQ and WRQ: a repeated request proves nothing

class _Wake(Enum):
    WAKE = "wake"


_WAKE: Final = _Wake.WAKE  # what the poller reports for the wake-up socket that stop() writes to


class _Poller:
    """Readiness of many sockets, keyed by file descriptor. (The selectors module builds key objects on
    every call, a cost a lock-step transfer pays once per block.)"""

    def __init__(self) -> None:
        self._epoll = hasattr(select, "epoll")
        self._impl = select.epoll() if self._epoll else select.poll()
        self._data: dict[int, _PollData] = {}

    def register(self, sock: socket.socket, data: _PollData) -> None:
        fd = sock.fileno()
        self._data[fd] = data
        self._impl.register(fd, select.EPOLLIN if self._epoll else select.POLLIN)

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._data:
            del self._data[fd]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._impl.unregister(fd)

    def poll(self, timeout: float) -> list[_PollData]:
        data = self._data
        events = self._impl.poll(timeout) if self._epoll else self._impl.poll(timeout * 1000)
        return [data[fd] for fd, _ in events if fd in data]

    def close(self) -> None:
        # A poll object has nothing to close; select.epoll is looked up only where it exists.
        if self._epoll and isinstance(self._impl, select.epoll):
            self._impl.close()


class ServerSetupError(Exception):
    """The server cannot start: said in one line a user can act on."""


@dataclass(frozen=True)
class ServerConfig:
    root: Path
    bind: tuple[str, ...] = ("0.0.0.0", "::")
    port: int = 69
    allow_upload: bool = False
    allow_overwrite: bool = False
    single_port: bool = False
    policy: ServerPolicy = field(default_factory=ServerPolicy)
    timing: Timing = SERVE_TIMING
    max_sessions: int | None = None  # None: as many as the open-file limit allows (admission.py)
    waiting_room: int = 4096  # requests that wait for a free session when all are taken, not refused
    inherited: tuple[socket.socket, ...] = ()  # sockets already bound (systemd socket activation): no bind
    idle_timeout: float = 120.0  # a session with no datagram from its client for this long is ended
    impair: ImpairSpec | None = None  # fault injection between the sockets and the sessions
    busy_poll: float = BUSY_POLL  # seconds to spin for the next datagram before sleeping (0: never)
    offload: bool = True  # a window leaves in one system call (UDP GSO, Linux); off under impair


@dataclass(eq=False)
class _Listener:
    sock: socket.socket
    local: Address
    family: int


@dataclass(eq=False)
class _Active:
    machine: Session
    sock: socket.socket
    own_socket: bool
    client: Address
    request_raw: bytes
    last_heard: float
    file: BinaryIO | None = None
    upload: UploadSink | None = None
    target: Path | None = None
    finalised: bool = False
    offload: bool = True
    mapped: bool = False  # answers from a dual-stack IPv6 listener to an IPv4 client (see _sendto)
    # Anything but a request heard from the client since: a session without it is half-open (perhaps a
    # forged source address) and gives its place up to a new request when the server is full.
    heard: bool = False

    def __post_init__(self) -> None:
        self.prefetch = getattr(self.machine, "prefetch", None)
        self.writer = DatagramWriter(self.sock, self.offload)


_PollData = _Wake | _Listener | _Active  # what the poller reports for each ready socket
# Where a datagram the impairer held goes when it falls due: out through a socket, in to a session, or in
# to a listener (with the address it was sent to).
_HeldTarget = socket.socket | _Active | tuple[_Listener, "str | None"]


class TftpServer:
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
        self._sel = _Poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_check = 0.0
        self._own_ids: set[int] = set()
        self.skipped_ipv6 = False  # the default bind's [::] was not available on this machine
        self._impair = Impairer(config.impair) if config.impair is not None else None
        self._offload = config.offload and self._impair is None  # the impairer decides each datagram
        self._held: Held[_HeldTarget] = Held()
        self.suggester = NameSuggester()  # hints for missing names, on a budget: this loop serves everyone
        self.stopped = threading.Event()
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
        self._sel.register(self._wake_r, _WAKE)
        # Only once the addresses are ours: a second server that cannot bind touches nothing.
        self.stale_parts = remove_stale(self.root, recursive=True)

    def stop(self, timeout: float = 5.0) -> None:
        """End every session (their clients get ERROR 0), close all sockets, remove partial uploads."""
        self._stopping.set()
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
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
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
        self._sel.register(sock, listener)

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(listener.sock)
            listener.sock.close()
        self.listeners.clear()

    # -- the loop ----------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until :meth:`stop` (on the calling thread)."""
        sel = self._sel
        bus = self.bus
        busy = BusyPoll(lambda: sel.poll(0), self.config.busy_poll)
        try:
            with busy:
                while not self._stopping.is_set():
                    now = time.time()
                    wait = min(max(self._next_check - now, 0.0), _MAX_WAIT)
                    if self._held:
                        wait = min(wait, max(self._held.next_time() - now, 0.0))
                    if wait > 0 and bus.idle_tasks:  # readers fold events in the wait (see EventBus.idle)
                        bus.idle()
                    ready = busy(wait) if wait > 0 else None
                    if ready is None:
                        ready = sel.poll(wait)
                        busy.waited(time.time() - now)
                    for data in ready:
                        if data is _WAKE:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(64)
                        elif isinstance(data, _Listener):
                            self._read_listener(data)
                        else:
                            self._read_session(data)
                    now = time.time()
                    if self._held and self._held.due(now):
                        self._release_held(now)
                    if now >= self._next_check:
                        self._check_timers(now)
                    if self._waiting and (len(self._sessions) < self.capacity or now >= self._next_room_check):
                        self._admit_waiting(now)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        now = time.time()
        for active in list(self._sessions.values()):
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

    def _check_timers(self, now: float) -> None:
        next_check = now + _MAX_WAIT
        idle = self.config.idle_timeout
        for active in list(self._sessions.values()):
            machine = active.machine
            deadline = machine.next_timeout()
            if deadline is not None and deadline <= now:
                machine.handle_timeout(now)
            elif now - active.last_heard > idle and not machine.finished:
                machine.abort(now, f"no word from the client for {idle:g} s")
            self._flush(active, now)
            deadline = machine.next_timeout()
            if deadline is not None and deadline < next_check:
                next_check = deadline
        self._next_check = next_check

    def _recv(self, sock: socket.socket, want_dest: bool) -> tuple[bytes, Address, str | None] | None:
        """One datagram, or None (nothing waiting, or a socket error, which is published).

        After an error it does not read again: the error may have ended the session and closed the
        socket; whatever else is waiting is reported by the next select().
        """
        try:
            if want_dest:
                data, ancillary, _, addr = sock.recvmsg(65536, 256)
                self._arrival = arrival(ancillary)
                return data, normalise(addr), destination(ancillary)
            data, addr = sock.recvfrom(65536)
            return data, normalise(addr), None
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            self._socket_error(sock, exc)
            return None

    def _socket_error(self, sock: socket.socket, exc: OSError) -> None:
        blamed = errored_destination(sock)
        now = time.time()
        active = None
        for candidate in self._sessions.values():
            if candidate.sock is sock and (blamed is None or candidate.client == blamed):
                active = candidate
                break
        session = active.machine.session_id if active else 0
        self.bus.publish([SocketError(session, now, blamed, exc.errno or 0, describe_errno(exc.errno or 0))])
        if active is not None and blamed is not None:
            active.machine.unreachable(now, f"client {blamed[0]}:{blamed[1]}: {describe_errno(exc.errno or 0)}")
            self._flush(active, now)

    # One datagram per readable socket per turn of the loop: the next select() reports what is left,
    # which is cheaper than a second recv that fails with EAGAIN after every lock-step datagram.

    def _read_listener(self, listener: _Listener) -> None:
        # Several per turn: a storm's requests arrive together, and one per turn (a turn serving hundreds
        # of sessions) left them queued for seconds, until the devices resent them.
        for _ in range(_LISTENER_BURST):
            got = self._recv(listener.sock, want_dest=True)
            if got is None:
                return
            data, client, dest = got
            if self._impair is not None:
                active = self._by_peer.get((listener.local, client)) if self.config.single_port else None
                session = active.machine.session_id if active is not None else 0
                if not self._impaired_arrival(data, client, session, (listener, dest)):
                    continue
            self._arrive_at_listener(listener, data, client, dest)
            if self._stopping.is_set() or listener not in self.listeners:
                return

    def _arrive_at_listener(self, listener: _Listener, data: bytes, client: Address, dest: str | None) -> None:
        if self.config.single_port:
            active = self._by_peer.get((listener.local, client))
            if active is not None:
                self._deliver(active, data, client)
                return
        self._on_request(listener, data, client, dest)

    def _read_session(self, active: _Active) -> None:
        if active.finalised and active.machine.closed:
            return
        got = self._recv(active.sock, want_dest=False)
        if got is None:
            return
        if self._impair is None or self._impaired_arrival(got[0], got[1], active.machine.session_id, active):
            self._deliver(active, got[0], got[1])

    # -- fault injection ---------------------------------------------------------------------------

    def _impaired_arrival(self, data: bytes, addr: Address, session: int,
                          target: _Active | tuple[_Listener, str | None]) -> bool:
        """Apply --impair to an arriving datagram; True when it is to be handled now."""
        assert self._impair is not None
        now = time.time()
        times, events = self._impair.fate(data, addr, now, "in", session)
        self.bus.publish(events)
        now_too = False
        for when in times:
            if when <= now:
                now_too = True
            else:
                self._held.add(when, "in", data, addr, target)
        return now_too

    def _sendto(self, sock: socket.socket, raw: bytes, dest: Address, session: int) -> None:
        if sock.family == socket.AF_INET6 and ":" not in dest[0]:
            # A dual-stack listener (from systemd) heard this IPv4 client; addresses are shown and kept
            # as plain IPv4, and mapped back only to send from that IPv6 socket.
            dest = ("::ffff:" + dest[0], dest[1])
        if self._impair is None:
            sock.sendto(raw, dest)
            return
        now = time.time()
        times, events = self._impair.fate(raw, dest, now, "out", session)
        self.bus.publish(events)
        for when in times:
            if when <= now:
                sock.sendto(raw, dest)
            else:
                self._held.add(when, "out", raw, dest, sock)

    def _release_held(self, now: float) -> None:
        # The target says where each goes ("out" always has a socket, "in" a session or a listener).
        for _, raw, addr, target in self._held.pop_due(now):
            if isinstance(target, socket.socket):
                with contextlib.suppress(OSError):
                    target.sendto(raw, addr)
            elif isinstance(target, _Active):
                if target.machine.session_id in self._sessions:
                    self._deliver(target, raw, addr)
            else:
                listener, dest = target
                self._arrive_at_listener(listener, raw, addr, dest)

    def _deliver(self, active: _Active, data: bytes, addr: Address) -> None:
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
            sock = active.sock

            def failed(dest: Address, exc: OSError) -> None:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):  # else as if lost on the wire: the
                    self._socket_error(sock, exc)  # retransmit timer covers it

            if self._impair is None and not active.mapped:
                active.writer.send(out, failed)
            else:
                for raw, dest in out:
                    try:
                        self._sendto(sock, raw, dest, machine.session_id)
                    except OSError as exc:
                        failed(dest, exc)
        if active.prefetch is not None:
            active.prefetch()  # the next block is read while the client answers, not after
        if machine.finished and not active.finalised:
            # Before the events that say the session ended: whoever reads them finds the files settled
            # (a failed upload's temporary file already gone).
            self._finalise(active)
        self.bus.publish(machine.events())
        if machine.closed:
            self._end(active)
        else:
            deadline = machine.next_timeout()
            if deadline is not None and deadline < self._next_check:
                self._next_check = deadline

    # -- requests ----------------------------------------------------------------------------------

    def _refuse(self, listener: _Listener, listen: Address, session_id: int, raw: bytes, packet: Packet | None,
                client: Address, code: int, message: str, why: str, suggestion: str | None = None,
                answer: bool = True) -> None:
        now = time.time()
        out, events = refuse(session_id, raw=raw, packet=packet, client=client, local=listen, now=now,
                             code=code, message=message, why=why, suggestion=suggestion, answer=answer)
        for datagram, dest in out:
            with contextlib.suppress(OSError):
                self._sendto(listener.sock, datagram, dest, session_id)
        if out:
            if len(self._refused_at) >= _REFUSED_REMEMBERED:
                self._refused_at.pop(next(iter(self._refused_at)))  # the oldest: bounded whoever floods
            self._refused_at[client] = now
        self.bus.publish(events)

    def _acks_our_error(self, client: Address, packet: Packet) -> bool:
        """An ACK from a client this listener refused with an ERROR moments ago: its answer to it."""
        refused = self._refused_at.pop(client, None)
        return isinstance(packet, Ack) and refused is not None and time.time() - refused < _ERROR_ACK_WITHIN

    def _on_request(self, listener: _Listener, raw: bytes, client: Address, dest: str | None) -> None:
        session_id = self.bus.new_session_id()
        self._remember(session_id)
        # Events name the address the request really reached, not the wildcard the socket is bound to.
        listen = (dest or listener.local[0], listener.local[1])
        try:
            packet = decode(raw)
        except ProtocolError as exc:
            self._refuse(listener, listen, session_id, raw, None, client, exc.code, exc.message, "malformed")
            return
        if not isinstance(packet, Request):
            # Logged, not answered: some clients (tftp-hpa's interactive mode) ACK the ERROR that refused
            # their request, and an ERROR 5 in reply would be read as the answer to their next request.
            if self._acks_our_error(client, packet):
                self._refuse(listener, listen, session_id, raw, packet, client, ErrorCode.UNKNOWN_TID,
                             "the client acknowledged our ERROR", ERROR_ACKED, answer=False)
            else:
                self._refuse(listener, listen, session_id, raw, packet, client, ErrorCode.UNKNOWN_TID,
                             "not a request", "not-a-request", answer=False)
            return
        active = self._by_request.get((client, raw))
        ended = self._ended.get((client, raw))
        if active is not None and not active.machine.finished:
            # The client resent its request before our answer reached it: its session goes on.
            self.bus.publish([PacketReceived(active.machine.session_id, time.time(), listen, client,
                                             raw, packet, Note.DUPLICATE, "request repeated")])
            return
        if ended is not None and self._arrival is not None and self._arrival <= ended:
            # Dropped without an event: the session's record may be gone, and a lone event would start
            # a record of its own that never ends.
            return
        if self._waiting.holds(client, raw):
            self._waiting.offer(client, raw, (listener, raw, client, dest), time.time())  # still asking
            return
        if len(self._sessions) >= self.capacity and not self._make_room():
            # Full of clients that all answer: the request waits for the first session to end (its
            # client resends meanwhile, which only keeps its place), unless the queue is full too.
            if self._waiting.offer(client, raw, (listener, raw, client, dest), time.time()):
                return
            self._refuse(listener, listen, session_id, raw, packet, client, ErrorCode.NOT_DEFINED,
                         f"server busy: {len(self._sessions)} sessions and {len(self._waiting)} waiting", "busy")
            return
        if packet.is_read:
            self._start_read(listener, listen, session_id, raw, packet, client, dest)
        else:
            self._start_write(listener, listen, session_id, raw, packet, client, dest)

    def _make_room(self, scan: bool = False) -> bool:
        """End one session to admit a new request: the oldest half-open one, else (``scan``) a finished
        one still dallying. Requests that never answer (a flood, or forged source addresses, as with a SYN
        flood) then cannot keep out a client that does, whatever address they come from. A session is
        half-open only once its client has had _HALF_OPEN_GRACE to answer: in a storm, requests come
        faster than the first answers, and must not push out each other's fresh sessions. False if no
        session can go (the request then waits for one)."""
        for _ in range(_ROOM_TRIES):
            victim = self._oldest_half_open(scan)
            if victim is None:
                return False
            if not victim.machine.finished and victim.own_socket and _waiting_datagram(victim.sock):
                # Its client did answer, but a loop turn over thousands of sessions has not read it yet:
                # read it now (the session is then no longer half-open), and look again.
                sessions = len(self._sessions)
                self._read_session(victim)
                if len(self._sessions) < sessions:
                    return True  # that datagram ended it
                continue
            now = time.time()
            victim.machine.abandon(now, f"dropped to admit a new request: nothing heard from the client in "
                                        f"{now - victim.machine.started:.1f} s")
            self._flush(victim, now)
            if victim.machine.session_id in self._sessions:
                self._end(victim)
            return True
        return False

    def _oldest_half_open(self, scan: bool) -> _Active | None:
        """The oldest session past its grace that never heard back, else (with ``scan``: a walk over
        every session, so not on every request) a finished one still dallying."""
        for active in self._half_open.values():  # in the order they started: the first is the oldest
            if active.machine.started <= time.time() - _HALF_OPEN_GRACE:
                return active
            break
        if scan:
            for active in self._sessions.values():
                if active.machine.finished:
                    return active
        return None

    def _session_socket(self, listener: _Listener, dest: str | None, client: Address) -> tuple[socket.socket, bool]:
        client_family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
        if self.config.single_port:
            return listener.sock, False
        host = dest or listener.local[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if client_family != family:  # no destination known, and a dual-stack listener: any of the client's
            family, host = client_family, ("::" if client_family == socket.AF_INET6 else "0.0.0.0")
        sock = udp_socket(family, (host, 0))
        sock.setblocking(False)
        return sock, True

    def _socket_or_refuse(self, listener: _Listener, listen: Address, session_id: int, raw: bytes,
                          request: Request, client: Address, dest: str | None) -> tuple[socket.socket, bool] | None:
        """The session's socket, or None after telling the client the server could not make one."""
        try:
            return self._session_socket(listener, dest, client)
        except OSError as exc:
            self._refuse(listener, listen, session_id, raw, request, client, ErrorCode.NOT_DEFINED,
                         f"server cannot open a socket: {exc.strerror}", "server-error")
            return None

    def _start_read(self, listener: _Listener, listen: Address, session_id: int, raw: bytes, request: Request,
                    client: Address, dest: str | None) -> None:
        target = open_for_read(self.root, request.filename, self._suggest)
        if isinstance(target, Refusal):
            self._refuse(listener, listen, session_id, raw, request, client, target.code, target.message, target.why,
                         target.suggestion)
            return
        file = os.fdopen(target.fd, "rb", buffering=1 << 16)
        opened = self._socket_or_refuse(listener, listen, session_id, raw, request, client, dest)
        if opened is None:
            file.close()
            return
        sock, own = opened
        local = normalise(sock.getsockname())
        machine = ServerRead(session_id, request=request, raw=raw, client=client, local=local, source=FileSource(file),
                             file_size=target.size, now=time.time(), listen=listen, policy=self.config.policy,
                             timing=self.config.timing)
        self._add(_Active(machine, sock, own, client, raw, time.time(), file=file, target=target.path,
                          offload=self._offload), listener)

    def _start_write(self, listener: _Listener, listen: Address, session_id: int, raw: bytes, request: Request,
                     client: Address, dest: str | None) -> None:
        cfg = self.config
        target = check_for_write(self.root, request.filename, allow_upload=cfg.allow_upload,
                                 allow_overwrite=cfg.allow_overwrite)
        if isinstance(target, Refusal):
            self._refuse(listener, listen, session_id, raw, request, client, target.code, target.message, target.why)
            return
        try:
            fd, temp_path = create_part(target.path)
        except OSError as exc:
            self._refuse(listener, listen, session_id, raw, request, client, ErrorCode.ACCESS_VIOLATION,
                         f"cannot create the file: {exc.strerror}", "no-permission")
            return
        upload = UploadSink(os.fdopen(fd, "wb", buffering=1 << 16), temp_path, target.path, cfg.allow_overwrite)
        opened = self._socket_or_refuse(listener, listen, session_id, raw, request, client, dest)
        if opened is None:
            upload.discard()
            return
        sock, own = opened
        local = normalise(sock.getsockname())
        machine = ServerWrite(session_id, request=request, raw=raw, client=client, local=local, sink=upload,
                              now=time.time(), listen=listen, policy=cfg.policy, timing=cfg.timing)
        self._add(_Active(machine, sock, own, client, raw, time.time(), upload=upload, target=target.path,
                          offload=self._offload), listener)

    def _suggest(self, root: Path, cleaned: str) -> str | None:
        return self.suggester.suggest(root, cleaned, time.monotonic())

    def _add(self, active: _Active, listener: _Listener) -> None:
        self._sessions[active.machine.session_id] = active
        self._by_request[(active.client, active.request_raw)] = active
        self._half_open[active.machine.session_id] = active
        active.mapped = not active.own_socket and listener.family == socket.AF_INET6 and ":" not in active.client[0]
        if active.own_socket:
            self._sel.register(active.sock, active)
        else:
            self._by_peer[(listener.local, active.client)] = active
        self._flush(active, time.time())

    # -- ending ------------------------------------------------------------------------------------

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


def _waiting_datagram(sock: socket.socket) -> bool:
    """Whether a datagram waits unread on the socket (it stays there)."""
    try:
        sock.recv(1, _PEEK)
    except OSError:  # BlockingIOError: nothing; anything else: a pending error, not a client's answer
        return False
    return True
