"""The devices view: each client's boot sequence, its verdict and the findings across its sessions."""

from __future__ import annotations

import time

from rich.text import Text
from textual import getters
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tftpdiag.devices import BOOTED, STUCK, UPLOADED, Device
from tftpdiag.fmt import clean
from tftpdiag.tui.model import LiveModel
from tftpdiag.tui.ticked import TickedApp

__all__ = ["DevicesScreen"]

_VERDICT_STYLE = {BOOTED: "bold green", UPLOADED: "green", STUCK: "bold red"}
_MARK = {"done": ("✔", "green"), "in-progress": ("…", "cyan")}


def _files(device: Device, limit: int = 6) -> Text:
    """The files asked for in order, each with a mark: ✔ done, · failed on purpose, ✘ failed."""
    text = Text()
    attempts = device.attempts[-limit:]
    if len(device.attempts) > limit:
        text.append(f"+{len(device.attempts) - limit} earlier → ", style="dim")
    for i, a in enumerate(attempts):
        if i:
            text.append(" → ", style="dim")
        mark, style = _MARK.get(a.outcome, ("·", "dim") if a.normal else ("✘", "bold red"))
        text.append(f"{clean(a.name)} ")
        text.append(mark, style=style)
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
        text.append(f" {'RRQ' if a.download else 'WRQ'} {clean(a.name)}  {a.outcome}")
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

    def compose(self) -> ComposeResult:
        table: DataTable[Text | str] = DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        table.border_title = "Devices"
        table.add_columns("device", "verdict", "files in order", "sessions")
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
        # At most one judging in ten ticks' worth of its own cost: never most of the UI thread's time.
        if self._judged_at is not None and 0 <= now - self._judged_at < max(self.EVERY, 10 * self._cost):
            return
        self._judged_at = now
        started = time.perf_counter()
        judged = model.devices.judge(now, self.quiet, getattr(self.app, "device_macs", None), ended=self.ended)
        self._cost = time.perf_counter() - started
        devices = judged[:self.MAX_ROWS]
        order = [d.address for d in devices]
        self._devices = {d.address: d for d in devices}
        rows = [(clean(d.address) + (f" {d.mac}" if d.mac else ""),
                 Text(d.verdict, style=_VERDICT_STYLE.get(d.verdict, "cyan")), _files(d), str(len(d.attempts)))
                for d in devices]
        if order != self._order:
            cursor = table.cursor_row
            selected = self._order[cursor] if self._order and 0 <= cursor < len(self._order) else None
            table.clear()
            for address, row in zip(order, rows, strict=True):
                table.add_row(*row, key=address)
            self._order = order
            if selected in order:
                table.move_cursor(row=order.index(selected))
        else:
            for address, row in zip(order, rows, strict=True):
                for column, value in zip(table.columns, row, strict=True):
                    table.update_cell(address, column, value)
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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()
