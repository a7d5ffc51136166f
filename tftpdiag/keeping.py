"""What a server left running keeps besides its output: the --log file, the --history database and the
--metrics endpoint, as sinks of the one feed of finished sessions (:class:`tftpdiag.headless.ServedFeed`).
Headless, they ride the printer's feed; under the TUI a feed of their own runs on a thread. And the
``history`` command, which reads what --history kept."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tftpdiag.fmt import address, line

if TYPE_CHECKING:
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.served import SessionSink

__all__ = ["server_sinks", "feed_in_background", "run_history"]


@contextlib.contextmanager
def server_sinks(args: argparse.Namespace, *, tui: bool = False) -> Iterator[list[SessionSink]]:
    """The sinks the flags ask for, each set up before the first request can arrive (a mistake in
    one is a UsageError, exit 2); all closed at the end. Under the TUI what they have to say while it
    runs (a database gone) waits and is printed when it ends: written to the terminal meanwhile it
    would land in the middle of the app's screen."""
    from tftpdiag.cli.values import UsageError

    sinks: list[SessionSink] = []
    errors = io.StringIO() if tui else sys.stderr
    try:
        if args.log is not None:
            from tftpdiag.jsonlog import JsonLog, LogSetupError

            try:
                log = JsonLog(args.log, errors=errors)
            except LogSetupError as exc:
                raise UsageError(str(exc)) from None
            log.on_sighup()
            sinks.append(log)
        if args.history is not None:
            from tftpdiag.history import HistoryError, open_store
            from tftpdiag.history.writer import HistoryWriter

            try:
                store = open_store(args.history or None)
            except HistoryError as exc:
                raise UsageError(f"history: {exc}") from None
            sinks.append(HistoryWriter(store, errors=errors))
            print(line(f"tftpdiag: recording sessions in {store.name}"), file=sys.stderr, flush=True)
        if args.metrics is not None:
            from tftpdiag.metrics import Metrics, MetricsSetupError

            metrics = Metrics()
            try:
                host, port = metrics.listen(*args.metrics)
            except MetricsSetupError as exc:
                raise UsageError(str(exc)) from None
            sinks.append(metrics)
            print(f"tftpdiag: metrics at http://{address((host, port))}/metrics", file=sys.stderr, flush=True)
        yield sinks
    finally:
        for sink in sinks:
            sink.close()
        if isinstance(errors, io.StringIO):
            sys.stderr.write(errors.getvalue())


def feed_in_background(bus: EventBus, sinks: list[SessionSink]) -> Callable[[], None]:
    """Feed ``sinks`` from a subscription of their own, on a thread (the TUI keeps the main one). Call
    the function returned once the server has stopped: it reports the last sessions and returns."""
    from tftpdiag.headless import ServedFeed

    feed = ServedFeed(bus, bus.subscribe(), sinks)
    stop = threading.Event()

    def run() -> None:
        tick = 0.005
        while not stop.wait(tick):
            tick = feed.poll()
        feed.close()

    thread = threading.Thread(target=run, name="served-feed", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(15)

    return finish


def run_history(args: argparse.Namespace) -> int:
    from tftpdiag.cli.values import EXIT_OK, UsageError
    from tftpdiag.history import Filter, HistoryError, open_store
    from tftpdiag.history.query import write

    try:
        store = open_store(args.db, create=False)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    wanted = Filter(client=args.client, file=args.file, failed=args.failed, since=args.since,
                    limit=args.limit or None)
    try:
        rows = store.devices(wanted) if args.devices else store.sessions(wanted)
    except HistoryError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()
    write(rows, devices=args.devices, json_out=args.json, out=sys.stdout)
    if not args.devices and args.limit and len(rows) == args.limit and not args.json:
        shown = "the newest session" if args.limit == 1 else f"the newest {args.limit} sessions"
        print(f"tftpdiag: {shown} shown; --limit 0 shows all", file=sys.stderr)
    return EXIT_OK
