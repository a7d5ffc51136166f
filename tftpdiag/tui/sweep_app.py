"""probe --sweep in the TUI: a table that fills as each probe ends, then what the server supports and
the fastest safe settings. The sweep runs on a worker thread; results arrive as one message each."""

from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from tftpdiag.engine.client import TransferSetupError
from tftpdiag.fmt import clean, options, quote
from tftpdiag.protocol.session import Timing
from tftpdiag.sessions import fmt_bytes, fmt_rate
from tftpdiag.sweep import ProbeResult, SweepReport, run_sweep, summary_lines

__all__ = ["SweepApp", "run_sweep_app"]

_STYLE = {"completed": "green", "capped": "green", "failed": "bold red", "skipped": "dim"}


def _options(values: dict[str, str] | None) -> Text:
    """The server's OACK, escaped, as Text: a DataTable reads a plain string as markup."""
    if values is None:
        return Text("no OACK")
    return Text(options(values.items()) if values else "-")


class SweepApp(App[int]):
    TITLE = "tftpdiag"
    CSS = """
    #target { height: 1; padding: 0 1; background: $boost; }
    #probes { height: 1fr; border: round $primary-darken-1; }
    #verdict { height: auto; max-height: 10; padding: 0 1; border-top: solid $primary-darken-1; }
    """
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, host: str, port: int, filename: str, *, family: int = 0, timing: Timing | None = None) -> None:
        super().__init__()
        self.host, self.port, self.filename = host, port, filename
        self.family, self.timing = family, timing
        self.cancel = threading.Event()
        self.report: SweepReport | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" sweep ", "bold"), f"{self.host}:{self.port} ", (quote(self.filename), "bold"),
                                   ("  short probes with different options, 2 MiB at most each", "dim")), id="target")
        yield DataTable(id="probes", cursor_type="row")
        yield Static(Text("probing…", style="dim"), id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for name, width in (("probe", 14), ("granted", 18), ("result", 26), ("bytes", 9), ("rate", 12),
                            ("findings", 22)):
            table.add_column(name, key=name, width=width)
        self.sweep()

    @work(thread=True, exclusive=True)
    def sweep(self) -> None:
        try:
            report = run_sweep(self.host, self.port, self.filename, family=self.family, timing=self.timing,
                               cancel=self.cancel,
                               on_result=lambda r: self.call_from_thread(self.add_result, r))
        except TransferSetupError as exc:
            self.call_from_thread(self.query_one("#verdict", Static).update, Text(clean(str(exc)), style="bold red"))
            return
        self.call_from_thread(self.finish, report)

    def add_result(self, result: ProbeResult) -> None:
        outcome = result.outcome
        if outcome in ("failed", "skipped"):
            outcome = f"{outcome}: {clean(result.message)}"
        if len(outcome) > 25:
            outcome = outcome[:24] + "…"  # the whole message is in the summary and in --json
        self.query_one(DataTable).add_row(
            Text(result.name), "" if result.outcome == "skipped" else _options(result.granted),
            Text(outcome, style=_STYLE[result.outcome]),
            fmt_bytes(result.bytes) if result.outcome != "skipped" else "",
            fmt_rate(result.rate_bps) if result.ok else "",
            ", ".join(f.id for f in result.findings if f.severity != "info"))

    def finish(self, report: SweepReport) -> None:
        self.report = report
        self.query_one("#verdict", Static).update(Text("\n".join(summary_lines(report)) or "done"))

    def action_quit(self) -> None:
        self.cancel.set()
        ok = self.report is not None and any(r.ok for r in self.report.results)
        self.exit(0 if ok else 1)


def run_sweep_app(host: str, port: int, filename: str, *, family: int = 0, timing: Timing | None = None) -> int:
    code = SweepApp(host, port, filename, family=family, timing=timing).run()
    return code if code is not None else 1
