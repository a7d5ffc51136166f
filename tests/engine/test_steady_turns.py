"""Steady lock-step turns in the engine (engine/turns.py, protocol/steady.py), on real sockets over
loopback: a datagram from another address in the middle of them is still seen, recorded and answered
as the machine answers it; the server's only session taking its turns with blocking reads still lets a
new request in; and every packet of the transfer reaches the record."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from tests.support.findings_kit import LOOP, FakeServer, recv, send, wait_for
from tests.support.interop import EventLog
from tftpdiag.engine import turns
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Note, PacketReceived, PacketRun, PacketSent
from tftpdiag.protocol.packets import Ack, Data, Error
from tftpdiag.protocol.timer import Timing

BLOCKS = 400
SLOW = Timing(initial_timeout=5.0, min_timeout=5.0, adaptive=False, dally=0.0)


@pytest.fixture(params=["twin", "one socket"])
def twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Steady runs through a connected twin of the socket (engine/turns.py), or on the socket itself
    (where the system has no SO_REUSEPORT)."""
    if request.param == "one socket":
        monkeypatch.setattr(turns, "_REUSEPORT", None)
    return str(request.param)


def test_a_stray_in_the_middle_of_a_client_s_steady_turns_is_recorded_and_refused(twin: str) -> None:
    payload = os.urandom(512 * BLOCKS + 9)
    stray_got: list = []

    def script(sock: socket.socket, request: object, client: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
            stray.bind((LOOP, 0))
            for n in range(1, BLOCKS + 2):
                send(sock, Data(n, payload[(n - 1) * 512:n * 512]), client)
                got = recv(sock, 5.0)
                assert got == (Ack(n), client), (n, got)
                if n == BLOCKS // 2:  # well into the steady turns: the very block expected, from elsewhere
                    send(stray, Data(n + 1, b"x" * 512), client)
                    stray_got.append(recv(stray, 5.0))

    bus = EventBus()
    sub = bus.subscribe()
    with FakeServer(script) as server:
        request = ClientRequest(LOOP, "f", port=server.port, busy_poll=0.0, timing=SLOW)
        outcome = ClientTransfer(request, bus).run()
    assert outcome.ok and outcome.sha256 == hashlib.sha256(payload).hexdigest()
    published = sub.drain()
    assert any(type(e) is PacketRun for e in published)  # the steady turns, in columns
    events = list(expand(published))
    strays = [e for e in events if isinstance(e, PacketReceived) and e.note is Note.STRAY]
    assert len(strays) == 1 and strays[0].packet == Data(BLOCKS // 2 + 1, b"x" * 512)
    assert stray_got and isinstance(stray_got[0][0], Error) and stray_got[0][0].code == 5
    received = [e.packet.block for e in events if isinstance(e, PacketReceived) and isinstance(e.packet, Data)
                and e.note is Note.NONE]
    assert received == list(range(1, BLOCKS + 2))  # every block, in order, once
    acks = [e.packet.block for e in events if isinstance(e, PacketSent) and isinstance(e.packet, Ack)]
    assert acks == list(range(1, BLOCKS + 2))  # one per block (no options asked: no OACK, no ACK 0)


def _rrq(name: str) -> bytes:
    return struct.pack("!H", 1) + name.encode() + b"\0octet\0"


def test_the_server_s_only_session_in_steady_turns_still_sees_strays_and_new_requests(tmp_path: Path,
                                                                                      twin: str) -> None:
    payload = os.urandom(512 * BLOCKS + 100)
    (tmp_path / "f").write_bytes(payload)
    bus = EventBus()
    log = EventLog(bus)
    config = ServerConfig(tmp_path, bind=(LOOP,), port=0, timing=SLOW)
    with TftpServer(config, bus) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
        port = server.addresses[0][1]
        client.settimeout(5)
        stray.settimeout(5)
        stray.bind((LOOP, 0))
        client.sendto(_rrq("f"), (LOOP, port))
        got = b""
        second: threading.Thread | None = None
        second_outcome: list = []
        for n in range(1, BLOCKS + 2):
            raw, tid = client.recvfrom(600)
            assert raw[:4] == struct.pack("!HH", 3, n), (n, raw[:4])
            got += raw[4:]
            if n == BLOCKS // 2:
                stray.sendto(struct.pack("!HH", 4, n), tid)  # an ACK from someone else, to the session's port
                answer, _ = stray.recvfrom(600)
                assert answer[:4] == b"\x00\x05\x00\x05"  # ERROR 5, unknown transfer ID
                # And a second client asks meanwhile: served while this one goes on.
                request = ClientRequest(LOOP, "f", port=port, busy_poll=0.0, timing=SLOW)
                transfer = ClientTransfer(request)
                second = threading.Thread(target=lambda t=transfer: second_outcome.append(t.run()))
                second.start()
                wait_for(lambda: server.active_sessions == 2 or bool(second_outcome), 5.0, "the second session")
            client.sendto(struct.pack("!HH", 4, n), tid)
        assert got == payload
        assert second is not None
        second.join(10)
        assert second_outcome and second_outcome[0].ok
        assert second_outcome[0].sha256 == hashlib.sha256(payload).hexdigest()
        wait_for(lambda: server.active_sessions == 0, 5.0, "both sessions to end")
    events = log.pull()
    first = next(e.session for e in events if type(e).__name__ == "TransferStarted")
    mine = [e for e in events if getattr(e, "session", None) == first]
    strays = [e for e in mine if isinstance(e, PacketReceived) and e.note is Note.STRAY]
    assert [e.packet for e in strays] == [Ack(BLOCKS // 2)]
    sent = [e.packet.block for e in mine if isinstance(e, PacketSent) and isinstance(e.packet, Data)]
    assert sent == list(range(1, BLOCKS + 2))


def _data(sock: socket.socket, n: int) -> tuple[bytes, tuple]:
    """DATA ``n`` from ``sock``'s server, past any copy of an earlier block it sent again (a slow
    machine may keep the test from answering within the timeout)."""
    while True:
        raw, tid = sock.recvfrom(600)
        got = struct.unpack("!HH", raw[:4])
        if got != (3, n) and got[0] == 3 and got[1] < n:
            continue
        assert got == (3, n), (n, got)
        return raw, tid


def test_a_client_that_falls_silent_mid_run_beside_another_is_retransmitted_to(tmp_path: Path) -> None:
    """With two sessions in steady turns, the server's look at its timers leaves a session's turns out
    while nothing of it can fall due (Session.quiet_until); once its client stops answering, the look
    settles it and the block in flight goes again, as it would have without steady turns."""
    blocks = 4000
    (tmp_path / "f").write_bytes(os.urandom(512 * blocks + 7))
    quick = Timing(initial_timeout=0.2, min_timeout=0.2, adaptive=False, dally=0.0)
    config = ServerConfig(tmp_path, bind=(LOOP,), port=0, timing=quick, busy_poll=0.0)
    with TftpServer(config, EventBus()) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        port = server.addresses[0][1]
        for sock in (a, b):
            sock.settimeout(5)
            sock.sendto(_rrq("f"), (LOOP, port))
        tids: dict[socket.socket, tuple] = {}
        silent_at = 100  # well into both sessions' steady turns
        for n in range(1, silent_at + 1):
            for sock in (a, b):
                _, tids[sock] = _data(sock, n)
                sock.sendto(struct.pack("!HH", 4, n), tids[sock])
        in_flight, _ = _data(a, silent_at + 1)  # a says nothing more
        a.setblocking(False)
        again: bytes | None = None
        n = silent_at + 1
        deadline = time.monotonic() + 10
        while again is None and time.monotonic() < deadline:
            if n <= blocks:  # b goes on, and keeps the server's loop and its looks at the timers busy
                _data(b, n)
                b.sendto(struct.pack("!HH", 4, n), tids[b])
                n += 1
            else:
                a.settimeout(5)
            try:
                again, _ = a.recvfrom(600)
            except (BlockingIOError, TimeoutError):
                pass
        assert again == in_flight  # the block in flight, sent again


class _LateTwin:
    """A twin whose peer sends once more just before it closes (after the last read of it): the race
    of a datagram that comes between the twin's last read and its close."""

    def __init__(self, twin: socket.socket, late: object) -> None:
        self._twin, self._late = twin, late

    def __getattr__(self, name: str) -> object:
        return getattr(self._twin, name)

    def close(self) -> None:
        self._late()  # type: ignore[operator]
        self._twin.close()


@pytest.mark.parametrize("family, host", [(socket.AF_INET, LOOP), (socket.AF_INET6, "::1")])
def test_nothing_the_peer_sends_is_lost_as_a_twin_closes(family: int, host: str) -> None:
    """engine/turns.py closes a run's twin connected to itself first: what it held comes back in order,
    and what the peer sends after its last read reaches the transfer's socket instead of vanishing."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock, socket.socket(family, socket.SOCK_DGRAM) as peer:
        sock.bind((host, 0))
        peer.bind((host, 0))
        address, them = sock.getsockname(), peer.getsockname()[:2]
        twin = turns._twin(sock, them, 1.0)
        assert twin is not None
        peer.sendto(b"early", address)
        wait_for(lambda: _queued(twin), 5.0, "the twin to hold the early datagram")
        held = turns._retire(_LateTwin(twin, lambda: peer.sendto(b"late", address)), them)  # type: ignore[arg-type]
        assert held == [(b"early", them)]
        sock.settimeout(5)
        raw, source = sock.recvfrom(100)
        assert (raw, source[:2]) == (b"late", them)


def _queued(sock: socket.socket) -> bool:
    try:
        sock.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    return True
