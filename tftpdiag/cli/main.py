"""The entry point: parse, then hand the arguments to the command's module (imported only when run, so a
scripted call starts fast and the TUI is loaded only when it is shown)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from tftpdiag.cli.parser import COMMANDS, build_parser
from tftpdiag.cli.values import EXIT_OK, EXIT_SIGPIPE, EXIT_USAGE, Terminated, UsageError

__all__ = ["main", "GIL_SWITCH_INTERVAL", "GC_THRESHOLD"]


# Engine threads wake for every datagram; while another thread (the printer, the UI) holds the GIL
# they would wait up to the default 5 ms switch interval each time, which throttles lock-step transfers.
GIL_SWITCH_INTERVAL = 0.0005

# A transfer makes a few objects per datagram (events, packets), all freed by reference counting: they
# form no cycles. The cyclic collector's default young collection every 700 allocations only spends
# time walking them (about a tenth of a windowed transfer here), so it runs a seventieth as often.
GC_THRESHOLD = (50_000, 20, 20)


# Signals that end a command as Ctrl-C does (see Terminated). serve sets its own while it serves
# (commands.py: SIGTERM stops it; jsonlog.py: SIGHUP reopens a --log file).
_ENDING = {getattr(signal, name): name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)}


@contextlib.contextmanager
def _ending_signals_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise Terminated, a KeyboardInterrupt, on the main
    thread: without this they kill the process mid-transfer, its temporary file left and the peer
    never told."""
    def interrupt(signum: int, frame: object) -> None:
        raise Terminated(signum, _ENDING[signum])

    if threading.current_thread() is not threading.main_thread():
        yield  # (main() called from a thread, as a test may: only the main thread may set handlers)
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in _ENDING}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLD)
    words = sys.argv[1:] if argv is None else list(argv)
    # A command named first is all this run needs parsed (see COMMANDS). A run that names none anywhere
    # (--help, --version, no command, a mistyped one) cannot reach a command's own flags: the commands'
    # names and --help lines answer it as the whole parser would. Anything else gets the whole parser.
    named = words[0] if words and words[0] in COMMANDS else None
    bare = named is None and not any(word in COMMANDS for word in words)
    parser = build_parser(named, bare=bare)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with _ending_signals_interrupt():
            return _run(args, parser)
    except UsageError as exc:
        from tftpdiag.fmt import line

        # Each line made safe, whatever the message quotes (a trace's path or contents, a peer's words);
        # a message of several lines (a permission error and the ways around it) keeps its lines.
        first, *rest = str(exc).splitlines() or [""]
        print(line(f"tftpdiag {args.command}: {first}"), file=sys.stderr)
        for text in rest[:10]:
            print(line(text), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                print(f"tftpdiag: stopped by {exc}", file=sys.stderr)
            return 128 + exc.signum
        print("tftpdiag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (tftpdiag probe -v ... | head): stop quietly, as a program
        # killed by SIGPIPE does; stdout goes to /dev/null so that Python's exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The command ``args`` names."""
    if args.command in ("probe", "put"):
        from tftpdiag.commands import run_client
        return run_client(args, upload=args.command == "put")
    if args.command == "serve":
        from tftpdiag.commands import run_serve
        return run_serve(args)
    if args.command == "demo":
        from tftpdiag.commands import run_demo
        return run_demo(args)
    if args.command == "trace":
        from tftpdiag.commands import run_trace
        return run_trace(args)
    if args.command == "pxe":
        from tftpdiag.commands import run_pxe
        return run_pxe(args)
    if args.command == "history":
        from tftpdiag.keeping import run_history
        return run_history(args)
    if args.command == "watch":
        from tftpdiag.watching import run_watch
        return run_watch(args)
    if args.command == "storm":
        from tftpdiag.storm import run_storm_command
        return run_storm_command(args)
    if args.command == "completion":
        from tftpdiag.completion import completion_script
        sys.stdout.write(completion_script(build_parser(), args.shell))
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE
