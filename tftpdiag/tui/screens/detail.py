"""One server session in full: the same panel as the probe view."""

from __future__ import annotations

from rich.text import Text
from textual import getters
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static

from tftpdiag.findings import Analyzer
from tftpdiag.tui.model import Filter, LiveModel
from tftpdiag.tui.ticked import TickedApp
from tftpdiag.tui.widgets.session_panel import SessionPanel

__all__ = ["SessionDetailScreen"]


class SessionDetailScreen(Screen[None]):
    app = getters.app(TickedApp)  # pushed by the live/trace view and the sweep: both redraw on refresh_now
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("p", "pause", "Pause"),
        Binding("f", "filter", "Filter"),
        Binding("slash", "find", "Find", key_display="/"),
    ]

    def __init__(self, session: int) -> None:
        super().__init__()
        self.session = session
        self.filter = Filter.ALL
        self.paused = False

    def compose(self) -> ComposeResult:
        yield SessionPanel(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.app.refresh_now()

    def update_view(self, model: LiveModel, now: float, analyzer: Analyzer) -> None:
        if not self.is_current:
            return  # popped: its widgets may be going already
        view = model.view(self.session)
        for panel in self.query(SessionPanel).results(SessionPanel):
            if view is None and model.forgotten.sessions:
                # Not "waiting": it was let go to bound memory, and the screen says so.
                panel.query_one(".session-header", Static).update(Text(
                    " this session was forgotten to bound memory (oldest finished first); a saved trace keeps it",
                    style="bold yellow"))
                continue
            try:
                panel.show(view, now, self.filter, self.paused, analyzer.findings(self.session))
            except NoMatches:
                return  # pushed but not composed yet (a busy machine): the next tick draws it

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.app.refresh_now()

    def action_find(self) -> None:
        self.query_one(SessionPanel).open_find()

    def action_filter(self) -> None:
        self.filter = self.filter.next()
        self.app.refresh_now()
