"""Throughput over time as block characters, retransmits and timeouts marked under the moment they
happened, and a progress bar with percent and ETA when the size is known."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tftpdiag.sessions import fmt_bytes, fmt_rate
from tftpdiag.tui.model import SessionView

__all__ = ["RateGraph", "rates_per_column"]

_BLOCKS = " ▁▂▃▄▅▆▇█"
_GRAPH_ROWS = 3


def rates_per_column(samples: list[tuple[float, int]], start: float, end: float, columns: int) -> list[float]:
    """Bytes per second in each of ``columns`` equal slices of [start, end], from cumulative samples."""
    if columns <= 0 or end <= start or not samples:
        return [0.0] * max(columns, 0)
    step = (end - start) / columns
    rates = []
    index = 0
    previous_bytes = 0
    for col in range(columns):
        edge = start + (col + 1) * step
        while index < len(samples) and samples[index][0] <= edge:
            index += 1
        current = samples[index - 1][1] if index else 0
        rates.append(max(current - previous_bytes, 0) / step)
        previous_bytes = current
    return rates


class RateGraph(Widget):
    DEFAULT_CSS = """
    RateGraph { height: 6; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view: SessionView | None = None
        self.now = 0.0

    def show(self, view: SessionView | None, now: float) -> None:
        self.view, self.now = view, now
        self.refresh()

    def render(self) -> Text:
        width = max(self.size.width, 10)
        view = self.view
        if view is None or view.record.started is None:
            return Text("waiting for the first packet…", style="dim")
        record = view.record
        start = record.started
        end = record.result.time if record.result is not None else max(self.now, start)
        if record.result is None and view.samples:
            end = max(end, view.samples[-1][0])
        rates = rates_per_column(view.samples, start, end, width)
        peak = max(rates) if rates else 0.0
        text = Text()
        for row in range(_GRAPH_ROWS, 0, -1):
            line = []
            for rate in rates:
                level = rate / peak * _GRAPH_ROWS * 8 if peak > 0 else 0.0
                fill = min(max(level - (row - 1) * 8, 0.0), 8.0)
                line.append(_BLOCKS[int(round(fill))])
            text.append("".join(line) + "\n", style="green")
        marks = [" "] * width
        span = end - start
        for when, kind in view.marks:
            if span > 0:
                col = min(int((when - start) / span * width), width - 1)
                marks[col] = "!" if kind == "timeout" or marks[col] == "!" else "×"
        text.append("".join(marks) + "\n", style="bold red")
        current = rates[-1] if rates and record.result is None else record.rate
        text.append(f"{fmt_rate(current)}", style="bold")
        text.append(f" · peak {fmt_rate(peak)} · {record.retransmits} retransmits · {record.timeouts} timeouts"
                    f"  (× retransmit, ! timeout)\n", style="dim")
        text.append_text(progress_line(record.bytes, record.total, current, width, record.finished))
        return text


def progress_line(done: int, total: int | None, rate: float, width: int, finished: bool) -> Text:
    if total is None or total <= 0:
        label = f"{fmt_bytes(done)} transferred" + ("" if finished else " (size unknown: no tsize)")
        return Text(label, style="dim")
    fraction = min(done / total, 1.0)
    remaining = (total - done) / rate if rate > 0 and not finished else 0.0
    tail = f" {fraction:4.0%}  {fmt_bytes(done)} of {fmt_bytes(total)}"
    if not finished and rate > 0:
        tail += f"  ETA {remaining:.0f} s"
    bar_width = max(width - len(tail) - 1, 5)
    filled = int(bar_width * fraction)
    text = Text("█" * filled, style="green")
    text.append("░" * (bar_width - filled), style="dim")
    text.append(tail)
    return text
