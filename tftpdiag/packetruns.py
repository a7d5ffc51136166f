"""A batch of events split into runs: consecutive packet events of one session, and the other events
one by one. The folds (the session table, the findings analyzer) take a run in one loop of their own:
most of a stream is one session's DATA and ACKs, and a call, a session lookup and a handler lookup per
event were most of what folding them cost."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tftpdiag.protocol.events import Event, PacketReceived, PacketRun, PacketSent

__all__ = ["packet_runs"]


def packet_runs(events: Iterable[Event]) -> list[Sequence[Event]]:
    """``events`` in order, in chunks: each is either a run of packet events (PacketReceived,
    PacketSent) of one session, or a single event of another type. A :class:`PacketRun` (a run that
    came in columns, from a transfer run apart) is a chunk of its own, for the folds to read as columns."""
    out: list[Sequence[Event]] = []
    run: list[Event] = []
    session = -1
    # (A plain loop: map with attrgetter reads each attribute through the generic lookup, several times
    # the cost of the interpreter's own specialised one.)
    for event in events:
        kind = type(event)
        # The session read in a branch of each type: a line that sees one type keeps the interpreter's
        # specialised attribute load.
        if kind is PacketReceived:  # noqa: SIM114 - one type a line keeps its attribute load specialised
            this = event.session
        elif kind is PacketSent:
            this = event.session
        elif kind is PacketRun:
            session = -1
            out.append(event)  # type: ignore[arg-type]  # a Sequence of packet events, so of events
            continue
        else:
            session = -1
            out.append([event])
            continue
        if this == session:
            run.append(event)
        else:
            session = this
            run = [event]
            out.append(run)
    return out
