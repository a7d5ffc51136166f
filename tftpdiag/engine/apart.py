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
import shutil
import socket
import sys
import tempfile
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from tftpdiag.engine import placement
from tftpdiag.engine.apart_wire import DatagramStore, pack, unpack
from tftpdiag.engine.bus import EventBus, Subscription
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer, TransferSetupError
from tftpdiag.engine.cpu_wait import ProcessCpu
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
# the child's batches, and on a machine of two CPUs it shares one with the transfer (placement.py): at the
# default it preempted the spinning transfer at each wake-up, and the datagram that came meanwhile
# waited. At 19 it runs when that CPU has time, and falls behind while a fast transfer has none, as a
# view may. It ends with the transfer, so nothing else of the view is slowed for good (and a nice value
# cannot be lowered again without privilege: a view niced whole would stay slow under load).
_READER_NICE = 19


def _child(request: ClientRequest, session_id: int, conn: Connection, view: int | None = None,
           store: str | None = None) -> None:
    """The child process. Its stderr is the terminal the view draws on, so nothing may be printed there:
    a crash goes to the parent as text, and Ctrl-C is the parent's to handle (it cancels), as are SIGTERM
    and SIGHUP (a closed terminal sends it to the whole group): killed here, the child would leave its
    temporary file and the server untold."""
    import signal
    import traceback

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if view is not None:  # the view shares this process's CPU (see RemoteTransfer.prepare)
        from tftpdiag.engine.cpu_wait import share_cpu_with

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
        from tftpdiag.engine.cpu_wait import share_cpu_with

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
        self._pinned: int | None = None  # the CPU this transfer's process is pinned to; counted in placement
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
        cpu = placement.shared_cpu()
        self.store = _store_path()
        self._process = _CONTEXT.Process(target=_child,
                                         args=(self.request, self.session_id, child,
                                               os.getpid() if cpu is not None else None, self.store),
                                         name=f"tftpdiag-transfer-{self.session_id}", daemon=True)
        self._process.start()
        child.close()
        if cpu is not None:
            self._child_cpu = ProcessCpu(self._process.pid)  # what it uses getting ready is not another program's
            placement.pin_transfer(self._process.pid, cpu)
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
            moved = placement.move_view_off(self._process.pid, self._pinned, self._child_cpu())
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
                placement.pinned_transfer_ended()
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
