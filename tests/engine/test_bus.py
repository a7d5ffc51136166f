"""The event bus: lossless and sampled subscriptions, and idle tasks, the engine threads' waits lent to
a reader (the headless summary folds the stream there instead of on its own timer)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from tests.support.findings_kit import FakeServer, recv, send, wait_for
from tests.support.interop import headless_server
from tftpdiag import headless
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.engine.wait_drain import ENOUGH
from tftpdiag.headless import run_client_headless
from tftpdiag.protocol.events import PacketReceived, PacketSent, PeerLocked
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data
from tftpdiag.protocol.timer import Timing


def packet(n: int) -> PacketReceived:
    return PacketReceived(1, float(n), ("127.0.0.1", 1), ("127.0.0.1", 2), b"\x00\x04\x00\x01", Ack(n))


def rare(n: int) -> PeerLocked:
    return PeerLocked(1, float(n), ("127.0.0.1", n), ("127.0.0.1", 69))


def test_a_lossless_subscription_gets_every_event_in_order() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    sent = [packet(n) if n % 3 else rare(n) for n in range(100)]
    for start in range(0, 100, 7):
        bus.publish(sent[start:start + 7])
    assert sub.pending() == 100
    assert sub.drain(30) == sent[:30]  # a limit takes the oldest first
    assert sub.drain() == sent[30:]
    assert sub.drain() == [] and sub.dropped == 0


def test_a_sampled_subscription_keeps_every_rare_event_and_the_newest_packets() -> None:
    bus = EventBus()
    sub = bus.subscribe(packet_window=3)
    events = [packet(n) if n % 4 else rare(n) for n in range(12)]
    bus.publish(events)
    got = sub.drain()
    assert got == [rare(0), rare(4), rare(8), packet(9), packet(10), packet(11)]
    assert sub.dropped == 6


def test_a_slow_subscriber_keeps_what_was_published_while_it_slept() -> None:
    bus = EventBus()
    slow = bus.subscribe()
    fast = bus.subscribe()
    for n in range(1000):
        bus.publish([packet(n)])
        assert fast.drain() == [packet(n)]
    assert len(slow.drain()) == 1000  # nobody waited for it, and it lost nothing


def served_file(tmp_path: Path, size: int = 1468 * 300 + 5) -> bytes:
    content = os.urandom(size)
    (tmp_path / "fw.bin").write_bytes(content)
    return content


def windowed(port: int) -> ClientRequest:
    return ClientRequest("127.0.0.1", "fw.bin", port=port, options=RequestedOptions(blksize=1468, windowsize=16))


def test_idle_tasks_run_on_the_engine_threads_while_they_wait_for_their_peer(tmp_path: Path) -> None:
    content = served_file(tmp_path)
    bus = EventBus()
    where: list[str] = []
    bus.on_idle(lambda: where.append(threading.current_thread().name))
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
        transfer = ClientTransfer(windowed(server.addresses[0][1]), bus)
        transfer.start()
        outcome = transfer.wait(30)
        transfer.join(5)
    assert outcome is not None and outcome.sha256 == hashlib.sha256(content).hexdigest()
    assert set(where) == {f"tftp-client-{transfer.session_id}", "tftp-server"}  # never the caller's thread


def test_an_idle_task_that_raises_loses_its_turns_and_the_transfer_goes_on(tmp_path: Path) -> None:
    content = served_file(tmp_path)
    bus = EventBus()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("a bug in a reader")

    bus.on_idle(broken)
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
        outcome = ClientTransfer(windowed(server.addresses[0][1]), bus).run()
    assert outcome.ok and outcome.sha256 == hashlib.sha256(content).hexdigest()
    assert len(calls) == 1 and bus.idle_tasks == ()


# -- the headless fold ------------------------------------------------------------------------------------

def test_the_headless_fold_is_done_in_the_engines_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the reader's own timer as good as stopped, the stream is still folded as it flows: by the
    engine thread, between a window and the next. The summary is the same as ever."""
    content = served_file(tmp_path, 1468 * 2000)
    monkeypatch.setattr(headless, "_TICK", 3600.0)  # the reader's thread wakes only when the transfer ends
    folded_by: dict[str, int] = {}
    fold = headless._Fold._fold

    def spy(self: headless._Fold, events: list) -> None:
        name = threading.current_thread().name
        folded_by[name] = folded_by.get(name, 0) + len(events)
        fold(self, events)

    monkeypatch.setattr(headless._Fold, "_fold", spy)
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        bus = EventBus()
        transfer = ClientTransfer(windowed(server.addresses[0][1]), bus)
        out = io.StringIO()
        outcome, summary = run_client_headless(transfer, bus.subscribe(), json_out=True, extra=lambda o: {},
                                               stdout=out)
    assert outcome.ok and summary["sha256"] == hashlib.sha256(content).hexdigest()
    assert summary["bytes"] == len(content) and summary["packets"]["received"] == 2001 + 1  # each DATA, and the OACK
    engine = folded_by.get(f"tftp-client-{transfer.session_id}", 0)
    total = sum(folded_by.values())
    assert engine > total * 0.9, folded_by  # the main thread found next to nothing left


def test_a_fold_that_fails_in_the_engine_thread_is_raised_in_the_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = EventBus()
    fold = headless._Fold(bus, bus.subscribe())

    def feed(runs: list) -> list:
        raise ValueError("analyzer bug")

    monkeypatch.setattr(fold.analyzer, "feed_runs", feed)
    bus.publish([packet(n) for n in range(ENOUGH)])
    bus.idle()  # the engine carries on
    assert bus.idle_tasks == ()  # and no longer lends its waits to this reader
    with pytest.raises(ValueError, match="analyzer bug"):
        fold()


def test_a_server_folded_in_its_waits_still_reports_each_session(tmp_path: Path) -> None:
    content = served_file(tmp_path, 1468 * 100)
    with headless_server(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), json_out=True) as served:
        for _ in range(3):
            outcome = ClientTransfer(windowed(served.port)).run()
            assert outcome.sha256 == hashlib.sha256(content).hexdigest()
        lines = served.lines(3)
    assert len(lines) == 3 and all('"ok": true' in line and f'"bytes": {len(content)}' in line for line in lines)
    assert served.server.bus.idle_tasks == ()  # the reader's task left with it


def test_a_lone_guarded_idle_task_is_called_directly() -> None:
    """A task that catches its own errors, alone, is what an engine's wait calls; beside another the
    loop that guards the engine from a broken task is back."""
    bus = EventBus()
    calls: list[str] = []

    def guarded() -> None:
        calls.append("guarded")

    def other() -> None:
        calls.append("other")

    bus.on_idle(guarded, guarded=True)
    assert bus.idle is guarded
    bus.on_idle(other)
    bus.idle()
    assert calls == ["guarded", "other"] and bus.idle is not guarded
    bus.remove_idle(other)
    assert bus.idle is guarded
    bus.remove_idle(guarded)
    bus.idle()
    assert calls == ["guarded", "other"] and bus.idle_tasks == ()
    bus.on_idle(other)
    assert bus.idle is not other  # not guarded: called in the loop


def test_a_lock_step_peer_that_stops_answering_leaves_no_event_behind() -> None:
    """While a lock-step peer answers quickly the client hands its events to the bus in batches; once a
    wait runs long, what it holds goes over, though the transfer goes on (here no timeout falls due
    while the server is silent, so nothing new is made to push them out)."""
    bus = EventBus()
    sub = bus.subscribe()
    resume = threading.Event()

    def script(sock, request, client) -> None:
        for n in range(1, 5):
            send(sock, Data(n, bytes(512)), client)
            assert recv(sock) == (Ack(n), client)
        resume.wait(10)  # silent until the test has seen ACK 4 on the bus
        send(sock, Data(5, b"end"), client)
        assert recv(sock) == (Ack(5), client)

    seen: list = []

    def acked_four() -> bool:
        seen.extend(expand(sub.drain()))  # (a lock-step client's packets come in runs: protocol/steady.py)
        return any(isinstance(e, PacketSent) and e.packet == Ack(4) for e in seen)

    with FakeServer(script) as server:
        slow = Timing(initial_timeout=30.0, min_timeout=30.0, max_timeout=30.0, adaptive=False, dally=0.0)
        transfer = ClientTransfer(ClientRequest("127.0.0.1", "f", port=server.port, busy_poll=0.0, timing=slow),
                                  bus).start()
        try:
            wait_for(acked_four, 5.0, "ACK 4 on the bus while the server is silent")
        finally:
            resume.set()
        outcome = transfer.wait(10)
    assert outcome is not None and outcome.ok
