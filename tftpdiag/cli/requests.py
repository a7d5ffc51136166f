"""From parsed arguments to what the engine takes: the target (HOST FILE, or a tftp:// URL), the options
to ask, the timing, the download limit, the server's policy, and whether a person is watching (the TUI)
or a script."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import unquote

from tftpdiag.cli.values import UsageError
from tftpdiag.protocol.limits import ETHERNET_BLKSIZE, TIMEOUT_MAX, TIMEOUT_MIN
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record
from tftpdiag.verbosity import verbosity

__all__ = ["Target", "parse_url", "split_host", "server_port", "client_target", "asked_sizes", "requested_options",
           "client_timing", "check_output_paths", "DEFAULT_MAX_SIZE", "download_limit", "server_policy", "interactive",
           "verbosity", "check_request"]


@record
class Target:
    """Where a command line points: host, port, file name and mode."""

    host: str
    port: int
    filename: str
    mode: str | None


_URL = re.compile(r"^tftp://(?P<authority>[^/]*)/(?P<path>[^;]*)(?:;mode=(?P<mode>\w+))?$", re.IGNORECASE)
# HOST as typed, or a URL's host part: a name or an IPv4 address, or an IPv6 address in brackets, each
# with an optional :PORT; a bare IPv6 address (two colons or more, no brackets) has no port.
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\[\]/]+)\]|(?P<name>[^\[\]/:]+))(?::(?P<port>\d+))?$")
_BARE_V6 = re.compile(r"^[0-9a-f:.]*:[0-9a-f:.]*:[0-9a-f:.%\w-]*$", re.IGNORECASE)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def split_host(text: str, family: int = 0) -> tuple[str, int | None]:
    """HOST as the user typed it -> (host, the port it names or None). ``family`` (-4 or -6) must fit an
    address given literally: the resolver's own word for that mismatch names neither."""
    if _BARE_V6.match(text):
        host, port = text, None
    else:
        match = _HOST_PORT.match(text)
        if not match:
            raise UsageError(f"not a host: {text!r} (expected a name or address, HOST:PORT, or [IPv6]:PORT)")
        host = match.group("v6") or match.group("name")
        port = int(match.group("port")) if match.group("port") else None
        if port is not None and not 1 <= port <= 65535:
            raise UsageError(f"port {port} in {text!r} is out of range")
    if family == socket.AF_INET and ":" in host:
        raise UsageError(f"{host} is an IPv6 address but -4 asks for IPv4")
    if family == socket.AF_INET6 and _IPV4.match(host):
        raise UsageError(f"{host} is an IPv4 address but -6 asks for IPv6")
    return host, port


def _url_parts(url: str, family: int = 0) -> tuple[str, int | None, str, str | None]:
    """RFC 3617: tftp://host[:port]/file[;mode=octet|netascii] -> (host, port or None, file, mode or None)."""
    match = _URL.match(url)
    if not match:
        raise UsageError(f"not a TFTP URL: {url!r} (expected tftp://host[:port]/file[;mode=octet|netascii])")
    mode = match.group("mode")
    if mode is not None and mode.lower() not in ("octet", "netascii"):
        raise UsageError(f"unknown mode {mode!r} in URL; use octet or netascii")
    filename = unquote(match.group("path"))
    if not filename:
        raise UsageError(f"the URL {url!r} names no file")
    host, port = split_host(match.group("authority"), family)
    return host, port, filename, mode.lower() if mode else None


def parse_url(url: str) -> Target:
    """RFC 3617: tftp://host[:port]/file[;mode=octet|netascii]."""
    host, port, filename, mode = _url_parts(url)
    return Target(host, port or 69, filename, mode)


def client_target(args: argparse.Namespace, upload: bool) -> Target:
    """HOST [FILE] (HOST may name a port: host:port, [IPv6]:port) or a URL (anything with "://", so that
    an http:// one is called what it is, not taken for a host), with --port and --mode."""
    if "://" in args.host:
        host, port, filename, mode = _url_parts(args.host, args.family)
        if not upload and args.file:
            raise UsageError("give either a tftp:// URL or HOST FILE, not both")
        if upload and args.remote:
            raise UsageError("give the remote name in the tftp:// URL or as REMOTE, not both")
    else:
        host, port = split_host(args.host, args.family)
        mode = None
        if upload:
            filename = args.remote or args.local.name
        else:
            if not args.file:
                raise UsageError("which file? give HOST FILE or a tftp://host/file URL")
            filename = args.file
    return Target(host, server_port(args.port, port, args.host), filename, args.mode or mode or "octet")


def server_port(flag: int | None, named: int | None, text: str) -> int:
    """--port (``flag``) or the port HOST or the URL ``text`` names, 69 without either; both, only if they agree."""
    if flag is not None and named is not None and flag != named:
        raise UsageError(f"--port {flag} disagrees with port {named} in {text!r}; give the port once")
    return flag if flag is not None else named if named is not None else 69


def asked_sizes(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """The blksize and windowsize to ask for: none with --no-options, which refuses them given explicitly
    (they would be dropped without a word); else --blksize (ETHERNET_BLKSIZE unless given), --windowsize."""
    if args.no_options:
        given = [flag for flag, value in (("--blksize", args.blksize), ("--windowsize", args.windowsize))
                 if value is not None]
        if given:
            raise UsageError(f"--no-options sends a plain RFC 1350 request: it cannot ask {' or '.join(given)}")
        return None, None
    return (args.blksize if args.blksize is not None else ETHERNET_BLKSIZE), args.windowsize


def requested_options(args: argparse.Namespace) -> RequestedOptions:
    blksize, windowsize = asked_sizes(args)  # first: it refuses what --no-options would drop
    if args.no_options:
        return RequestedOptions()
    timeout = None
    if args.timeout is not None and float(args.timeout).is_integer() and TIMEOUT_MIN <= args.timeout <= TIMEOUT_MAX:
        timeout = int(args.timeout)
    return RequestedOptions(blksize=blksize, windowsize=windowsize, timeout=timeout, tsize=args.tsize)


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


def check_output_paths(output: Path | None, trace: Path | None) -> None:
    """A UsageError when -o and --trace name one file (also through a link): the download, put in place
    at the end, would replace the trace just written, or the trace would be written into the data."""
    if output is None or trace is None:
        return
    same = os.path.realpath(output) == os.path.realpath(trace)
    with contextlib.suppress(OSError):  # a hard link: two names, one file (only when both exist)
        same = same or os.path.samefile(output, trace)
    if same:
        raise UsageError(f"-o and --trace name the same file, {output}: give each its own")


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
