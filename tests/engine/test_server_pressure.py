"""Our server under pressure from requests that cost it work but bring nothing back: floods of
requests that never acknowledge (from hundreds of loopback addresses, or forged with one victim's
address), and a trickle of requests for missing names in a big folder while a real download runs.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket bound to 127.0.x.y stands for a
client on another machine, or for a forged source address."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.support.interop import random_bytes, running_server
from tests.support.peers import wait_until
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig
from tftpdiag.protocol.events import Failed, Reason, RequestRefused
from tftpdiag.protocol.timer import Timing

pytestmark = pytest.mark.timeout(90)

FILE = random_bytes(20_000, 3)
CLIENT_TIMING = Timing(initial_timeout=0.5, retries=3, dally=0.0)


def rrq(name: str) -> bytes:
    return struct.pack("!H", 1) + name.encode() + b"\0octet\0"


@contextmanager
def silent_clients(addresses: list[str], port: int, name: str = "file.bin") -> Iterator[list[socket.socket]]:
    """One request from each address, and never an answer. The sockets stay open, so the server's
    retransmissions are taken in (and ignored) instead of drawing ICMP port unreachable."""
    with ExitStack() as stack:
        socks = []
        for host in addresses:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((host, 0))
            sock.sendto(rrq(name), ("127.0.0.1", port))
            socks.append(sock)
        yield socks


def get(port: int, deadline: float = 5.0) -> ClientOutcome:
    return ClientTransfer(ClientRequest("127.0.0.1", "file.bin", port=port, timing=CLIENT_TIMING,
                                        deadline=deadline)).run()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "file.bin").write_bytes(FILE)
    return served


def config(root: Path, **kw: object) -> ServerConfig:
    return ServerConfig(root=root, bind=("127.0.0.1",), port=0, **kw)  # type: ignore[arg-type]


# -- half-open sessions ------------------------------------------------------------------------------

def test_flood_from_hundreds_of_addresses_does_not_lock_a_client_out(root: Path) -> None:
    """300 requests from 300 addresses (127.0.1.1 ...) that never ACK fill a server of 256 sessions.
    Each keeps a silent client a minute; a real client must still be served at once, by the oldest
    half-open session making room (not by waiting in the queue behind sessions that will never end)."""
    addresses = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(300)]
    with running_server(config(root, max_sessions=256)) as (server, log):
        port = server.addresses[0][1]
        with silent_clients(addresses, port):
            # The 44 past the cap wait until the first sessions have had a second to answer, then push
            # out the oldest (the server's loop does both in one step; wait for it to be between steps).
            wait_until(lambda: len([e for e in log.pull() if isinstance(e, (RequestRefused, Failed))])
                       + server.active_sessions >= 300 and server.active_sessions == 256, 10,
                       "the server to take every request")
            started = time.monotonic()
            outcome = get(port)
            took = time.monotonic() - started
            assert outcome.ok, outcome.result
            assert outcome.sha256 is not None
            assert server.active_sessions <= 256
        dropped = [e for e in log.of(Failed) if "dropped to admit a new request" in e.message]
        assert len(dropped) >= 45, "each request past the cap should have made room"
        assert all(e.reason is Reason.TIMEOUT for e in dropped)
        assert not [e for e in log.of(RequestRefused) if e.why == "busy"]
    assert took < 3.0, f"the real download took {took:.1f} s"


def test_forged_requests_with_a_victims_address_do_not_lock_it_out(root: Path) -> None:
    """20 requests from the victim's address (other ports: a forger does not know the real one) fill a
    server of 8 sessions; the victim's own download must still go through, and a session of that
    address that has heard from its client is never the one dropped: half-open sessions give way,
    whatever address they share with real ones."""
    with running_server(config(root, max_sessions=8)) as (server, log):
        port = server.addresses[0][1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as live:
            # A slow but real client: it takes DATA 1, ACKs it, then waits (its session has heard back).
            live.bind(("127.0.0.1", 0))
            live.settimeout(2.0)
            live.sendto(rrq("file.bin"), ("127.0.0.1", port))
            block, tid = live.recvfrom(600)
            assert block[:4] == b"\x00\x03\x00\x01"
            live.sendto(b"\x00\x04\x00\x01", tid)
            assert live.recvfrom(600)[0][:4] == b"\x00\x03\x00\x02"
            with silent_clients(["127.0.0.1"] * 20, port):
                wait_until(lambda: len([e for e in log.pull() if isinstance(e, (RequestRefused, Failed))])
                           + server.active_sessions >= 21, 10, "the server to take every request")
                assert server.active_sessions == 8
                outcome = get(port)
                assert outcome.ok, outcome.result
            live_session = next(e.session for e in log.events if type(e).__name__ == "TransferStarted")
            assert not [e for e in log.of(Failed, live_session)], "the session that had heard back was dropped"
            assert not [e for e in log.of(RequestRefused) if e.why == "busy"]


# -- the hint for a missing name ------------------------------------------------------------------------

BIG = random_bytes(1 << 20, 4)


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """5,000 files in one folder (the most a hint reads), and a 1 MiB image among them."""
    served = tmp_path / "crowded"
    served.mkdir()
    for i in range(5000):
        (served / f"firmware-{i:05d}.bin").touch()
    (served / "image.bin").write_bytes(BIG)
    return served


def download(port: int) -> float:
    started = time.monotonic()
    outcome = ClientTransfer(ClientRequest("127.0.0.1", "image.bin", port=port, deadline=30.0,
                                           timing=Timing(initial_timeout=0.5, retries=5, dally=0.0))).run()
    assert outcome.ok, outcome.result
    return time.monotonic() - started


def test_missing_names_trickling_in_do_not_slow_a_download(crowded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """About 20 requests a second for names that are not there (each a new name, as a device cycling
    through candidates or a scanner sends) while a 1 MiB lock-step download runs. Each refusal goes out
    at once; the spelling comparisons the server makes are bounded (a few searches a second of at most
    a few hundred names, where each request compared all 5,000 names before); and the download takes
    no more than about as long as it does alone."""
    import difflib

    compared = [0]
    real = difflib.get_close_matches

    def counting(word: str, possibilities: object, *args: object, **kw: object) -> list[str]:
        names = list(possibilities)  # type: ignore[call-overload]
        compared[0] += len(names)
        return real(word, names, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(difflib, "get_close_matches", counting)
    with running_server(config(crowded)) as (server, log):
        port = server.addresses[0][1]
        alone = max(download(port) for _ in range(3))
        stop = threading.Event()
        sent, answered = [0], [0]

        def trickle() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.05)
                while not stop.is_set():
                    sock.sendto(rrq(f"firmware-{sent[0]:05d}x.bin"), ("127.0.0.1", port))
                    sent[0] += 1
                    try:
                        while sock.recv(600)[:4] == b"\x00\x05\x00\x01":
                            answered[0] += 1
                    except TimeoutError:
                        pass

        thread = threading.Thread(target=trickle, daemon=True)
        started = time.monotonic()
        compared[0] = 0
        thread.start()
        try:
            wait_until(lambda: sent[0] >= 20, 10, "a second of the trickle")  # past the first burst of hints
            crowded_times = [download(port) for _ in range(3)]
            wait_until(lambda: sent[0] >= 50, 10, "more of the trickle")
        finally:
            stop.set()
            thread.join(5)
        elapsed = time.monotonic() - started
        wait_until(lambda: len(log.refusals()) >= sent[0], 5, "every missing name to be refused")
    rate = sent[0] / elapsed
    assert rate >= 10, f"the trickle sent only {rate:.0f} requests a second"
    assert answered[0] >= sent[0] - 2, f"{sent[0]} requests, {answered[0]} ERROR 1 replies"
    budget = server.suggester.burst + server.suggester.rate * elapsed
    assert server.suggester.searches <= budget + 1
    assert compared[0] <= (budget + 1) * 300, f"{compared[0]} names compared in {elapsed:.1f} s"
    assert max(crowded_times) <= 2 * alone + 0.5, f"downloads took {crowded_times} s, at most {alone:.2f} s alone"


def test_hints_are_still_given_and_follow_the_folder(crowded: Path) -> None:
    """Within the budget a missing name still gets its hint, in another case or a close spelling, and a
    folder that changes is read again."""
    with running_server(config(crowded)) as (server, log):
        port = server.addresses[0][1]
        for name in ("FIRMWARE-00042.BIN", "firmwre-00042.bin", "IMAGE.BIN"):
            get_missing(port, name)
        (crowded / "new-image.bin").write_bytes(b"x")
        get_missing(port, "New-Image.bin")
        wait_until(lambda: len(log.refusals()) == 4, 5, "four refusals")
        hints = [e.suggestion for e in log.refusals()]
    assert hints == ["firmware-00042.bin", "firmware-00042.bin", "image.bin", "new-image.bin"]


def get_missing(port: int, name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(rrq(name), ("127.0.0.1", port))
        assert sock.recv(600)[:4] == b"\x00\x05\x00\x01"


def test_hint_budget_is_spent_only_on_new_work(tmp_path: Path) -> None:
    """With the clock in hand: listing a folder and each new spelling search cost one of the budget's
    tokens; a name in another case, and an answer already given, cost nothing; past the budget the
    answer is None (no hint) until time refills it."""
    from tftpdiag.engine.suggest import NameSuggester

    for name in ("pxelinux.0", "boot.img", "kernel.bin"):
        (tmp_path / name).touch()
    hints = NameSuggester(rate=1.0, burst=2.0)
    assert hints.suggest(tmp_path, "PXELINUX.0", 0.0) == "pxelinux.0"  # token 1: the listing
    assert hints.suggest(tmp_path, "Boot.IMG", 0.0) == "boot.img"  # free: same listing, another case
    assert hints.suggest(tmp_path, "kernal.bin", 0.0) == "kernel.bin"  # token 2: a spelling search
    assert hints.suggest(tmp_path, "kernal.bin", 0.1) == "kernel.bin"  # free: remembered
    assert hints.suggest(tmp_path, "bot.img", 0.2) is None  # no token left: no hint, no work
    assert (hints.searches, hints.skipped) == (2, 1)
    assert hints.suggest(tmp_path, "bot.img", 1.5) == "boot.img"  # refilled
    (tmp_path / "new.img").touch()
    os.utime(tmp_path, ns=(0, 10**18))  # the folder changed: read again (a token)
    assert hints.suggest(tmp_path, "NEW.img", 3.0) == "new.img"
    assert hints.searches == 4
    assert hints.suggest(tmp_path, "missing/deeper.bin", 9.0) is None  # no such folder: no error


def test_a_session_whose_answer_is_still_unread_is_not_taken_for_half_open(root: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """In a storm one turn of the server's loop can take longer than the grace a new session has: a
    client's ACK may wait unread on its session's socket. That session has heard back and must not be
    dropped to make room; the new request waits instead. (The loop is driven by hand here, so that the
    ACK is certainly still unread.)"""
    import tftpdiag.engine.server_requests as server_module
    from tftpdiag.engine.server import TftpServer

    monkeypatch.setattr(server_module, "_HALF_OPEN_GRACE", 0.0)
    server = TftpServer(config(root, max_sessions=1))
    server.bind()
    listener = server.listeners[0]
    port = listener.local[1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            a.bind(("127.0.0.1", 0))
            a.settimeout(5)
            a.sendto(rrq("file.bin"), ("127.0.0.1", port))
            wait_until(lambda: server_module._waiting_datagram(listener.sock), 5, "the request to arrive")
            server._read_listener(listener)
            assert server.active_sessions == 1
            data, tid = a.recvfrom(600)
            assert data[:4] == b"\x00\x03\x00\x01"
            a.sendto(b"\x00\x04\x00\x01", tid)  # A answers; the server does not read it yet
            b.bind(("127.0.0.1", 0))
            b.sendto(rrq("file.bin"), ("127.0.0.1", port))
            wait_until(lambda: server_module._waiting_datagram(listener.sock), 5, "the second request to arrive")
            server._read_listener(listener)
            (session,) = server._sessions.values()
            assert session.client == a.getsockname() and session.heard, "A's session was dropped"
            assert server.queued_total == 1  # B waits for a session to end
            assert a.recvfrom(600)[0][:4] == b"\x00\x03\x00\x02"  # and A's transfer went on
    finally:
        server.stop()
        server._shutdown()
