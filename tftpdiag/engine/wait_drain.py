"""A subscription drained by two threads: an engine's, in its waits for the network, and a reader's, on
its own tick. The headless summary's fold (headless.py) and the packing of a transfer run apart
(engine/apart.py) are both done this way: work done in the engine's own waits costs the transfer
nothing, while a reader's thread doing it takes the interpreter lock from the engine at its own times."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tftpdiag.engine.bus import EventBus, Subscription
from tftpdiag.protocol.events import Event

__all__ = ["WaitDrain", "ENOUGH", "BEHIND"]

# Fewer waiting than this and a wait takes nothing: the work's fixed cost (the lock, the drain, one pass
# of a fold or a pack) is most of it for the two events a lock-step block makes, and taken at every block
# it was 33,000 of the client's 118,000 instructions a block (callgrind). Taken once per 16 blocks it is
# shared out; what is left waits for the next wait, or the reader's tick. Unless the newest is a PacketRun
# of that many packets itself: lock-step's steady turns (protocol/steady.py) publish one of 64 packets per
# 32 blocks. (A window's run, 17 packets, waits: packed one at a time, a transfer run apart took 1.59x
# its headless time, not 1.13x.)
ENOUGH = 32
# The reader takes what the engine's waits have left only when at least this many wait, or when no wait
# has taken anything since its last turn. A wait takes everything pending, so many waiting means waits
# have become rare: a CPU-bound neighbour keeps the engine's thread from its CPU, and the socket holds
# several windows each time it gets it back. (A wait used to take at most 256: waits that rare then fell
# behind, and the backlog (some 400 events) was left to the reader's thread, which then took the lock.)
BEHIND = 256


class WaitDrain:
    """Hands ``work`` the events of ``sub``, in order, from whichever thread comes first. The engine
    never waits for :attr:`lock`: it skips its turn. ``work`` failing in the engine's thread is raised
    in the reader's, at its next :meth:`catch_up`, as it would have been without the engine's help."""

    def __init__(self, bus: EventBus, sub: Subscription, work: Callable[[list[Event]], object]) -> None:
        self.lock = threading.Lock()
        self._bus = bus
        self._sub = sub
        self._work = work
        self._pending = sub.pending  # asked at every engine wait: one attribute fewer to look up
        self._engine_turns = 0  # turns the engine's waits took since the reader last looked
        self._closed = False
        self._error: BaseException | None = None
        self._task = self._idle  # one bound method, to register and remove the same object
        bus.on_idle(self._task, guarded=True)  # _idle never raises: an error waits for the reader

    def _idle(self) -> None:
        pending = self._pending()
        if (pending >= ENOUGH or (pending and self._sub.newest_run() >= ENOUGH)) and self._error is None \
                and self.lock.acquire(blocking=False):
            try:
                # Everything pending, however much: the engine is waiting, and whatever it leaves the
                # reader takes later, on the engine's time all the same.
                self._work(self._sub.drain())
                self._engine_turns += 1
            except Exception as exc:  # noqa: BLE001 - raised in the reader's thread, at its next turn
                self._error = exc
                self._bus.remove_idle(self._task)
            finally:
                self.lock.release()

    def catch_up(self, *, everything: bool = False) -> bool:
        """The reader's turn; call it holding :attr:`lock`. It takes what is pending when asked for
        ``everything``, after :meth:`close`, when no wait has taken a turn since its last (the transfer
        has ended, goes too slowly to fill one, or waits no more), or when the waits have fallen
        :data:`BEHIND`; otherwise the few left are for the engine's next wait. True when it took any:
        the reader's thread did work the engine's waits did not (its tick may lengthen when not)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        took = False
        if everything or self._closed or not self._engine_turns or self._pending() >= BEHIND:
            events = self._sub.drain()
            if events:
                self._work(events)
                took = True
        self._engine_turns = 0
        return took

    def close(self) -> None:
        """The engine's waits take no more turns; every :meth:`catch_up` from now takes everything."""
        self._bus.remove_idle(self._task)
        self._closed = True
