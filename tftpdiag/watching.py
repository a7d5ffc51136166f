"""The `watch` command: a live capture shown like a server's sessions, then the devices it saw."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from tftpdiag.devices import DeviceBook
from tftpdiag.engine.bus import EventBus
from tftpdiag.fmt import json_line, line
from tftpdiag.report import SCHEMA

if TYPE_CHECKING:
    from tftpdiag.engine.capture import CaptureStats
    from tftpdiag.engine.watch import Watcher
    from tftpdiag.findings.model import Finding
    from tftpdiag.sessions import SessionRecord

__all__ = ["run_watch", "capture_words"]

EXIT_OK, EXIT_USAGE = 0, 2


def capture_words(stats: CaptureStats, packets: int) -> tuple[str, bool]:
    """What the capture has seen and lost, in words, and whether it lost anything."""
    said = f"captured {packets:,} packets"
    lost = stats.dropped + stats.if_dropped
    if lost:
        said += (f"; ⚠ the capture lost {lost:,} (the kernel dropped {stats.dropped:,}, the interface "
                 f"{stats.if_dropped:,}): gaps in these transfers may be the capture's, not the network's")
    else:
        said += ", none lost"
    return said, bool(lost)


def capture_object(stats: CaptureStats, packets: int, interface: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "event": "capture", "interface": interface, "packets": packets,
            "kernel_dropped": stats.dropped, "interface_dropped": stats.if_dropped,
            "complete": not (stats.dropped or stats.if_dropped)}


def _interface(args: argparse.Namespace) -> str:
    from tftpdiag.engine.capture import default_interface

    if args.interface:
        return str(args.interface)
    found = default_interface()
    if found is None:
        raise _usage("no default route, so no interface to guess: name one with --interface")
    return found


def _usage(message: str) -> Exception:
    from tftpdiag.cli.values import UsageError

    return UsageError(message)


def _watcher(args: argparse.Namespace, bus: EventBus) -> Watcher:
    from tftpdiag.engine.capture import CaptureError
    from tftpdiag.engine.watch import WatchConfig, Watcher

    pcap = None
    if args.trace is not None and args.trace.suffix.lower() != ".jsonl":
        pcap = str(args.trace)
    config = WatchConfig(_interface(args), tuple(args.port or (69,)), tuple(args.host), args.idle, pcap)
    try:
        return Watcher(config, bus)
    except CaptureError as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:  # the --trace file
        raise _usage(f"cannot write {args.trace}: {exc.strerror or exc}") from None


def run_watch(args: argparse.Namespace) -> int:
    from tftpdiag.cli.requests import interactive, verbosity
    from tftpdiag.commands import StopFlag, _stop_on_signals, _trace

    bus = EventBus()
    watcher = _watcher(args, bus)
    jsonl = args.trace if args.trace is not None and args.trace.suffix.lower() == ".jsonl" else None
    with _trace(bus, jsonl, snaplen=None):
        if interactive(args):
            from tftpdiag.tui.launch import run_watch_app

            return run_watch_app(watcher, bus)
        cfg = watcher.config
        ports = ", ".join(str(p) for p in cfg.ports)
        hosts = f", hosts {', '.join(cfg.hosts)}" if cfg.hosts else ""
        level = verbosity(args)
        if level >= 0:
            print(line(f"tftpdiag: watching TFTP on {cfg.interface} (server ports {ports}{hosts}); Ctrl-C to stop"),
                  file=sys.stderr, flush=True)
        stop = StopFlag()
        with _stop_on_signals(stop):
            run_watch_headless(watcher, bus, json_out=args.json, stop=stop, verbosity=level)
        if level >= 0:
            print("tftpdiag: watch stopped", file=sys.stderr)
    if watcher.error is not None:
        raise _usage(f"the capture failed: {watcher.error}")
    return EXIT_OK


def run_watch_headless(watcher: Watcher, bus: EventBus, *, json_out: bool, stop: threading.Event,
                       stdout: TextIO | None = None, verbosity: int = 0) -> DeviceBook:
    """Sessions as `serve --no-tui` prints them (with the server they went to), then devices and the capture
    (with -q, only what failed, and the capture only if it lost packets)."""
    from tftpdiag.headless import run_server_headless
    from tftpdiag.sessions import fmt_addr

    stdout = stdout or sys.stdout
    book = DeviceBook()

    def hook(record: SessionRecord, findings: list[Finding]) -> dict[str, Any]:
        # sha256: of the bytes the capture saw reach the client, when it saw them all (else null)
        return {"server": fmt_addr(record.peer) if record.peer is not None else None, "sha256": record.sha256}

    run_server_headless(watcher, bus.subscribe(), json_out=json_out, stop=stop, stdout=stdout,
                        hook=hook, show_server=True, devices=book, quiet=watcher.config.idle,
                        macs=watcher.capture.macs, verbosity=verbosity)
    stats = watcher.stats()
    packets = watcher.capture.packets
    if json_out:
        stdout.write(json_line(capture_object(stats, packets, watcher.config.interface)) + "\n")
    else:
        words, lost = capture_words(stats, packets)
        if lost or verbosity >= 0:
            stdout.write(line(words) + "\n")
    stdout.flush()
    return book
