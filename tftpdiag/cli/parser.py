"""The parser of every command: flags, help and examples. Commands with many flags of their own add them
from their modules (opsargs, verbosity, completion, storm, pxe)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from tftpdiag import __version__
from tftpdiag.cli.listing import COMMAND_HELP, COMMANDS
from tftpdiag.cli.values import (
    BUSY_POLL_HELP,
    DEADLINE_MAX,
    IMPAIR_HELP,
    OFFLOAD_HELP,
    Formatter,
    deadline_seconds,
    give_up_seconds,
    host_address,
    impair_spec,
    int_range,
    microseconds,
    option_name,
    output_path,
    parse_size,
    seconds,
    seconds_between,
    sha256_hex,
    size_at_most,
)
from tftpdiag.completion import add_completion_parser
from tftpdiag.opsargs import add_history_parser, add_serve_flags
from tftpdiag.protocol.limits import BLKSIZE_MAX, BLKSIZE_MIN, ETHERNET_BLKSIZE, GIVE_UP, TIMEOUT_MAX, TIMEOUT_MIN
from tftpdiag.verbosity import add_verbosity_flags

__all__ = ["build_parser", "COMMANDS"]


def _transfer_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer")
    g.add_argument("--port", type=int_range("port", 1, 65535), default=None,
                   help="server port (default 69, or the one HOST or the URL names; given both ways, they "
                        "must agree)")
    g.add_argument("--blksize", type=int_range("blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=None,
                   help=f"block size to ask for, RFC 2348 (default {ETHERNET_BLKSIZE}: the largest that fits an "
                        "Ethernet frame without IP fragments)")
    g.add_argument("--windowsize", type=int_range("windowsize", 1, 65535), default=None,
                   help="blocks per ACK to ask for, RFC 7440 (default: not asked, lock-step)")
    g.add_argument("--timeout", type=seconds, default=None,
                   help="retransmit timeout in seconds; also asked of the server as the RFC 2349 timeout "
                        f"option when it is a whole number from {TIMEOUT_MIN} to {TIMEOUT_MAX}, the option's range "
                        "(default: adaptive, starting at 1 s)")
    g.add_argument("--tsize", dest="tsize", action="store_true", default=True,
                   help="ask for the transfer size, RFC 2349 (default)")
    g.add_argument("--no-tsize", dest="tsize", action="store_false", help="do not ask for the transfer size")
    g.add_argument("--no-options", action="store_true",
                   help="send a plain RFC 1350 request with no options at all (so no --blksize or "
                        "--windowsize; --timeout then sets only the retransmit timeout)")
    g.add_argument("--mode", choices=("octet", "netascii"), default=None,
                   help="transfer mode (default octet; netascii converts line ends and corrupts binaries)")
    g.add_argument("--retries", type=int_range("retries", 0, 100), default=5,
                   help="timeouts in a row before giving up (default 5); each wait doubles, up to 8 s, so "
                        "5 retries take about 6 s on a fast link and 31 s from the first 1 s timeout")
    g.add_argument("--deadline", type=deadline_seconds, default=None, metavar="SECONDS",
                   help="give up if the whole transfer takes longer than this many seconds (at most "
                        f"{DEADLINE_MAX}, a week; default: no deadline)")
    g.add_argument("--impair", type=impair_spec, default=None, metavar="SPEC", help=IMPAIR_HELP)
    g.add_argument("--busy-poll", type=microseconds, default=None, metavar="US", help=BUSY_POLL_HELP)
    g.add_argument("--no-offload", dest="offload", action="store_false", default=True, help=OFFLOAD_HELP)
    fam = g.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, default=0,
                     help="use IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="use IPv6 only")


def _output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--trace", type=Path, default=None, metavar="PATH",
                   help="save every packet and event: .pcap (Wireshark) or .jsonl (complete record)")
    g.add_argument("--trace-snaplen", type=int_range("trace-snaplen", 48, 65535), default=None, metavar="BYTES",
                   help="keep at most this many bytes of each DATA datagram in the trace (default: all of "
                        "it; requests, OACKs, ERRORs and ACKs are kept whole): a multi-GiB transfer then "
                        "makes a small trace that still shows every packet")
    g.add_argument("--no-tui", action="store_true",
                   help="plain output for scripts (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout (implies --no-tui)")


DEMO_SIZE_MAX = 4 << 30  # the demo writes its image to a temporary folder: a slip (1T) must not fill the disk

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
  tftpdiag serve /srv/tftp --no-tui --log sessions.jsonl --history --metrics 127.0.0.1:9469   # left running

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
  tftpdiag trace boot.jsonl --json | jq '.transfers[] | select(.ok | not)'   # from serve --trace boot.jsonl

A .jsonl trace is what --trace or the s key writes (every event); a serve --log file holds one summary
per session and is no trace.

exit status: 0 the trace was read (even if transfers in it failed; damage is reported as a warning),
2 the file cannot be read as a trace.
"""


def build_parser(only: str | None = None, *, bare: bool = False) -> argparse.ArgumentParser:
    """The whole parser; with ``only`` (one of COMMANDS), one that knows that command alone: enough to
    run it, with the same --help (main() builds that: every other command's flags, and the modules
    that define them, would cost every start a few milliseconds). With ``bare``, one that knows every
    command by its name and --help line alone: what a run that names no command reaches (its --help,
    --version, usage and errors are the whole parser's)."""
    parser = _Parser(
        prog="tftpdiag",
        description="See why a TFTP transfer fails, packet by packet: a client (probe, put), a server "
                    "(serve), and a live view of every packet, option and retransmit.",
        epilog="Start with 'tftpdiag demo' to see a transfer without any set-up. "
               "'tftpdiag COMMAND --help' explains each command.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"tftpdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=_Unbuilt if bare else argparse.ArgumentParser)
    parser.commands = sub.choices

    for name in COMMANDS:
        if bare:
            sub.add_parser(name, help=COMMAND_HELP[name])
        elif only is None or only == name:
            _BUILDERS[name](sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """The top-level parser. A word no command knows is that command's error, told with its own usage:
    argparse leaves the words a command's parser did not take to this one, whose usage (``tftpdiag
    [-h] [--version] COMMAND ...``) says nothing of the flags the user meant."""

    commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            owner = self.commands.get(command, self) if command is not None else self
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


class _Unbuilt(argparse.ArgumentParser):
    """A command's parser in a bare parser: never used, so never built (an ArgumentParser made for each
    would cost a --help some 10 ms): the run given a bare parser names no command, so argparse never
    calls one."""

    def __init__(self, **_: object) -> None:  # not ArgumentParser's: nothing to build
        pass


def _add_probe(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser("probe", help=COMMAND_HELP["probe"],
                           description="Download FILE from HOST with tftpdiag's own client and show the "
                                       "transfer live. Without -o the data is only hashed, not kept.",
                           epilog=PROBE_EXAMPLES, formatter_class=Formatter)
    probe.add_argument("host", metavar="HOST",
                       help="server name or address, with :PORT if need be ([IPv6]:PORT), or a tftp:// URL")
    probe.add_argument("file", metavar="FILE", nargs="?", help="file to fetch (omit with a URL)")
    _transfer_flags(probe)
    probe.add_argument("-o", "--output", type=output_path, default=None, metavar="PATH",
                       help="keep the downloaded file here (written only if the transfer completes; a file it "
                            "replaces keeps its mode, a new one gets 0666 less the umask, as cp makes it). A "
                            "device or a pipe (/dev/null, a FIFO) is written as the data comes, and so is "
                            "stdout for -o - (the summary then goes to stderr; a file named - is ./-)")
    probe.add_argument("--expect-sha256", type=sha256_hex, default=None, metavar="HEX",
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


def _add_put(sub: argparse._SubParsersAction) -> None:
    put = sub.add_parser("put", help=COMMAND_HELP["put"],
                         description="Upload LOCAL to HOST as REMOTE (default: LOCAL's file name).",
                         epilog=PUT_EXAMPLES, formatter_class=Formatter)
    put.add_argument("host", metavar="HOST",
                     help="server name or address, with :PORT if need be ([IPv6]:PORT), or a tftp:// URL naming "
                          "REMOTE")
    put.add_argument("local", metavar="LOCAL", type=Path, help="the local file to send")
    put.add_argument("remote", metavar="REMOTE", nargs="?", help="name on the server")
    _transfer_flags(put)
    _output_flags(put)
    add_verbosity_flags(put)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help=COMMAND_HELP["serve"],
                           description="Serve DIR with tftpdiag's own TFTP server (read-only unless "
                                       "--allow-upload) and show every client session live.",
                           epilog=SERVE_EXAMPLES, formatter_class=Formatter)
    serve.add_argument("dir", metavar="DIR", type=Path, help="the directory to serve")
    g = serve.add_argument_group("server")
    g.add_argument("--bind", action="append", default=None, metavar="ADDR",
                   help="address to listen on; repeat for several (default: all IPv4 and IPv6 addresses)")
    g.add_argument("--port", type=int_range("port", 0, 65535), default=69, help="port to listen on (default 69)")
    g.add_argument("--allow-upload", action="store_true", help="accept uploads (WRQ) of new files")
    g.add_argument("--allow-overwrite", action="store_true", help="let uploads replace existing files")
    g.add_argument("--max-upload", type=parse_size, default=None, metavar="SIZE",
                   help="largest upload accepted, e.g. 64M (default: no limit; 0 means no limit)")
    g.add_argument("--single-port", action="store_true",
                   help="answer every session from the listening port (passes NAT and strict firewalls)")
    g.add_argument("--max-blksize", type=int_range("max-blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=BLKSIZE_MAX,
                   help="largest block size granted (default 65464)")
    g.add_argument("--max-windowsize", type=int_range("max-windowsize", 1, 65535), default=64,
                   help="largest window granted (default 64)")
    g.add_argument("--refuse", action="append", type=option_name, default=[], metavar="OPTION",
                   help="never grant this option (blksize, tsize, timeout, windowsize), as a server "
                        "without it; repeatable")
    g.add_argument("--max-sessions", type=int_range("max-sessions", 1, 100000), default=None,
                   help="most sessions at once, from any number of addresses (default: as many as the "
                        "open-file limit allows, which serve raises to its hard limit, at most 2048). When "
                        "full, a session whose client has not answered yet (a flood, or a forged address) "
                        "makes room for a new request; failing that the request waits for a session to end "
                        "(up to 4096 waiting) rather than being refused")
    g.add_argument("--timeout", type=seconds, default=None,
                   help="retransmit timeout in seconds (default: adaptive, starting at 1 s)")
    g.add_argument("--retries", type=int_range("retries", 0, 100), default=5,
                   help="a session that hears nothing from its client retransmits at least this many "
                        "times, backing off to 8 s between tries, before it gives up (default 5)")
    g.add_argument("--give-up", type=give_up_seconds, default=GIVE_UP, metavar="SECONDS",
                   help=f"and it gives up only once it has heard nothing for this long (default {GIVE_UP:g}; "
                        "longer than tftp-hpa's 25 s and U-Boot's 10 x 5 s, so the client gives up first)")
    g.add_argument("--impair", type=impair_spec, default=None, metavar="SPEC", help=IMPAIR_HELP)
    g.add_argument("--busy-poll", type=microseconds, default=None, metavar="US", help=BUSY_POLL_HELP)
    g.add_argument("--no-offload", dest="offload", action="store_false", default=True, help=OFFLOAD_HELP)
    add_serve_flags(serve)
    _output_flags(serve)
    add_verbosity_flags(serve)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help=COMMAND_HELP["demo"],
                          description="Zero set-up first run: starts tftpdiag's server on a free loopback "
                                      "port over a temporary folder with a generated sample firmware "
                                      "image, then probes it.", formatter_class=Formatter)
    demo.add_argument("--size", type=size_at_most(DEMO_SIZE_MAX, "the sample image (written to a temporary folder)"),
                      default=8 << 20, metavar="SIZE",
                      help=f"size of the sample image (default 8M, at most {DEMO_SIZE_MAX >> 30}G: it is written to "
                           "a temporary folder first)")
    demo.add_argument("--blksize", type=int_range("blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=1468,
                      help="block size the probe asks for (default 1468)")
    demo.add_argument("--windowsize", type=int_range("windowsize", 1, 65535), default=None,
                      help="window the probe asks for (default: lock-step)")
    _output_flags(demo)


def _add_watch(sub: argparse._SubParsersAction) -> None:
    watch = sub.add_parser("watch", help=COMMAND_HELP["watch"],
                           description="Capture the TFTP traffic on an interface (any client, any server: "
                                       "one you do not control too), follow each transfer from its request "
                                       "to the server's new port, and show it live as `serve` shows its "
                                       "sessions, with findings. Ctrl-C stops; what the kernel had to drop "
                                       "is counted and said, never taken for network loss.",
                           epilog=WATCH_EXAMPLES, formatter_class=Formatter)
    g = watch.add_argument_group("capture")
    g.add_argument("-i", "--interface", default=None, metavar="IFACE",
                   help="interface to capture on (default: the one with the default route; 'any': every "
                        "interface at once, as tcpdump -i any)")
    g.add_argument("--port", action="append", type=int_range("port", 1, 65535), default=None, metavar="PORT",
                   help="a server port requests go to; repeat for several (default 69 alone)")
    g.add_argument("--host", action="append", default=[], metavar="ADDR", type=host_address,
                   help="only traffic to or from this device or server; repeatable")
    g.add_argument("--idle", type=seconds_between(1, 3600, "30"), default=30.0, metavar="SECONDS",
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


def _add_storm(sub: argparse._SubParsersAction) -> None:
    from tftpdiag.storm import add_storm_parser  # here: it builds on this module's helpers

    add_storm_parser(sub)


def _add_trace(sub: argparse._SubParsersAction) -> None:
    trace = sub.add_parser("trace", help=COMMAND_HELP["trace"],
                           description="Rebuild every TFTP transfer in PATH and show each one as a live "
                                       "session is shown: a tftpdiag .jsonl trace, or a pcap/pcapng capture "
                                       "from tftpdiag --trace, tcpdump or Wireshark (other traffic in it is "
                                       "ignored).", epilog=TRACE_EXAMPLES, formatter_class=Formatter)
    trace.add_argument("path", metavar="PATH", type=Path, help="the trace or capture file")
    g = trace.add_argument_group("output")
    g.add_argument("--no-tui", action="store_true",
                   help="plain per-transfer summaries (automatic when stdout is not a terminal)")
    g.add_argument("--json", action="store_true",
                   help='print {"schema", "file", "transfers": [...], "warning"} as JSON on stdout (implies --no-tui)')
    add_verbosity_flags(trace)


def _add_pxe(sub: argparse._SubParsersAction) -> None:
    from tftpdiag.pxe.args import add_pxe_parser

    add_pxe_parser(sub)


def _add_history(sub: argparse._SubParsersAction) -> None:
    add_history_parser(sub, Formatter)


def _add_completion(sub: argparse._SubParsersAction) -> None:
    add_completion_parser(sub, Formatter)


_BUILDERS = {"probe": _add_probe, "put": _add_put, "serve": _add_serve, "demo": _add_demo, "watch": _add_watch,
             "storm": _add_storm, "trace": _add_trace, "pxe": _add_pxe, "history": _add_history,
             "completion": _add_completion}
assert tuple(_BUILDERS) == COMMANDS, "each command in cli/listing.py has its builder, in that order"
