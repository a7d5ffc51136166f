"""A client transfer run in its own process, its events streamed back to this one's bus.

Why: the full-screen view folds every packet into the session's record and redraws; in one interpreter
that work holds the interpreter lock the transfer's thread needs for its next datagram, and a fast
transfer ran at a third of its headless speed. Apart, the transfer has an interpreter to itself; this
process only reads its events (a reader thread unpickles batches from a pipe and publishes them on the
local bus), so every view, the findings and the saved trace read the same events as before, and a view
that falls behind delays nothing but itself.

The child publishes on its own bus, its DATA and ACK already in columns (ClientTransfer's ``runs``,
protocol/runs.py: a windowed download apart 0.345 -> 0.301 s, lock-step 1.502 -> 1.434 s, measured with
benchmarks/apart_cost.py). Its events are packed for the pipe (engine/apart_wire.py) in the
engine thread's own waits, as the headless summary folds them (:meth:`EventBus.on_idle`): packed on
a thread of their own, every 10 ms, the packing held the interpreter lock while the engine came back
from each system call wanting it, and a windowed transfer in the view took twice its headless time. A
thread there writes what is packed to the pipe (and packs what the waits left, once they stop: the
transfer ended, or goes too slowly to fill a batch). The engine thread never writes to the pipe, so a
slow reader here never blocks it. Control goes the other way on the same pipe: "cancel".

:class:`RemoteTransfer` has the part of :class:`ClientTransfer`'s interface the views use (request,
session_id, start, cancel, wait, join).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import pickle
import resource
import shutil
import socket
import sys
import tempfile
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from tftpdiag.engine.apart_wire import DatagramStore, pack, unpack
from tftpdiag.engine.bus import EventBus, Subscription
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer, TransferSetupError
from tftpdiag.engine.net import ProcessCpu
from tftpdiag.engine.scratch import scratch_prefix
from tftpdiag.engine.wait_drain import WaitDrain
from tftpdiag.protocol.events import Event

__all__ = ["RemoteTransfer"]

_BATCH_EVERY = 0.01  # s between the child's writes to the pipe: ~100 a second, whatever the packet rate
# "spawn": a fresh interpreter. Forking the app's process (threads running, Textual's among them) is
# unsafe, and a rerun happens while the app runs.
_CONTEXT = multiprocessing.get_context("spawn")
_PIPE_BUFFER = 4 << 20  # bytes; Linux caps it at net.core.wmem_max / rmem_max (4 MiB by default)
# The reader thread's nice value (Linux keeps one per thread). Why: it wakes ~100 times a second for
# the child's batches, and on a machine of two CPUs it shares one with the transfer (shared_cpu): at the
# default it preempted the spinning transfer at each wake-up, and the datagram that came meanwhile
# waited. At 19 it runs when that CPU has time, and falls behind while a fast transfer has none, as a
# view may. It ends with the transfer, so nothing else of the view is slowed for good (and a nice value
# cannot be lowered again without privilege: a view niced whole would stay slow under load).
_READER_NICE = 19


def _child(request: ClientRequest, session_id: int, conn: Connection, view: int | None = None,
           store: str | None = None) -> None:
    """The child process. Its stderr is the terminal the view draws on, so nothing may be printed there:
    a crash goes to the parent as text, and Ctrl-C is the parent's to handle (it cancels)."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if view is not None:  # the view shares this process's CPU (see RemoteTransfer.prepare)
        from tftpdiag.engine.net import share_cpu_with

        share_cpu_with(view)
    try:
        _run_child(request, session_id, conn, store)
    except BaseException:  # noqa: BLE001 - reported to the parent, which shows it
        try:
            conn.send_bytes(pickle.dumps(("crashed", traceback.format_exc(limit=8))))
        except OSError:
            pass


def _run_child(request: ClientRequest, session_id: int, conn: Connection, store_path: str | None = None) -> None:
    """Run the transfer, send its events in batches, then its outcome."""
    import gc
    import sys

    from tftpdiag.cli.main import GC_THRESHOLD, GIL_SWITCH_INTERVAL

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as the command's own process sets them
    gc.set_threshold(*GC_THRESHOLD)
    bus = EventBus()
    bus._ids = itertools.count(session_id)  # the session id the parent gave it
    store = None
    if store_path is not None:
        try:
            store = DatagramStore(store_path)
        except OSError:
            pass  # the datagrams cross the pipe instead
    shipper = _Shipper(bus, bus.subscribe(), store)
    try:
        transfer = ClientTransfer(request, bus, runs=True)  # its events cross the pipe in columns
    except TransferSetupError as exc:
        conn.send_bytes(pickle.dumps(("setup-error", str(exc))))
        return
    # Ready; the transfer starts when the view says so (RemoteTransfer.start), once it has drawn. Meanwhile
    # the store's first pages are made, in the time the view leaves (see DatagramStore.make_ready).
    if store is not None:
        threading.Thread(target=_make_ready, args=(store,), daemon=True, name="apart-store").start()
    try:
        kind, shares = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        kind, shares = "cancel", None
    if store is not None:
        store.started()
    if kind != "go":  # the view went (or was closed) before it started this transfer
        transfer.close()
        if store is not None:
            store.finish()
        conn.send_bytes(pickle.dumps(("joined", None)))
        return
    if shares is False:  # the view moved to the other CPU (RemoteTransfer.start): its frames no longer wait here
        from tftpdiag.engine.net import share_cpu_with

        share_cpu_with(None)
    transfer.start()

    def control() -> None:
        try:
            while True:
                kind, value = pickle.loads(conn.recv_bytes())
                if kind == "cancel":
                    transfer.cancel(value)
        except (EOFError, OSError):
            transfer.cancel("the view that started this transfer went away")

    threading.Thread(target=control, daemon=True, name="apart-control").start()
    sent_outcome = False
    try:
        while True:
            outcome = transfer.wait(_BATCH_EVERY)
            for blob in shipper.take(everything=outcome is not None):
                conn.send_bytes(blob)
            if outcome is not None and not sent_outcome:
                conn.send_bytes(pickle.dumps(("outcome", outcome)))
                sent_outcome = True
            if sent_outcome and (transfer._thread is None or not transfer._thread.is_alive()):
                shipper.close()
                for blob in shipper.take(everything=True):  # the dally's events, if any
                    conn.send_bytes(blob)
                if store is not None:
                    store.finish()
                conn.send_bytes(pickle.dumps(("joined", None)))
                return
    except (BrokenPipeError, OSError):
        transfer.cancel("the view that started this transfer went away")


# Bytes of a store made ready before its transfer starts (DatagramStore.make_ready): a transfer of up to
# ~64 MiB (a phone's or a router's image, a kernel and its initrd) overwrites them; a larger one appends
# the rest. What a shorter transfer leaves is cut off when it ends. Never more than a quarter of the free
# space where the store is (/tmp may be a small tmpfs other programs need for that second).
_READY_AHEAD = 64 << 20


def _make_ready(store: DatagramStore) -> None:
    """Make ``store``'s first pages at the lowest priority: only in time the view (drawing its first
    screens, on the same CPU) and every other program leave."""
    _give_way()
    try:
        info = os.statvfs(os.path.dirname(store.path) or ".")
    except OSError:
        return
    store.make_ready(min(_READY_AHEAD, info.f_bavail * info.f_frsize // 4))


_STORES: list[str] = []  # this process's directory of datagram stores, once made


def _store_path() -> str | None:
    """A new file for a child's datagrams (engine/apart_wire.py), in a directory only this user can
    read, removed when this process exits (or, if it is killed, by a later one: engine/scratch.py): the
    runs a view keeps (and its save spool) read them back for as long as it runs. None where no such
    directory can be made (the datagrams then cross)."""
    if not _STORES:
        try:
            _STORES.append(tempfile.mkdtemp(prefix=scratch_prefix("datagrams")))
        except OSError:
            return None
        atexit.register(shutil.rmtree, _STORES[0], True)
    return os.path.join(_STORES[0], f"run-{next(_STORE_NAMES)}.bin")


_STORE_NAMES = itertools.count(1)


_CPUS: list[set[int]] = []  # this process's CPUs before it was first pinned (shared_cpu)


def own_cpus() -> set[int] | None:
    """The CPUs this process may use, as they were before :func:`_pin` kept it to one."""
    if not _CPUS:
        try:
            _CPUS.append(set(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return None
    return _CPUS[0]


def shared_cpu() -> int | None:
    """The CPU the view and its transfer's process share on a machine of two, else None.

    Why: a lock-step transfer against a peer on this machine keeps both ends spinning, one on each
    CPU. The view's frames, landing on either, pushed one end onto the other's CPU, and there the two
    ends preempted each other (15,000 times in one 32 MiB transfer, measured with perf sched): the
    transfer in the view took twice its headless time. Kept together on one CPU, the view and its
    transfer leave the other to the peer. With more CPUs the scheduler has room: nothing is pinned.
    Judged by the CPUs this process had before it was first pinned (:func:`own_cpus`): judged by its
    affinity, a rerun in the same view found one CPU, and its transfer ran pinned without counting the
    view's frames out of its wait for a CPU (net.share_cpu_with), which paused its spinning."""
    cpus = own_cpus()
    return max(cpus) if cpus is not None and len(cpus) == 2 else None


def _pin(child: int, cpu: int) -> None:
    """This process's threads and the child's (threads either starts later inherit it: the child's
    engine and writer threads are started later) on ``cpu``."""
    _set_threads(child, {cpu})
    _set_threads("self", {cpu})


def _set_threads(pid: int | str, cpus: set[int]) -> None:
    """Every thread of the process ``pid`` ("self": this one) on ``cpus``. A refusal (a container's
    cpuset), or a process that has ended, leaves things as the scheduler has them."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)
    except OSError:
        pass


# A CPU-bound program beside the view (a build, a browser tab): the transfer's end and a peer on this
# machine then share one CPU, one waking the other there as they do headless, and the view, pinned with
# them, took every frame's CPU out of the transfer's time: a lock-step download in the view took 1.65x
# its headless time beside one CPU-bound program (6 interleaved rounds, 32 MiB), against 1.17x with the
# view moved to the other CPU for the transfer, where its frames take their share from that program
# instead (its threads sleep between frames, so the scheduler lets them in promptly). The transfer's
# process may then run on either CPU, as a headless probe's engine does: kept to one, the scheduler
# moved a peer on this machine away from it (seen with perf sched); unpinned, the view's transfer took
# 1.389 s against 1.439 s and 1.550 s against 1.635 s (12 rounds each).
# Judged by the CPU time other programs used since the last mark (the view's first transfer made ready,
# or its last transfer's end): the CPUs' busy ticks in /proc/stat less this process's own CPU time and
# its transfer's process's. More than _BUSY of one CPU's time: a program of its own runs. Quiet, others
# used 6-22% while the view drew its first screens (the terminal drawing them: tmux, the benchmark's pty
# reader); beside a CPU-bound program, all of a CPU. /proc/stat counts in ticks of 10 ms: a span
# shorter than _JUDGE_TICKS a CPU says nothing, and the view stays with its transfer. (The system's
# count of runnable tasks told the two apart as cleanly at the start, but counts the whole machine's:
# in a container kept to two CPUs of a larger host, other containers' programs would count.)
_BUSY = 0.5
_JUDGE_TICKS = 5
_PROC_STAT = "/proc/stat"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MARK: list[tuple[int, int, float]] = []  # (idle, all, this process's own) ticks at the last mark (_mark)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """Clock ticks of ``cpus`` since boot, idle (with iowait) and all (steal left out: time the CPU was
    not this machine's to give), from /proc/stat's per-CPU lines; None where there are none (not Linux)."""
    try:
        with open(_PROC_STAT, "rb") as f:
            text = f.read()
    except OSError:
        return None
    idle = every = found = 0
    for line in text.splitlines():
        if line[:3] != b"cpu" or not line[3:4].isdigit():
            continue
        name, *fields = line.split()
        try:
            if int(name[3:]) not in cpus:
                continue
            user, nice, system, idle_, iowait, irq, softirq = (int(v) for v in fields[:7])
        except ValueError:
            return None
        idle += idle_ + iowait
        every += user + nice + system + idle_ + iowait + irq + softirq
        found += 1
    return (idle, every) if found == len(cpus) else None


def _own_ticks() -> float:
    """Clock ticks of CPU this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * _TICKS_PER_S


def _mark() -> None:
    """Start the span over which :func:`_others_busy` judges."""
    ticks = _cpu_ticks(own_cpus() or set())
    _MARK[:] = [(*ticks, _own_ticks())] if ticks is not None else []


def _others_busy(child_cpu: float) -> bool:
    """Whether other programs used more than _BUSY of one CPU's time on this process's CPUs since the
    last mark (see _BUSY): the CPUs' busy ticks less this process's CPU and ``child_cpu``, the seconds
    its transfer's process has used since it was spawned. False when the span is too short to say."""
    cpus = own_cpus() or set()
    if not _MARK or not cpus:
        return False
    ticks = _cpu_ticks(cpus)
    if ticks is None:
        return False
    (idle0, every0, own0), (idle1, every1) = _MARK[0], ticks
    span = (every1 - every0) / len(cpus)  # ticks of one CPU's time
    others = (every1 - every0) - (idle1 - idle0) - (_own_ticks() - own0) - child_cpu * _TICKS_PER_S
    return span >= _JUDGE_TICKS and others > _BUSY * span


# This process's transfers running pinned with it (shared_cpu). When the last has ended the view gets
# its CPUs back: kept to one, it could not move away from a CPU-bound program that came to share it.
_PINNED = [0]
_PIN_LOCK = threading.Lock()


def _pinned_transfer_ended() -> None:
    with _PIN_LOCK:
        _PINNED[0] -= 1
        cpus = own_cpus()
        if _PINNED[0] == 0 and cpus:
            _set_threads("self", cpus)
            _mark()  # a rerun judges from here


def _widen(conn: Connection) -> None:
    """Ask for a socket buffer of _PIPE_BUFFER each way (the kernel may give less). With the default
    (208 KiB) the child's writer waited for this side's reader at nearly every batch, waking up to take
    the interpreter lock from the engine thread at each partial write: measured, the transfer took
    1.18x the time it took with a buffer that held a tick's batches."""
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:
        return
    with sock:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _PIPE_BUFFER)
            except OSError:
                pass


def _give_way() -> None:
    """The calling thread, and it alone, at _READER_NICE (Linux; elsewhere a nice value is the
    process's, and it is left alone)."""
    if sys.platform != "linux":
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _READER_NICE)
    except OSError:
        pass


class _Shipper:
    """The child's events packed for the pipe, by two threads: the engine's in its waits, and the
    writer's on its tick (engine/wait_drain.py). Packed batches wait in order for the writer, which
    alone touches the pipe."""

    def __init__(self, bus: EventBus, sub: Subscription, store: DatagramStore | None = None) -> None:
        self._store = store
        self._packed: deque[bytes] = deque()
        self._drain = WaitDrain(bus, sub, self._pack)

    def _pack(self, events: list[Event]) -> None:
        self._packed.append(b"E" + pack(events, self._store))

    def take(self, *, everything: bool = False) -> list[bytes]:
        """The batches packed so far, in order; with ``everything``, the events not yet packed too."""
        with self._drain.lock:
            self._drain.catch_up(everything=everything)
            out = list(self._packed)
            self._packed.clear()
        return out

    def close(self) -> None:
        self._drain.close()


class RemoteTransfer:
    """A :class:`ClientTransfer` run in a child process; its events arrive on ``bus`` here."""

    def __init__(self, transfer: ClientTransfer) -> None:
        # Built (and so checked: names resolved, files opened) here, where a mistake is reported as
        # before; the child builds its own from the same request.
        self.request = transfer.request
        self.bus = transfer.bus
        self.session_id = transfer.session_id
        transfer.close()
        self._conn: Connection | None = None
        self._process: Any = None
        self._outcome: ClientOutcome | None = None
        self._done = threading.Event()
        self._joined = threading.Event()
        self._reader: threading.Thread | None = None
        self._pinned: int | None = None  # the CPU this transfer's process is pinned to; counted in _PINNED
        self._child_cpu: ProcessCpu | None = None  # (pinned) the CPU its process has used since it was spawned
        self.setup_error: str | None = None  # why the child could not run the transfer, if it could not
        self.store: str | None = None  # the file its process puts the datagrams in (engine/apart_wire.py)

    @classmethod
    def create(cls, request: ClientRequest, bus: EventBus) -> RemoteTransfer:
        return cls(ClientTransfer(request, bus))

    def prepare(self) -> RemoteTransfer:
        """Start the child process, which gets ready (imports, the transfer built) and waits for
        :meth:`start`: the view spawns it first, draws while the child gets ready, then starts the
        transfer, so that its own start-up never takes the CPU from the transfer's first blocks."""
        if self._conn is not None:
            return self
        parent, child = _CONTEXT.Pipe(duplex=True)
        for end in (parent, child):  # room for a few ticks' batches: the child's writer need not wait
            _widen(end)
        cpu = shared_cpu()
        self.store = _store_path()
        self._process = _CONTEXT.Process(target=_child,
                                         args=(self.request, self.session_id, child,
                                               os.getpid() if cpu is not None else None, self.store),
                                         name=f"tftpdiag-transfer-{self.session_id}", daemon=True)
        self._process.start()
        child.close()
        if cpu is not None:
            self._child_cpu = ProcessCpu(self._process.pid)  # what it uses getting ready is not another program's
            with _PIN_LOCK:
                _pin(self._process.pid, cpu)
                _PINNED[0] += 1
                if not _MARK:  # the view's first transfer, made ready: judged from here (see _BUSY)
                    _mark()
            self._pinned = cpu
        self._conn = parent
        self._reader = threading.Thread(target=self._read, name=f"apart-reader-{self.session_id}", daemon=True)
        self._reader.start()
        return self

    def start(self) -> RemoteTransfer:
        """Run the transfer (spawning its process first, if :meth:`prepare` has not)."""
        self.prepare()
        assert self._conn is not None
        moved = False
        if self._pinned is not None and self._child_cpu is not None:  # (set together, in prepare)
            with _PIN_LOCK:
                moved = _others_busy(self._child_cpu())
                if moved:  # the view's frames go to the other CPU (see _BUSY), the transfer anywhere
                    cpus = own_cpus() or set()
                    _set_threads("self", cpus - {self._pinned})
                    _set_threads(self._process.pid, cpus)
        try:
            self._conn.send_bytes(pickle.dumps(("go", not moved)))
        except (BrokenPipeError, OSError):
            pass  # the child has ended already: its reader says why
        return self

    def _read(self) -> None:
        assert self._conn is not None
        _give_way()
        bus = self.bus
        publish = bus.publish
        try:
            while True:
                message = self._conn.recv_bytes()
                if message[:1] == b"E":  # a batch of events (apart_wire.py); anything else is a pickle
                    publish(unpack(memoryview(message)[1:]))
                    # This thread's gaps between batches stand in for the engine's waits, which are the
                    # child's: tasks lent those (engine/bus.py) run here.
                    bus.idle()
                    continue
                kind, value = pickle.loads(message)
                if kind == "outcome":
                    self._outcome = value
                    self._done.set()
                elif kind in ("setup-error", "crashed"):
                    self.setup_error = value
                    break
                elif kind == "joined":
                    break
        except (EOFError, OSError):
            pass  # the child ended (or was ended) without saying more
        finally:
            if self._pinned is not None:
                _pinned_transfer_ended()
            self._done.set()
            self._joined.set()

    def cancel(self, reason: str = "cancelled by the user") -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send_bytes(pickle.dumps(("cancel", reason)))
        except (BrokenPipeError, OSError):
            pass

    def wait(self, timeout: float | None = None) -> ClientOutcome | None:
        self._done.wait(timeout)
        return self._outcome

    def join(self, timeout: float | None = None) -> None:
        self._joined.wait(timeout)
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():  # it would not stop: its transfer is abandoned, not left running
                self._process.kill()
                self._process.join(1)
        if self._conn is not None and self._joined.is_set():
            self._conn.close()
