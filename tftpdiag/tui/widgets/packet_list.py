"""The live packet table: a line-API scroll view over every packet of a session.

Only the visible lines are drawn, so thousands of rows a second cost a refresh, not a redraw of every
row (a DataTable re-adding rows each tick freezes the app at TFTP rates).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tftpdiag.packetlog import PacketLog, PacketRow

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
    "GAP": Style(color="black", bgcolor="yellow", bold=True),
}
_DIM = Style(dim=True)
_PROBLEM = Style(color="yellow", bold=True)
_ERROR = Style(color="red", bold=True)
_MARKED = Style(reverse=True)


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
    """A window onto a session's PacketLog: only the rows on screen are built, from the log's columns,
    so a million packets scroll like a hundred. Follows the newest unless the user scrolled away."""

    DEFAULT_CSS = """
    PacketList { height: 1fr; overflow-x: hidden; overflow-y: scroll; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._log: PacketLog | None = None
        self._positions: array | None = None  # the rows a filter keeps; None: every row of the log
        self._count = 0
        self._started = 0.0
        self.marked: int | None = None  # a log position to highlight (a block jumped to)
        # Whether to keep the newest row in view. A flag, not "is the view at the end now": rows can
        # arrive between asking to scroll to the end and the scroll, and then following stopped.
        self.following = True
        # A few screens' worth: every Strip carries small caches of its own, and thousands of them make
        # each full pass of the garbage collector long enough to stall a redraw.
        self._cache: LRUCache[tuple[int, int, int], Strip] = LRUCache(256)

    @property
    def row_count(self) -> int:
        return self._count

    # Keys jump at once: animated, a jump across a million rows took seconds to arrive, and a screen
    # caught mid-way read as the wrong place. Scrolling away stops following the newest; End resumes.

    def action_scroll_home(self) -> None:
        self.following = False
        self.scroll_to(y=0, animate=False, immediate=True)

    def action_scroll_end(self) -> None:
        self.following = True
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def action_page_up(self) -> None:
        self.following = False
        self.scroll_to(y=max(self.scroll_y - self.scrollable_content_region.height, 0), animate=False, immediate=True)

    def action_page_down(self) -> None:
        target = self.scroll_y + self.scrollable_content_region.height
        self.following = target >= self.max_scroll_y
        self.scroll_to(y=min(target, self.max_scroll_y), animate=False, immediate=True)

    def action_scroll_up(self) -> None:
        self.following = False
        self.scroll_to(y=max(self.scroll_y - 1, 0), animate=False, immediate=True)

    def action_scroll_down(self) -> None:
        self.following = self.scroll_y + 1 >= self.max_scroll_y
        self.scroll_to(y=min(self.scroll_y + 1, self.max_scroll_y), animate=False, immediate=True)

    def on_resize(self, event: events.Resize) -> None:
        # The virtual width follows the table's own, set here where a layout has just run: the next
        # set_source (a transfer's first rows) then only moves the thumb, without a layout of its own.
        if self.virtual_size.width != event.size.width:
            self.set_reactive(PacketList.virtual_size, Size(event.size.width, self._count))
        if self.following:  # a panel above took or gave back lines: the newest row stays in sight
            self.call_after_refresh(self._follow)

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.following = False
        super()._on_mouse_scroll_up(event)

    def set_source(self, log: PacketLog | None, positions: array | None, started: float) -> None:
        """Show ``log`` (the rows at ``positions`` only, if given). Cheap: nothing is copied."""
        follow = self.following
        if log is not self._log or positions is not self._positions:
            self._cache.clear()
        self._log, self._positions, self._started = log, positions, started
        count = 0 if log is None else (len(log) if positions is None else len(positions))
        if count == self._count and not follow:
            return
        self._count = count
        size = Size(self.size.width, count)
        if self.show_vertical_scrollbar and size.width == self.virtual_size.width and hasattr(self, "_scroll_update"):
            # The scrollbar is always shown (overflow-y: scroll): only its thumb moves. Set as a
            # reactive, the size asks for a layout, which lays out and repaints the whole screen: at every
            # tick of a transfer that was a fifth of a frame's CPU (measured), and a scrollbar appearing
            # a few ticks into a transfer asked for one more. Textual's own resize takes this path.
            self.set_reactive(PacketList.virtual_size, size)
            self._scroll_update(size)
            if follow:  # the scroll goes in this frame, not in one more after it
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)
        else:
            self.virtual_size = size
        if follow:
            # Before the first layout the height is unknown, and a panel above may change it in the
            # layout this tick asks for (an outcome of more lines): looked at again once it is settled.
            self.call_after_refresh(self._follow)
        self.refresh()

    def _follow(self) -> None:
        # Asked for before the last refresh: the user may have jumped elsewhere since.
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True)

    def position_at(self, row: int) -> int:
        return row if self._positions is None else self._positions[row]

    def row_of(self, position: int) -> int:
        """The table row that shows log ``position`` (or the next one the filter keeps)."""
        if self._positions is None:
            return position
        return bisect_left(self._positions, position)

    def show_position(self, position: int) -> None:
        """Scroll so the row of log ``position`` is in the middle of the view, and highlight it."""
        self.marked = position
        self.following = False
        self._cache.clear()
        row = self.row_of(position)
        self.scroll_to(y=max(row - self.size.height // 2, 0), animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        log = self._log
        if log is None or index >= self._count or index >= (len(log) if self._positions is None else
                                                             len(self._positions)):
            return Strip.blank(width, style)
        position = self.position_at(index)
        key = (id(log), position, width)
        strip = self._cache.get(key)
        if strip is None:
            row = log.row(position, self._started)
            base = style + _MARKED if position == self.marked else style
            # The widget's own style goes underneath, so every cell shares its background.
            strip = Strip([Segment(text, base + seg_style if seg_style else base)
                           for text, seg_style, _ in _row_segments(row)])
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
