"""probe --sweep in the TUI: a table that fills as each probe ends, the selected probe explained in words
below it, then what the server supports and the fastest safe settings. Enter opens a probe's packets in
the same detail view as any session; `s` saves the sweep (JSON) or its packets (.pcap, .jsonl).

The sweep runs on a worker thread and publishes its probes' events on a bus; this app folds them on its
timer into the same model and analyzer the other views use, and each finished probe arrives as one
message."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import TransferSetupError
from tftpdiag.findings import Analyzer, Finding
from tftpdiag.fmt import clean, duration, json_line, options, quote
from tftpdiag.protocol.timer import Timing
from tftpdiag.sessions import fmt_bytes, fmt_rate
from tftpdiag.sweep import MAX_BYTES, ProbeResult, SweepReport, run_sweep, summary_lines
from tftpdiag.tui.app import TftpDiagApp, drawable
from tftpdiag.tui.model import LiveModel
from tftpdiag.tui.screens.detail import SessionDetailScreen
from tftpdiag.tui.screens.help import HelpScreen
from tftpdiag.tui.screens.save import SaveTraceScreen, save_and_tell
from tftpdiag.tui.ticked import TickedApp

__all__ = ["SweepApp", "run_sweep_app", "RESULT_WORDS"]

_STYLE = {"completed": "green", "capped": "green", "failed": "bold red", "skipped": "dim"}
_ICON = {"error": ("✘", "bold red"), "warning": ("⚠", "yellow"), "info": ("ℹ", "dim")}
TICK = 0.1

# What each result means, for the legend and the help screen.
RESULT_WORDS = (
    ("completed", "the whole file arrived"),
    ("capped", f"stopped once it had moved {fmt_bytes(MAX_BYTES)}: enough to measure the rate, so a success"),
    ("failed", "the server or the path refused or lost it: select the row for why"),
    ("skipped", "an earlier probe already ruled it out (say, a larger block that the path drops)"),
)


def _options(values: dict[str, str] | None) -> Text:
    """The server's OACK, escaped, as Text: a DataTable reads a plain string as markup."""
    if values is None:
        return Text("no OACK")
    return Text(options(values.items()) if values else "-")


def _findings_cell(findings: list[Finding]) -> Text:
    """How many findings of each severity, in words: the rows below the table say what they are."""
    counts = {sev: sum(1 for f in findings if f.severity == sev) for sev in ("error", "warning", "info")}
    text = Text()
    for sev, n in counts.items():
        if n:
            icon, style = _ICON[sev]
            text.append(f"{icon} {n} {sev}{'s' if n > 1 else ''}  ", style=style)
    return text if text.plain else Text("none", style="dim")


def probe_explained(result: ProbeResult) -> Group:
    """One probe in words: what it asked, what came of it, and each finding with what to try."""
    lines = [Text.assemble((f"{result.name}: ", "bold"), (result.outcome, _STYLE[result.outcome]),
                           f" — {dict(RESULT_WORDS)[result.outcome]}")]
    if result.message:
        lines.append(Text(f"  {clean(result.message)}"))
    if result.outcome != "skipped":
        lines.append(Text(f"  asked {options(result.requested.items())}; granted "
                          f"{'no OACK' if result.granted is None else options(result.granted.items())}; "
                          f"{fmt_bytes(result.bytes)} in {duration(result.duration)}", style="dim"))
    for finding in result.findings:
        icon, style = _ICON.get(finding.severity, ("-", ""))
        line = Text.assemble((f"  {icon} ", style), (finding.summary, style))
        if finding.suggestion and finding.severity != "info":
            line.append(f"  → {finding.suggestion}", style="dim")
        lines.append(line)
    if result.session is not None:
        lines.append(Text("  enter: this probe's packets", style="dim"))
    return Group(*lines)


class SweepApp(TickedApp):
    TITLE = "tftpdiag"
    # A probe's detail is the session panel of the other views: it takes their layout rules too.
    HORIZONTAL_BREAKPOINTS = TftpDiagApp.HORIZONTAL_BREAKPOINTS
    CSS = TftpDiagApp.CSS + """
    #target { height: 1; padding: 0 1; background: $boost; }
    #probes { height: 1fr; min-height: 6; border: round $primary-darken-1; }
    #legend { height: auto; padding: 0 1; color: $text-muted; }
    #explain { height: auto; max-height: 8; padding: 0 1; border-top: solid $primary-darken-1; }
    #verdict { height: auto; max-height: 6; padding: 0 1; border-top: solid $primary-darken-1; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("enter", "open", "Packets", show=True),
        Binding("s", "save", "Save"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, host: str, port: int, filename: str, *, family: int = 0, timing: Timing | None = None,
                 tick: float | None = TICK) -> None:
        super().__init__()
        self.host, self.port, self.filename = host, port, filename
        self.family, self.timing = family, timing
        self.cancel = threading.Event()
        self.report: SweepReport | None = None
        self.results: list[ProbeResult] = []
        # The probes' events, for their detail views and for saving their packets.
        self.bus = EventBus()
        self._feed = self.bus.subscribe()
        self.model = LiveModel()
        self.analyzer = Analyzer()
        self.tick_interval = tick
        from tftpdiag.trace.spool import Spool

        self.spool = Spool(self.bus)

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" sweep ", "bold"), f"{self.host}:{self.port} ", (quote(self.filename), "bold"),
                                   (f"  short probes with different options, {fmt_bytes(MAX_BYTES)} at most each",
                                    "dim")), id="target")
        yield DataTable(id="probes", cursor_type="row")
        yield Static(Text(f"capped = stopped after {fmt_bytes(MAX_BYTES)}, enough to measure: a success · skipped = "
                          "ruled out by an earlier probe · ? explains every column"), id="legend")
        yield Static(id="explain")
        yield Static(Text("probing…", style="dim"), id="verdict")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # What a field engineer reads first comes first: a narrow terminal scrolls to the rest.
        for name, width in (("probe", 14), ("result", 26), ("rate", 12), ("findings", 20), ("granted", 22),
                            ("asked", 26), ("bytes", 10)):
            table.add_column(name, key=name, width=width)
        table.focus()
        if self.tick_interval:
            self.set_interval(self.tick_interval, self.refresh_now)
        self.sweep()

    def on_unmount(self) -> None:
        self.spool.close()

    @work(thread=True, exclusive=True)
    def sweep(self) -> None:
        try:
            report = run_sweep(self.host, self.port, self.filename, family=self.family, timing=self.timing,
                               cancel=self.cancel, bus=self.bus,
                               on_result=lambda r: self.call_from_thread(self.add_result, r))
        except TransferSetupError as exc:
            self.call_from_thread(self.query_one("#verdict", Static).update, Text(clean(str(exc)), style="bold red"))
            return
        self.call_from_thread(self.finish, report)

    # -- the timer: the probes' events into the model the detail view reads -------------------------

    def refresh_now(self) -> None:
        if not drawable(self):
            return
        events = self._feed.drain()
        if events:
            self.model.apply(events)
            self.analyzer.feed(events)
        now = time.time()
        self.analyzer.tick(now)
        screen = self.screen
        if isinstance(screen, SessionDetailScreen):
            screen.update_view(self.model, now, self.analyzer)

    # -- results ----------------------------------------------------------------------------------

    def add_result(self, result: ProbeResult) -> None:
        self.results.append(result)
        outcome = result.outcome
        if outcome in ("failed", "skipped") or (result.message and outcome == "completed"):
            outcome = f"{outcome}: {clean(result.message)}"
        if len(outcome) > 25:
            outcome = outcome[:24] + "…"  # the whole message is in the row's explanation below
        table = self.query_one(DataTable)
        asked = options(result.requested.items()) if result.requested else "no options"
        if result.spec.mode != "octet":
            asked += f" ({result.spec.mode})"
        table.add_row(
            Text(result.name), Text(outcome, style=_STYLE[result.outcome]),
            fmt_rate(result.rate_bps) if result.ok else "",
            _findings_cell(result.findings) if result.outcome != "skipped" else "",
            "" if result.outcome == "skipped" else _options(result.granted), Text(asked),
            fmt_bytes(result.bytes) if result.outcome != "skipped" else "",
            key=str(len(self.results) - 1))
        if len(self.results) == 1:
            self._explain(result)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._explain(self.results[int(event.row_key.value)])

    def _explain(self, result: ProbeResult) -> None:
        self.query_one("#explain", Static).update(probe_explained(result))

    def finish(self, report: SweepReport) -> None:
        self.report = report
        for result in report.results[len(self.results):]:  # probes skipped once the sweep stopped
            self.add_result(result)
        self.query_one("#verdict", Static).update(Text("\n".join(summary_lines(report)) or "done"))

    # -- actions ------------------------------------------------------------------------------------

    def _selected(self) -> ProbeResult | None:
        table = self.query_one(DataTable)
        if not self.results or table.cursor_row < 0 or table.cursor_row >= len(self.results):
            return None
        return self.results[table.cursor_row]

    def action_open(self) -> None:
        result = self._selected()
        if result is None or result.session is None:
            self.notify("this probe did not run: nothing to show", timeout=3)
            return
        self.refresh_now()
        self.push_screen(SessionDetailScreen(result.session))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(sweep=True))

    def action_save(self) -> None:
        default = datetime.now().strftime("tftpdiag-sweep-%Y%m%d-%H%M%S.json")

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._save(path)

        self.push_screen(SaveTraceScreen(default, what="sweep"), chosen)

    def save(self, path: Path) -> str:
        """The sweep so far as JSON (as `probe --sweep --json` prints it), or its packets as a trace."""
        if path.suffix.lower() in (".pcap", ".jsonl"):
            return self.spool.save(path)
        report = self.report or SweepReport(self.host, self.port, self.filename, MAX_BYTES, list(self.results),
                                            stopped="still running when saved")
        path.write_text(json_line(report.to_dict(), indent=1) + "\n")
        return f"saved {len(report.results)} probes to {path}"

    @work(thread=True, exclusive=True, group="save")
    def _save(self, path: Path) -> None:
        save_and_tell(self, self.save, path)

    async def action_quit(self) -> None:
        self.cancel.set()
        ok = self.report is not None and any(r.ok for r in self.report.results)
        self.exit(0 if ok else 1)


def run_sweep_app(host: str, port: int, filename: str, *, family: int = 0, timing: Timing | None = None) -> int:
    code = SweepApp(host, port, filename, family=family, timing=timing).run()
    return code if code is not None else 1
