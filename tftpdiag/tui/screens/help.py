"""The help screen: keys, and how to read the packet table."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["HelpScreen"]


def _help() -> Table:
    keys = Table(box=None, padding=(0, 2), show_header=False)
    keys.add_column(style="bold cyan", no_wrap=True)
    keys.add_column()
    for key, what in (
        ("q", "quit (a running transfer is cancelled and the peer told with ERROR 0)"),
        ("s", "save the trace so far: a name ending .pcap (Wireshark) or .jsonl (every event)"),
        ("p", "pause / resume the live tables (nothing is lost; the trace keeps recording)"),
        ("f", "filter: packets all / no DATA-ACK / problems only; sessions all / active / problems"),
        ("r", "run the probe again"),
        ("enter", "open the selected session's details (server view)"),
        ("escape", "back"),
        ("tab", "move between panels; arrows and page keys scroll"),
        ("?", "this help"),
    ):
        keys.add_row(key, what)
    notes = Table(box=None, padding=(0, 2), show_header=False)
    notes.add_column(style="bold yellow", no_wrap=True)
    notes.add_column()
    for note, what in (
        ("retransmit", "sent again because no answer came in time (or a window showed a gap)"),
        ("re-ack", "an ACK repeated because the peer repeated its DATA (our ACK was lost or late)"),
        ("duplicate", "a packet that had already arrived (the network or the peer doubled it)"),
        ("out-of-order", "a DATA block ahead of the one expected: an earlier block was lost"),
        ("stray", "from an unknown port (transfer ID): answered with ERROR 5, transfer goes on"),
        ("malformed", "could not be decoded; answered with ERROR 4"),
        ("block N↻k", "block number N after k rollovers past 65535"),
    ):
        notes.add_row(note, what)
    grid = Table.grid(padding=(1, 0))
    grid.add_row(Text("Keys", style="bold underline"))
    grid.add_row(keys)
    grid.add_row(Text("Notes in the packet table", style="bold underline"))
    grid.add_row(notes)
    grid.add_row(Text("→ sent by tftpdiag   ← received.  Option verdicts: accepted (as asked), reduced "
                      "(granted lower), ignored (left out: default used), refused (ERROR 8), dropped (refused, "
                      "so asked again without it).", style="dim"))
    return grid


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 110; height: 80%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "tftpdiag help (escape to close)"
            yield Static(_help())
