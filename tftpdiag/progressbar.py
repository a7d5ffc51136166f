"""The headless progress bar on stderr, in the same binary units as everything else tftpdiag prints
(rich's own download and speed columns count in kB and MB). Imported only when the bar is shown, so
scripts never load rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from tftpdiag.fmt import quote, rate, size

if TYPE_CHECKING:
    from rich.progress import Task

__all__ = ["transfer_bar", "SizeColumn", "RateColumn"]


class SizeColumn(ProgressColumn):
    """``1.5/8.0 MiB``-style: bytes done, and of how many when the size is known."""

    def render(self, task: Task) -> Text:
        done = size(task.completed)
        return Text(f"{done} / {size(task.total)}" if task.total is not None else done, style="progress.download")


class RateColumn(ProgressColumn):
    """Bytes per second over rich's recent window, ``?`` until it has two samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else rate(speed), style="progress.data.speed")


def transfer_bar(filename: str, upload: bool) -> Progress:
    verb = "uploading" if upload else "downloading"
    name = escape(quote(filename))  # from the user or a URL, but still shown through fmt
    return Progress(TextColumn(f"{verb} [bold]{name}[/]"), BarColumn(), SizeColumn(), RateColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
