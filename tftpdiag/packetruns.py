"""A batch of events split into runs: consecutive packet events of one session, and the other events
one by one. The folds (the session table, the findings analyzer) take a run at once: most of a stream is
one session's DATA and ACKs, and what a run changes can be counted over its columns (map, list.count:
loops in C) instead of event by event in Python."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from operator import and_, attrgetter, eq, not_

from tftpdiag.protocol.events import Event, PacketReceived, PacketSent

__all__ = ["packet_runs", "SESSION", "TIME", "NOTE", "PACKET"]

SESSION = attrgetter("session")
TIME = attrgetter("time")
NOTE = attrgetter("note")
PACKET = attrgetter("packet")
_PACKET_KINDS = frozenset((PacketReceived, PacketSent))


def packet_runs(events: Iterable[Event]) -> list[list[Event]]:
    """``events`` in order, in chunks: each is either a run of packet events (PacketReceived,
    PacketSent) of one session, or a single event of another type."""
    batch = events if type(events) is list else list(events)
    n = len(batch)
    if n < 2:
        return [batch] if batch else []
    # The usual batch: one session's packets and nothing else.
    if _PACKET_KINDS.issuperset(map(type, batch)) and len(set(map(SESSION, batch))) == 1:
        return [batch]
    packet = list(map(_PACKET_KINDS.__contains__, map(type, batch)))
    sessions = list(map(SESSION, batch))
    # Otherwise a chunk starts wherever an event does not continue the packets of the session before
    # it. Found with map and compress: a loop in C, not one in Python per event.
    goes_on = map(and_, map(and_, packet[1:], packet), map(eq, sessions[1:], sessions))
    starts = [0, *compress(range(1, n), map(not_, goes_on))]
    ends = starts[1:]
    ends.append(n)
    return list(map(batch.__getitem__, map(slice, starts, ends)))
