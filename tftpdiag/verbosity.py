"""-q and -v: one helper adds them to every command that moves or shows packets (probe, put, serve, watch,
trace), and one function reads them, so that each command means the same by them."""

from __future__ import annotations

import argparse

__all__ = ["add_verbosity_flags", "verbosity"]


def add_verbosity_flags(p: argparse.ArgumentParser) -> None:
    """-q and -v, the same on every command that moves or shows packets; both mean plain output."""
    g = p.add_argument_group("verbosity").add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                   help="print nothing but errors (a failure, one line on stderr); the exit status says the "
                        "rest. --json still prints its JSON. Implies --no-tui")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                   help="print a line per packet as tcpdump does (time, session, from > to, packet, size, "
                        "notes), and what --impair did to each; on stderr with --json. Implies --no-tui")


def verbosity(args: argparse.Namespace) -> int:
    """-1 for -q, 1 for -v, 0 otherwise (and for commands without the flags)."""
    return int(getattr(args, "verbosity", 0))
