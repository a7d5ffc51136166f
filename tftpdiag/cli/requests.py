"""From parsed arguments to what the engine takes: the target (HOST FILE, or a tftp:// URL), the options
to ask, the timing, the download limit, the server's policy, and whether a person is watching (the TUI)
or a script."""

from __future__ import annotations

import argparse
import re
import sys
from urllib.parse import unquote

from tftpdiag.cli.values import UsageError
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record
from tftpdiag.verbosity import verbosity

__all__ = ["Target", "parse_url", "client_target", "requested_options", "client_timing", "DEFAULT_MAX_SIZE",
           "download_limit", "server_policy", "interactive", "verbosity", "check_request"]


@record
class Target:
    host: str
    port: int
    filename: str
    mode: str | None


_URL = re.compile(r"^tftp://(?P<host>\[[^\]]+\]|[^/:]+)(?::(?P<port>\d+))?/(?P<path>[^;]*)(?:;mode=(?P<mode>\w+))?$",
                  re.IGNORECASE)


def parse_url(url: str) -> Target:
    """RFC 3617: tftp://host[:port]/file[;mode=octet|netascii]."""
    match = _URL.match(url)
    if not match:
        raise UsageError(f"not a TFTP URL: {url!r} (expected tftp://host[:port]/file[;mode=octet|netascii])")
    mode = match.group("mode")
    if mode is not None and mode.lower() not in ("octet", "netascii"):
        raise UsageError(f"unknown mode {mode!r} in URL; use octet or netascii")
    filename = unquote(match.group("path"))
    if not filename:
        raise UsageError(f"the URL {url!r} names no file")
    port = int(match.group("port")) if match.group("port") else 69
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} in URL is out of range")
    return Target(match.group("host").strip("[]"), port, filename, mode.lower() if mode else None)


def client_target(args: argparse.Namespace, upload: bool) -> Target:
    if args.host.lower().startswith("tftp://"):
        target = parse_url(args.host)
        if not upload and args.file:
            raise UsageError("give either a tftp:// URL or HOST FILE, not both")
        if upload and args.remote:
            raise UsageError("give the remote name in the tftp:// URL or as REMOTE, not both")
    else:
        if upload:
            remote = args.remote or args.local.name
            target = Target(args.host, 69, remote, None)
        else:
            if not args.file:
                raise UsageError("which file? give HOST FILE or a tftp://host/file URL")
            target = Target(args.host, 69, args.file, None)
    port = args.port if args.port is not None else target.port
    mode = args.mode or target.mode or "octet"
    return Target(target.host, port, target.filename, mode)


def requested_options(args: argparse.Namespace) -> RequestedOptions:
    if args.no_options:
        return RequestedOptions()
    timeout = None
    if args.timeout is not None and float(args.timeout).is_integer() and 1 <= args.timeout <= 255:
        timeout = int(args.timeout)
    return RequestedOptions(blksize=args.blksize, windowsize=args.windowsize, timeout=timeout, tsize=args.tsize)


def check_request(filename: str, mode: str, options: RequestedOptions, *, upload: bool = False,
                  upload_size: int | None = None) -> None:
    """A UsageError unless a request for ``filename`` with ``options`` can be sent: asked of the
    protocol's own rule (name, mode, RFC 2347's 512 bytes), before anything starts, by every command
    that builds a request from what the user typed. ``upload_size`` is the tsize a WRQ offers."""
    from tftpdiag.protocol.client import RequestError, build_request
    from tftpdiag.protocol.packets import Opcode

    opcode = Opcode.WRQ if upload else Opcode.RRQ
    try:
        build_request(opcode, filename, mode, options, upload_size)
    except RequestError as exc:
        raise UsageError(str(exc)) from None


def client_timing(args: argparse.Namespace) -> Timing:
    initial = args.timeout if args.timeout is not None else 1.0
    # Like tftp-hpa and curl, the command ends with its final ACK instead of lingering for a repeated
    # last DATA: a lost final ACK only makes the server log a timeout; the file here is complete.
    return Timing(initial_timeout=initial, retries=args.retries, dally=0.0, adaptive=args.timeout is None)


DEFAULT_MAX_SIZE = 4 << 30  # a download kept with -o: far above any boot image, far below a full disk


def download_limit(args: argparse.Namespace) -> int | None:
    """--max-size in bytes, or None for no limit: by default only a download written to disk has one."""
    value = getattr(args, "max_size", None)
    if value is None:
        return DEFAULT_MAX_SIZE if getattr(args, "output", None) is not None else None
    return value or None


def server_policy(args: argparse.Namespace) -> ServerPolicy:
    # --max-upload 0 means no limit, as --max-size 0 does (a 0-byte limit would refuse every upload).
    return ServerPolicy(max_blksize=args.max_blksize, max_windowsize=args.max_windowsize,
                        refuse=frozenset(args.refuse), max_upload=args.max_upload or None)


def interactive(args: argparse.Namespace) -> bool:
    """The TUI is for a person at a terminal; scripts, pipes and --json get plain output."""
    return not (args.no_tui or args.json or verbosity(args)) and sys.stdout.isatty() and sys.stdin.isatty()
