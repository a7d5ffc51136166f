"""Command line: parse arguments, then run headless or start the TUI.

This module and everything it imports at the top stay free of textual, so scripted calls start fast;
the TUI is imported only when it is about to be shown.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote

from tftpdiag import __version__
from tftpdiag.completion import add_completion_parser
from tftpdiag.engine.impair import ImpairError, ImpairSpec, parse_impair
from tftpdiag.opsargs import add_history_parser, add_serve_flags
from tftpdiag.protocol.options import BLKSIZE_MAX, BLKSIZE_MIN, RequestedOptions, ServerPolicy
from tftpdiag.protocol.server import GIVE_UP
from tftpdiag.protocol.timer import Timing
from tftpdiag.verbosity import add_verbosity_flags, verbosity

__all__ = ["main", "build_parser", "add_verbosity_flags", "verbosity", "UsageError"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a program that SIGPIPE ended


class UsageError(Exception):
    """A mistake in how tftpdiag was called or set up: one line for the user, exit code 2."""


# -- value parsers ---------------------------------------------------------------------------------

def _int_range(name: str, low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low} and {high}, not {value}")
        return value
    return parse


def _seconds_between(low: float, high: float, example: str):
    def parse(text: str) -> float:
        try:
            value = float(text.rstrip("s"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, like {example}, not {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"seconds must be between {low:g} and {high:g}, not {text}")
        return value
    return parse


_seconds = _seconds_between(0.01, 300, "1 or 0.5")
_give_up = _seconds_between(0, 3600, "60")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'1048576', '512k', '10M', '1.5GiB' -> bytes (k/M/G are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 10M or 1048576, not {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * (1024 ** " kmgt".index(unit or " ")))


def _sha256(text: str) -> str:
    text = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise argparse.ArgumentTypeError("expected 64 hexadecimal digits (a SHA-256)")
    return text


_OPTION_NAMES = ("blksize", "tsize", "timeout", "windowsize")


def _impair_spec(text: str) -> ImpairSpec:
    try:
        return parse_impair(text)
    except ImpairError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


BUSY_POLL_HELP = ("microseconds to keep checking for the peer's next packet before going to sleep (default "
                  "200, none on a one-CPU machine). It spins only while the peer answers that fast, as on "
                  "loopback or a local switch, where it about halves the time per lock-step block; 0 never "
                  "spins, for the least CPU")


OFFLOAD_HELP = ("one system call per datagram, not one per window (UDP GSO/GRO, Linux). The peer gets the same "
                "datagrams either way, but a capture on this host (tcpdump, Wireshark; always on loopback) "
                "can show an offloaded window as one large datagram: use this when you capture here for "
                "Wireshark (tftpdiag trace takes such windows apart). --trace always records each datagram, "
                "and --impair never offloads")


def _microseconds(text: str) -> float:
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


def _option_name(text: str) -> str:
    name = text.strip().lower()
    if name not in _OPTION_NAMES:
        raise argparse.ArgumentTypeError(f"unknown option {text!r}; choose from {', '.join(_OPTION_NAMES)}")
    return name


@dataclass(frozen=True)
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


# -- the parser ------------------------------------------------------------------------------------

class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _transfer_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer")
    g.add_argument("--port", type=_int_range("port", 1, 65535), default=None,
                   help="server port (default 69, or the URL's)")
    g.add_argument("--blksize", type=_int_range("blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=1468,
                   help="block size to ask for, RFC 2348 (default 1468: the largest that fits an Ethernet "
                        "frame without IP fragments)")
    g.add_argument("--windowsize", type=_int_range("windowsize", 1, 65535), default=None,
                   help="blocks per ACK to ask for, RFC 7440 (default: not asked, lock-step)")
    g.add_argument("--timeout", type=_seconds, default=None,
                   help="retransmit timeout in seconds; also asked of the server as the RFC 2349 timeout "
                        "option when it is a whole number (default: adaptive, starting at 1 s)")
    g.add_argument("--tsize", dest="tsize", action="store_true", default=True,
                   help="ask for the transfer size, RFC 2349 (default)")
    g.add_argument("--no-tsize", dest="tsize", action="store_false", help="do not ask for the transfer size")
    g.add_argument("--no-options", action="store_true",
                   help="send a plain RFC 1350 request with no options at all")
    g.add_argument("--mode", choices=("octet", "netascii"), default=None,
                   help="transfer mode (default octet; netascii converts line ends and corrupts binaries)")
    g.add_argument("--retries", type=_int_range("retries", 0, 100), default=5,
                   help="timeouts in a row before giving up (default 5); each wait doubles, up to 8 s, so "
                        "5 retries take about 6 s on a fast link and 31 s from the first 1 s timeout")
    g.add_argument("--deadline", type=_seconds, default=None,
                   help="give up if the whole transfer takes longer than this many seconds")
    g.add_argument("--impair", type=_impair_spec, default=None, metavar="SPEC", help=IMPAIR_HELP)
    g.add_argument("--busy-poll", type=_microseconds, default=None, metavar="US", help=BUSY_POLL_HELP)
    g.add_argument("--no-offload", dest="offload", action="store_false", default=True, help=OFFLOAD_HELP)
    fam = g.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, default=0,
                     help="use IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="use IPv6 only")


def _host_filter(text: str) -> str:
    """An address for the capture filter: a literal IPv4 or IPv6 address (a name would need DNS)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--trace", type=Path, default=None, metavar="PATH",
                   help="save every packet and event: .pcap (Wireshark) or .jsonl (complete record)")
    g.add_argument("--trace-snaplen", type=_int_range("trace-snaplen", 48, 65535), default=None, metavar="BYTES",
                   help="keep at most this many bytes of each datagram in the trace (default: all of it); "
                        "a multi-GiB transfer then makes a small trace that still shows every packet")
    g.add_argument("--no-tui", action="store_true",
                   help="plain output for scripts (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout (implies --no-tui)")


PROBE_EXAMPLES = """examples:
  tftpdiag probe 192.168.1.10 pxelinux.0
  tftpdiag probe tftp://192.168.1.10/firmware/phone.bin --blksize 512 --no-tui
  tftpdiag probe 10.0.0.5 boot.img --windowsize 16 -o boot.img --expect-sha256 9f86d0...
  tftpdiag probe ::1 image.bin --port 6969 --json | jq .bytes_per_s
  tftpdiag probe 10.0.0.5 boot.img --impair loss=5%,delay=40ms,seed=1
  tftpdiag probe 10.0.0.5 boot.img --sweep                          # what does this server support?
  tftpdiag probe 10.0.0.5 boot.img -v                               # every packet, as tcpdump shows it
  tftpdiag probe 10.0.0.5 boot.img -q && echo ok                    # just the exit status

exit status: 0 the transfer completed (and matched --expect-sha256), 1 it failed, 2 usage or set-up error.
"""

PUT_EXAMPLES = """examples:
  tftpdiag put 192.168.1.10 config.txt
  tftpdiag put 192.168.1.10 ./build/image.bin firmware/image.bin --blksize 1468
  tftpdiag put tftp://[::1]:6969/upload.bin ./upload.bin --json
"""

SERVE_EXAMPLES = """examples:
  sudo tftpdiag serve /srv/tftp
  tftpdiag serve ./firmware --port 6969
  tftpdiag serve ./firmware --port 6969 --allow-upload --max-upload 64M --no-tui
  tftpdiag serve ./firmware --single-port --refuse windowsize --max-blksize 1468 --trace serve.pcap
  tftpdiag serve ./firmware --port 6969 --impair loss=10%,mtu=1400    # how does the device cope?
  tftpdiag serve /srv/tftp --no-tui --log serve.jsonl --history --metrics 127.0.0.1:9469   # left running

Port 69 needs root, CAP_NET_BIND_SERVICE, or a socket from systemd: started by socket activation
(LISTEN_FDS), serve takes the sockets systemd bound and ignores --bind and --port (see
contrib/systemd/ in the source). Stop with Ctrl-C or SIGTERM.
"""


WATCH_EXAMPLES = """examples:
  sudo tftpdiag watch                      # TFTP on the default route's interface, live
  sudo tftpdiag watch -i eth1 --host 10.0.0.23 --trace boot.pcap
  sudo tftpdiag watch -i eth0 --port 69 --port 1069 --json > transfers.jsonl

Needs root or CAP_NET_RAW (sudo setcap cap_net_raw,cap_net_admin+ep on the Python interpreter).
"""

TRACE_EXAMPLES = """examples:
  tftpdiag trace probe.pcap
  sudo tcpdump -i eth0 -w boot.pcap udp && tftpdiag trace boot.pcap --no-tui
  tftpdiag trace serve.jsonl --json | jq '.transfers[] | select(.ok | not)'

exit status: 0 the trace was read (even if transfers in it failed; damage is reported as a warning),
2 the file cannot be read as a trace.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tftpdiag",
        description="See why a TFTP transfer fails, packet by packet: a client (probe, put), a server "
                    "(serve), and a live view of every packet, option and retransmit.",
        epilog="Start with 'tftpdiag demo' to see a transfer without any set-up. "
               "'tftpdiag COMMAND --help' explains each command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"tftpdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    probe = sub.add_parser("probe", help="download a file from a TFTP server and show the transfer",
                           description="Download FILE from HOST with tftpdiag's own client and show the "
                                       "transfer live. Without -o the data is only hashed, not kept.",
                           epilog=PROBE_EXAMPLES, formatter_class=_Formatter)
    probe.add_argument("host", metavar="HOST", help="server name or address, or a tftp:// URL")
    probe.add_argument("file", metavar="FILE", nargs="?", help="file to fetch (omit with a URL)")
    _transfer_flags(probe)
    probe.add_argument("-o", "--output", type=Path, default=None, metavar="PATH",
                       help="keep the downloaded file here (written only if the transfer completes; a file it "
                            "replaces keeps its mode, a new one gets 0666 less the umask, as cp makes it)")
    probe.add_argument("--expect-sha256", type=_sha256, default=None, metavar="HEX",
                       help="fail (exit 1) unless the data has this SHA-256; with -o, data that does not "
                            "match is not kept and a file already at PATH stays as it was")
    probe.add_argument("--max-size", type=parse_size, default=None, metavar="SIZE",
                       help="stop a download that brings more than SIZE, e.g. 512M: the server gets ERROR 3, "
                            "the exit status is 1 and nothing is kept (default 4G with -o, no limit without: "
                            "the data is then only hashed; 0 means no limit). A download that runs past the "
                            "size the server announced (tsize) is stopped the same way")
    probe.add_argument("--sweep", action="store_true",
                       help="run short probes with different options (none; blksize 512 to 65464; windowsize "
                            "4, 16, 64; tsize; timeout; netascii) and report what the server supports and the "
                            "fastest safe settings; each probe stops after 2 MiB")
    _output_flags(probe)
    add_verbosity_flags(probe)

    put = sub.add_parser("put", help="upload a file to a TFTP server",
                         description="Upload LOCAL to HOST as REMOTE (default: LOCAL's file name).",
                         epilog=PUT_EXAMPLES, formatter_class=_Formatter)
    put.add_argument("host", metavar="HOST", help="server name or address, or a tftp:// URL naming REMOTE")
    put.add_argument("local", metavar="LOCAL", type=Path, help="the local file to send")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="name on the server")
    _transfer_flags(put)
    _output_flags(put)
    add_verbosity_flags(put)

    serve = sub.add_parser("serve", help="serve a directory over TFTP and show every session",
                           description="Serve DIR with tftpdiag's own TFTP server (read-only unless "
                                       "--allow-upload) and show every client session live.",
                           epilog=SERVE_EXAMPLES, formatter_class=_Formatter)
    serve.add_argument("dir", metavar="DIR", type=Path, help="the directory to serve")
    g = serve.add_argument_group("server")
    g.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="address to listen on; repeat for several (default: all IPv4 and IPv6 addresses)")
    g.add_argument("--port", type=_int_range("port", 0, 65535), default=69, help="port to listen on (default 69)")
    g.add_argument("--allow-upload", action="store_true", help="accept uploads (WRQ) of new files")
    g.add_argument("--allow-overwrite", action="store_true", help="let uploads replace existing files")
    g.add_argument("--max-upload", type=parse_size, default=None, metavar="SIZE",
                   help="largest upload accepted, e.g. 64M (default: no limit)")
    g.add_argument("--single-port", action="store_true",
                   help="answer every session from the listening port (passes NAT and strict firewalls)")
    g.add_argument("--max-blksize", type=_int_range("max-blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=BLKSIZE_MAX,
                   help="largest block size granted (default 65464)")
    g.add_argument("--max-windowsize", type=_int_range("max-windowsize", 1, 65535), default=64,
                   help="largest window granted (default 64)")
    g.add_argument("--refuse", action="append", type=_option_name, default=[], metavar="OPTION",
                   help="never grant this option (blksize, tsize, timeout, windowsize), as a server "
                        "without it; repeatable")
    g.add_argument("--max-sessions", type=_int_range("max-sessions", 1, 100000), default=None,
                   help="most sessions at once, from any number of addresses (default: as many as the "
                        "open-file limit allows, which serve raises to its hard limit, at most 2048). When "
                        "full, a session whose client has not answered yet (a flood, or a forged address) "
                        "makes room for a new request; failing that the request waits for a session to end "
                        "(up to 4096 waiting) rather than being refused")
    g.add_argument("--timeout", type=_seconds, default=None,
                   help="retransmit timeout in seconds (default: adaptive, starting at 1 s)")
    g.add_argument("--retries", type=_int_range("retries", 0, 100), default=5,
                   help="a session that hears nothing from its client retransmits at least this many "
                        "times, backing off to 8 s between tries, before it gives up (default 5)")
    g.add_argument("--give-up", type=_give_up, default=GIVE_UP, metavar="SECONDS",
                   help=f"and it gives up only once it has heard nothing for this long (default {GIVE_UP:g}; "
                        "longer than tftp-hpa's 25 s and U-Boot's 10 x 5 s, so the client gives up first)")
    g.add_argument("--impair", type=_impair_spec, default=None, metavar="SPEC", help=IMPAIR_HELP)
    g.add_argument("--busy-poll", type=_microseconds, default=None, metavar="US", help=BUSY_POLL_HELP)
    g.add_argument("--no-offload", dest="offload", action="store_false", default=True, help=OFFLOAD_HELP)
    add_serve_flags(serve)
    _output_flags(serve)
    add_verbosity_flags(serve)

    demo = sub.add_parser("demo", help="serve a sample firmware image on loopback and probe it",
                          description="Zero set-up first run: starts tftpdiag's server on a free loopback "
                                      "port over a temporary folder with a generated sample firmware "
                                      "image, then probes it.", formatter_class=_Formatter)
    demo.add_argument("--size", type=parse_size, default=8 << 20, metavar="SIZE",
                      help="size of the sample image (default 8M)")
    demo.add_argument("--blksize", type=_int_range("blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=1468,
                      help="block size the probe asks for (default 1468)")
    demo.add_argument("--windowsize", type=_int_range("windowsize", 1, 65535), default=None,
                      help="window the probe asks for (default: lock-step)")
    _output_flags(demo)

    watch = sub.add_parser("watch", help="capture TFTP between any devices and servers and show it live",
                           description="Capture the TFTP traffic on an interface (any client, any server: "
                                       "one you do not control too), follow each transfer from its request "
                                       "to the server's new port, and show it live as `serve` shows its "
                                       "sessions, with findings. Ctrl-C stops; what the kernel had to drop "
                                       "is counted and said, never taken for network loss.",
                           epilog=WATCH_EXAMPLES, formatter_class=_Formatter)
    g = watch.add_argument_group("capture")
    g.add_argument("-i", "--interface", default=None, metavar="IFACE",
                   help="interface to capture on (default: the one with the default route)")
    g.add_argument("--port", action="append", type=_int_range("port", 1, 65535), default=None, metavar="PORT",
                   help="a server port requests go to; repeat for several (default 69 alone)")
    g.add_argument("--host", action="append", default=[], metavar="ADDR", type=_host_filter,
                   help="only traffic to or from this device or server; repeatable")
    g.add_argument("--idle", type=_seconds_between(1, 3600, "30"), default=30.0, metavar="SECONDS",
                   help="a transfer with no packet for this long is judged stopped (default 30)")
    g = watch.add_argument_group("output")
    g.add_argument("--trace", type=Path, default=None, metavar="PATH",
                   help="keep what was captured: .pcap (the datagrams as seen) or .jsonl (the events)")
    g.add_argument("--no-tui", action="store_true",
                   help="a line per finished transfer (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true",
                   help='a JSON object per finished transfer ("event": "session"), then one per device '
                        'and one for the capture when it stops (implies --no-tui)')
    add_verbosity_flags(watch)

    from tftpdiag.storm import add_storm_parser  # here, not at the top: it builds on this module's helpers

    add_storm_parser(sub)

    trace = sub.add_parser("trace", help="open a saved trace or a packet capture and show its transfers",
                           description="Rebuild every TFTP transfer in PATH and show each one as a live "
                                       "session is shown: a tftpdiag .jsonl trace, or a pcap/pcapng capture "
                                       "from tftpdiag --trace, tcpdump or Wireshark (other traffic in it is "
                                       "ignored).", epilog=TRACE_EXAMPLES, formatter_class=_Formatter)
    trace.add_argument("path", metavar="PATH", type=Path, help="the trace or capture file")
    g = trace.add_argument_group("output")
    g.add_argument("--no-tui", action="store_true",
                   help="plain per-transfer summaries (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true",
                   help='print {"schema", "file", "transfers": [...], "warning"} as JSON on stdout (implies --no-tui)')
    add_verbosity_flags(trace)
    from tftpdiag.pxe.args import add_pxe_parser

    add_pxe_parser(sub)
    add_history_parser(sub, _Formatter)
    add_completion_parser(sub, _Formatter)
    return parser


# -- turning arguments into requests ----------------------------------------------------------------

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
    return ServerPolicy(max_blksize=args.max_blksize, max_windowsize=args.max_windowsize,
                        refuse=frozenset(args.refuse), max_upload=args.max_upload)


def interactive(args: argparse.Namespace) -> bool:
    """The TUI is for a person at a terminal; scripts, pipes and --json get plain output."""
    return not (args.no_tui or args.json or verbosity(args)) and sys.stdout.isatty() and sys.stdin.isatty()


# Engine threads wake for every datagram; while another thread (the printer, the UI) holds the GIL
# they would wait up to the default 5 ms switch interval each time, which throttles lock-step transfers.
GIL_SWITCH_INTERVAL = 0.0005

# A transfer makes a few objects per datagram (events, packets), all freed by reference counting: they
# form no cycles. The cyclic collector's default young collection every 700 allocations only spends
# time walking them (about a tenth of a windowed transfer here), so it runs a seventieth as often.
GC_THRESHOLD = (50_000, 20, 20)


def main(argv: Sequence[str] | None = None) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLD)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
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
    except UsageError as exc:
        from tftpdiag.fmt import line

        # Each line made safe, whatever the message quotes (a trace's path or contents, a peer's words);
        # a message of several lines (a permission error and the ways around it) keeps its lines.
        first, *rest = str(exc).splitlines() or [""]
        print(line(f"tftpdiag {args.command}: {first}"), file=sys.stderr)
        for text in rest[:10]:
            print(line(text), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tftpdiag: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (tftpdiag probe -v ... | head): stop quietly, as a program
        # killed by SIGPIPE does; stdout goes to /dev/null so that Python's exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE
