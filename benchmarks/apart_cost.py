"""What running the transfer apart costs the transfer, with no view at all.

    python benchmarks/apart_cost.py                    # 32 MiB lock-step, 7 rounds
    python benchmarks/apart_cost.py --windowsize 16 --rounds 5

The full-screen view runs its transfer in a child process (engine/apart.py) and reads its events from a
pipe. This times the same download three ways, in interleaved rounds, each against a
`tftpdiag serve` of its own and timed by that server's log (request to the last ACK, as
`transfer.py --tui`):

  in-process   ClientTransfer in this process, its events folded by the headless summary in the engine
               thread's waits (what `probe --no-tui` does);
  apart        RemoteTransfer: the child packs its events and writes them to the pipe, a thread here
               unpacks and publishes them, and a subscriber drains them (no fold, no view, no spool);
  apart, raw   RemoteTransfer, but the thread here only reads the pipe's batches and drops them
               (what the child's side costs, with this side's unpacking taken away).

This process runs with the interpreter settings every tftpdiag command sets (cli/main.py: the GIL's
switch interval, the collector's thresholds). The ratio of each to in-process is what shipping the
events costs the transfer before any view draws, folds or keeps anything: the part of
`transfer.py --tui`'s ratio the view's own work cannot be.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from host import describe
from transfer import (
    Pair,
    _log_lines,
    _ours_server,
    compile_bytecode,
    logged_transfer_time,
    ours_log,
    parse_size,
    start,
    stop,
)

from tftpdiag.cli.main import GC_THRESHOLD, GIL_SWITCH_INTERVAL
from tftpdiag.engine import apart
from tftpdiag.engine.apart import RemoteTransfer
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.headless import _Fold
from tftpdiag.protocol.options import RequestedOptions

WAYS = ("in-process", "apart", "apart, raw")


def _logged(log: Path, before: int, timeout: float) -> float | None:
    """The transfer's time in our server's log (transfer.py's reading of it: None when it failed), once
    the session after the first ``before`` lines is there."""
    deadline = time.monotonic() + timeout
    while len(_log_lines(log)) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    return logged_transfer_time(log, before)


def _in_process(request: ClientRequest) -> None:
    bus = EventBus()
    fold = _Fold(bus, bus.subscribe())
    transfer = ClientTransfer(request, bus)
    transfer.start()
    transfer.wait()
    transfer.join()
    fold()
    fold.close()


def _apart(request: ClientRequest, raw: bool) -> None:
    bus = EventBus()
    sub = bus.subscribe()
    if raw:  # this side reads the batches and drops them: only the child's side of the shipping remains
        original = apart.unpack
        apart.unpack = lambda blob: []
    try:
        remote = RemoteTransfer.create(request, bus).start()
        done = threading.Event()

        def drain() -> None:
            while not done.is_set():
                sub.drain()
                done.wait(0.01)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        remote.wait()
        remote.join()
        done.set()
        drainer.join()
    finally:
        if raw:
            apart.unpack = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=32 << 20, help="file size (default 32M)")
    parser.add_argument("--rounds", type=int, default=7, help="runs of each way (default 7)")
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--windowsize", type=int, default=None)
    args = parser.parse_args()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as every tftpdiag command's process runs
    gc.set_threshold(*GC_THRESHOLD)
    compile_bytecode()
    machine = describe()
    results: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="tftpdiag-apart-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(bytes(range(256)) * (args.size // 256))
        servers = {way: Pair(way, _ours_server(f"way{i}"), lambda *a: None, ()) for i, way in enumerate(WAYS)}
        try:
            for server in servers.values():
                start(server, root)
            for round_ in range(args.rounds):
                for i, way in enumerate(WAYS):
                    log = ours_log(root, f"way{i}")
                    before = len(_log_lines(log))
                    request = ClientRequest("127.0.0.1", "big.bin", port=servers[way].port,
                                            options=RequestedOptions(blksize=args.blksize,
                                                                     windowsize=args.windowsize))
                    if way == "in-process":
                        _in_process(request)
                    else:
                        _apart(request, raw=way == "apart, raw")
                    duration = _logged(log, before, timeout=10)
                    if duration is None:
                        sys.exit(f"{way}: the server logged no session, or a failed one")
                    results[way].append(duration)
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                stop(server)
    base = statistics.median(results["in-process"])
    mode = f"windowsize {args.windowsize}" if args.windowsize else "lock-step"
    print(f"\n{args.size / (1 << 20):g} MiB, blksize {args.blksize}, {mode}, transfer time from the server's log, "
          f"median of {args.rounds} interleaved rounds ({time.strftime('%Y-%m-%d')})")
    print(f"machine: {machine}")
    for way in WAYS:
        median = statistics.median(results[way])
        print(f"{way:<12} {median:7.3f} s  {median / base:5.2f}x   "
              f"{' '.join(f'{t:.2f}' for t in results[way])}")


if __name__ == "__main__":
    main()
