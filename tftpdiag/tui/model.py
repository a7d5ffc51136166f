"""What the TUI shows, folded from the event stream in batches.

Every packet of every session is kept, in each record's compact PacketLog (tftpdiag/packetlog.py), so
the packet table is a view over the whole session, not a sample of it. A server running for days
bounds its memory by forgetting the packets of its oldest finished sessions (their summaries stay),
and then the oldest summaries; :class:`Forgotten` counts both so the views can say what went.

Plain Python with no widgets, so the views stay thin and the folding is tested without a terminal.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from tftpdiag.devices import DeviceBook
from tftpdiag.fmt import SHOWN, clean, file_name
from tftpdiag.packetlog import PacketLog, PacketRow
from tftpdiag.protocol.events import (
    Event,
    Failed,
    PacketReceived,
    PacketRun,
    PacketSent,
    RequestRefused,
    Retransmit,
    SocketError,
    TimedOut,
)
from tftpdiag.protocol.options import Negotiated, OptionOutcome
from tftpdiag.report import mode_text
from tftpdiag.sessions import SessionRecord, SessionTable, fmt_addr

__all__ = ["PacketRow", "Filter", "SessionView", "LiveModel", "Changes", "Forgotten", "shown", "quoted", "quoted_mode"]

# Memory bounds for a server that runs for days. A packet costs about 18 bytes (PacketLog), so the
# packet budget is about 90 MB; a session summary a few hundred bytes, so the session budget ~100 MB.
PACKET_BUDGET = 5_000_000  # packets kept over all sessions; beyond, old finished sessions lose theirs
MAX_SESSIONS = 300_000  # session summaries kept; beyond, the oldest finished ones are forgotten


class Filter(Enum):
    ALL = "all"
    NO_DATA = "no DATA/ACK"
    PROBLEMS = "problems only"

    def next(self) -> Filter:
        members = list(Filter)
        return members[(members.index(self) + 1) % len(members)]


@dataclass(eq=False)
class SessionView:
    """One session's display state: its record (with every packet) and the moments of trouble."""

    record: SessionRecord
    marks: list[tuple[float, str]] = field(default_factory=list)  # (time, "retransmit" | "timeout")

    @property
    def log(self) -> PacketLog:
        log = self.record.packets
        if log is None:  # no packet yet (or none in this trace): an empty log to show
            log = self.record.packets = PacketLog()
        return log

    def positions(self, flt: Filter) -> array | None:
        """Positions in the log the filter keeps, in order; None for all of them."""
        if flt is Filter.ALL:
            return None
        return self.log.notable if flt is Filter.NO_DATA else self.log.problems

    def row_count(self, flt: Filter) -> int:
        positions = self.positions(flt)
        return len(self.log) if positions is None else len(positions)

    def visible_rows(self, flt: Filter) -> list[PacketRow]:
        """Every row the filter keeps, built (for tests and small sessions: the table builds only
        the rows on screen)."""
        log, started = self.log, self.started
        positions = self.positions(flt)
        return [log.row(i, started) for i in (range(len(log)) if positions is None else positions)]

    @property
    def started(self) -> float:
        record = self.record
        if record.started is not None:
            return record.started
        return self.log.times[0] if len(self.log) else 0.0


@dataclass
class Forgotten:
    """What the model let go to bound memory: the views say so instead of showing less silently."""

    packets: int = 0  # packets dropped, of...
    packet_sessions: int = 0  # ...this many finished sessions (their summaries kept)
    sessions: int = 0  # finished sessions forgotten whole (oldest first)


@dataclass
class Changes:
    """What changed since the view last drew: the work of its next refresh."""

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

# The fields _shown_fields looks at, by type: dataclasses.fields() builds its tuple at every call, and a
# trace's events each passed here (opening a trace of 100,000 transfers: 13 us an event, now 3.5 us).
_SHOWN_FIELDS: dict[type, tuple[str, ...]] = {}
_PLAIN = (int, float, bool, type(None))  # values with no text in them


def _shown_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SHOWN and value.isprintable() else clean(value)
    if isinstance(value, tuple):  # (an address, the options: nearly always printable already)
        for item in value:
            if type(item) not in _PLAIN and _shown_value(item) is not item:
                return tuple(_shown_value(v) for v in value)
        return value
    if isinstance(value, (Negotiated, OptionOutcome)):
        return _shown_fields(value)
    return value


def _shown_fields(obj: Any) -> Any:
    names = _SHOWN_FIELDS.get(type(obj))
    if names is None:
        names = _SHOWN_FIELDS[type(obj)] = tuple(f.name for f in fields(obj)
                                                  if f.name not in ("raw", "packet", "stats"))
    changes = None
    for name in names:
        value = getattr(obj, name)
        if type(value) in _PLAIN:
            continue
        safe = _shown_value(value)
        if safe is not value:
            if changes is None:
                changes = {}
            changes[name] = safe
    return replace(obj, **changes) if changes else obj


def shown(event: Event) -> Event:
    """The event with every string in it printable and bounded (the same event when it already was)."""
    if type(event) is PacketSent or type(event) is PacketRun:
        return event  # addresses and packets only: packetlog.describe escapes what a packet quotes
    if type(event) is PacketReceived:
        detail = event.detail
        return event if not detail or detail.isprintable() else replace(event, detail=clean(detail))
    return _shown_fields(event)


def quoted(text: str) -> str:
    """A file name that has passed :func:`shown`, in quotes (it is escaped already: not again), or what
    every view says for none (fmt.file_name)."""
    return file_name(text, _in_quotes)


def quoted_mode(mode: str) -> str:
    """A transfer's mode that has passed :func:`shown`, as every view says it (report.mode_text): nothing
    for octet or none, an odd one in quotes (it is escaped already: not again)."""
    return mode_text(mode, _in_quotes)


def _in_quotes(text: str) -> str:
    return f"'{text}'"


def _server_side(record: SessionRecord) -> bool:
    return record.refused is not None or (record.role is not None and not record.role.is_client)


class LiveModel:
    def __init__(self, *, packet_budget: int = PACKET_BUDGET, max_sessions: int = MAX_SESSIONS) -> None:
        self.table = SessionTable(keep_packets=True)
        self.views: dict[int, SessionView] = {}
        self.refusals: deque[RequestRefused] = deque(maxlen=500)
        self.problems: deque[str] = deque(maxlen=500)  # socket errors and the like, for the log pane
        # Finished server-side sessions; "all" counts every session with a transfer (a trace's view).
        # "stray": what reached the listening port and was no request at all (a late ACK, junk): no
        # request was refused, so it is counted apart from "refused".
        self.totals = {"bytes": 0, "done": 0, "failed": 0, "refused": 0, "stray": 0}
        self.all_totals = {"bytes": 0, "done": 0, "failed": 0, "refused": 0, "stray": 0}
        self.unfinished: dict[int, SessionRecord] = {}  # kept apart: the headers read them every tick
        self.recently_ended: deque[SessionRecord] = deque(maxlen=1000)  # for the rate of short transfers
        self.packet_budget = packet_budget
        self.max_sessions = max_sessions
        self.kept_packets = 0
        self.forgotten = Forgotten()
        self._packets_forgotten_upto = 0  # views before this index in insertion order have no packets
        self.folded = 0  # events folded in all
        # watch and trace: every session is someone else's (a capture's client sides), and counts in the live
        # figures and the devices
        self.every_role = False
        self.devices = DeviceBook()  # finished sessions, grouped by client: the devices view

    def view(self, session: int) -> SessionView | None:
        return self.views.get(session)

    def apply(self, events: Iterable[Event]) -> Changes:
        changes = Changes()
        views = self.views
        events_list = [shown(event) for event in events]
        ended = self.table.apply(events_list)
        sessions = self.table.sessions
        touched = changes.sessions
        last_sid = None
        packets = 0
        in_runs = 0  # packets in PacketRuns beyond one each: folded counts events
        for event in events_list:
            sid = event.session
            if sid != last_sid:
                last_sid = sid
                if sid not in views:
                    record = sessions.get(sid)
                    if record is None:
                        last_sid = None
                        continue
                    views[sid] = SessionView(record)
                    if not record.finished:
                        self.unfinished[sid] = record
                    changes.new_sessions.append(sid)
                touched.add(sid)
            cls = type(event)
            if cls is PacketSent or cls is PacketReceived:
                packets += 1  # already in the record's log: the table folded it
                continue
            if type(event) is PacketRun:
                packets += len(event)
                in_runs += len(event) - 1
                continue
            # The rare kinds: type(event) written out so that mypy narrows the event by it.
            if cls is Retransmit:
                views[sid].marks.append((event.time, "retransmit"))
            elif cls is TimedOut:
                views[sid].marks.append((event.time, "timeout"))
            elif type(event) is RequestRefused:
                # A client's ACK of our ERROR ends a refusal: it is none of its own.
                if event.why != "error-acked":
                    self.refusals.append(event)
                    changes.refusals.append(event)
            elif type(event) is SocketError:
                text = f"socket error towards {fmt_addr(event.peer)}: {event.message}"
                self.problems.append(text)
                changes.problems.append(text)
        self.kept_packets += packets
        self.folded += len(events_list) + in_runs
        changes.ended = [record.session for record in ended]
        for record in ended:
            self.unfinished.pop(record.session, None)
            if record.acks_an_error:
                continue  # the end of a refusal already counted, not a session of its own
            self.recently_ended.append(record)
            self._count(self.all_totals, record)
            if self.every_role or _server_side(record):
                # A device's sessions: those served to it, or (a capture) every one seen. Not a demo's own
                # probe, the client side of a transfer its server also records: that counted each twice.
                self.devices.add(record)
            if _server_side(record):
                self._count(self.totals, record)
        self._forget_old()
        return changes

    @staticmethod
    def _count(totals: dict[str, int], record: SessionRecord) -> None:
        if record.refused is not None:
            totals["stray" if record.refused.received else "refused"] += 1
        elif isinstance(record.result, Failed):
            totals["failed"] += 1
        else:
            totals["done"] += 1
        totals["bytes"] += record.bytes

    def _forget_old(self) -> None:
        """Bound memory, oldest finished sessions first, and count what went (the views say it)."""
        if self.kept_packets > self.packet_budget:
            target = self.packet_budget * 9 // 10  # some room, so this is not redone every tick
            for index, view in enumerate(list(self.views.values())[self._packets_forgotten_upto:],
                                         self._packets_forgotten_upto):
                if self.kept_packets <= target:
                    break
                log = view.record.packets
                if not view.record.finished or log is None:
                    continue
                if len(log):
                    self.kept_packets -= len(log)
                    self.forgotten.packets += log.packets
                    self.forgotten.packet_sessions += 1
                    log.forget()
                    view.marks.clear()
                    view.record.samples.clear()
                if index == self._packets_forgotten_upto:
                    self._packets_forgotten_upto += 1
        if len(self.views) > self.max_sessions:
            for sid in list(self.views):
                if len(self.views) <= self.max_sessions * 9 // 10:
                    break
                view = self.views[sid]
                if view.record.finished:
                    log = view.record.packets
                    self.kept_packets -= len(log) if log is not None else 0
                    del self.views[sid]
                    self.table.sessions.pop(sid, None)
                    self.forgotten.sessions += 1
            self._packets_forgotten_upto = 0

    # -- figures for headers ------------------------------------------------------------------------

    def server_records(self) -> list[SessionRecord]:
        """The sessions a server view lists (a demo's own probe shares the stream but is not one)."""
        return [v.record for v in self.views.values() if _server_side(v.record)]

    def active(self) -> list[SessionRecord]:
        every = self.every_role
        return [r for r in self.unfinished.values() if (every or _server_side(r)) and r.role is not None
                and not r.finished]

    def aggregate_rate(self, now: float, window: float = 2.0) -> float:
        """Bytes a second the server moved over the last ``window`` seconds: the bytes its sessions (running,
        or ended within the window) moved within it, over the window's length. Not each session's own rate:
        a 20 MB transfer that took 0.13 s moved 20 MB in the window, not 150 MB a second all through it."""
        since = now - window
        moved = 0.0
        for record in self.active():
            moved += record.bytes_at(now) - record.bytes_at(since)
        for record in self.recently_ended:
            if (self.every_role or _server_side(record)) and record.samples and record.samples[-1][0] >= since:
                moved += record.bytes_at(now) - record.bytes_at(since)
        return moved / window if window > 0 else 0.0
