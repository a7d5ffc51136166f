"""Plain output for scripts, CI and SSH: a progress bar on stderr, then a summary or JSON on stdout.

It reads the same event stream as the TUI, through a lossless subscription drained on a timer.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TextIO

from tftpdiag.engine.bus import Subscription
from tftpdiag.engine.client import ClientOutcome, ClientTransfer
from tftpdiag.findings import Analyzer
from tftpdiag.report import explain_failure, finding_lines, one_line, options_lines, session_summary
from tftpdiag.sessions import SessionRecord, SessionTable, fmt_addr, fmt_bytes, fmt_rate

if TYPE_CHECKING:
    from tftpdiag.engine.server import TftpServer
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["run_client_headless", "run_server_headless", "print_client_summary"]

# How often the event stream is drained and folded. Events hold their datagrams, so what waits in the
# queue is memory: at 0.1 s a fast windowed transfer kept 60 MB waiting, and the page faults of that much
# fresh memory cost a tenth of the transfer. At 5 ms it stays a few MB, still in the CPU's cache.
_TICK = 0.005
_IDLE_TICK = 0.1


def run_client_headless(transfer: ClientTransfer, sub: Subscription, *, json_out: bool,
                        extra: Callable[[ClientOutcome], dict[str, Any]],
                        stdout: TextIO | None = None) -> tuple[ClientOutcome, dict[str, Any]]:
    """Run the transfer with a progress bar; print the summary (or JSON); return outcome and summary."""
    stdout = stdout or sys.stdout
    table = SessionTable()
    analyzer = Analyzer()
    progress = _progress_bar(transfer)
    gc.freeze()  # what exists now lives as long as the program: no collection needs to walk it again
    transfer.start()
    outcome: ClientOutcome | None = None
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task("transfer", total=None) if progress else None
            while outcome is None:
                outcome = transfer.wait(_TICK)
                events = sub.drain()
                table.apply(events)
                analyzer.feed(events)
                record = table.sessions.get(transfer.session_id)
                if record is not None and progress is not None:
                    progress.update(task, completed=record.bytes, total=record.total)
    except KeyboardInterrupt:
        transfer.cancel()
        outcome = transfer.wait(5)
        raise
    finally:
        transfer.join(5)
        events = sub.drain()
        table.apply(events)
        analyzer.feed(events)
        analyzer.finish()
    assert outcome is not None
    record = table.sessions[transfer.session_id]
    findings = analyzer.findings(transfer.session_id)
    summary = session_summary(record, sha256=outcome.sha256,
                              output=str(outcome.output) if outcome.output else None, **extra(outcome),
                              findings=[f.to_dict() for f in findings])
    if json_out:
        stdout.write(json.dumps(summary) + "\n")
    else:
        from rich.console import Console

        console = Console(file=stdout, highlight=False)
        print_client_summary(record, summary, console)
        for line in finding_lines(findings):
            style = "bold red" if line.startswith("✘") else "yellow" if line.startswith("⚠") else "dim"
            console.print(f"  {line}", style=style if not line.startswith("    ") else "dim", markup=False)
    return outcome, summary


def _progress_bar(transfer: ClientTransfer) -> Progress | None:
    """A live bar on stderr when it is a terminal; rich is not even imported otherwise (scripts start
    faster)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    verb = "uploading" if transfer.request.upload else "downloading"
    return Progress(TextColumn(f"{verb} [bold]{transfer.request.filename}[/]"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def print_client_summary(record: SessionRecord, summary: dict[str, Any], console: Console) -> None:
    """The human summary of a finished probe or put."""
    verb = "downloaded" if record.direction == "download" else "uploaded"
    server = fmt_addr(record.peer)
    if summary["ok"]:
        console.print(f"[green]✔[/] {verb} [bold]{record.filename}[/] {'from' if verb == 'downloaded' else 'to'} {server}")
    else:
        console.print(f"[red]✘[/] {record.filename} {'from' if record.direction == 'download' else 'to'} {server}: "
                      f"[red]{summary.get('failure') or explain_failure(record)}[/]")
    if record.replied_from is not None and record.replied_from[0] != (record.peer or ("", 0))[0]:
        console.print(f"  [yellow]reply came from {fmt_addr(record.replied_from)}, not the address asked[/]")
    console.print(f"  {fmt_bytes(record.bytes)} in {record.duration:.3f} s = {fmt_rate(record.rate)}")
    if summary.get("sha256") and record.direction == "download" and summary["ok"]:
        console.print(f"  sha256 {summary['sha256']}")
    if summary.get("output"):
        console.print(f"  saved to {summary['output']}")
    for line in options_lines(record):
        console.print(f"  {line}", markup=False)
    console.print(f"  packets sent {record.packets_sent}, received {record.packets_received}; "
                  f"retransmits {summary['retransmits']}, timeouts {summary['timeouts']}, "
                  f"duplicates {summary['duplicates']}")


def run_server_headless(server: TftpServer, sub: Subscription, *, json_out: bool, stop: threading.Event,
                        stdout: TextIO | None = None) -> None:
    """Serve until ``stop`` is set, printing a line (or a JSON object) per finished or refused session."""
    stdout = stdout or sys.stdout
    table = SessionTable()
    analyzer = Analyzer()
    thread = threading.Thread(target=server.serve, name="tftp-server", daemon=True)
    gc.freeze()  # what exists now lives as long as the program: no collection needs to walk it again
    thread.start()

    def emit(ended: list[SessionRecord]) -> None:
        for record in ended:
            if record.role is None and record.refused is None:
                continue
            findings = analyzer.findings(record.session)
            if json_out:
                kind = "refused" if record.refused is not None else "session"
                obj = {"event": kind, **session_summary(record, findings=[f.to_dict() for f in findings])}
                if record.refused is not None:
                    obj["suggestion"] = record.refused.suggestion
                    obj["received"] = record.refused.received or None
                stdout.write(json.dumps(obj) + "\n")
            else:
                stdout.write(one_line(record) + "\n")
                stdout.writelines(f"    {line}\n" for line in finding_lines(findings, least="warning"))
            stdout.flush()
        # Finished sessions are reported once; dropping them keeps a long serve run's memory flat.
        for record in ended:
            table.sessions.pop(record.session, None)

    tick = _TICK
    try:
        while not stop.wait(tick):
            events = sub.drain()
            analyzer.feed(events)
            analyzer.tick(time.time())
            emit(table.apply(events))
            if not thread.is_alive():
                break
            # Idle, it looks less and less often: a server waiting for clients barely wakes.
            tick = _TICK if events else min(tick * 2, _IDLE_TICK)
    finally:
        server.stop()
        thread.join(10)
        events = sub.drain()
        analyzer.feed(events)
        emit(table.apply(events))
