"""Fan-out of events from engine threads to any number of subscribers.

Publishing only appends to each subscriber's deque (thread-safe in CPython, no lock), so a slow
subscriber never slows a transfer. A lossless subscription (trace files, findings, summaries) keeps
every event; a sampled one (the UI) keeps every rare event but only the newest packet events.

Idle tasks lend a reader the engine threads' waits. Between sending a reply and reading the peer's
answer an engine thread has nothing to do (on a fast link it spins); a reader that folds events on
its own timer instead wakes in the middle of a transfer and, holding the interpreter lock, delays the
engine's next packet, a millisecond or so each time: a quarter of a fast windowed download. A task
run in those waits does the same work where it costs nothing. Tasks must be short and must never
block (a reader does a bounded slice of its work and skips its turn when its own thread holds it).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from itertools import repeat, starmap

from tftpdiag.protocol.events import Event, PacketReceived, PacketRun, PacketSent

__all__ = ["EventBus", "Subscription"]

_PACKET_EVENTS = (PacketSent, PacketReceived, PacketRun)  # a sampled subscription keeps the newest few


class Subscription:
    """A queue of events for one reader, drained from the reader's own thread or timer."""

    def __init__(self, bus: EventBus, packet_window: int | None) -> None:
        self._bus = bus
        self._events: deque[Event] = deque()
        self._packets: deque[Event] | None = deque(maxlen=packet_window) if packet_window else None
        self._seen_packets = 0
        self.dropped = 0  # packet events a sampled subscription let go
        # Called by publishers at every step and by an idle fold at every wait: for a lossless
        # subscription the deque's own methods, so neither call runs a line of Python.
        self.push: Callable[[list[Event]], None] = self._events.extend if self._packets is None else self._push
        self.pending: Callable[[], int] = self._events.__len__ if self._packets is None else self._pending

    @property
    def lossless(self) -> bool:
        return self._packets is None

    def _push(self, events: list[Event]) -> None:
        assert self._packets is not None  # a sampled subscription's push
        for event in events:
            if isinstance(event, _PACKET_EVENTS):
                self._packets.append(event)
                self._seen_packets += 1
            else:
                self._events.append(event)

    def drain(self, limit: int | None = None) -> list[Event]:
        """Take what arrived since the last call (at most ``limit`` rare events), oldest first.

        For a sampled subscription the packet events come in their own order after the rare ones;
        ``dropped`` counts those that were pushed out before anyone looked.
        """
        events = self._events
        count = len(events) if limit is None else min(limit, len(events))
        # popleft, count times, called from C: publishers may append meanwhile, never take.
        out: list[Event] = list(starmap(events.popleft, repeat((), count)))
        if self._packets is not None:
            packets = self._packets
            taken = len(packets)
            out.extend(packets)
            packets.clear()
            self.dropped += self._seen_packets - taken
            self._seen_packets = 0
        return out

    def newest_run(self) -> int:
        """The packets in the newest event waiting, if it is a PacketRun (a lossless subscription; a
        sampled one says 0)."""
        events = self._events
        if self._packets is None and events:
            newest = events[-1]
            if type(newest) is PacketRun:
                return len(newest)
        return 0

    def _pending(self) -> int:
        return len(self._events) + (len(self._packets) if self._packets is not None else 0)

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # Read by engine threads on every wait: a tuple, replaced whole, so they never need the lock.
        self.idle_tasks: tuple[Callable[[], object], ...] = ()
        self._guarded: tuple[Callable[[], object], ...] = ()
        # What an engine thread calls in its waits: the loop over the tasks, or the one task itself when
        # it is alone and guards itself (see on_idle).
        self.idle: Callable[[], object] = self._idle_all

    def new_session_id(self) -> int:
        return next(self._ids)

    def subscribe(self, *, packet_window: int | None = None) -> Subscription:
        """Lossless by default; with ``packet_window`` only that many newest packet events are kept."""
        sub = Subscription(self, packet_window)
        with self._lock:
            self._subscribers = self._subscribers + (sub,)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)

    def on_idle(self, task: Callable[[], object], *, guarded: bool = False) -> None:
        """Run ``task`` on the engine threads whenever one is about to wait for the network.

        ``guarded``: the task never raises (it catches its own errors). When it is the only task, the
        engine calls it directly, without the loop that guards a transfer from a task's errors: a call
        and a loop saved at every wait, which in a lock-step transfer is every block."""
        with self._lock:
            self.idle_tasks = self.idle_tasks + (task,)
            if guarded:
                self._guarded = self._guarded + (task,)
            self._bind()

    def remove_idle(self, task: Callable[[], object]) -> None:
        with self._lock:
            self.idle = self._idle_all  # first: from now on the task is called only while in the tuple
            self.idle_tasks = tuple(t for t in self.idle_tasks if t is not task)
            self._guarded = tuple(t for t in self._guarded if t is not task)
            self._bind()

    def _bind(self) -> None:
        tasks = self.idle_tasks
        alone = len(tasks) == 1 and any(t is tasks[0] for t in self._guarded)
        self.idle = tasks[0] if alone else self._idle_all

    def _idle_all(self) -> None:
        """Called by an engine thread that has sent what it had to send and is about to wait."""
        for task in self.idle_tasks:
            try:
                task()
            except Exception:  # noqa: BLE001 - a broken task must not end a transfer: it loses its turns
                self.remove_idle(task)

    def publish(self, events: list[Event]) -> None:
        if events:
            for sub in self._subscribers:
                sub.push(events)

    def publish_all(self, events: Iterable[Event]) -> None:
        self.publish(list(events))
