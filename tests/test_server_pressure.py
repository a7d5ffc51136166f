"""Our server under pressure from requests that cost it work but bring nothing back: floods of
requests that never acknowledge (from hundreds of loopback addresses, or forged with one victim's
address), and a trickle of requests for missing names in a big folder while a real download runs.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a socket bound to 127.0.x.y stands for a
client on another machine, or for a forged source address."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.interop import random_bytes, running_server
from tests.peers import wait_until
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig
from tftpdiag.protocol.events import Failed, Reason, RequestRefused
from tftpdiag.protocol.session import Timing

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
    """300 requests from 300 addresses (127.0.1.1 ...) that never ACK fill the 256 sessions (the default
    cap). Each keeps a silent client a minute; a real client must still be served at once, by the
    oldest half-open session making room."""
    addresses = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(300)]
    with running_server(config(root)) as (server, log):
        port = server.addresses[0][1]
        assert server.config.max_sessions == 256
        with silent_clients(addresses, port):
            wait_until(lambda: len([e for e in log.pull() if isinstance(e, (RequestRefused, Failed))])
                       + server.active_sessions >= 300, 10, "the server to take every request")
            assert server.active_sessions == 256
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
    """20 requests from the victim's address (other ports: a forger does not know the real one) pass
    the 16-per-address cap; the victim's own download must still go through, and a session of that
    address that has heard from its client is never the one dropped."""
    with running_server(config(root)) as (server, log):
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
                assert server.active_sessions == 16
                outcome = get(port)
                assert outcome.ok, outcome.result
            live_session = next(e.session for e in log.events if type(e).__name__ == "TransferStarted")
            assert not [e for e in log.of(Failed, live_session)], "the session that had heard back was dropped"
            assert not [e for e in log.of(RequestRefused) if e.why == "busy"]
