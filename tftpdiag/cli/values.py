"""The command line's values: exit codes, the usage error, and the parsers that turn one argument's
text into a value (ranges, seconds, sizes, digests, impairment specs, addresses), with their errors
in words. Every command's parser and the commands themselves import them from here, one way."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the impairment engine (and the protocol events it imports) only when --impair is given
    from tftpdiag.engine.impair import ImpairSpec

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SIGPIPE", "UsageError", "Terminated", "int_range",
    "seconds_between", "seconds", "deadline_seconds", "DEADLINE_MAX", "give_up_seconds", "parse_size",
    "size_at_most", "STDOUT", "output_path", "sha256_hex", "impair_spec", "microseconds", "option_name",
    "host_address", "Formatter", "terminal_width", "BUSY_POLL_HELP", "OFFLOAD_HELP", "IMPAIR_HELP",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a program that SIGPIPE ended


class UsageError(Exception):
    """A mistake in how tftpdiag was called or set up: one line for the user, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, or SIGHUP (the terminal closed), raised where Ctrl-C raises KeyboardInterrupt: a
    KeyboardInterrupt, so that every command stops on them as it does on Ctrl-C (a transfer cancelled,
    the peer sent an ERROR, a temporary file removed); the exit code is 128 + ``signum``."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.reason = f"cancelled by {name}"  # what the peer's ERROR says


# -- value parsers ---------------------------------------------------------------------------------

def int_range(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low} and {high}, not {value}")
        return value
    return parse


def seconds_between(low: float, high: float, example: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.rstrip("s"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, like {example}, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"seconds must be between {low:g} and {high:g}, not {text}")
        return value
    return parse


seconds = seconds_between(0.01, 300, "1 or 0.5")
# A whole transfer's deadline, not a retransmit's wait: a multi-GiB image over a slow link takes hours.
# A week bounds a typing slip (an extra zero or two) without standing in any real download's way.
DEADLINE_MAX = 7 * 24 * 3600
deadline_seconds = seconds_between(0.01, DEADLINE_MAX, "600 or 3600")
give_up_seconds = seconds_between(0, 3600, "60")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1048576', '512k', '10M', '1.5GiB' -> bytes (k/M/G are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 10M or 1048576, not {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * (1024 ** " kmgt".index(unit or " ")))


STDOUT = "-"  # -o -: the download on standard output, as curl -o - and wget -O - write it


def output_path(text: str) -> Path | str:
    """-o's PATH, or :data:`STDOUT` for "-" alone (a file named so is ./-)."""
    return STDOUT if text == STDOUT else Path(text)


def size_at_most(limit: int, what: str) -> Callable[[str], int]:
    """A size as :func:`parse_size` reads it, no larger than ``limit`` bytes (``what`` says why in the error)."""
    def parse(text: str) -> int:
        value = parse_size(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{what} can be at most {limit >> 30} GiB, not {text}")
        return value
    return parse


def sha256_hex(text: str) -> str:
    text = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise argparse.ArgumentTypeError("expected 64 hexadecimal digits (a SHA-256)")
    return text


OPTION_NAMES = ("blksize", "tsize", "timeout", "windowsize")


def impair_spec(text: str) -> ImpairSpec:
    from tftpdiag.engine.impair import ImpairError, parse_impair

    try:
        return parse_impair(text)
    except ImpairError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


BUSY_POLL_HELP = ("microseconds to keep checking for the peer's next packet before going to sleep (default "
                  "200, and at most 100 for a client whose server is on this machine, where a longer spin "
                  "only takes the CPU a busy server needs; none on a one-CPU machine). It spins only while "
                  "the peer answers that fast, as on loopback or a local switch, where it about halves the "
                  "time per lock-step block; 0 never spins, for the least CPU")


OFFLOAD_HELP = ("one system call per datagram, not one per window (UDP GSO/GRO, Linux). The peer gets the same "
                "datagrams either way, but a capture on this host (tcpdump, Wireshark; always on loopback) "
                "can show an offloaded window as one large datagram: use this when you capture here for "
                "Wireshark (tftpdiag trace takes such windows apart). --trace always records each datagram, "
                "and --impair never offloads")


def microseconds(text: str) -> float:
    try:
        value = int(text.strip().removesuffix("us"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole microseconds, like 200 or 0, not {text!r}") from None
    if not 0 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"microseconds must be between 0 and 100000, not {text}")
    return value / 1e6


IMPAIR_HELP = ("reproduce a bad network between tftpdiag's socket and its protocol engine, e.g. "
               "loss=5%%,delay=80ms,jitter=20ms,dup=1%%,reorder=2%% ; mtu=1400 drops datagrams that would "
               "fragment; drop=data:1-3 or drop=ack:7x* drops chosen packets (first copy, or every copy); "
               "direction=in|out|both; seed=N repeats a run exactly")


def option_name(text: str) -> str:
    name = text.strip().lower()
    if name not in OPTION_NAMES:
        raise argparse.ArgumentTypeError(f"unknown option {text!r}; choose from {', '.join(OPTION_NAMES)}")
    return name


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, terminal_width())))


def terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def host_address(text: str) -> str:
    """An address for the capture filter: a literal IPv4 or IPv6 address (a name would need DNS)."""
    import ipaddress  # here: only watch's --host needs it, and every start would pay for it

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
