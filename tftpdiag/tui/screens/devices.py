"""The devices view: each client's boot sequence, its verdict and the findings across its sessions."""

from __future__ import annotations

import time
from dataclasses import replace

from rich.cells import cell_len
from rich.text import Text
from textual import getters
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tftpdiag.devices import BOOTED, STUCK, UPLOADED, Device
from tftpdiag.fmt import clean, file_name
from tftpdiag.tui.model import LiveModel
from tftpdiag.tui.ticked import TickedApp

__all__ = ["DevicesScreen"]

_VERDICT_STYLE = {BOOTED: "bold green", UPLOADED: "green", STUCK: "bold red"}
_MARK = {"done": ("✔", "green"), "in-progress": ("…", "cyan")}
_COLUMNS = ("device", "verdict", "files in order", "sessions")


def _files(device: Device, width: int) -> Text:
    """The files asked for in order, each with a mark (✔ done, · failed on purpose, ✘ failed): the latest
    that fit in ``width`` cells, whole, after a count of the earlier ones."""
    pieces: list[Text] = []
    used = 0
    for a in reversed(device.attempts):
        mark, style = _MARK.get(a.outcome, ("·", "dim") if a.normal else ("✘", "bold red"))
        piece = Text.assemble(f"{file_name(a.name, clean)} ", (mark, style))
        earlier = len(device.attempts) - len(pieces) - 1
        # Room for this one, its arrow, and (if any are left out) the count of those before it.
        need = piece.cell_len + (3 if pieces else 0) + (len(f"+{earlier} earlier → ") if earlier else 0)
        if pieces and used + need > width:
            break
        pieces.append(piece)
        used += piece.cell_len + (3 if len(pieces) > 1 else 0)
    text = Text()
    if len(pieces) < len(device.attempts):
        text.append(f"+{len(device.attempts) - len(pieces)} earlier → ", style="dim")
    for i, piece in enumerate(reversed(pieces)):
        if i:
            text.append(" → ", style="dim")
        text.append_text(piece)
    text.truncate(max(width, 1), overflow="ellipsis")  # one name longer than the column: cut, and said so
    return text


def _timeline(device: Device) -> Text:
    text = Text()
    text.append(f" {device.address}", style="bold")
    text.append(f"  {device.verdict}\n", style=_VERDICT_STYLE.get(device.verdict, "bold cyan"))
    start = device.attempts[0].time if device.attempts else 0.0
    for a in device.attempts:
        mark, style = _MARK.get(a.outcome, ("·", "dim") if a.normal else ("✘", "bold red"))
        text.append(f"  +{a.time - start:7.2f}s  ")
        text.append(mark, style=style)
        text.append(f" {'RRQ' if a.download else 'WRQ'} {file_name(a.name, clean)}  {a.outcome}")
        if a.bytes:
            text.append(f"  {a.bytes:,} bytes", style="dim")
        if a.normal:
            text.append(f"  ({a.normal})", style="dim")
        elif a.error and a.outcome != "done":
            text.append(f"  {clean(a.error)}", style="red")
        text.append("\n")
    for f in device.findings:
        style = {"error": "bold red", "warning": "bold yellow"}.get(f.severity, "cyan")
        text.append(f"\n {f.severity}: ", style=style)
        text.append(f.summary)
        if f.suggestion:
            text.append(f"\n   try: {f.suggestion}", style="dim")
    return text


class DevicesScreen(Screen[None]):
    """Devices (a client address each) with their verdicts; the selected one's timeline below."""

    app = getters.app(TickedApp)
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("d", "app.pop_screen", "Sessions")]
    DEFAULT_CSS = """
    DevicesScreen #devices { height: 1fr; border: round $primary-darken-1; }
    DevicesScreen #device-detail { height: 1fr; border: round $primary-darken-1; padding: 0 1; }
    """

    # Judging every device walks all their attempts: a view of tens of thousands of devices does it once
    # every few seconds, not on every tick, and lists the first MAX_ROWS (stuck ones first).
    EVERY = 2.0
    MAX_ROWS = 1000

    def __init__(self, quiet: float = 30.0, *, ended: bool = False) -> None:
        super().__init__()
        self.ended = ended  # a trace file: read to its end, so no device will ask for more (DeviceBook.judge)
        self._judged_at: float | None = None
        self._cost = 0.0  # seconds the last judging took
        self.quiet = quiet  # a device with nothing for this long has finished what it was doing
        self._order: list[str] = []
        self._devices: dict[str, Device] = {}
        self._room = 0  # cells the files column had when the rows were added

    def compose(self) -> ComposeResult:
        table: DataTable[Text | str] = DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        table.border_title = "Devices"
        table.add_columns(*_COLUMNS)
        yield table
        with VerticalScroll(id="device-detail"):
            yield Static(id="device-timeline")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.app.refresh_now()

    def update_view(self, model: LiveModel, now: float) -> None:
        if not self.is_current:
            return
        tables = self.query(DataTable)
        if not tables:
            return  # not composed yet: the next tick draws it
        table = tables.first()
        if not table.scrollable_content_region.width:
            return  # not laid out yet: the files' room is unknown; the resize that lays it out draws it
        # At most one judging in ten ticks' worth of its own cost: never most of the UI thread's time.
        if self._judged_at is not None and 0 <= now - self._judged_at < max(self.EVERY, 10 * self._cost):
            return
        self._judged_at = now
        started = time.perf_counter()
        judged = model.devices.judge(now, self.quiet, getattr(self.app, "device_macs", None), ended=self.ended)
        self._cost = time.perf_counter() - started
        # Copies as judged now: the book adds the sessions that end to its devices between two judgings,
        # and the pane, drawn from the live device, listed sessions the row had not counted yet, under a
        # verdict judged before them. Table and pane show the same moment.
        devices = [replace(d, attempts=list(d.attempts), findings=list(d.findings)) for d in judged[:self.MAX_ROWS]]
        order = [d.address for d in devices]
        self._devices = {d.address: d for d in devices}
        labels = [clean(d.address) + (f" {d.mac}" if d.mac else "") for d in devices]
        counts = [str(len(d.attempts)) for d in devices]
        # The files take what the other columns leave (each column has a cell of padding either side).
        widths = [max(map(cell_len, labels), default=0), max((len(d.verdict) for d in devices), default=0),
                  max(map(len, counts), default=0)]
        others = sum(max(w, len(head)) + 2 * table.cell_padding
                     for w, head in zip(widths, (_COLUMNS[0], _COLUMNS[1], _COLUMNS[3]), strict=True))
        room = max(table.scrollable_content_region.width - others - 2 * table.cell_padding, 20)
        rows = [(label, Text(d.verdict, style=_VERDICT_STYLE.get(d.verdict, "cyan")), _files(d, room), count)
                for label, d, count in zip(labels, devices, counts, strict=True)]
        if order != self._order or room != self._room:
            # (A column never narrows as its cells change, nor when the rows are cleared: a new width
            # starts the columns again too.)
            self._room = room
            cursor = table.cursor_row
            selected = self._order[cursor] if self._order and 0 <= cursor < len(self._order) else None
            table.clear(columns=True)
            table.add_columns(*_COLUMNS)
            for address, row in zip(order, rows, strict=True):
                table.add_row(*row, key=address)
            self._order = order
            if selected in order:
                table.move_cursor(row=order.index(selected))
        else:
            for address, row in zip(order, rows, strict=True):
                for column, value in zip(table.columns, row, strict=True):
                    table.update_cell(address, column, value, update_width=True)
        shown = f"{len(judged):,} device{'s' if len(judged) != 1 else ''}"
        if len(judged) > len(devices):
            shown = f"the first {len(devices):,} of {shown} (stuck first, then the most recent)"
        table.border_subtitle = f"{shown} · escape/d: sessions"
        self._show_selected()

    def _show_selected(self) -> None:
        table = self.query_one(DataTable)
        timeline = self.query_one("#device-timeline", Static)
        if not self._order or not 0 <= table.cursor_row < len(self._order):
            timeline.update(Text(" no device has finished a session yet", style="dim"))
            return
        timeline.update(_timeline(self._devices[self._order[table.cursor_row]]))

    def on_resize(self) -> None:
        self._judged_at = None  # the files column's room changed: laid out again, now
        self.call_after_refresh(self.app.refresh_now)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()
