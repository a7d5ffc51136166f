"""Plain output for scripts, CI and SSH: a progress bar on stderr, then a summary or JSON on stdout.

It reads the same event stream as the TUI, through a lossless subscription: folded in the engine's
waits for its peer (an idle task), and by this thread on a timer for whatever is left.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from tftpdiag.engine.bus import EventBus, Subscription
from tftpdiag.engine.client import ClientOutcome, ClientTransfer
from tftpdiag.engine.wait_drain import WaitDrain
from tftpdiag.findings import Analyzer
from tftpdiag.fmt import duration, iso_time, json_line, line, quote
from tftpdiag.packetline import PACKET_EVENTS, packet_lines
from tftpdiag.packetruns import packet_runs
from tftpdiag.protocol.events import Failed, PacketRun
from tftpdiag.protocol.said import READER_GONE
from tftpdiag.report import (
    device_lines,
    explain_failure,
    file_size_text,
    finding_lines,
    one_line,
    options_lines,
    session_summary,
)
from tftpdiag.served import Served, SessionSink, served
from tftpdiag.sessions import SessionRecord, SessionTable, fmt_addr, fmt_bytes, fmt_rate

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from tftpdiag.devices import Device, DeviceBook
    from tftpdiag.findings.model import Finding
    from tftpdiag.protocol.events import Event

__all__ = ["run_client_headless", "run_server_headless", "print_client_summary", "ServedFeed", "Printer", "Serving"]

# How often this thread folds what the engine's waits left over (all of it, when the engine is never
# idle). Events hold their datagrams, so what waits in the queue is memory: at 0.1 s a fast windowed
# transfer kept 60 MB waiting, and the page faults of that much fresh memory cost a tenth of the
# transfer. At 5 ms it stays a few MB, still in the CPU's cache.
_TICK = 0.005
_IDLE_TICK = 0.1


class _Fold:
    """The session table and the findings, folded from a subscription by two threads: this one on its
    timer, and the engine's in its waits (engine/wait_drain.py). A fold that fails in the engine's
    thread is raised here, at this thread's next fold."""

    def __init__(self, bus: EventBus, sub: Subscription, verbose: TextIO | None = None) -> None:
        self.table = SessionTable()
        self.analyzer = Analyzer()
        self.folded = 0  # events taken in so far, by either thread
        self.took = False  # the last call folded something the engine's waits had left
        self._ended: list[SessionRecord] = []
        # -v: packet events wait here for this thread to print them; the engine's thread never writes.
        self._verbose = verbose
        self._packets: list[Event] = []
        self._drain = WaitDrain(bus, sub, self._fold)
        self.lock = self._drain.lock  # held to read the table or the findings while an engine runs

    def __call__(self) -> list[SessionRecord]:
        """Fold what is pending; the sessions that ended since the last call. Hold :attr:`lock` to read
        the table or the findings while an engine runs."""
        with self.lock:
            self.took = self._drain.catch_up()
            ended, self._ended = self._ended, []
            packets, self._packets = self._packets, []
        if self._verbose is not None and packets:
            try:
                self._verbose.writelines(line(text) + "\n" for text in packet_lines(packets))
                self._verbose.flush()
            except BrokenPipeError:
                self._verbose = None  # the reader went away (| head): said once, not at every fold
                raise
        return ended

    def close(self) -> None:
        self._drain.close()  # the engine's waits fold no more: every call from now takes everything

    def _fold(self, events: list[Event]) -> None:
        if events:
            if self._verbose is not None:
                packets = self._packets
                for event in events:
                    if type(event) is PacketRun:  # (a run in columns: its events, built here, where -v asks)
                        packets += event
                    elif isinstance(event, PACKET_EVENTS):
                        packets.append(event)
            runs = packet_runs(events)  # split once for both folds
            self.analyzer.feed_runs(runs)
            self._ended += self.table.apply_runs(runs)
            self.folded += len(events)


def _json_line(obj: object) -> str:
    return json_line(obj) + "\n"


def verbose_stream(json_out: bool, verbosity: int, stdout: TextIO | None = None) -> TextIO | None:
    """Where -v's packet lines go: stdout, or stderr when stdout carries JSON (it stays one document
    per line); None without -v."""
    if verbosity <= 0:
        return None
    return sys.stderr if json_out else (stdout or sys.stdout)


def run_client_headless(transfer: ClientTransfer, sub: Subscription, *, json_out: bool,
                        extra: Callable[[ClientOutcome], dict[str, Any]],
                        stdout: TextIO | None = None, verbosity: int = 0) -> tuple[ClientOutcome, dict[str, Any]]:
    """Run the transfer with a progress bar; print the summary (or JSON); return outcome and summary.
    ``verbosity`` -1 (-q) prints only a failure, on stderr (JSON is still printed when asked for);
    1 (-v) prints a line per packet as it goes, instead of the progress bar."""
    stdout = stdout or sys.stdout
    fold = _Fold(transfer.bus, sub, verbose_stream(json_out, verbosity, stdout))
    table, analyzer = fold.table, fold.analyzer
    progress = _progress_bar(transfer) if verbosity == 0 else None
    gc.freeze()  # what exists now lives as long as the program: no collection needs to walk it again
    transfer.start()
    outcome: ClientOutcome | None = None
    interrupted: KeyboardInterrupt | None = None
    try:
        with progress or contextlib.nullcontext():
            task = progress.add_task("transfer", total=None) if progress else None
            tick = _TICK
            while outcome is None:
                outcome = transfer.wait(tick)
                fold()
                # Longer while the engine's waits do the folding (each wake-up here takes the interpreter
                # lock and a CPU from the transfer), back to _TICK as soon as they leave work here.
                tick = _TICK if fold.took else min(tick * 2, _IDLE_TICK)
                if progress is not None and task is not None:  # a task exactly when a bar
                    with fold.lock:
                        record = table.sessions.get(transfer.session_id)
                        done, total = (record.bytes, record.total) if record is not None else (0, None)
                    progress.update(task, completed=done, total=total)
    except BrokenPipeError:
        transfer.cancel()  # whoever read our output is gone (-v | head): stop, as tcpdump would
        raise
    except KeyboardInterrupt as exc:
        # Ctrl-C (or SIGTERM, SIGHUP: cli.values.Terminated): stop the transfer (the peer gets ERROR 0),
        # then report what it did so far, as for any other failure, before the caller exits 128 + signal.
        interrupted = exc
        transfer.cancel(getattr(exc, "reason", "cancelled by the user"))
        outcome = transfer.wait(5)
    finally:
        transfer.join(5)
        fold.close()
        fold()
        analyzer.finish()
    if outcome is None:
        raise interrupted or KeyboardInterrupt()  # the engine did not stop in time: nothing whole to report
    result = outcome.result
    if transfer.request.stdout and isinstance(result, Failed) and result.message.startswith(READER_GONE):
        # The file went to our stdout (-o -) and its reader closed it (| head): end quietly with 141, as
        # SIGPIPE would (cli/main.py), not with a failure report about a disk.
        raise BrokenPipeError(errno.EPIPE, READER_GONE)
    record = table.sessions[transfer.session_id]
    findings = analyzer.findings(transfer.session_id)
    # The digest of a transfer that did not complete is of a part of the file: no use to anyone.
    # The file's size beside the wire's: they differ in netascii, and the digest is of the file.
    summary = session_summary(record, sha256=outcome.sha256 if outcome.ok else None,
                              file_bytes=outcome.file_bytes if outcome.ok else None,
                              output=str(outcome.output) if outcome.output else None, **extra(outcome),
                              findings=[f.to_dict() for f in findings])
    if json_out:
        stdout.write(_json_line(summary))
    elif verbosity < 0:
        if not summary["ok"]:
            print(line(f"tftpdiag: {failure_line(record, summary)}"), file=sys.stderr)
    else:
        console = _summary_console(stdout)
        print_client_summary(record, summary, console)
        for text in finding_lines(findings):
            style = "bold red" if text.startswith("✘") else "yellow" if text.startswith("⚠") else "dim"
            _say(console, (f"  {text}", style if not text.startswith("    ") else "dim"))
    stdout.flush()
    if interrupted is not None:
        raise interrupted
    return outcome, summary


def _progress_bar(transfer: ClientTransfer) -> Progress | None:
    """A live bar on stderr when it is a terminal; rich is not even imported otherwise (scripts start
    faster)."""
    if not sys.stderr.isatty():
        return None
    from tftpdiag.progressbar import transfer_bar

    return transfer_bar(transfer.request.filename, transfer.request.upload)


class PlainConsole:
    """Where the summary goes when rich would not style it (see :func:`_summary_console`): the text alone,
    a line at a time, as rich writes it there."""

    def __init__(self, file: TextIO) -> None:
        self.file = file


def _summary_console(stdout: TextIO) -> Console | PlainConsole:
    """rich's Console where rich would take ``stdout`` for a terminal (:func:`_terminal`); elsewhere (a
    pipe, a file, a script's capture) rich writes the text unstyled, and the summary does so without
    importing rich: a probe of a closed port took 230 ms, then 188 ms (204 and 167 ms beside a CPU-bound
    program; 15 interleaved runs each, 2026-12-03)."""
    if not _terminal(stdout):
        return PlainConsole(stdout)
    from rich.console import Console

    # soft_wrap: one line per line, never cut where a peer's message chose (a wrapped line that
    # starts with words from the peer reads like a line of ours in a log; a grep finds it whole).
    return Console(file=stdout, highlight=False, soft_wrap=True)


def _terminal(stream: TextIO) -> bool:
    """Whether rich would style what goes to ``stream``: its Console.is_terminal's rules (rich 15),
    TTY_COMPATIBLE=0 or 1 first, then FORCE_COLOR set and not empty, then the stream's isatty()."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        return False


def _say(console: Console | PlainConsole, *parts: str | tuple[str, str]) -> None:
    """Print one line of styled parts. The text is never read as markup and passes through
    :func:`tftpdiag.fmt.line`: a name or message from the peer cannot style, move or forge output."""
    texts = [line(p) if isinstance(p, str) else (line(p[0]), p[1]) for p in parts]
    if isinstance(console, PlainConsole):
        console.file.write("".join(t if isinstance(t, str) else t[0] for t in texts) + "\n")
        return
    from rich.text import Text

    console.print(Text.assemble(*texts))


def _where(record: SessionRecord) -> str:
    # quote, as the findings name a file (findings.model.escape_name): a backslash the name has is doubled,
    # so that it cannot be read as an escaped byte.
    return f"{quote(record.filename)} {'from' if record.direction == 'download' else 'to'} {fmt_addr(record.peer)}"


def failure_line(record: SessionRecord, summary: dict[str, Any]) -> str:
    """What failed and why, in one line: ``NAME from SERVER: REASON``."""
    return f"{_where(record)}: {summary.get('failure') or explain_failure(record)}"


def print_client_summary(record: SessionRecord, summary: dict[str, Any], console: Console | PlainConsole) -> None:
    """The human summary of a finished probe or put."""
    verb = "downloaded" if record.direction == "download" else "uploaded"
    server = fmt_addr(record.peer)
    if summary["ok"]:  # the name quoted as in the failure headline and the findings: see _where
        _say(console, ("✔", "green"), f" {verb} ", (quote(record.filename), "bold"),
             f" {'from' if verb == 'downloaded' else 'to'} {server}")
    else:
        _say(console, ("✘", "red"), f" {_where(record)}: ", (summary.get("failure") or explain_failure(record), "red"))
    if record.replied_from is not None and record.replied_from[0] != (record.peer or ("", 0))[0]:
        _say(console, (f"  reply came from {fmt_addr(record.replied_from)}, not the address asked", "yellow"))
    sizes = file_size_text(summary.get("file_bytes"), record.bytes)
    wire = " on the wire" if sizes else ""  # (the rate is the wire's: bytes sent or received a second)
    _say(console, f"  {fmt_bytes(record.bytes)}{wire} in {duration(record.duration)} = {fmt_rate(record.rate)}")
    if sizes:
        _say(console, f"  {sizes}")
    if summary.get("sha256") and record.direction == "download" and summary["ok"]:
        _say(console, f"  sha256 {summary['sha256']}")
    if summary.get("output"):
        _say(console, f"  saved to {summary['output']}")
    for text in options_lines(record):
        _say(console, f"  {text}")
    _say(console, f"  packets sent {record.packets_sent}, received {record.packets_received}; "
         f"retransmits {summary['retransmits']}, timeouts {summary['timeouts']}, "
         f"duplicates {summary['duplicates']}")


class ServedFeed:
    """Folds a server's event stream and hands each finished or refused session, once, to every sink
    (the printer, the log, the history, the metrics): the one place that says "a session ended"."""

    def __init__(self, bus: EventBus, sub: Subscription, sinks: Sequence[SessionSink],
                 hook: Callable[[SessionRecord, list[Finding]], dict[str, Any]] | None = None,
                 verbose: TextIO | None = None) -> None:
        self.fold = _Fold(bus, sub, verbose)
        self.sinks = list(sinks)
        self.hook = hook
        self._tick = _TICK
        for sink in self.sinks:  # a sink that shows how many are running (metrics) asks the feed
            watch = getattr(sink, "watch_running", None)
            if watch is not None:
                watch(self.running)

    def running(self) -> int:
        """Transfers begun and not yet ended (any thread)."""
        with self.fold.lock:
            return sum(1 for r in self.fold.table.sessions.values() if r.role is not None and not r.finished)

    def poll(self) -> float:
        """Fold what is pending and report what ended; how long to wait before the next call (idle,
        it looks less and less often: a server waiting for clients barely wakes)."""
        fold = self.fold
        ended = fold()
        with fold.lock:
            fold.analyzer.tick(time.time())
            self._emit(ended)
        # Idle, or while the engine's waits do the folding, it looks less and less often (see
        # run_client_headless); at once again when they leave work here.
        self._tick = _TICK if fold.took else min(self._tick * 2, _IDLE_TICK)
        return self._tick

    def close(self) -> None:
        """Report what is left (the sinks are their owner's to close)."""
        self.fold.close()
        ended = self.fold()
        with self.fold.lock:
            self._emit(ended)

    def _emit(self, ended: list[SessionRecord]) -> None:
        analyzer, sessions = self.fold.analyzer, self.fold.table.sessions
        for record in ended:
            if (record.role is None and record.refused is None) or record.acks_an_error:
                continue
            findings = analyzer.findings(record.session)
            done = served(record, findings, self.hook(record, findings) if self.hook is not None else None)
            for sink in self.sinks:
                sink.add(done)
        # Finished sessions are reported once; dropping them keeps a long serve run's memory flat.
        for record in ended:
            sessions.pop(record.session, None)


class Printer:
    """``serve``'s stdout: a line per session, the time it ended first (or its JSON object). ``failed_only``
    (-q) leaves out the lines of sessions that completed."""

    def __init__(self, json_out: bool, stdout: TextIO, show_server: bool = False, failed_only: bool = False) -> None:
        self.json_out = json_out
        self.stdout = stdout
        self.show_server = show_server
        self.failed_only = failed_only

    def add(self, session: Served) -> None:
        if self.json_out:
            self.stdout.write(_json_line(session.obj))
        elif self.failed_only and session.result == "ok":
            return
        else:
            when = iso_time(session.ended)
            self.stdout.write(f"{when} {line(one_line(session.record, server=self.show_server))}\n")
            self.stdout.writelines(f"{when} {line(f'    {text}')}\n"
                                   for text in finding_lines(session.findings, least="warning"))
        self.stdout.flush()

    def close(self) -> None:
        pass


class _DeviceSink:
    """Every session reported joins its client's device (serve prints the devices when it stops)."""

    def __init__(self, book: DeviceBook) -> None:
        self.book = book

    def add(self, session: Served) -> None:
        self.book.add(session.record)

    def close(self) -> None:
        pass


class Serving(Protocol):
    """What run_server_headless drives: a TftpServer, or a Watcher (watch) that publishes the sessions
    it sees as a server's."""

    @property
    def bus(self) -> EventBus: ...

    def serve(self) -> None:
        """Run until stop(), publishing on ``bus``; called on a thread of its own."""

    def stop(self) -> None: ...


def run_server_headless(server: Serving, sub: Subscription, *, json_out: bool, stop: threading.Event,
                        stdout: TextIO | None = None, sinks: Sequence[SessionSink] = (),
                        hook: Callable[[SessionRecord, list[Finding]], dict[str, Any]] | None = None,
                        show_server: bool = False, devices: DeviceBook | None = None, quiet: float = 30.0,
                        macs: dict[str, str] | None = None, verbosity: int = 0) -> None:
    """Serve until ``stop`` is set, printing a line (or a JSON object) per finished or refused session,
    and handing each to ``sinks`` too.

    ``hook`` sees each session reported (watch keeps its devices with it); what it returns joins the
    session's JSON object. With ``devices``, every session reported joins its client's device, and
    when the server stops each device is printed with its verdict (judged ``quiet`` seconds after).
    ``verbosity`` -1 (-q) leaves out the plain lines of sessions that completed; 1 (-v) adds a line per
    packet."""
    stdout = stdout or sys.stdout
    everyone: list[SessionSink] = [Printer(json_out, stdout, show_server, failed_only=verbosity < 0), *sinks]
    if devices is not None:
        everyone.append(_DeviceSink(devices))
    feed = ServedFeed(server.bus, sub, everyone, hook, verbose=verbose_stream(json_out, verbosity, stdout))
    thread = threading.Thread(target=server.serve, name="tftp-server", daemon=True)
    gc.freeze()  # what exists now lives as long as the program: no collection needs to walk it again
    thread.start()
    tick = _TICK
    try:
        while not stop.wait(tick):
            tick = feed.poll()
            if not thread.is_alive():
                break
    finally:
        server.stop()
        thread.join(10)
        feed.close()
        if devices is not None:
            now = time.time()
            judged = devices.judge(now, quiet, macs)
            if verbosity < 0 and not json_out:  # -q: only the devices that did not boot
                from tftpdiag.devices import STUCK

                judged = [d for d in judged if d.verdict == STUCK]
            print_devices(judged, json_out=json_out, stdout=stdout, when=now)


def print_devices(devices: list[Device], *, json_out: bool, stdout: TextIO, when: float | None = None) -> None:
    """Each device: a JSON object ("event": "device"), or its verdict, files in order and findings
    (each line after ``when``, the time they were judged, as serve's lines are)."""
    stamp = "" if when is None else iso_time(when) + " "
    for device in devices:
        if json_out:
            stdout.write(_json_line(device.to_dict()))
        else:
            stdout.writelines(stamp + line(text) + "\n" for text in device_lines(device))
    stdout.flush()

