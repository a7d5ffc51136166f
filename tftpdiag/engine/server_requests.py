"""From a request to a session or a refusal: the checks of the name and the options, the socket the
session answers from, making room when the server is full (the oldest half-open session goes), and the
ERROR that refuses. A part of TftpServer (engine/server.py), kept apart so each file holds one concern;
what it needs of the server is declared below."""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tftpdiag.engine import broken
from tftpdiag.engine.admission import WaitingRoom
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.driver import Driver
from tftpdiag.engine.files import FileSource, UploadSink, feed_sender, store_received
from tftpdiag.engine.net import normalise, udp_socket
from tftpdiag.engine.partfiles import create_part
from tftpdiag.engine.paths import Refusal, check_for_write, open_for_read
from tftpdiag.engine.poller import Poller
from tftpdiag.engine.server_state import ServerConfig, _Active, _HeldIn, _Listener, _PollData
from tftpdiag.engine.suggest import NameSuggester
from tftpdiag.protocol.events import Address, Note, PacketReceived
from tftpdiag.protocol.packets import Ack, ErrorCode, Packet, ProtocolError, Request, decode
from tftpdiag.protocol.server import ServerRead, ServerWrite, mode_refused, refuse

__all__ = ["ServerRequests", "ERROR_ACKED"]

ERROR_ACKED = "error-acked"  # RequestRefused.why of a client's ACK of the ERROR that refused it: not a refusal
_ERROR_ACK_WITHIN = 10.0  # seconds after our ERROR in which the client's ACK counts as its answer
_REFUSED_REMEMBERED = 4096  # clients remembered for that; the oldest go first
_HALF_OPEN_GRACE = 1.0  # seconds a new session's client has to answer before the session may be dropped
_ROOM_TRIES = 8  # sessions looked at per request that needs room (each may turn out to have heard back)


class ServerRequests:
    """The request half of TftpServer; the server's state it reads and the methods it calls are its own."""

    config: ServerConfig
    bus: EventBus
    root: Path
    capacity: int
    suggester: NameSuggester
    _sessions: dict[int, _Active]
    _refused_at: dict[Address, float]
    _by_request: dict[tuple[Address, bytes], _Active]
    _half_open: dict[int, _Active]
    _ended: dict[tuple[Address, bytes], float]
    _arrival: float | None
    _waiting: WaitingRoom[tuple[_Listener, bytes, Address, str | None]]
    _sel: Poller[_PollData]
    _driver: Driver[_HeldIn]

    if TYPE_CHECKING:  # defined by TftpServer
        def _flush(self, active: _Active, now: float) -> None: ...
        def _add(self, active: _Active, listener: _Listener) -> None: ...
        def _read_session(self, active: _Active) -> None: ...
        def _remember(self, session_id: int) -> None: ...
        def _finalise(self, active: _Active) -> None: ...
        def _end(self, active: _Active) -> None: ...
        def _end_broken(self, active: _Active, exc: Exception) -> None: ...

    def _refuse(self, listener: _Listener, listen: Address, session_id: int, raw: bytes, packet: Packet | None,
                client: Address, code: int, message: str, why: str, suggestion: str | None = None,
                answer: bool = True, told: str | None = None) -> None:
        now = time.time()
        out, events = refuse(session_id, raw=raw, packet=packet, client=client, local=listen, now=now,
                             code=code, message=message, why=why, suggestion=suggestion, answer=answer, told=told)
        self._driver.sender(listener.sock, None, session_id)(out, _unanswered)
        if out:
            if len(self._refused_at) >= _REFUSED_REMEMBERED:
                self._refused_at.pop(next(iter(self._refused_at)))  # the oldest: bounded whoever floods
            self._refused_at[client] = now
        self.bus.publish(self._driver.placed(events))

    def _request_broken(self, listener: _Listener, raw: bytes, client: Address, dest: str | None,
                        exc: Exception) -> None:
        """A request whose handling raised what nothing expected (engine/broken.py): the session it got,
        if it got one that far, ends; else it is refused, the client told ERROR 0 in words that say
        nothing of this machine, the log given the whole reason. The server goes on."""
        active = self._by_request.get((client, raw))
        if active is not None and self._sessions.get(active.machine.session_id) is active:
            self._end_broken(active, exc)
            return
        try:
            packet: Packet | None = decode(raw)
        except ProtocolError:
            packet = None
        listen = (dest or listener.local[0], listener.local[1])  # (as _on_request names it)
        self._refuse(listener, listen, self.bus.new_session_id(), raw, packet, client, ErrorCode.NOT_DEFINED,
                     broken.reason(exc), "internal-error", told=broken.TOLD_BY_SERVER)

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
        unserved = mode_refused(packet)
        if unserved is not None:
            # A request all the same: refused for its mode, before any file is looked at (RFC 1350: ERROR 4).
            self._refuse(listener, listen, session_id, raw, packet, client, ErrorCode.ILLEGAL_OPERATION, unserved,
                         "unsupported-mode")
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
        machine = ServerRead(session_id, request=request, raw=raw, client=client, local=local,
                             file_size=target.size, now=time.time(), listen=listen, policy=self.config.policy,
                             timing=self.config.timing)
        self._add(_Active(machine, sock, own, client, raw, time.time(), file=file, target=target.path,
                          offload=self._driver.offload, files=partial(feed_sender, machine, FileSource(file))),
                  listener)

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
        machine = ServerWrite(session_id, request=request, raw=raw, client=client, local=local,
                              now=time.time(), listen=listen, policy=cfg.policy, timing=cfg.timing)
        self._add(_Active(machine, sock, own, client, raw, time.time(), upload=upload, target=target.path,
                          offload=self._driver.offload, files=partial(store_received, machine, upload)), listener)

    def _suggest(self, root: Path, cleaned: str) -> str | None:
        return self.suggester.suggest(root, cleaned, time.monotonic())


_PEEK = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0x40)


def _unanswered(dest: Address, exc: OSError) -> None:
    """A refusal that cannot be sent: the client hears nothing, as if it were lost on the wire."""


def _waiting_datagram(sock: socket.socket) -> bool:
    """Whether a datagram waits unread on the socket (it stays there)."""
    try:
        sock.recv(1, _PEEK)
    except OSError:  # BlockingIOError: nothing; anything else: a pending error, not a client's answer
        return False
    return True
