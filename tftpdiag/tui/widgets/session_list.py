"""The sessions table of `serve` and `trace`: every session, sortable, filtered as you type.

A line-API scroll view over an index (a list of records in display order): only the rows on screen
are built, so 100,000 sessions scroll like ten. The index is rebuilt when the filter or the sort
changes; while the order is the order of arrival, new sessions are appended without a rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tftpdiag.sessions import SessionRecord

__all__ = ["SessionList", "Column"]

# name, minimum width, share of the spare width, and which goes first when the terminal is too narrow
# for all of them (lowest first; 0: always shown). A hidden column is named under the table.
Column = tuple[str, int, int, int]
Cells = Callable[[SessionRecord, list[int]], list[Text]]

_CURSOR = Style(reverse=True)
_ZEBRA = Style(bgcolor="grey11")


class SessionList(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    SessionList { height: 1fr; overflow-x: hidden; }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "select", "Details", show=False),
    ]

    class Selected(Message):
        def __init__(self, session: int) -> None:
            super().__init__()
            self.session = session

    def __init__(self, columns: tuple[Column, ...], cells: Cells, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = columns
        self.cells = cells
        self.records: list[SessionRecord] = []
        self.cursor = 0
        self._widths: list[int] = [c[1] for c in columns]

    @property
    def row_count(self) -> int:
        return len(self.records)

    def widths(self, total: int) -> list[int]:
        """Each column's width at ``total`` cells (0: hidden): the minimums, what is left shared out,
        and on a narrow terminal the least needed columns hidden until the rest fit."""
        shown = list(self.columns)
        for column in sorted((c for c in self.columns if c[3]), key=lambda c: c[3]):
            if sum(c[1] for c in shown) <= total:
                break
            shown.remove(column)
        spare = max(total - sum(c[1] for c in shown), 0)
        shares = sum(c[2] for c in shown) or 1
        return [c[1] + spare * c[2] // shares if c in shown else 0 for c in self.columns]

    def hidden(self, total: int) -> list[str]:
        return [c[0] for c, width in zip(self.columns, self.widths(total), strict=True) if not width]

    def header(self, total: int) -> Text:
        text = Text(style="bold")
        for (name, *_), width in zip(self.columns, self.widths(total), strict=True):
            if width:
                text.append(name[: width - 1].ljust(width))
        return text

    def set_records(self, records: list[SessionRecord], keep: int | None = None) -> None:
        """Show ``records`` in this order; the cursor stays on session ``keep`` if it is still there."""
        self.records = records
        if keep is not None:
            for index, record in enumerate(records):  # once per rebuild, not per tick
                if record.session == keep:
                    self.cursor = index
                    break
        self.cursor = min(self.cursor, max(len(records) - 1, 0))
        self.virtual_size = Size(self.size.width, len(records))
        self.refresh()

    def append(self, records: Iterable[SessionRecord]) -> None:
        # The cursor stays on its session: a row that moved as clients arrived opened the wrong one.
        self.records.extend(records)
        self.virtual_size = Size(self.size.width, len(self.records))
        self.refresh()

    def selected(self) -> SessionRecord | None:
        return self.records[self.cursor] if 0 <= self.cursor < len(self.records) else None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self.records):
            return Strip.blank(width, base)
        widths = self.widths(width)
        row_style = base + (_CURSOR if index == self.cursor and self.has_focus else
                            Style(reverse=True, dim=True) if index == self.cursor else
                            (_ZEBRA if index % 2 else Style()))
        segments: list[Segment] = []
        for cell in self.cells(self.records[index], widths):
            if not cell:
                continue
            for segment in cell.render(self.app.console):
                segments.append(Segment(segment.text, row_style + segment.style if segment.style else row_style))
        return Strip(segments).crop_extend(0, width, row_style).apply_offsets(scroll_x, index)

    # -- the cursor ---------------------------------------------------------------------------------

    def _move(self, row: int) -> None:
        if not self.records:
            return
        self.cursor = max(0, min(row, len(self.records) - 1))
        top, height = self.scroll_offset.y, max(self.size.height, 1)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)
        self.refresh()

    def action_cursor(self, step: int) -> None:
        self._move(self.cursor + step)

    def action_cursor_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(self.size.height - 1, 1))

    def action_cursor_to(self, row: int) -> None:
        self._move(row if row >= 0 else len(self.records) - 1)

    def action_select(self) -> None:
        record = self.selected()
        if record is not None:
            self.post_message(self.Selected(record.session))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
