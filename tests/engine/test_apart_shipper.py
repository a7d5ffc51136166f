"""The child of a transfer run apart packs its events in the engine thread's own waits (engine/apart.py):
a thread of its own packing them held the interpreter lock the engine wanted back after each system
call, and a windowed transfer in the view took twice its headless time."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from tftpdiag.engine import apart
from tftpdiag.engine.apart import _Shipper
from tftpdiag.engine.apart_wire import expand, unpack
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.wait_drain import ENOUGH
from tftpdiag.protocol.events import Event, PacketReceived
from tftpdiag.protocol.packets import Data, encode


def blocks(first: int, count: int) -> list[Event]:
    out: list[Event] = []
    for n in range(first, first + count):
        packet = Data(n, bytes([n % 256]) * 512)
        out.append(PacketReceived(1, float(n), ("127.0.0.1", 1), ("127.0.0.1", 2), encode(packet), packet))
    return out


def shipped(batches: list[bytes]) -> list[Event]:
    out: list[Event] = []
    for blob in batches:
        assert blob[:1] == b"E"
        out += expand(unpack(memoryview(blob)[1:]))
    return out


def test_an_engine_wait_packs_and_the_writer_ships_in_order() -> None:
    bus = EventBus()
    shipper = _Shipper(bus, bus.subscribe())
    assert bus.idle_tasks  # the engine's waits call it
    first = blocks(1, ENOUGH)
    bus.publish(first)
    bus.idle()  # packed in the engine's wait
    later = blocks(ENOUGH + 1, 3)
    bus.publish(later)
    assert shipped(shipper.take()) == first  # the few left are the next wait's
    assert shipped(shipper.take()) == later  # no wait since: the writer's
    shipper.close()
    assert not bus.idle_tasks


def test_the_writer_takes_everything_when_asked_and_keeps_the_order() -> None:
    bus = EventBus()
    shipper = _Shipper(bus, bus.subscribe())
    events = blocks(1, 100)
    bus.publish(events[:40])
    bus.idle()
    bus.publish(events[40:])
    assert shipped(shipper.take(everything=True)) == events
    assert shipper.take(everything=True) == []


@pytest.mark.parametrize(("cpus", "shared"), [({0, 1}, 1), ({2, 5}, 5), ({0}, None), ({0, 1, 2, 3}, None)])
def test_the_view_and_its_transfer_share_a_cpu_on_a_machine_of_two(
        monkeypatch: pytest.MonkeyPatch, cpus: set[int], shared: int | None) -> None:
    monkeypatch.setattr(apart, "_CPUS", [])
    monkeypatch.setattr(apart.os, "sched_getaffinity", lambda pid: cpus)
    assert apart.shared_cpu() == shared


def test_a_rerun_in_the_view_shares_the_cpu_as_its_first_transfer_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view pins itself for its first transfer; judged by its affinity then, a rerun found one CPU,
    and its transfer ran pinned without counting the view's frames out of its wait for a CPU."""
    monkeypatch.setattr(apart, "_CPUS", [])
    affinity = [{0, 1}]
    monkeypatch.setattr(apart.os, "sched_getaffinity", lambda pid: affinity[0])
    assert apart.shared_cpu() == 1
    affinity[0] = {1}  # pinned for the first transfer (apart._pin)
    assert apart.shared_cpu() == 1


def test_a_transfer_made_ready_waits_for_start_and_a_cancel_ends_it_unstarted(tmp_path: Path) -> None:
    """The view spawns its transfer's process first and starts the transfer once it has drawn; a view
    closed before then ends the process without a request ever sent."""
    import socket

    from tftpdiag.engine.client import ClientRequest

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        remote = apart.RemoteTransfer.create(request, EventBus()).prepare()
        assert remote._process is not None and remote._process.is_alive()
        remote.cancel()
        remote.join(30)
        assert not remote._process.is_alive() and remote.wait(0) is None and remote.setup_error is None
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.recv(100)  # nothing was ever asked of the "server"
    finally:
        listener.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_the_reader_gives_way_and_the_view_does_not(tmp_path: Path) -> None:
    """The thread that reads the child's batches runs at nice 19 (engine/apart.py _READER_NICE): at the
    default it preempted the transfer it shares a CPU with ~100 times a second. The thread that starts
    the transfer (the view's) keeps its own nice value: it could not get it back."""
    import socket
    import time

    from tftpdiag.engine.client import ClientRequest

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        remote = apart.RemoteTransfer.create(request, EventBus()).prepare()
        try:
            assert remote._reader is not None and remote._reader.native_id is not None
            deadline = time.monotonic() + 10
            while os.getpriority(os.PRIO_PROCESS, remote._reader.native_id) != apart._READER_NICE:
                assert time.monotonic() < deadline, "the reader never lowered its priority"
                time.sleep(0.01)
            assert os.getpriority(os.PRIO_PROCESS, 0) == own
        finally:
            remote.cancel()
            remote.join(30)
    finally:
        listener.close()


def test_the_view_gets_its_cpus_back_when_its_last_pinned_transfer_ends(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On a machine of two the view is pinned to its transfer's CPU (engine/apart.py shared_cpu); kept
    there after the transfer, it could not move away from a CPU-bound program that came to share it."""
    import socket

    from tftpdiag.engine.client import ClientRequest

    calls: list[tuple[int, set[int]]] = []
    monkeypatch.setattr(apart, "_CPUS", [{0, 1}])
    monkeypatch.setattr(apart.os, "sched_setaffinity", lambda tid, cpus: calls.append((tid, set(cpus))))
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        first = apart.RemoteTransfer.create(request, EventBus()).prepare()
        second = apart.RemoteTransfer.create(request, EventBus()).prepare()
        assert calls and all(cpus == {1} for _, cpus in calls)  # both pinned, with the view
        first.cancel()
        first.join(30)
        assert all(cpus == {1} for _, cpus in calls), "one transfer still runs: the view stays with it"
        second.cancel()
        second.join(30)
        assert calls[-1][1] == {0, 1}
        assert (threading.get_native_id(), {0, 1}) in calls  # this thread (the view's) among them
    finally:
        listener.close()
