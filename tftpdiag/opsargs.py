"""The command line of a server left running: ``serve``'s --log, --history and --metrics, and the
``history`` command that reads what --history kept. Kept apart from cli/parser.py, which holds the rest."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tftpdiag.cli.listing import COMMAND_HELP

__all__ = ["add_serve_flags", "add_history_parser", "listen_address", "since", "DEFAULT_HISTORY"]

DEFAULT_HISTORY = ""  # --history given without a DB: the default file under the user's state directory


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (every IPv4 address) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, like 127.0.0.1:9469 or :9469, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def since(text: str) -> float:
    from tftpdiag.history.query import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of sessions (0: all), not {text!r}")
    return int(text)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    g = serve.add_argument_group("left running")
    g.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="append each finished or refused session to FILE as one JSON line (the object "
                        "--json prints, with its started and ended times); SIGHUP reopens FILE, so "
                        "logrotate can move it away")
    g.add_argument("--history", nargs="?", const=DEFAULT_HISTORY, default=None, metavar="DB",
                   help="record every session and refusal for 'tftpdiag history': in the SQLite file DB "
                        "(default $XDG_STATE_HOME/tftpdiag/history.sqlite, i.e. ~/.local/state/...), or in "
                        "PostgreSQL for a postgresql://user:pass@host/db URL, which several servers may share. "
                        "A database error is said once and never stops the server")
    g.add_argument("--metrics", type=listen_address, default=None, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (sessions, bytes, refusals, "
                        "findings, retransmits, durations, sessions running); :PORT listens on every IPv4 "
                        "address, port 0 on any free port (the address is printed on stderr)")


HISTORY_EXAMPLES = """examples:
  tftpdiag history --failed --since 12h                   # which devices failed since last night?
  tftpdiag history --client 10.0.4.17                     # everything one phone did
  tftpdiag history --file 'firmware/*.bin' --since 2026-12-01
  tftpdiag history --devices                              # one line per device, with its last result
  tftpdiag history postgresql://tftp@db.example/tftp --failed --json | jq '.[].client.address'

exit status: 0 the history was read (whatever the sessions did), 2 it cannot be opened.
"""


def add_history_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    history = sub.add_parser("history", help=COMMAND_HELP["history"],
                             description="Show the sessions and refusals that 'serve --history' recorded, "
                                         "oldest first, filtered by client, file, result and time.",
                             epilog=HISTORY_EXAMPLES, formatter_class=formatter)
    history.add_argument("db", metavar="DB", nargs="?", default=None,
                         help="the SQLite file or postgresql:// URL (default: serve --history's default file)")
    history.add_argument("--client", metavar="ADDR", default=None, help="only sessions of this client address")
    history.add_argument("--file", metavar="NAME", default=None,
                         help="only sessions for this file name (* matches any characters)")
    history.add_argument("--failed", action="store_true", help="only sessions that failed or were refused")
    history.add_argument("--since", type=since, default=None, metavar="WHEN",
                         help="only sessions that started since WHEN: a time ago (30m, 1h, 2d, 1w) or a date "
                              "or time in ISO 8601 (2026-12-01, 2026-12-01T22:00; local time unless it ends "
                              "in Z or an offset)")
    history.add_argument("--devices", action="store_true",
                         help="one row per client address: its last session that matches, and how many "
                              "matched and failed")
    history.add_argument("--limit", type=_limit, default=1000, metavar="N",
                         help="the newest N sessions (default 1000; 0 for all)")
    history.add_argument("--json", action="store_true",
                         help="a JSON list of session objects (with --devices: of {client, sessions, "
                              "failures, last})")
