"""The server's view: a header of totals, a live table of sessions, and a log of refused requests."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, RichLog, Static

from tftpdiag.findings import Analyzer
from tftpdiag.protocol.events import RequestRefused
from tftpdiag.protocol.packets import error_code_name
from tftpdiag.report import explain_failure
from tftpdiag.sessions import SessionRecord, fmt_addr, fmt_bytes, fmt_rate
from tftpdiag.tui.model import Changes, LiveModel, quoted
from tftpdiag.tui.widgets.session_panel import state_text

__all__ = ["ServeView", "ServerInfo", "SessionFilter"]

# Widths include the space after each column (the table has no cell padding), so 100 columns fit.
COLUMNS = ("client", "file", "state", "progress", "rate", "retx", "options", "age")
WIDTHS = (22, 16, 15, 9, 12, 5, 11, 6)
_SHORT = {"blksize": "b", "windowsize": "w", "timeout": "t"}
MAX_ROWS = 500
SessionFilter = str  # "all", "active", "problems"
FILTERS = ("all", "active", "problems")


@dataclass(frozen=True)
class ServerInfo:
    root: str
    addresses: str
    uploads: bool
    extra: str = ""  # e.g. "single-port", refused options
    impair: str = ""  # the --impair spec in force
    kind: str = "serve"  # "trace": a capture's transfers, read from a file


def _progress(record: SessionRecord) -> str:
    if record.total:
        return f"{min(record.bytes / record.total, 1.0):4.0%}"
    return fmt_bytes(record.bytes)


def _granted(record: SessionRecord) -> str:
    negotiated = record.negotiated
    if negotiated is None:
        return "…" if record.requested else "-"
    if negotiated.oack is None:
        return "none" if record.requested else "-"
    # Compact: b1468 w16 t3 (blksize, windowsize, timeout); the detail view spells them out.
    return " ".join(f"{_SHORT[k]}{v}" for k, v in negotiated.oack if k in _SHORT) or "tsize"


def _fit(value: str | Text, width: int) -> Text:
    """A cell that leaves one space before the next column (the table has no padding of its own)."""
    text = value.copy() if isinstance(value, Text) else Text(value)
    if text.cell_len > width - 1:
        text.truncate(width - 2)
        text.append("…")
    text.append(" ")
    return text


def _listed(record: SessionRecord, every_role: bool = False) -> bool:
    """Transfers are listed (a server's own, or every one in a trace); refused requests go to the log."""
    return record.role is not None and (every_role or not record.role.is_client)


def _matches(record: SessionRecord, flt: SessionFilter) -> bool:
    if flt == "active":
        return not record.finished
    if flt == "problems":
        return record.state in ("failed", "refused") or record.retransmits > 0 or record.timeouts > 0
    return True


class ServeView(Vertical):
    DEFAULT_CSS = """
    ServeView { height: 1fr; }
    ServeView #serve-header { height: auto; padding: 0 1; background: $boost; }
    ServeView #sessions { height: 2fr; padding: 0; }
    ServeView #log { height: 1fr; min-height: 4; }
    """

    def __init__(self, info: ServerInfo, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info = info
        self._every_role = info.kind == "trace"
        self.filter: SessionFilter = "all"
        self.paused = False
        self._last_age_update = 0.0

    def compose(self) -> ComposeResult:
        yield Static(id="serve-header")
        table: DataTable = DataTable(id="sessions", cursor_type="row", zebra_stripes=True, classes="panel",
                                     cell_padding=0)
        table.border_title = "Sessions (enter: details)"
        yield table
        log = RichLog(id="log", max_lines=500, wrap=True, markup=False, classes="panel")
        log.border_title = "Refused requests and failed transfers"
        yield log

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name, width in zip(COLUMNS, WIDTHS):
            table.add_column(name, key=name, width=width)

    def selected_session(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def cycle_filter(self, model: LiveModel, now: float) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self._rebuild(model, now)

    def update_view(self, model: LiveModel, changes: Changes, now: float, analyzer: Analyzer | None = None) -> None:
        self.query_one("#serve-header", Static).update(self._header(model, now))
        for refusal in changes.refusals:
            self._log_refusal(refusal)
        for text in changes.problems:
            self.query_one(RichLog).write(Text(text, style="yellow"))
        for sid in changes.ended:
            view = model.view(sid)
            if view is None:
                continue
            if view.record.state == "failed" and _listed(view.record, self._every_role):
                self._log_failure(view.record)
            if analyzer is not None:
                for finding in analyzer.findings(sid):
                    if finding.severity != "info":
                        style = "bold red" if finding.severity == "error" else "yellow"
                        self.query_one(RichLog).write(Text.assemble(
                            ("⚠ " if finding.severity == "warning" else "✘ ", style), (finding.summary, style),
                            (f"  → {finding.suggestion}" if finding.suggestion else "", "dim")))
        if self.paused:
            return
        table = self.query_one(DataTable)
        if table.row_count + len(changes.new_sessions) > MAX_ROWS:
            self._rebuild(model, now)
            return
        for sid in changes.new_sessions:
            view = model.view(sid)
            if view is not None and _listed(view.record, self._every_role) and _matches(view.record, self.filter):
                table.add_row(*self._cells(view.record, now), key=str(sid))
        age_tick = now - self._last_age_update >= 1.0
        if age_tick:
            self._last_age_update = now
        keys = {str(k.value) for k in table.rows}
        for sid in (changes.sessions | ({v.record.session for v in model.views.values()
                                           if not v.record.finished} if age_tick else set())):
            key = str(sid)
            view = model.view(sid)
            if view is None or key not in keys:
                continue
            for column, value in zip(COLUMNS, self._cells(view.record, now)):
                table.update_cell(key, column, value)

    def _rebuild(self, model: LiveModel, now: float) -> None:
        table = self.query_one(DataTable)
        table.clear()
        records = [v.record for v in model.views.values() if _listed(v.record, self._every_role)]
        for record in [r for r in records if _matches(r, self.filter)][-MAX_ROWS:]:
            table.add_row(*self._cells(record, now), key=str(record.session))
        table.border_title = f"Sessions · {self.filter} (enter: details, f: filter)"

    def _cells(self, record: SessionRecord, now: float) -> tuple:
        age = (record.last or now) - (record.started or now) if record.finished else now - (record.started or now)
        retx = Text(str(record.retransmits), style="bold yellow" if record.retransmits else "dim")
        arrow = "↓ " if record.direction == "download" else "↑ "
        cells = (fmt_addr(record.client), arrow + record.filename, state_text(record), _progress(record),
                 fmt_rate(record.rate) if record.bytes else "-", retx, _granted(record), f"{max(age, 0):.1f}s")
        return tuple(_fit(cell, width) for cell, width in zip(cells, WIDTHS))

    def _header(self, model: LiveModel, now: float) -> Text:
        info = self.info
        if info.kind == "trace":
            return self._trace_header(model)
        active = len(model.active())
        totals = model.totals
        text = Text.assemble((" serve ", "bold"), (info.root, "bold"), f"  on {info.addresses}  ",
                             ("uploads allowed" if info.uploads else "read-only",
                              "yellow" if info.uploads else "green"))
        if info.extra:
            text.append(f"  {info.extra}", style="dim")
        if info.impair:
            text.append(f"  ⚠ impaired: {info.impair}", style="bold black on yellow")
        text.append("\n ")
        text.append(f"{active} active", style="bold cyan" if active else "dim")
        text.append(f" · {totals['done']} done · ")
        text.append(f"{totals['failed']} failed", style="bold red" if totals["failed"] else "")
        text.append(f" · {totals['refused']} refused", style="bold red" if totals["refused"] else "")
        moving = totals["bytes"] + sum(r.bytes for r in model.active())
        text.append(f" · {fmt_bytes(moving)} sent/received · now {fmt_rate(model.aggregate_rate(now))}")
        if self.paused:
            text.append("  PAUSED", style="bold yellow")
        return text

    def _trace_header(self, model: LiveModel) -> Text:
        records = [v.record for v in model.views.values() if v.record.role is not None]
        failed = sum(1 for r in records if r.state == "failed")
        moved = sum(r.bytes for r in records)
        text = Text.assemble((" trace ", "bold"), (self.info.root, "bold"), f"  {self.info.addresses}\n ")
        text.append(f"{len(records) - failed} completed · ")
        text.append(f"{failed} failed", style="bold red" if failed else "")
        text.append(f" · {fmt_bytes(moved)} transferred")
        return text

    def _log_failure(self, record: SessionRecord) -> None:
        kind = "RRQ" if record.direction == "download" else "WRQ"
        self.query_one(RichLog).write(Text.assemble(
            (f"{fmt_addr(record.client)} ", "dim"), f"{kind} {quoted(record.filename)} ",
            (f"failed: {explain_failure(record)}", "red")))

    def _log_refusal(self, refusal: RequestRefused) -> None:
        if refusal.received:
            self.query_one(RichLog).write(Text.assemble(
                (f"{fmt_addr(refusal.peer)} ", "dim"),
                (f"sent {refusal.received} to the listening port, which takes only requests (ignored)", "yellow")))
            return
        kind = "RRQ" if refusal.is_read else "WRQ"
        style = "bold red" if refusal.why == "path-escape" else "yellow"
        text = Text.assemble((f"{fmt_addr(refusal.peer)} ", "dim"), f"{kind} {quoted(refusal.filename)} ",
                             (f"{refusal.why}: ERROR {refusal.code} ({error_code_name(refusal.code)}) {refusal.message}", style))
        if refusal.suggestion:
            text.append(f"; nearest existing file: {quoted(refusal.suggestion)}", style="cyan")
        self.query_one(RichLog).write(text)
