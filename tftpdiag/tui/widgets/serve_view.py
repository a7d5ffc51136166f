"""The server's view: a header of totals, a live table of sessions, and a log of refused requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog, Static

from tftpdiag.findings import Analyzer
from tftpdiag.fmt import file_name
from tftpdiag.protocol.events import RequestRefused
from tftpdiag.protocol.packets import KNOWN_MODES, error_code_name
from tftpdiag.records import record
from tftpdiag.report import explain_failure, stray_text
from tftpdiag.sessions import SessionRecord, fmt_addr, fmt_bytes, fmt_rate
from tftpdiag.tui.model import Changes, LiveModel, quoted, quoted_mode
from tftpdiag.tui.widgets.session_list import SessionList
from tftpdiag.tui.widgets.session_panel import state_text

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison  # what list.sort's key may return (typeshed only)

__all__ = ["ServeView", "ServerInfo", "SessionFilter"]

# (name, minimum width, share of the spare width): the file column takes most of a wide terminal.
# Widths include the space after each column (cells have no padding), so 100 columns fit.
COLUMNS = (("client", 22, 0, 0), ("file", 16, 3, 0), ("state", 15, 0, 0), ("progress", 10, 0, 5),
           ("rate", 12, 0, 4), ("retx", 5, 0, 3), ("options", 12, 1, 1), ("time", 8, 0, 2))
# Cells a mode said by its word takes after the name (" netascii"): never cut, however long the name.
_MODE_WORD = 1 + max(map(len, KNOWN_MODES))
_SHORT = {"blksize": "b", "windowsize": "w", "timeout": "t"}
_LEGEND = "b=blksize w=windowsize t=timeout"
SessionFilter = str  # "all", "active", "problems"
FILTERS = ("all", "active", "problems")
# How the sessions can be ordered: "o" cycles through them. None: the order they began in.
SORTS: tuple[tuple[str, Callable[[SessionRecord], SupportsRichComparison] | None, bool], ...] = (
    ("start", None, False),
    ("client", lambda r: (r.client or ("", 0)), False),
    ("file", lambda r: r.filename, False),
    ("state", lambda r: r.state, False),
    ("bytes", lambda r: r.bytes, True),
    ("rate", lambda r: r.rate, True),
    ("retx", lambda r: r.retransmits, True),
    ("time", lambda r: r.duration, True),
)
RESORT_EVERY = 2.0  # seconds between re-sorts or re-filters of a live list while figures change
LIVE_REBUILD_LIMIT = 20_000  # beyond this many sessions, re-sort/re-filter only when asked
# Lines the refusals-and-failures pane keeps. A batch that ends more (a trace of 100,000 transfers, 10,000
# of them failed, opened at once) writes only its newest this many: Textual renders every line written
# before dropping the oldest, and rendering 10,000 lines to keep 500 took a third of that trace's opening.
LOG_LINES = 500


@record
class ServerInfo:
    root: str
    addresses: str
    uploads: bool
    extra: str = ""  # e.g. "single-port", refused options
    impair: str = ""  # the --impair spec in force
    kind: str = "serve"  # "trace": a capture's transfers, read from a file; "watch": captured live
    # watch: what the capture has seen and lost so far, in words (asked at each redraw)
    capture: Callable[[], tuple[str, bool]] | None = None


def _progress(record: SessionRecord) -> str:
    if record.total:
        return f"{min(record.bytes / record.total, 1.0):4.0%}"
    return fmt_bytes(record.bytes)


def _granted(record: SessionRecord, width: int = 12) -> str:
    negotiated = record.negotiated
    if negotiated is None:  # "…" while it may still come; a session that ended without one had none
        return "…" if record.requested and not record.finished else "-"
    if negotiated.oack is None:
        return "none" if record.requested else "-"
    granted = [(k, v) for k, v in negotiated.oack if k in _SHORT]
    words = " ".join(f"{k} {v}" for k, v in granted)
    if len(words) < width:  # room for the words themselves
        return words or "tsize"
    # Compact: b1468 w16 t3 (blksize, windowsize, timeout), explained under the table.
    return " ".join(f"{_SHORT[k]}{v}" for k, v in granted) or "tsize"


def _forgotten_line(model: LiveModel) -> Text:
    """What was let go to bound memory, said on screen (never silently)."""
    gone = model.forgotten
    if not gone.packets and not gone.sessions:
        return Text()
    parts = []
    if gone.packets:
        parts.append(f"packets of {gone.packet_sessions:,} older finished sessions ({gone.packets:,}) forgotten")
    if gone.sessions:
        parts.append(f"{gone.sessions:,} oldest finished sessions forgotten")
    return Text(f"\n {' · '.join(parts)} to bound memory; summaries and the saved trace keep them", style="yellow")


def _fit(value: str | Text, width: int) -> Text:
    """A cell exactly ``width`` wide that leaves one space before the next column."""
    text = value.copy() if isinstance(value, Text) else Text(value)
    text.truncate(max(width - 1, 1), overflow="ellipsis", pad=True)
    text.append(" ")
    return text


def _name_cell(record: SessionRecord, width: int) -> Text:
    """The file cell: the arrow, the name and, where it is not octet, the mode after it as every view says
    it (report.mode_text, for names escaped already). Where both do not fit, the name is cut, not the mode:
    the mode is what tells a netascii transfer (a changed config file) from the rest. A mode by its word
    stays whole (at 80 columns: "↓ note… netascii"); an odd one (the client's own text, up to fmt.SHOWN)
    keeps what the whole name leaves, or else half the cell, cut with an ellipsis, seen, as the name is.
    The name is never cut below the arrow and a character. Built per row on screen, as the cell was."""
    arrow = "↓ " if record.direction == "download" else "↑ "
    name = Text(arrow + file_name(record.filename, str))
    mode = quoted_mode(record.mode)
    if not mode:
        return name
    said = Text(f" {mode}", style="dim")
    room = max(width - 1, 1)  # as _fit leaves: one space before the next column
    if name.cell_len + said.cell_len > room:
        keep = min(said.cell_len, max(room - name.cell_len, (room + 1) // 2, _MODE_WORD), room - len(arrow) - 2)
        said.truncate(max(keep, 1), overflow="ellipsis")
        name.truncate(max(room - said.cell_len, 1), overflow="ellipsis")
    name.append_text(said)
    return name


def _listed(record: SessionRecord, every_role: bool = False) -> bool:
    """Transfers are listed (a server's own, or every one in a trace); refused requests go to the log."""
    return record.role is not None and (every_role or not record.role.is_client)


def _found(record: SessionRecord, query: str) -> bool:
    """Typed text matches the client's address, the file (its cell: the name and the mode said after it)
    or the state (case-insensitive)."""
    if not query:
        return True
    return (query in fmt_addr(record.client).lower() or query in record.filename.lower()
            or query in quoted_mode(record.mode).lower() or query in record.state)


def _matches(record: SessionRecord, flt: SessionFilter, warnings: Callable[[SessionRecord], int]) -> bool:
    if flt == "active":
        return not record.finished
    if flt == "problems":  # what the row marks as trouble, its warnings (⚠) too
        return (record.state in ("failed", "refused") or record.retransmits > 0 or record.timeouts > 0
                or warnings(record) > 0)
    return True


class ServeView(Vertical):
    DEFAULT_CSS = """
    ServeView { height: 1fr; }
    ServeView #serve-header { height: auto; padding: 0 1; background: $boost; }
    ServeView #sessions-box { height: 2fr; padding: 0; }
    ServeView #sessions-head { height: 1; color: $text-muted; }
    ServeView #session-find { height: 1; border: none; padding: 0 1; display: none; }
    ServeView #session-find.-shown { display: block; }
    ServeView #log { height: 1fr; min-height: 4; }
    """

    def __init__(self, info: ServerInfo, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = info
        self._every_role = info.kind in ("trace", "watch")
        self.filter: SessionFilter = "all"
        self.query_text = ""
        self.sort = 0  # index into SORTS
        self.paused = False
        self.analyzer: Analyzer | None = None
        self._model: LiveModel | None = None
        self._last_rebuild = 0.0
        self._forgotten_seen = 0
        # What ticks handed over that the table does not show yet (each tick's changes come once): sessions
        # begun while paused, to append on resume; and whether any began or ended since the last rebuild,
        # for a sorted or filtered table that re-sorts at most every RESORT_EVERY seconds.
        self._held_new: list[int] = []
        self._unsorted = False

    def compose(self) -> ComposeResult:
        yield Static(id="serve-header")
        with Vertical(id="sessions-box", classes="panel"):
            yield Input(placeholder="type to keep sessions whose client, file or state contains it; esc: all",
                        id="session-find")
            yield Static(id="sessions-head")
            yield SessionList(COLUMNS, self._cells, id="sessions")
        # Lines wrap at the pane's own width: RichLog's default least width (78) is more than the pane has
        # at 80 columns, and what lay beyond its edge was cut off unseen ("file not fo").
        log = RichLog(id="log", max_lines=LOG_LINES, wrap=True, markup=False, min_width=1, classes="panel")
        log.border_title = "Refused requests and failed transfers"
        yield log

    def on_mount(self) -> None:
        self._titles()

    def on_resize(self) -> None:
        self._titles()
        if self._model is not None:  # its figures are laid out to the width
            self.query_one("#serve-header", Static).update(self._header(self._model, self._model_now()))

    def _titles(self) -> None:
        box = self.query_one("#sessions-box")
        sessions = self.query_one(SessionList)
        name = SORTS[self.sort][0]
        title = f"Sessions · {sessions.row_count:,} · {self.filter}"
        if self.query_text:
            title += f" · matching {self.query_text!r}"
        title += f" · by {name}"
        box.border_title = title
        box.border_subtitle = f"⏎ details · / find · o order · f filter · {_LEGEND}"
        width = sessions.size.width or (self.size.width - 4)
        self.query_one("#sessions-head", Static).update(sessions.header(width))
        hidden = sessions.hidden(width)
        if hidden:  # said, not silently cut
            box.border_subtitle = f"⏎ details · / find · o order · f filter · too narrow for: {', '.join(hidden)}"

    def selected_session(self) -> int | None:
        record = self.query_one(SessionList).selected()
        return record.session if record is not None else None

    def cycle_filter(self, model: LiveModel, now: float) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self._rebuild(model, now)

    def cycle_sort(self, model: LiveModel, now: float) -> None:
        self.sort = (self.sort + 1) % len(SORTS)
        self._rebuild(model, now)

    def open_find(self) -> None:
        field = self.query_one("#session-find", Input)
        field.add_class("-shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "session-find" and self._model is not None:
            event.stop()
            query = event.value.strip().lower()
            narrower = self.query_text and query.startswith(self.query_text)
            self.query_text = query
            if narrower:  # typing on: only the rows shown can still match (100,000 rows cost ~60 ms)
                sessions = self.query_one(SessionList)
                sessions.set_records([r for r in sessions.records if _found(r, query)], self.selected_session())
                self._titles()
            else:
                self._rebuild(self._model, self._last_rebuild)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "session-find":
            event.stop()
            self.query_one(SessionList).focus()

    def on_key(self, event: events.Key) -> None:
        field = self.query_one("#session-find", Input)
        if event.key == "escape" and (field.has_focus or self.query_text):
            event.stop()
            field.value = ""
            field.remove_class("-shown")
            self.query_text = ""
            if self._model is not None:
                self._rebuild(self._model, self._last_rebuild)
            self.query_one(SessionList).focus()

    def update_view(self, model: LiveModel, changes: Changes, now: float, analyzer: Analyzer | None = None) -> None:
        self._model, self.analyzer = model, analyzer
        self.query_one("#serve-header", Static).update(self._header(model, now))
        lines: list[Text] = [_refusal_line(refusal) for refusal in changes.refusals]
        lines += (Text(text, style="yellow") for text in changes.problems)
        for sid in changes.ended:
            view = model.view(sid)
            if view is None or view.record.state != "failed" or not _listed(view.record, self._every_role):
                continue
            # Only failures go to this pane; a finished transfer's warnings are marked in its row (⚠).
            lines.append(_failure_line(view.record))
            if analyzer is not None:
                for finding in analyzer.findings(sid):
                    if finding.severity != "info":
                        style = "bold red" if finding.severity == "error" else "yellow"
                        lines.append(Text.assemble(
                            ("⚠ " if finding.severity == "warning" else "✘ ", style), (finding.summary, style),
                            (f"  → {finding.suggestion}" if finding.suggestion else "", "dim")))
        if lines:
            log = self.query_one(RichLog)
            for line in lines[-LOG_LINES:]:
                log.write(line)
        self._held_new += changes.new_sessions
        self._unsorted = self._unsorted or bool(changes.new_sessions or changes.ended)
        if self.paused:
            return
        sessions = self.query_one(SessionList)
        simple = self.filter == "all" and not self.query_text and SORTS[self.sort][1] is None
        if model.forgotten.sessions != self._forgotten_seen or (not sessions.records and model.views):
            self._rebuild(model, now)
        elif simple:
            new = [model.views[sid].record for sid in self._held_new if sid in model.views]
            self._held_new = []
            new = [r for r in new if _listed(r, self._every_role)]
            if new:
                sessions.append(new)
                self._titles()
        else:
            self._held_new = []  # the next rebuild lists them
            if self._unsorted and now - self._last_rebuild >= RESORT_EVERY and len(model.views) <= LIVE_REBUILD_LIMIT:
                self._rebuild(model, now)
        sessions.refresh()  # the rows on screen show figures that move

    def _rebuild(self, model: LiveModel, now: float) -> None:
        self._last_rebuild = now
        self._held_new, self._unsorted = [], False  # every session the model holds is listed afresh
        self._forgotten_seen = model.forgotten.sessions
        sessions = self.query_one(SessionList)
        keep = self.selected_session()
        query, flt, every = self.query_text, self.filter, self._every_role
        records = [v.record for v in model.views.values()
                   if _listed(v.record, every) and _matches(v.record, flt, self._warnings) and _found(v.record, query)]
        _, key, reverse = SORTS[self.sort]
        if key is not None:
            records.sort(key=key, reverse=reverse)
        sessions.set_records(records, keep)
        self._titles()

    def _cells(self, record: SessionRecord, widths: list[int]) -> list[Text]:
        now = self._model_now()
        # Elapsed while running; once finished, how long it took (the column said "age" for both).
        took = record.duration if record.finished else max(now - (record.started or now), 0.0)
        retx = Text(str(record.retransmits), style="bold yellow" if record.retransmits else "dim")
        state = state_text(record)
        warnings = self._warnings(record)
        if warnings:
            state.append(f" ⚠{warnings}", style="yellow")
        cells: tuple[str | Text, ...] = (
            fmt_addr(record.client), _name_cell(record, widths[1]), state, _progress(record),
            fmt_rate(record.window_rate(now)) if record.bytes else "-", retx, _granted(record, widths[6]),
            f"{took:.1f}s")
        return [_fit(cell, width) if width else Text() for cell, width in zip(cells, widths, strict=True)]

    def _warnings(self, record: SessionRecord) -> int:
        """A finished session's findings worse than info: its row's ⚠ mark, and a problem to the filter."""
        if self.analyzer is None or not record.finished:
            return 0
        return sum(1 for f in self.analyzer.findings(record.session) if f.severity != "info")

    def _model_now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return clock() if clock is not None else 0.0

    def _header(self, model: LiveModel, now: float) -> Text:
        info = self.info
        if info.kind == "trace":
            return self._trace_header(model)
        active = len(model.active())
        totals = model.all_totals if model.every_role else model.totals
        if info.kind == "watch":
            text = Text.assemble((" watch ", "bold"), (info.root, "bold"), f"  {info.addresses}")
            if info.capture is not None:  # on the first line: a capture that lost packets must be seen
                said, lost = info.capture()
                text.append(f" · {said}", style="bold black on yellow" if lost else "dim")
        else:
            text = Text.assemble((" serve ", "bold"), (info.root, "bold"), f"  on {info.addresses}  ",
                                 ("uploads allowed" if info.uploads else "read-only",
                                  "yellow" if info.uploads else "green"))
        if info.extra:
            text.append(f"  {info.extra}", style="dim")
        if info.impair:
            text.append(f"  ⚠ impaired: {info.impair}", style="bold black on yellow")
        moving = totals["bytes"] + sum(r.bytes for r in model.active())
        figures = [("", Text(f"{active} active", style="bold cyan" if active else "dim")),
                   (" · ", Text(f"{totals['done']} done")),
                   (" · ", Text(f"{totals['failed']} failed", style="bold red" if totals["failed"] else "")),
                   (" · ", Text(f"{totals['refused']} refused", style="bold red" if totals["refused"] else "")),
                   *([(" · ", Text(f"{totals['stray']} stray", style="yellow"))] if totals["stray"] else []),
                   (" · ", Text(f"{fmt_bytes(moving)} sent/received")),
                   (" · ", Text(f"now {fmt_rate(model.aggregate_rate(now))}"))]
        if self.paused:
            figures.append(("  ", Text("PAUSED", style="bold yellow")))
        text.append("\n")
        text.append_text(_figures(figures, self._header_width()))
        text.append_text(_forgotten_line(model))
        return text

    def _header_width(self) -> int:
        """Cells a header line has (0 before the first layout: Textual then wraps it, until on_resize)."""
        return self.query_one("#serve-header", Static).content_size.width

    def _trace_header(self, model: LiveModel) -> Text:
        totals = model.all_totals
        unfinished = sum(1 for r in model.unfinished.values() if r.role is not None)
        text = Text.assemble((" trace ", "bold"), (self.info.root, "bold"), f"  {self.info.addresses}\n")
        figures = [("", Text(f"{totals['done']:,} completed")),
                   (" · ", Text(f"{totals['failed']:,} failed", style="bold red" if totals["failed"] else ""))]
        if unfinished:
            figures.append((" · ", Text(f"{unfinished:,} unfinished in the capture", style="yellow")))
        moved = totals["bytes"] + sum(r.bytes for r in model.unfinished.values())
        figures.append((" · ", Text(f"{fmt_bytes(moved)} transferred")))
        text.append_text(_figures(figures, self._header_width()))
        return text


def _figures(figures: list[tuple[str, Text]], width: int) -> Text:
    """A header's figures, each after its separator, on lines of ``width`` cells (each begun with a space),
    broken between two figures, never inside one: Textual wraps at any space, and at 80 columns the rate
    read "now 0" on one line and "B/s" on the next."""
    text = Text(" ")
    used = 1
    for separator, figure in figures:
        if used > 1 and width and used + len(separator) + figure.cell_len > width:
            text.append("\n ")
            used = 1
        elif used > 1:
            text.append(separator)
            used += len(separator)
        text.append_text(figure)
        used += figure.cell_len
    return text


def _failure_line(record: SessionRecord) -> Text:
    kind = "RRQ" if record.direction == "download" else "WRQ"
    mode = quoted_mode(record.mode)  # (said where it is not octet, as in every view: report.mode_text)
    return Text.assemble((f"{fmt_addr(record.client)} ", "dim"), f"{kind} {quoted(record.filename)} ",
                         (f"{mode} ", "dim") if mode else "", (f"failed: {explain_failure(record)}", "red"))


def _refusal_line(refusal: RequestRefused) -> Text:
    if refusal.received:
        return Text.assemble(
            (f"{fmt_addr(refusal.peer)} ", "dim"),
            (stray_text(refusal), "yellow"))
    kind = "RRQ" if refusal.is_read else "WRQ"
    style = "bold red" if refusal.why == "path-escape" else "yellow"
    text = Text.assemble((f"{fmt_addr(refusal.peer)} ", "dim"), f"{kind} {quoted(refusal.filename)} ",
                         (f"{refusal.why}: ERROR {refusal.code} ({error_code_name(refusal.code)}) "
                          f"{refusal.message}", style))
    if refusal.suggestion:
        text.append(f"; nearest existing file: {quoted(refusal.suggestion)}", style="cyan")
    return text
