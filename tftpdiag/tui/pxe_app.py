"""tftpdiag pxe in the TUI: the DHCP answers in a table, the selected answer's options in words below
it, then what the answers alone say (findings and the chain so far). `p` (or enter) goes on to the boot
file in the probe view, the same one `tftpdiag probe` shows; `q` stops there.

Every string here was chosen by a DHCP server: it reaches the screen already escaped by
:mod:`tftpdiag.fmt` (through :mod:`tftpdiag.pxe.render` and :mod:`tftpdiag.dhcp.options`), and only
as rich Text, never as markup.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from tftpdiag.dhcp.offers import Offer
from tftpdiag.pxe.render import cells, chain_line, header_line, probe_line
from tftpdiag.pxe.run import PxeReport

__all__ = ["PxeApp", "PROBE", "QUIT"]

PROBE, QUIT = "probe", "quit"
_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
_ICON = {"error": "✘", "warning": "⚠", "info": "ℹ"}


def offer_options(offer: Offer) -> Group:
    """One answer's options, one per line, as Text (the values are escaped already)."""
    title = f"options from {offer.server}" + (f" (port {offer.port})" if offer.port != 67 else "")
    lines = [Text(title, style="bold")]
    lines += [Text.assemble((f"{code:4d} ", "dim"), (f"{name}: ", "cyan"), value)
              for code, name, value in offer.options_readable()]
    return Group(*lines)


class PxeApp(App[str]):
    """Exits with :data:`PROBE` when the user asks for the boot file's probe, :data:`QUIT` otherwise."""

    TITLE = "tftpdiag pxe"
    CSS = """
    #head { height: auto; padding: 0 1; }
    #offers { height: auto; max-height: 12; }
    #options { height: 1fr; padding: 0 1; overflow-y: auto; }
    #verdict { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("p", "probe", "probe the boot file"),
        Binding("enter", "probe", "probe", show=False),
        Binding("q", "quit_pxe", "quit"),
    ]

    def __init__(self, report: PxeReport) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        yield Static(Text(header_line(self.report)), id="head")
        yield DataTable(id="offers", cursor_type="row", zebra_stripes=True)
        yield Static(id="options")
        yield Static(self._verdict(), id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#offers", DataTable)
        table.add_columns("server", "offers", "next-server", "boot file", "kind", "after")
        for offer in self.report.collected.offers:
            table.add_row(*(Text(cell) for cell in cells(offer)))
        self._show(0)
        table.focus()

    def _show(self, row: int) -> None:
        offers = self.report.collected.offers
        panel = self.query_one("#options", Static)
        if 0 <= row < len(offers):
            panel.update(offer_options(offers[row]))
        else:
            panel.update(Text("No DHCP server answered: nothing to show.", style="bold red"))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)

    def _verdict(self) -> Group:
        lines = []
        for finding in self.report.findings:
            lines.append(Text.assemble((f"{_ICON[finding.severity]} ", _STYLE[finding.severity]), finding.summary))
            if finding.suggestion:
                lines.append(Text(f"    try: {finding.suggestion}", style="dim"))
        nxt = probe_line(self.report)
        lines.append(Text(nxt + " — press p" if nxt else "Nothing to probe: no boot file or boot server.",
                          style="bold" if nxt else "bold red"))
        lines.append(Text(chain_line(self.report, pending=True)))
        return Group(*lines)

    def action_probe(self) -> None:
        self.exit(PROBE if probe_line(self.report) else QUIT)

    def action_quit_pxe(self) -> None:
        self.exit(QUIT)
