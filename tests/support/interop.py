"""Shared pieces of the interop matrices (tests/test_interop_*.py): our engine's side.

- :class:`EventLog`: a lossless subscription to a bus, with waiting for an event.
- :func:`running_server`: our TftpServer on loopback for one test, stopped even if its worker
  thread hangs (so one server bug cannot take the rest of the test session down with it).
- :func:`headless_server`: the same run as ``tftpdiag serve --no-tui`` does it, printing to a buffer.
- Reference netascii encoders of each peer (what each peer puts on the wire) and an independent
  RFC 764 decoder, written byte by byte so they share no code with tftpdiag.protocol.netascii.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import (
    Completed,
    Event,
    Failed,
    Note,
    PacketReceived,
    PacketSent,
    RequestRefused,
)
from tftpdiag.protocol.packets import Data
from tftpdiag.trace.pcap import Datagram

__all__ = [
    "EventLog",
    "client_capture",
    "files_named",
    "headless_server",
    "netascii_decode",
    "netascii_dnsmasq",
    "netascii_rfc",
    "netascii_text",
    "random_bytes",
    "running_server",
    "sha256",
    "wire_data",
]


def sha256(data: bytes | Path) -> str:
    if isinstance(data, Path):
        data = data.read_bytes()
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class EventLog:
    """Every event published on ``bus`` since this was made (a lossless subscription)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._sub = bus.subscribe()
        self.events: list[Event] = []

    def pull(self) -> list[Event]:
        # Each packet as an event of its own: a lock-step transfer publishes its steady turns' packets in
        # runs (protocol/steady.py), which are the same events in columns.
        self.events.extend(expand(self._sub.drain()))
        return self.events

    def of(self, kind: type, session: int | None = None) -> list[Any]:
        return [e for e in self.pull() if isinstance(e, kind) and (session is None or e.session == session)]

    def wait(
        self,
        pred: Callable[[Event], bool],
        timeout: float = 5.0,
        what: str = "an event",
    ) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.pull():
                if pred(event):
                    return event
            if time.monotonic() > deadline:
                tail = "\n".join(repr(e)[:200] for e in self.events[-15:])
                raise AssertionError(f"no {what} within {timeout}s; last events:\n{tail}")
            time.sleep(0.01)

    def wait_end(self, session: int | None = None, timeout: float = 5.0) -> Completed | Failed:
        """The Completed or Failed event of ``session`` (or of the first session that ends)."""
        event = self.wait(
            lambda e: isinstance(e, (Completed, Failed)) and (session is None or e.session == session),
            timeout,
            f"end of session {session}" if session else "end of a session",
        )
        assert isinstance(event, (Completed, Failed))
        return event

    def refusals(self) -> list[RequestRefused]:
        return self.of(RequestRefused)

    def close(self) -> None:
        self._sub.close()
        self.events.clear()


@contextmanager
def running_server(config: ServerConfig) -> Iterator[tuple[TftpServer, EventLog]]:
    """Our server started for one test, with a log of its events.

    If its worker thread has not ended 3 s after stop(), it is stuck (a server bug): we break its
    loop from the outside so the rest of the session runs, and fail the test that used it.
    """
    server = TftpServer(config)
    log = EventLog(server.bus)
    server.start()
    hung = False
    try:
        yield server, log
    finally:
        server.stop(timeout=3.0)
        thread = server._thread
        if thread is not None and thread.is_alive():
            hung = True
            log.close()  # stop collecting whatever the stuck loop publishes

            def _break_loop(*_: object, **__: object) -> None:
                raise _ServerHung("server worker thread did not stop; broken out by the test harness")

            # The spin seen so far: TftpServer._recv retrying recvfrom on a socket _socket_error closed.
            server._socket_error = _break_loop  # type: ignore[method-assign]
            thread.join(5.0)
        log.close()
    if hung:
        raise AssertionError("our server's worker thread did not stop within 3 s of stop(): its loop is stuck")


class HeadlessServer:
    def __init__(self, server: TftpServer, out: io.StringIO) -> None:
        self.server = server
        self.out = out
        self.port = server.addresses[0][1]

    def lines(self, count: int, timeout: float = 10.0) -> list[str]:
        """The first ``count`` lines it printed, once it has (a client is done when it has sent its
        final ACK; the server reports the session when that ACK has reached it)."""
        deadline = time.monotonic() + timeout
        while self.out.getvalue().count("\n") < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.out.getvalue().splitlines()[:count]


@contextmanager
def headless_server(config: ServerConfig, *, json_out: bool = False) -> Iterator[HeadlessServer]:
    """Our server run by run_server_headless on a thread, as ``serve --no-tui`` runs it; stopped after."""
    from tftpdiag.headless import run_server_headless

    bus = EventBus()
    server = TftpServer(config, bus)
    server.bind()
    stop = threading.Event()
    out = io.StringIO()
    runner = threading.Thread(target=run_server_headless, args=(server, bus.subscribe()),
                              kwargs={"json_out": json_out, "stop": stop, "stdout": out})
    runner.start()
    try:
        yield HeadlessServer(server, out)
    finally:
        stop.set()
        runner.join(10)


class _ServerHung(BaseException):
    """Raised inside a stuck server thread to end it (BaseException: no `except Exception` swallows it)."""


def _quiet_hung_thread(args: threading.ExceptHookArgs) -> None:
    if isinstance(args.exc_value, _ServerHung):
        return
    _previous_hook(args)


_previous_hook = threading.excepthook
threading.excepthook = _quiet_hung_thread


# ------------------------------------------------------------------------ netascii


def netascii_text(size: int = 3000, seed: int = 7) -> bytes:
    """Text that exercises every netascii edge: CR LF, lone LF, lone CR, CR CR LF, CR NUL, CR at the
    very end, NUL bytes, runs of line ends; random so CRs land on block boundaries too."""
    rng = random.Random(seed)
    pieces = [
        b"a",
        b"bc",
        b"\n",
        b"\r\n",
        b"\r",
        b"\r\r\n",
        b"\n\n",
        b"\r\0",
        b"\0",
        b"xyz ",
    ]
    head = b"line1\nline2\r\nlone\rcr\n\n\r\r\nnul\0x\r\0y\n"
    out = bytearray(head)
    while len(out) < size:
        out += rng.choice(pieces)
    return bytes(out) + b"\r"


def netascii_rfc(text: bytes) -> bytes:
    """RFC 764 as tftpd-hpa, atftpd and tftp-hpa send it: LF -> CR LF, CR -> CR NUL."""
    out = bytearray()
    for byte in text:
        if byte == 0x0A:
            out += b"\r\n"
        elif byte == 0x0D:
            out += b"\r\0"
        else:
            out.append(byte)
    return bytes(out)


def netascii_dnsmasq(text: bytes) -> bytes:
    """dnsmasq 2.90: LF -> CR LF (also after a CR already there); a CR goes as it is."""
    out = bytearray()
    for byte in text:
        if byte == 0x0A:
            out += b"\r\n"
        else:
            out.append(byte)
    return bytes(out)


def netascii_decode(wire: bytes) -> bytes:
    """RFC 764 back to local text: CR LF -> LF, CR NUL -> CR; any other CR is kept as it came."""
    out = bytearray()
    i = 0
    while i < len(wire):
        byte = wire[i]
        if byte == 0x0D and i + 1 < len(wire) and wire[i + 1] in (0x0A, 0x00):
            out.append(0x0A if wire[i + 1] == 0x0A else 0x0D)
            i += 2
            continue
        out.append(byte)
        i += 1
    return bytes(out)


def wire_data(log: EventLog, session: int | None = None) -> bytes:
    """The payloads of the DATA packets received in order (duplicates left out)."""
    return b"".join(
        e.packet.payload for e in log.of(PacketReceived, session) if isinstance(e.packet, Data) and e.note is Note.NONE
    )


def files_named(directory: Path, needle: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if needle in name)


def client_capture(events: Iterable[Event]) -> list[Datagram]:
    """What a capture on the client's host holds of these events (what it sent and received; no ICMP)."""
    out = []
    for e in events:
        if isinstance(e, PacketSent):
            out.append(Datagram(e.time, e.local, e.peer, e.raw, len(e.raw)))
        elif isinstance(e, PacketReceived):
            out.append(Datagram(e.time, e.peer, e.local, e.raw, len(e.raw)))
    return out
