"""The live packet table: a line-API scroll view over a bounded list of rows.

Only the visible lines are drawn, so thousands of rows a second cost a refresh, not a redraw of every
row (a DataTable re-adding rows each tick freezes the app at TFTP rates).
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tftpdiag.tui.model import PacketRow

__all__ = ["PacketList", "HEADER"]

# Each header field is as wide as the segment drawn under it in _row_segments.
HEADER = f"{'time':>8}    {'op':<6}{'block':<9}{'size':>5} {'peer':<24}note"

_STYLES = {
    "RRQ": Style(color="cyan", bold=True),
    "WRQ": Style(color="cyan", bold=True),
    "OACK": Style(color="bright_magenta"),
    "DATA": Style(color="green"),
    "ACK": Style(color="blue"),
    "ERROR": Style(color="bright_white", bgcolor="red", bold=True),
    "?": Style(color="bright_white", bgcolor="red", bold=True),
}
_DIM = Style(dim=True)
_PROBLEM = Style(color="yellow", bold=True)
_ERROR = Style(color="red", bold=True)


def _row_segments(row: PacketRow) -> list[Segment]:
    note_style = _ERROR if row.op in ("ERROR", "?") else (_PROBLEM if row.problem else _DIM)
    return [
        Segment(f"{row.t:>8.3f}", _DIM),
        Segment(" →  " if row.outgoing else " ←  ", Style(color="bright_white" if row.outgoing else "bright_cyan")),
        Segment(f"{row.op:<6}", _STYLES.get(row.op, Style())),
        Segment(f"{row.block:<9}"),
        Segment(f"{row.size:>5} "),
        Segment(f"{row.peer:<24}", _DIM),
        Segment(row.note, note_style),
    ]


class PacketList(ScrollView, can_focus=True):
    """Shows the rows it is given; follows the newest unless the user scrolled up."""

    DEFAULT_CSS = """
    PacketList { height: 1fr; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[PacketRow] = []
        # A few screens' worth: every Strip carries small caches of its own, and thousands of them make
        # each full pass of the garbage collector long enough to stall a redraw.
        self._cache: LRUCache[PacketRow, Strip] = LRUCache(256)

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def set_rows(self, rows: list[PacketRow]) -> None:
        follow = self.is_vertical_scroll_end or not self._rows
        self._rows = rows
        self.virtual_size = Size(self.size.width, len(rows))
        if follow:
            # Before the first layout the height is unknown; scroll once the size is settled.
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self._rows):
            return Strip.blank(width, style)
        row = self._rows[index]
        strip = self._cache.get(row)
        if strip is None:
            # The widget's own style goes underneath, so every cell shares its background.
            strip = Strip([Segment(text, style + seg_style if seg_style else style)
                           for text, seg_style, _ in _row_segments(row)])
            self._cache[row] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
