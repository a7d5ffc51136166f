"""The child of a transfer run apart packs its events in the engine thread's own waits (engine/apart.py):
a thread of its own packing them held the interpreter lock the engine wanted back after each system
call, and a windowed transfer in the view took twice its headless time."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from tftpdiag.engine import apart, placement
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
    monkeypatch.setattr(placement, "_CPUS", [])
    monkeypatch.setattr(apart.os, "sched_getaffinity", lambda pid: cpus)
    assert placement.shared_cpu() == shared


def test_a_rerun_in_the_view_shares_the_cpu_as_its_first_transfer_did(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view pins itself for its first transfer; judged by its affinity then, a rerun found one CPU,
    and its transfer ran pinned without counting the view's frames out of its wait for a CPU."""
    monkeypatch.setattr(placement, "_CPUS", [])
    affinity = [{0, 1}]
    monkeypatch.setattr(apart.os, "sched_getaffinity", lambda pid: affinity[0])
    assert placement.shared_cpu() == 1
    affinity[0] = {1}  # pinned for the first transfer (placement._pin)
    assert placement.shared_cpu() == 1


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


def test_the_transfer_s_process_leaves_sigterm_and_sighup_to_the_view(tmp_path: Path) -> None:
    """A closed terminal sends SIGHUP to the whole process group, a service manager SIGTERM: the view
    cancels its transfer then (cli.main), and the child, killed by them, would leave the download's
    temporary file and the server untold. It ignores them as it ignores Ctrl-C."""
    import signal
    import socket

    from tftpdiag.engine.client import ClientRequest

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        remote = apart.RemoteTransfer.create(request, EventBus()).prepare()
        assert remote._process is not None and remote._process.pid is not None
        remote.start()
        listener.settimeout(20)
        listener.recvfrom(100)  # the request: the transfer runs
        for sig in (signal.SIGTERM, signal.SIGHUP):
            os.kill(remote._process.pid, sig)
        remote.cancel("cancelled by SIGTERM")
        outcome = remote.wait(30)
        remote.join(30)
        assert remote._process.exitcode == 0  # it ended as a cancelled transfer does, not by a signal
        assert outcome is not None and "cancelled by SIGTERM" in str(outcome.result)
        assert os.listdir(tmp_path) == []
    finally:
        listener.close()

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_the_store_is_made_ready_at_the_lowest_priority_in_at_most_a_quarter_of_the_free_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child writes its store's first pages while the view draws its first screens, on the same CPU
    (engine/apart.py _make_ready): at nice 19, in the time the view leaves; never more than a quarter
    of the free space (/tmp may be a small tmpfs)."""
    from types import SimpleNamespace

    seen: list[tuple[int, int]] = []

    class Store:
        path = str(tmp_path / "d.bin")

        def make_ready(self, budget: int) -> None:
            seen.append((os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), budget))

    for free_blocks in (1000, 1 << 30):
        monkeypatch.setattr(apart.os, "statvfs", lambda path, n=free_blocks: SimpleNamespace(f_bavail=n, f_frsize=4096))
        thread = threading.Thread(target=apart._make_ready, args=(Store(),))
        thread.start()
        thread.join(10)
    assert seen == [(apart._READER_NICE, 1000 * 4096 // 4), (apart._READER_NICE, apart._READY_AHEAD)]


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
    monkeypatch.setattr(placement, "_CPUS", [{0, 1}])
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


STAT = """cpu  900 0 300 5000 20 0 10 7 0 0
cpu0 400 0 100 2500 10 0 5 3 0 0
cpu1 500 0 200 2500 10 0 5 4 0 0
intr 12345 0 0
procs_running 3
"""


def test_a_cpu_s_idle_and_all_ticks_come_from_its_own_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Idle counts iowait; steal (the 8th field) is not this machine's time and is left out of both."""
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    monkeypatch.setattr(placement, "_PROC_STAT", str(stat))
    assert placement._cpu_ticks({0}) == (2510, 3015)
    assert placement._cpu_ticks({0, 1}) == (5020, 6230)
    assert placement._cpu_ticks({2}) is None  # not a CPU of this machine: nothing to judge by
    monkeypatch.setattr(placement, "_PROC_STAT", str(tmp_path / "absent"))
    assert placement._cpu_ticks({0}) is None


@pytest.mark.parametrize(("later", "own", "child", "busy"), [
    ((1010, 1200), 5.0, 0.0, True),     # 190 busy ticks, 5 its own, of 100 a CPU: a program of its own runs
    ((1150, 1200), 5.0, 0.0, False),    # 50 busy, 5 its own: others used 45, under half a CPU
    ((1010, 1200), 50.0, 0.5, True),    # 100 of the 190 its own (drawing, its transfer getting ready): others 90
    ((1010, 1200), 50.0, 1.0, False),   # 150 of the 190 its own, 100 of them its transfer's (1 s)
    ((1000, 1008), 0.0, 0.0, False),    # 4 ticks a CPU (40 ms): too short a span to say
])
def test_other_programs_are_busy_when_they_used_more_than_half_a_cpu(
        monkeypatch: pytest.MonkeyPatch, later: tuple[int, int], own: float, child: float, busy: bool) -> None:
    """Over both CPUs, less this process's own CPU and its transfer's process's: wherever the
    CPU-bound program ran (a rerun is judged over a span in which the view was not pinned)."""
    monkeypatch.setattr(placement, "_CPUS", [{0, 1}])
    monkeypatch.setattr(placement, "_TICKS_PER_S", 100)
    asked: list[set[int]] = []
    ticks = iter([(1000, 1000), later])

    def cpu_ticks(cpus: set[int]) -> tuple[int, int]:
        asked.append(cpus)
        return next(ticks)

    owns = iter([0.0, own])
    monkeypatch.setattr(placement, "_cpu_ticks", cpu_ticks)
    monkeypatch.setattr(placement, "_own_ticks", lambda: next(owns))
    monkeypatch.setattr(placement, "_MARK", [])
    assert not placement._others_busy(child)  # no mark yet: nothing to judge by
    placement._mark()
    assert placement._others_busy(child) is busy
    assert asked == [{0, 1}, {0, 1}]


def test_own_ticks_count_what_this_process_uses() -> None:
    import time

    before = placement._own_ticks()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert placement._own_ticks() - before >= 0.25 * placement._TICKS_PER_S  # its 0.3 s of CPU, in ticks


def _pinned_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                  busy: bool) -> tuple[int, list[tuple[int, set[int]]], list[tuple[str, object]]]:
    """Prepare and start a pinned transfer with the other CPU judged ``busy``, then cancel it (its
    "server" never answers); the child's pid, the affinities set and the messages sent to the child."""
    import pickle
    import socket

    from tftpdiag.engine.client import ClientRequest

    calls: list[tuple[int, set[int]]] = []
    sent: list[tuple[str, object]] = []
    monkeypatch.setattr(placement, "_CPUS", [{0, 1}])
    monkeypatch.setattr(apart.os, "sched_setaffinity", lambda tid, cpus: calls.append((tid, set(cpus))))
    monkeypatch.setattr(placement, "_others_busy", lambda child_cpu: busy)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        remote = apart.RemoteTransfer.create(request, EventBus()).prepare()
        assert remote._conn is not None
        conn, send = remote._conn, remote._conn.send_bytes

        def recorded(blob: bytes) -> None:
            sent.append(pickle.loads(blob))
            send(blob)

        monkeypatch.setattr(conn, "send_bytes", recorded)
        remote.start()
        remote.cancel()
        remote.join(30)
        assert not remote._process.is_alive()
    finally:
        listener.close()
    return remote._process.pid, calls, sent


def test_beside_a_busy_cpu_the_view_moves_off_its_transfer_s_cpu(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A CPU-bound program beside: the view's frames, pinned with the transfer, came out of the
    transfer's time (1.65x headless against 1.17x moved, engine/apart.py _BUSY). The transfer's
    process may then run anywhere, as a headless probe's engine does, and is told the view no longer
    shares its CPU, so the view's CPU time is no longer taken out of its wait for a CPU."""
    child, calls, sent = _pinned_start(monkeypatch, tmp_path, busy=True)
    view = threading.get_native_id()
    moved = calls.index((view, {0}))
    assert all(cpus == {1} for _, cpus in calls[:moved])  # pinned with the transfer first
    assert (view, {0, 1}) in calls[moved:]  # and every CPU back once it ended
    assert [cpus for tid, cpus in calls if tid == child] == [{1}, {0, 1}]  # then let go anywhere, as headless
    assert sent[0] == ("go", False)


def test_beside_an_idle_cpu_the_view_stays_with_its_transfer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    child, calls, sent = _pinned_start(monkeypatch, tmp_path, busy=False)
    view = threading.get_native_id()
    assert (view, {0}) not in calls
    assert (child, {1}) in calls and (view, {1}) in calls and (view, {0, 1}) in calls  # pinned, then freed
    assert sent[0] == ("go", True)


def test_a_rerun_judges_the_other_cpu_from_the_end_of_the_last_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun is made ready and started at once: judged from its own start there would be no span."""
    monkeypatch.setattr(placement, "_CPUS", [{0, 1}])
    monkeypatch.setattr(apart.os, "sched_setaffinity", lambda tid, cpus: None)
    monkeypatch.setattr(placement, "_cpu_ticks", lambda cpus: (7, 42))
    monkeypatch.setattr(placement, "_own_ticks", lambda: 3.0)
    monkeypatch.setattr(placement, "_MARK", [(0, 0, 0.0)])
    monkeypatch.setattr(placement, "_PINNED", [1])
    placement.pinned_transfer_ended()
    assert placement._MARK == [(7, 42, 3.0)]


class _Conn:
    """The child's end of the pipe: the view's messages in, what the child sends kept."""

    def __init__(self, *messages: tuple[str, object]) -> None:
        import pickle

        self.incoming = [pickle.dumps(m) for m in messages]
        self.sent: list[bytes] = []

    def recv_bytes(self) -> bytes:
        if not self.incoming:
            raise EOFError
        return self.incoming.pop(0)

    def send_bytes(self, blob: bytes) -> None:
        self.sent.append(blob)


@pytest.mark.parametrize(("shares", "counted_out"), [(False, None), (True, 4242)])
def test_a_child_told_the_view_moved_away_counts_its_cpu_time_as_contention_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shares: bool, counted_out: int | None) -> None:
    """While the view shares the transfer's CPU, its CPU time is taken out of the transfer's wait for a
    CPU (cpu_wait.share_cpu_with); once it has moved to the busy CPU, a wait for this one is contention."""
    import gc
    import pickle
    import socket

    from tftpdiag.engine import cpu_wait
    from tftpdiag.engine.client import ClientRequest

    monkeypatch.setattr(cpu_wait, "_SHARED_WITH", 4242)  # as _child set it: the view's pid
    monkeypatch.setattr(sys, "setswitchinterval", lambda interval: None)  # the test process's own, kept
    monkeypatch.setattr(gc, "set_threshold", lambda *thresholds: None)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    try:
        request = ClientRequest("127.0.0.1", "a.bin", port=listener.getsockname()[1], output=tmp_path / "a.bin")
        conn = _Conn(("go", shares), ("cancel", "done"))
        apart._run_child(request, 1, conn)  # type: ignore[arg-type]
    finally:
        listener.close()
    assert counted_out == cpu_wait._SHARED_WITH
    assert pickle.loads(conn.sent[-1]) == ("joined", None)
