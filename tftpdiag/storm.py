"""`tftpdiag storm`: many devices booting at once against one server, and what became of them.

The command line and the report live here; the devices are driven by engine/storm.py.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tftpdiag.cli.listing import COMMAND_HELP
from tftpdiag.fmt import json_line

__all__ = ["add_storm_parser", "run_storm_command", "summarise", "percentile"]

STORM_EXAMPLES = """examples:
  tftpdiag storm 192.168.1.10 pxelinux.0 --clients 500
  tftpdiag storm 127.0.0.1 firmware.bin --port 6969 --clients 500 --from 127.0.1.0/24 --json
  tftpdiag storm 10.0.0.5 phone.bin --clients 200 --ramp 10 --expect-sha256 9f86d0...
  tftpdiag storm 10.0.0.5 boot.img --clients 50 --windowsize 16 --blksize 1428

exit status: 0 every device got the whole file, byte-exact; 1 some did not; 2 usage or set-up error.
"""


def add_storm_parser(sub: Any) -> None:
    """The `storm` subcommand (built here to keep cli/parser.py about the flags all commands share)."""
    from tftpdiag.cli.values import Formatter, int_range, seconds_between, sha256_hex
    from tftpdiag.protocol.limits import BLKSIZE_MAX, BLKSIZE_MIN, ETHERNET_BLKSIZE

    p = sub.add_parser(
        "storm", help=COMMAND_HELP["storm"],
        description="Play N devices that all boot at once: each asks HOST for FILE from a socket of its own "
                    "(lock-step unless --windowsize), as phones or PXE clients do after a power cut. Reports "
                    "how many completed and failed, completion-time percentiles, retransmissions and "
                    "refusals, and checks every device's bytes (size and SHA-256).",
        epilog=STORM_EXAMPLES, formatter_class=Formatter)
    p.add_argument("host", metavar="HOST", help="server name or address, with :PORT if need be ([IPv6]:PORT)")
    p.add_argument("file", metavar="FILE", help="the file every device asks for")
    p.add_argument("--port", type=int_range("port", 1, 65535), default=None,
                   help="server port (default 69, or the one HOST names; given both ways, they must agree)")
    p.add_argument("--clients", type=int_range("clients", 1, 20000), default=100,
                   help="devices, each with its own socket (default 100); the open-file limit is raised to "
                        "its hard limit first")
    p.add_argument("--ramp", type=seconds_between(0, 600, "10"), default=0.0, metavar="SECONDS",
                   help="spread the devices' first requests evenly over this many seconds (default 0: all "
                        "at once)")
    p.add_argument("--blksize", type=int_range("blksize", BLKSIZE_MIN, BLKSIZE_MAX), default=None,
                   help=f"block size each device asks for (default {ETHERNET_BLKSIZE})")
    p.add_argument("--windowsize", type=int_range("windowsize", 1, 65535), default=None,
                   help="blocks per ACK each device asks for, RFC 7440 (default: not asked, lock-step)")
    p.add_argument("--no-options", action="store_true",
                   help="plain RFC 1350 requests, no blksize, windowsize or tsize (as the oldest boot ROMs)")
    p.add_argument("--timeout", type=seconds_between(0.1, 60, "1"), default=1.0, metavar="SECONDS",
                   help="each device's retransmit timeout, fixed as in boot ROMs (default 1)")
    p.add_argument("--retries", type=int_range("retries", 0, 100), default=5,
                   help="timeouts in a row before a device gives up (default 5)")
    p.add_argument("--deadline", type=seconds_between(1, 3600, "300"), default=300.0, metavar="SECONDS",
                   help="end the storm after this long; devices not done by then count as failed (default 300)")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="ADDRS",
                   help="local addresses the devices send from, in turn: an address, a network "
                        "(127.0.1.0/24: its hosts) or a range (127.0.1.1-127.0.1.200); repeatable. On "
                        "Linux every 127.x.y.z is loopback, so one machine can stand for many. Default: "
                        "one address, the kernel's choice")
    p.add_argument("--expect-sha256", type=sha256_hex, default=None, metavar="HEX",
                   help="the file's SHA-256: a device that received anything else failed")
    p.add_argument("--expect-file", type=Path, default=None, metavar="PATH",
                   help="a local copy of the file: its size and SHA-256 are what each device must receive. "
                        "Without this or --expect-sha256 every device must receive what most received")
    p.add_argument("--json", action="store_true",
                   help="print {clients, completed, failed, p50_s, p95_s, p99_s, max_s, refused, "
                        "retransmits, ...} as JSON on stdout")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, default=0,
                     help="use IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="use IPv6 only")


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (share 0.5 is the median): a value that was measured, never an
    interpolation between two devices."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def summarise(results: Sequence[Any], wall: float, expected: tuple[int | None, str] | None) -> dict[str, Any]:
    """The storm's figures. A device counts as completed only if its bytes are the expected ones."""
    from tftpdiag.engine.storm import consensus

    if expected is None:
        expected = consensus(results)
    good = [r for r in results if r.completed and expected is not None and r.sha256 == expected[1]
            and (expected[0] is None or r.size == expected[0])]
    wrong = sum(1 for r in results if r.completed) - len(good)
    times = [r.seconds for r in good]
    errors = Counter(r.error for r in results if r.error)
    if wrong:
        errors["received bytes other than the expected file"] += wrong

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    from tftpdiag.report import SCHEMA

    total_bytes = sum(r.size for r in good)
    throughput = total_bytes / wall if wall > 0 else None
    return {
        "schema": SCHEMA,
        "clients": len(results),
        "completed": len(good),
        "failed": len(results) - len(good),
        "p50_s": rounded(percentile(times, 0.50)),
        "p95_s": rounded(percentile(times, 0.95)),
        "p99_s": rounded(percentile(times, 0.99)),
        "max_s": rounded(max(times) if times else None),
        "refused": sum(1 for r in results if r.refused),
        "retransmits": sum(r.retransmits + r.duplicates for r in results),
        "client_retransmits": sum(r.retransmits for r in results),
        "server_retransmits_seen": sum(r.duplicates for r in results),
        "wrong_bytes": wrong,
        "size": expected[0] if expected is not None else None,
        "sha256": expected[1] if expected is not None else None,
        "wall_s": round(wall, 4),
        # bytes per second; aggregate_bps is the same number under the name it had (schema 1 only)
        "aggregate_bytes_per_s": None if throughput is None else round(throughput),
        "aggregate_bps": None if throughput is None else round(throughput),
        "errors": dict(errors.most_common(10)),
    }


def _expected(args: argparse.Namespace) -> tuple[int | None, str] | None:
    from tftpdiag.cli.values import UsageError

    if args.expect_file is not None:
        from tftpdiag.commands import _sha256_file

        try:
            size, digest = args.expect_file.stat().st_size, _sha256_file(args.expect_file)
        except OSError as exc:
            raise UsageError(f"cannot read {args.expect_file}: {exc.strerror}") from None
        if args.expect_sha256 is not None and args.expect_sha256 != digest:
            raise UsageError("--expect-sha256 and --expect-file disagree")
        return size, digest
    if args.expect_sha256 is not None:
        return None, args.expect_sha256
    return None


def _text(summary: dict[str, Any]) -> list[str]:
    from tftpdiag.fmt import line
    from tftpdiag.fmt import rate as fmt_rate

    def secs(key: str) -> str:
        value = summary[key]
        return "-" if value is None else f"{value:.3f} s"

    rate = summary["aggregate_bytes_per_s"]
    lines = [
        f"{summary['completed']} of {summary['clients']} devices completed, {summary['failed']} failed "
        f"({summary['refused']} refused) in {summary['wall_s']:.2f} s"
        + (f", {fmt_rate(rate)} in all" if rate else ""),
        f"completion time: p50 {secs('p50_s')}, p95 {secs('p95_s')}, p99 {secs('p99_s')}, max {secs('max_s')}",
        f"retransmits: {summary['client_retransmits']} by the devices, {summary['server_retransmits_seen']} "
        "by the server (DATA received twice)",
    ]
    if summary["sha256"]:
        size = "" if summary["size"] is None else f"{summary['size']:,} bytes, "
        lines.append(f"file: {size}SHA-256 {summary['sha256']}")
    for message, count in summary["errors"].items():
        lines.append(f"  {count} x {message}")
    return [line(text) for text in lines]


def run_storm_command(args: argparse.Namespace) -> int:
    from tftpdiag.cli.requests import asked_sizes, check_request, server_port, split_host
    from tftpdiag.cli.values import EXIT_FAILED, EXIT_OK, UsageError
    from tftpdiag.engine.admission import raise_open_file_limit
    from tftpdiag.engine.storm import StormConfig, StormSetupError, run_storm, source_addresses
    from tftpdiag.protocol.timer import Timing

    host, named = split_host(args.host, args.family)
    port = server_port(args.port, named, args.host)
    expected = _expected(args)
    try:
        sources = source_addresses(args.sources)
    except StormSetupError as exc:
        raise UsageError(str(exc)) from None
    raise_open_file_limit()
    blksize, windowsize = asked_sizes(args)
    config = StormConfig(
        host=host, filename=args.file, port=port, clients=args.clients, ramp=args.ramp, blksize=blksize,
        windowsize=windowsize, tsize=not args.no_options, sources=sources, deadline=args.deadline, family=args.family,
        timing=Timing(initial_timeout=args.timeout, retries=args.retries, dally=0.0, adaptive=False))
    check_request(config.filename, "octet", config.options)

    def announce() -> None:  # once set up: a name that does not resolve or too few sockets is said alone
        if not args.json:
            print(f"tftpdiag storm: {args.clients} devices asking for the file"
                  + (f" over {args.ramp:g} s" if args.ramp else " at once") + " …", file=sys.stderr, flush=True)
    try:
        results, wall = run_storm(config, on_ready=announce)
    except StormSetupError as exc:
        raise UsageError(str(exc)) from None
    summary = summarise(results, wall, expected)
    if args.json:
        sys.stdout.write(json_line(summary) + "\n")
    else:
        sys.stdout.writelines(text + "\n" for text in _text(summary))
    return EXIT_OK if summary["failed"] == 0 else EXIT_FAILED
