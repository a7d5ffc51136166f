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


def _pairs(style: str, rows: tuple[tuple[str, str], ...]) -> Table:
    """A borderless two-column table: a term in ``style``, then what it means."""
    table = Table(box=None, padding=(0, 2), show_header=False)
    table.add_column(style=style, no_wrap=True)
    table.add_column()
    for term, meaning in rows:
        table.add_row(term, meaning)
    return table


def _help() -> Table:
    keys = _pairs("bold cyan", (
        ("q", "quit (a running transfer is cancelled and the peer told with ERROR 0)"),
        ("s", "save the trace so far: a name ending .pcap (Wireshark) or .jsonl (every event)"),
        ("p", "pause / resume the live tables (nothing is lost; the trace keeps recording)"),
        ("f", "filter: packets all / no DATA-ACK / problems only; sessions all / active / problems"),
        ("/", "packets: a block number jumps to it, text keeps the rows that mention it (op, peer, note); "
              "sessions: type to keep those whose client, file or state contains it; escape: all again"),
        ("o", "order the sessions: start, client, file, state, bytes, rate, retransmits, time"),
        ("home end", "first / last row (End follows the newest again); page keys page"),
        ("r", "run the probe again"),
        ("enter", "open the selected session's details (server view)"),
        ("d", "devices: each client's boot sequence, its verdict and findings (serve, watch, trace)"),
        ("escape", "back"),
        ("tab", "move between panels; arrows and page keys scroll"),
        ("?", "this help"),
    ))
    notes = _pairs("bold yellow", (
        ("retransmit", "sent again because no answer came in time (or a window showed a gap)"),
        ("re-ack", "an ACK repeated because the peer repeated its DATA (our ACK was lost or late)"),
        ("duplicate", "a packet that had already arrived (the network or the peer doubled it)"),
        ("copy", "seen again within 20 ms, asked for by nothing: a copy the network or the capture point made"),
        ("out-of-order", "a DATA block ahead of the one expected: an earlier block was lost"),
        ("stray", "from an unknown port (transfer ID): answered with ERROR 5, transfer goes on"),
        ("malformed", "could not be decoded; answered with ERROR 4"),
        ("block N↻k", "block number N after k rollovers past 65535"),
        ("GAP", "a capture lacks packets here that the transfer shows were delivered (not a network loss)"),
    ))
    columns = _pairs("bold yellow", (
        ("state ⚠N", "a finished transfer with N findings to read in its details (enter)"),
        ("rate", "over the last 2 s while it runs; the average once finished"),
        ("options", "what was granted: b blksize, w windowsize, t timeout (in words when there is room)"),
        ("time", "how long it has been running, or how long it took"),
    ))
    grid = Table.grid(padding=(1, 0))
    grid.add_row(Text("Keys", style="bold underline"))
    grid.add_row(keys)
    grid.add_row(Text("Notes in the packet table", style="bold underline"))
    grid.add_row(notes)
    grid.add_row(Text("Columns of the sessions table", style="bold underline"))
    grid.add_row(columns)
    grid.add_row(Text("→ sent by tftpdiag   ← received.  Option verdicts: accepted (as asked), reduced "
                      "(granted lower), ignored (left out: default used), refused (ERROR 8), dropped (refused, "
                      "so asked again without it).", style="dim"))
    return grid


def _sweep_help() -> Table:
    from tftpdiag.tui.sweep_app import RESULT_WORDS

    keys = _pairs("bold cyan", (
        ("q", "quit (a running probe is cancelled)"),
        ("↑ ↓", "select a probe: what it asked, what came of it and its findings show below the table"),
        ("enter", "the selected probe's packets, option panel and findings, as for any session"),
        ("s", "save: a name ending .json keeps the sweep's report, .pcap or .jsonl its packets"),
        ("escape", "back"),
        ("?", "this help"),
    ))
    columns = _pairs("bold yellow", (
        ("probe", "the option or mode this probe tests"),
        ("asked", "the options the request carried"),
        ("granted", "what the server's OACK granted (no OACK: it ignored every option)"),
        *((f"result: {word}", meaning) for word, meaning in RESULT_WORDS),
        ("rate", "bytes per second the probe moved"),
        ("findings", "how many findings, by severity; select the row to read them"),
    ))
    grid = Table.grid(padding=(1, 0))
    grid.add_row(Text("Keys", style="bold underline"))
    grid.add_row(keys)
    grid.add_row(Text("Columns", style="bold underline"))
    grid.add_row(columns)
    grid.add_row(Text("Each probe downloads the file once with other options and stops early once it has "
                      "enough to measure; larger block sizes are skipped once one was lost on the path.",
                      style="dim"))
    return grid


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 110; height: 80%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, sweep: bool = False) -> None:
        super().__init__()
        self.sweep = sweep

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "tftpdiag help (escape to close)"
            yield Static(_sweep_help() if self.sweep else _help())
