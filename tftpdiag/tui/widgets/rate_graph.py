"""Throughput over time as block characters, retransmits and timeouts marked under the moment they
happened, and a progress bar with percent and ETA when the size is known."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from tftpdiag.sessions import fmt_bytes, fmt_rate
from tftpdiag.tui.model import SessionView

__all__ = ["RateGraph", "rates_per_column"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


def _bytes_at(samples: list[tuple[float, int]], t: float, hint: int) -> tuple[float, int]:
    """Cumulative bytes at time ``t``, interpolated between samples; also the index reached."""
    index = hint
    while index < len(samples) and samples[index][0] <= t:
        index += 1
    if index == 0:
        return 0.0, 0
    t0, b0 = samples[index - 1]
    if index == len(samples):
        return float(b0), index
    t1, b1 = samples[index]
    return (b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else float(b1)), index


def rates_per_column(samples: list[tuple[float, int]], start: float, end: float, columns: int) -> list[float]:
    """Bytes per second in each of ``columns`` equal slices of [start, end].

    Progress samples come about every 0.1 s; between two samples the bytes are spread evenly, so a
    column narrower than that interval does not read as a stall.
    """
    if columns <= 0 or end <= start or not samples:
        return [0.0] * max(columns, 0)
    series = [(start, 0)] + samples if samples[0][0] > start else samples
    step = (end - start) / columns
    rates = []
    previous, index = _bytes_at(series, start, 0)
    for col in range(columns):
        current, index = _bytes_at(series, start + (col + 1) * step, max(index - 1, 0))
        rates.append(max(current - previous, 0.0) / step)
        previous = current
    return rates


class RateGraph(Widget):
    """Draws as many graph rows as its height leaves after the marks and status lines."""

    DEFAULT_CSS = """
    RateGraph { height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view: SessionView | None = None
        self.now = 0.0

    def show(self, view: SessionView | None, now: float) -> None:
        self.view, self.now = view, now
        self.refresh()

    def render(self) -> Text:
        width = max(self.content_size.width, 10)
        compact = self.content_size.height < 6
        graph_rows = max(self.content_size.height - (2 if compact else 3), 1)
        view = self.view
        start = view.record.started if view is not None else None
        if view is None or start is None:
            return Text("waiting for the first packet…", style="dim")
        record = view.record
        samples = record.samples
        end = record.result.time if record.result is not None else max(self.now, start)
        if record.result is None and samples:
            # Progress comes every ~0.1 s: the time since the newest sample is not a stall, and drawn up
            # to "now" the right edge always looked like one. Only a real silence reaches "now".
            newest = samples[-1][0]
            end = newest if self.now - newest < 1.0 else max(end, newest)
        rates = rates_per_column(samples, start, end, width)
        peak = max(rates) if rates else 0.0
        text = Text()
        for row in range(graph_rows, 0, -1):
            line = []
            for rate in rates:
                level = rate / peak * graph_rows * 8 if peak > 0 else 0.0
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
        current = record.window_rate(self.now)
        status = Text(f"{fmt_rate(current)} ", style="bold")
        status.append(f"· {record.retransmits} retx · {record.timeouts} timeouts", style="dim")
        if compact:
            text.append_text(progress_line(record.bytes, record.total, current, width - len(status) - 1,
                                           record.finished, short=True))
            text.append(" ")
            text.append_text(status)
            return text
        status.append(f" · peak {fmt_rate(record.peak)}", style="dim")  # the record's: it never falls
        text.append_text(status)
        text.append("\n")
        text.append_text(progress_line(record.bytes, record.total, current, width, record.finished))
        return text


def progress_line(done: int, total: int | None, rate: float, width: int, finished: bool,
                  short: bool = False) -> Text:
    if total is None or total <= 0:
        label = f"{fmt_bytes(done)}" + ("" if finished or short else " transferred (size unknown: no tsize)")
        return Text(label, style="dim")
    fraction = min(done / total, 1.0)
    remaining = (total - done) / rate if rate > 0 and not finished else 0.0
    tail = f" {fraction:4.0%}" if short else f" {fraction:4.0%}  {fmt_bytes(done)} of {fmt_bytes(total)}"
    if not finished and rate > 0:
        tail += f" ETA {remaining:.0f}s"
    bar_width = max(width - len(tail) - 1, 5)
    filled = int(bar_width * fraction)
    text = Text("█" * filled, style="green")
    text.append("░" * (bar_width - filled), style="dim")
    text.append(tail)
    return text
