"""Asks where to save the trace; the extension chooses the format."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

__all__ = ["SaveTraceScreen", "save_and_tell"]


class SaveTraceScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SaveTraceScreen { align: center middle; }
    SaveTraceScreen > Vertical { width: 70; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    SaveTraceScreen > Vertical { max-width: 100%; }
    SaveTraceScreen Label { color: $text-muted; width: 100%; }
    """

    def __init__(self, default: str, what: str = "trace") -> None:
        super().__init__()
        self.default = default
        self.what = what  # "trace", or "sweep" (whose report saves as .json)

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"Save {self.what}"
            extra = ".json keeps the sweep's report (as --json prints it); " if self.what == "sweep" else ""
            yield Label(f"File name: {extra}.pcap opens in Wireshark, .jsonl keeps every event. Enter saves, "
                        "escape cancels.")
            yield Input(value=self.default, id="path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        # Absolute, so that what is said after saving names the file wherever the view was started.
        self.dismiss(Path(os.path.abspath(Path(value).expanduser())) if value else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def save_and_tell(app: App[Any], saver: Callable[[Path], str], path: Path) -> None:
    """Save on a worker thread and tell the user how it went (any failure is said, never raised)."""
    from tftpdiag.fmt import line

    try:
        message = saver(path)
    except Exception as exc:  # noqa: BLE001 - reported to the user
        app.call_from_thread(app.notify, line(f"could not save: {exc}"), severity="error", timeout=8, markup=False)
        return
    app.call_from_thread(app.notify, line(message), timeout=6, markup=False)
