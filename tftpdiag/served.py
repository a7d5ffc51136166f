"""A session the server finished or refused, as the one object every output of ``serve`` takes.

The headless printer (plain lines or ``--json``), the ``--log`` file, the ``--history`` database and the
``--metrics`` counters are sinks: one place folds the event stream and says "a session ended", once per
session, and hands every sink the same record and the same JSON object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tftpdiag.fmt import iso_time
from tftpdiag.protocol.events import Completed
from tftpdiag.records import record
from tftpdiag.report import session_summary

if TYPE_CHECKING:
    from tftpdiag.findings import Finding
    from tftpdiag.sessions import SessionRecord

__all__ = ["Served", "SessionSink", "served", "ended_at", "result_of", "SERVED_KINDS", "is_served_line"]

SERVED_KINDS = ("session", "refused")  # the "event" of a finished session's object, and of a refused one's


def ended_at(record: SessionRecord) -> float:
    """When the session ended: its result's or its refusal's time, else its last event's."""
    if record.result is not None:
        return record.result.time
    if record.refused is not None:
        return record.refused.time
    return record.last if record.last is not None else 0.0


def result_of(record: SessionRecord) -> str:
    """``ok``, ``failed`` or ``refused``: the word history and metrics file a session under."""
    if record.refused is not None:
        return "refused"
    return "ok" if isinstance(record.result, Completed) else "failed"


@record
class Served:
    """One finished or refused session, as every sink receives it."""

    record: SessionRecord
    findings: list[Finding]
    started: float
    ended: float
    obj: dict[str, Any]  # the JSON object of ``serve --json`` and ``--log``

    @property
    def result(self) -> str:
        return result_of(self.record)


def served(record: SessionRecord, findings: list[Finding], more: dict[str, Any] | None = None) -> Served:
    """The session as every sink takes it; ``more`` joins its JSON object (watch's device fields)."""
    ended = ended_at(record)
    started = record.started if record.started is not None else ended
    kind = SERVED_KINDS[1] if record.refused is not None else SERVED_KINDS[0]
    obj: dict[str, Any] = {"event": kind, "started": iso_time(started), "ended": iso_time(ended),
                           **session_summary(record, findings=[f.to_dict() for f in findings]), **(more or {})}
    if record.refused is not None:
        obj["suggestion"] = record.refused.suggestion
        obj["received"] = record.refused.received or None
    return Served(record, findings, started, ended, obj)


def is_served_line(line: bytes | str) -> bool:
    """Whether ``line`` is one of the objects :func:`served` makes (a line of serve --log or --json, or of
    watch --json): a session's summary, not a trace's event, so that trace can say what the file is."""
    import json

    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return type(obj) is dict and obj.get("event") in SERVED_KINDS and "started" in obj and "ended" in obj


class SessionSink(Protocol):
    """Something that takes every finished session. ``add`` runs on the reader's thread, never the
    engine's: it must be quick (a sink with slow work queues it for a thread of its own). A sink that
    also shows how many transfers are running has ``watch_running(count)``; the feed hands it one."""

    def add(self, session: Served) -> None: ...

    def close(self) -> None: ...
