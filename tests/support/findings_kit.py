"""Shared pieces of the findings tests (no tests here): our client run against anything, our server
with a log, and tiny hand-written peers on raw sockets that misbehave on purpose.

Every wait is bounded and waits on a condition; everything runs on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.interop import EventLog, running_server
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.engine.impair import parse_impair
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.findings import Analyzer, Finding, analyze
from tftpdiag.protocol.events import Completed, Event, Failed
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    OAck,
    Opcode,
    Packet,
    ProtocolError,
    Request,
    decode,
    encode,
)
from tftpdiag.protocol.timer import Timing

# Short timers: a failure takes well under a second and a half.
FAST = Timing(initial_timeout=0.2, retries=2, dally=0.05)
SERVER_FAST = Timing(initial_timeout=0.2, retries=2, dally=0.05)
# For runs that must be clean: no retransmission even when the machine is busy with other test suites.
CALM = Timing(initial_timeout=1.0, min_timeout=0.5, retries=3, dally=0.05)
LOOP = "127.0.0.1"


@dataclass
class Run:
    """One client transfer and what came of it."""

    outcome: ClientOutcome
    events: list[Event]
    findings: list[Finding]

    @property
    def ids(self) -> set[str]:
        return {f.id for f in self.findings}

    def get(self, finding_id: str) -> Finding:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise AssertionError(f"no {finding_id} among {self.describe()}")

    def describe(self) -> str:
        return "\n".join(f"  [{f.severity}] {f.id}: {f.summary}" for f in self.findings) or "  (none)"


def ids(findings: list[Finding]) -> set[str]:
    return {f.id for f in findings}


def above_info(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity != "info"]


def show(findings: list[Finding]) -> str:
    return "\n".join(f"  [{f.severity}] {f.id}: {f.summary}" for f in findings) or "  (none)"


def client_run(port: int, filename: str, *, host: str = LOOP, options: RequestedOptions = RequestedOptions(),
               mode: str = "octet", timing: Timing = CALM, impair: str | None = None, upload: bool = False,
               source: Path | None = None, output: Path | None = None, deadline: float | None = 20.0) -> Run:
    """Run our client on this thread to the end (dally included) and analyse its events. The default
    timers are calm (no resend on a busy machine); pass FAST where the run is meant to time out."""
    bus = EventBus()
    log = EventLog(bus)
    request = ClientRequest(host=host, filename=filename, port=port, upload=upload, mode=mode, options=options,
                            timing=timing, source=source, output=output, deadline=deadline,
                            impair=parse_impair(impair) if impair else None)
    outcome = ClientTransfer(request, bus).run()
    events = list(log.pull())
    log.close()
    return Run(outcome, events, analyze(events))


def server_config(root: Path, host: str = LOOP, **kw: object) -> ServerConfig:
    kw.setdefault("timing", CALM)  # SERVER_FAST where the server is meant to time out
    return ServerConfig(root=root, bind=(host,), port=0, **kw)  # type: ignore[arg-type]


@contextmanager
def our_server(root: Path, host: str = LOOP, **kw: object) -> Iterator[tuple[TftpServer, EventLog, int]]:
    with running_server(server_config(root, host, **kw)) as (server, log):
        yield server, log, server.addresses[0][1]


def server_findings(log: EventLog, sessions: int = 1, timeout: float = 5.0) -> list[Finding]:
    """Wait until ``sessions`` server sessions have ended (or been refused), then analyse the log."""
    deadline = time.monotonic() + timeout
    while True:
        events = log.pull()
        ended = {e.session for e in events if isinstance(e, (Completed, Failed))} | \
            {r.session for r in log.refusals()}
        if len(ended) >= sessions:
            return analyze(list(events))
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(ended)} of {sessions} server sessions ended within {timeout}s")
        time.sleep(0.01)


# -- raw sockets -----------------------------------------------------------------------------------


def udp(host: str = LOOP) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def send(sock: socket.socket, packet: Packet, addr: tuple[str, int]) -> None:
    sock.sendto(encode(packet), addr)


def recv(sock: socket.socket, timeout: float = 2.0) -> tuple[Packet | None, tuple[str, int]] | None:
    sock.settimeout(timeout)
    try:
        raw, addr = sock.recvfrom(65536)
    except (TimeoutError, OSError):
        return None
    try:
        return decode(raw), addr
    except ProtocolError:
        return None, addr


def rrq(name: str, *options: tuple[str, str], mode: str = "octet") -> Request:
    return Request(Opcode.RRQ, name, mode, tuple(options))


def wrq(name: str, *options: tuple[str, str], mode: str = "octet") -> Request:
    return Request(Opcode.WRQ, name, mode, tuple(options))


Script = Callable[[socket.socket, Request, tuple[str, int]], None]


class FakeServer:
    """A one-shot TFTP 'server' on raw sockets: receives one request on its port and hands it to
    ``script(listen_socket, request, client)``, which answers as it likes (from other sockets too)."""

    def __init__(self, script: Script, host: str = LOOP, timeout: float = 10.0) -> None:
        self.sock = udp(host)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.timeout = timeout
        self.error: BaseException | None = None
        self.received: list[Packet | None] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            got = recv(self.sock, self.timeout)
            if got is None:
                return
            packet, client = got
            assert isinstance(packet, Request), packet
            self.script(self.sock, packet, client)
        except BaseException as exc:  # reported by the test through stop()
            self.error = exc

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(self.timeout)
        self.sock.close()
        if self.error is not None and exc[0] is None:
            raise self.error


def serve_blocks(sock: socket.socket, client: tuple[str, int], data: bytes, blksize: int = 512,
                 first_block: int = 1, timeout: float = 1.0) -> None:
    """Send ``data`` in lock-step from ``sock`` as blocks ``first_block``, ... (a correct sender: it
    resends only on its own timeout)."""
    blocks = [data[i:i + blksize] for i in range(0, len(data) + 1, blksize)]
    if len(blocks[-1]) == blksize:
        blocks.append(b"")
    for n, payload in enumerate(blocks, start=first_block):
        for _ in range(4):
            send(sock, Data(n & 0xFFFF, payload), client)
            got = recv(sock, timeout)
            if got is not None and isinstance(got[0], Ack) and got[0].block == n & 0xFFFF:
                break
        else:
            return


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def live_analyzer(bus: EventBus, stall_after: float) -> tuple[Analyzer, Callable[[], list[Finding]]]:
    """An analyzer fed live from ``bus``; the returned pump drains, feeds and ticks once."""
    analyzer = Analyzer(stall_after=stall_after)
    sub = bus.subscribe()

    def pump() -> list[Finding]:
        out = analyzer.feed(sub.drain())
        out += analyzer.tick(time.time())
        return out

    return analyzer, pump


__all__ = [
    "FAST",
    "LOOP",
    "SERVER_FAST",
    "Ack",
    "Data",
    "Error",
    "FakeServer",
    "OAck",
    "Run",
    "ServerPolicy",
    "above_info",
    "client_run",
    "field",
    "ids",
    "live_analyzer",
    "our_server",
    "recv",
    "rrq",
    "send",
    "serve_blocks",
    "server_config",
    "server_findings",
    "show",
    "udp",
    "wait_for",
    "wrq",
]
