"""What the TUI shows, folded from the event stream in batches and kept in bounded buffers.

Plain Python with no widgets, so the views stay thin and the folding is tested without a terminal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Iterable, NamedTuple

from tftpdiag.protocol.events import (
    Event,
    Failed,
    Impaired,
    Note,
    PacketReceived,
    PacketSent,
    Progress,
    RequestRefused,
    Retransmit,
    SocketError,
    TimedOut,
)
from tftpdiag.fmt import SHOWN, clean, quote
from tftpdiag.protocol.options import Negotiated, OptionOutcome
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, ProtocolError, Request, decode, error_code_name
from tftpdiag.sessions import SessionRecord, SessionTable, fmt_addr

__all__ = ["PacketRow", "Filter", "SessionView", "LiveModel", "Changes", "ROWS_PER_SESSION", "shown", "quoted"]

ROWS_PER_SESSION = 1000  # newest packet rows kept per session; the full record goes to the trace
MAX_SESSIONS = 500  # finished sessions beyond this are forgotten, oldest first


class Filter(Enum):
    ALL = "all"
    NO_DATA = "no DATA/ACK"
    PROBLEMS = "problems only"

    def next(self) -> Filter:
        members = list(Filter)
        return members[(members.index(self) + 1) % len(members)]


class PacketRow(NamedTuple):
    t: float  # seconds since the session began
    outgoing: bool
    op: str
    block: str
    size: int
    peer: str
    note: str
    problem: bool  # drawn in red/yellow and kept by the "problems only" filter
    routine: bool  # ordinary DATA or ACK, hidden by the "no DATA/ACK" filter


_PROBLEM_NOTES = {Note.RETRANSMIT, Note.DUPLICATE, Note.OUT_OF_ORDER, Note.STRAY, Note.MALFORMED,
                  Note.UNEXPECTED, Note.LATE, Note.REACK}


@dataclass
class SessionView:
    """One session's display state: its record plus the recent packets and the rate over time."""

    record: SessionRecord
    rows: deque[PacketRow] = field(default_factory=lambda: deque(maxlen=ROWS_PER_SESSION))
    # Requests, OACKs, errors and anything noted, kept apart so the filters still find them after
    # thousands of ordinary DATA and ACK rows have pushed them out of ``rows``.
    notable: deque[PacketRow] = field(default_factory=lambda: deque(maxlen=ROWS_PER_SESSION))
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes so far)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (time, "retransmit" | "timeout")
    wraps: int = 0
    last_block: int = 0
    dropped_rows: int = 0

    def visible_rows(self, flt: Filter) -> list[PacketRow]:
        if flt is Filter.ALL:
            return list(self.rows)
        if flt is Filter.NO_DATA:
            return list(self.notable)
        return [r for r in self.notable if r.problem]


@dataclass
class Changes:
    sessions: set[int] = field(default_factory=set)
    new_sessions: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    refusals: list[RequestRefused] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.refusals or self.problems)


# -- the door: what the TUI shows is made safe as it comes in --------------------------------------
#
# Every string an event carries may come from a peer (names, modes, options, ERROR messages) or from a
# trace file (any field at all). Events pass :func:`shown` on their way into the model, so every view
# draws printable, bounded text; packets are described by _describe, which escapes what it quotes.
# (Views must still never hand such text to anything that reads markup: they build rich Text.)

def _shown_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SHOWN and value.isprintable() else clean(value)
    if isinstance(value, tuple):
        items = tuple(_shown_value(v) for v in value)
        return value if all(a is b for a, b in zip(items, value)) else items
    if isinstance(value, (Negotiated, OptionOutcome)):
        return _shown_fields(value)
    return value


def _shown_fields(obj: Any) -> Any:
    changes = {}
    for f in fields(obj):
        if f.name in ("raw", "packet", "stats"):
            continue
        value = getattr(obj, f.name)
        safe = _shown_value(value)
        if safe is not value:
            changes[f.name] = safe
    return replace(obj, **changes) if changes else obj


def shown(event: Event) -> Event:
    """The event with every string in it printable and bounded (the same event when it already was)."""
    cls = type(event)
    if cls is PacketSent:
        return event  # addresses and the packet only: the packet is described by _describe
    if cls is PacketReceived:
        detail = event.detail  # type: ignore[union-attr]
        return event if not detail or detail.isprintable() else replace(event, detail=clean(detail))
    return _shown_fields(event)


def quoted(text: str) -> str:
    """A name that has passed :func:`shown`, in quotes (it is escaped already: not again)."""
    return f"'{text}'"


def _words(options: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{clean(k)}={clean(v)}" for k, v in options)


def _describe(packet: object, raw_len: int) -> tuple[str, str, str]:
    """(opcode, block, note text) for the packet column; what the packet quotes is escaped."""
    if isinstance(packet, Data):
        return "DATA", str(packet.block), ""
    if isinstance(packet, Ack):
        return "ACK", str(packet.block), ""
    if isinstance(packet, Request):
        text = f"{quote(packet.filename)} {clean(packet.mode)} {_words(packet.options)}"
        return packet.opcode.name, "", text.rstrip()
    if isinstance(packet, OAck):
        return "OACK", "", _words(packet.options)
    if isinstance(packet, Error):
        return "ERROR", "", f"{packet.code} {error_code_name(packet.code)}: {clean(packet.message)}"
    return "?", "", f"{raw_len} bytes undecodable"


def _server_side(record: SessionRecord) -> bool:
    return record.refused is not None or (record.role is not None and not record.role.is_client)


class LiveModel:
    def __init__(self) -> None:
        self.table = SessionTable()
        self.views: dict[int, SessionView] = {}
        self.refusals: deque[RequestRefused] = deque(maxlen=500)
        self.problems: deque[str] = deque(maxlen=500)  # socket errors and the like, for the log pane
        self.totals = {"bytes": 0, "done": 0, "failed": 0, "refused": 0}

    def view(self, session: int) -> SessionView | None:
        return self.views.get(session)

    def apply(self, events: Iterable[Event]) -> Changes:
        changes = Changes()
        views = self.views
        ended = self.table.apply(events_list := [shown(event) for event in events])
        for event in events_list:
            sid = event.session
            view = views.get(sid)
            if view is None:
                record = self.table.sessions.get(sid)
                if record is None:
                    continue
                view = views[sid] = SessionView(record)
                changes.new_sessions.append(sid)
            changes.sessions.add(sid)
            if isinstance(event, (PacketSent, PacketReceived)):
                self._add_row(view, event)
            elif isinstance(event, Progress):
                view.samples.append((event.time, event.bytes))
            elif isinstance(event, Retransmit):
                view.marks.append((event.time, "retransmit"))
            elif isinstance(event, TimedOut):
                view.marks.append((event.time, "timeout"))
            elif isinstance(event, RequestRefused):
                if event.why != "error-acked":  # a client's ACK of our ERROR ends a refusal, is none
                    self.refusals.append(event)
                    changes.refusals.append(event)
            elif isinstance(event, Impaired):
                self._add_impaired_row(view, event)
            elif isinstance(event, SocketError):
                text = f"socket error towards {fmt_addr(event.peer)}: {event.message}"
                self.problems.append(text)
                changes.problems.append(text)
        changes.ended = [record.session for record in ended]
        for record in ended:
            if not _server_side(record):
                continue
            if record.acks_an_error:
                continue
            if record.refused is not None:
                self.totals["refused"] += 1
            elif isinstance(record.result, Failed):
                self.totals["failed"] += 1
            else:
                self.totals["done"] += 1
            self.totals["bytes"] += record.bytes
        self._forget_old()
        return changes

    def _add_row(self, view: SessionView, event: PacketSent | PacketReceived) -> None:
        packet = event.packet
        op, block, text = _describe(packet, len(event.raw))
        if block and isinstance(packet, (Data, Ack)):
            number = packet.block
            # A jump back of more than half the space is a rollover, not a stale packet.
            if number < view.last_block - 0x8000:
                view.wraps += 1
            view.last_block = number
            if view.wraps:
                block = f"{number}↻{view.wraps}"
        note = event.note
        detail = getattr(event, "detail", "")
        label = note.value
        if detail:
            label = f"{label}: {detail}" if label else detail
        if text:
            label = f"{label} {text}".strip() if label else text
        started = view.record.started if view.record.started is not None else event.time
        outgoing = isinstance(event, PacketSent)
        problem = note in _PROBLEM_NOTES or op in ("ERROR", "?")
        # ACK 0 answers an OACK: part of the negotiation, not of the routine flow.
        routine = op in ("DATA", "ACK") and note is Note.NONE and not (op == "ACK" and block == "0")
        if len(view.rows) == view.rows.maxlen:
            view.dropped_rows += 1
        row = PacketRow(event.time - started, outgoing, op, block, len(event.raw), fmt_addr(event.peer), label,
                        problem, routine)
        view.rows.append(row)
        if not routine:
            view.notable.append(row)

    def _add_impaired_row(self, view: SessionView, event: Impaired) -> None:
        """What --impair did to a datagram, as a row of its own where the packet would have been."""
        try:
            packet = decode(event.raw)
        except ProtocolError:
            packet = None
        op, block, _ = _describe(packet, len(event.raw))
        label = f"impair: {event.action}"
        if event.delay and event.action != "dropped":
            label += f" {event.delay * 1000:.0f} ms"
        label += f" ({event.why})"
        started = view.record.started if view.record.started is not None else event.time
        row = PacketRow(event.time - started, event.direction == "out", op, block, len(event.raw),
                        fmt_addr(event.peer), label, True, False)
        view.rows.append(row)
        view.notable.append(row)

    def _forget_old(self) -> None:
        if len(self.views) <= MAX_SESSIONS:
            return
        for sid in list(self.views):
            if len(self.views) <= MAX_SESSIONS:
                break
            if self.views[sid].record.finished:
                del self.views[sid]
                self.table.sessions.pop(sid, None)

    # -- figures for headers ------------------------------------------------------------------------

    def server_records(self) -> list[SessionRecord]:
        """The sessions a server view lists (a demo's own probe shares the stream but is not one)."""
        return [v.record for v in self.views.values() if _server_side(v.record)]

    def active(self) -> list[SessionRecord]:
        return [r for r in self.server_records() if not r.finished and r.role is not None]

    def aggregate_rate(self, now: float, window: float = 2.0) -> float:
        """Bytes per second over the last ``window`` seconds, summed over every session."""
        total = 0.0
        for view in self.views.values():
            if not _server_side(view.record):
                continue
            samples = view.samples
            if len(samples) < 2 or samples[-1][0] < now - window:
                continue
            newest_t, newest_b = samples[-1]
            older = next((s for s in reversed(samples) if s[0] <= newest_t - window), samples[0])
            span = newest_t - older[0]
            if span > 0:
                total += (newest_b - older[1]) / span
        return total
