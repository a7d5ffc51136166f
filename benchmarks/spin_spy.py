"""What adaptive spinning (tftpdiag/engine/spin.py: BusyPoll) does in a transfer: how often each end
asked it, how many waits spun, how many of those got their datagram within the spin, its looks and its
pauses, and what the ends of its pauses read to decide (the machine's load, the thread's wait for a CPU)
and found. Our server and our client, each a process of its own, over loopback.

    python benchmarks/spin_spy.py                      # 8 windowed 32 MiB downloads, quiet
    python benchmarks/spin_spy.py --load 1             # beside one CPU-bound program
    python benchmarks/spin_spy.py --windowsize 0 --runs 4

Why: beside a CPU-bound program the issue-16 target "never slower than spinning off" sat at parity
(1.002x); this tells whether what is left is spinning at all (2026-12-05: no spin in the server's 8
sessions, none in 7 of 8 clients). Counts, not times: what other programs do moves them little.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNTS = ("calls", "spun", "got", "looks", "pauses", "load_reads", "crowded", "wait_reads", "waited")


def _spy() -> dict[str, int]:
    """Wrap BusyPoll in this process so that it counts what it does (see COUNTS)."""
    import tftpdiag.engine.spin as spin

    counts = dict.fromkeys(COUNTS, 0)
    call, look, pause = spin.BusyPoll.__call__, spin.BusyPoll._look, spin.BusyPoll._pause_for
    runnable, waited_through = spin.others_runnable, spin.BusyPoll._waited_through

    def counted_call(self: spin.BusyPoll, wait: float):  # type: ignore[no-untyped-def]
        counts["calls"] += 1
        spins = self._spins
        got = call(self, wait)
        if self._spins != spins or (got is not None and spins):
            counts["spun"] += 1  # (a look after a spin sets _spins to 0: a change either way is a spin)
        counts["got"] += got is not None
        return got

    def counted_look(self, clock):  # type: ignore[no-untyped-def]
        counts["looks"] += 1
        return look(self, clock)

    def counted_pause(self, now):  # type: ignore[no-untyped-def]
        counts["pauses"] += 1
        return pause(self, now)

    def counted_runnable():  # type: ignore[no-untyped-def]
        counts["load_reads"] += 1
        others = runnable()
        counts["crowded"] += others is not None and others >= spin._CPUS
        return others

    def counted_waited(self, now):  # type: ignore[no-untyped-def]
        counts["wait_reads"] += 1
        waited = waited_through(self, now)
        counts["waited"] += waited
        return waited

    spin.others_runnable = counted_runnable  # type: ignore[assignment]
    spin.BusyPoll._waited_through = counted_waited  # type: ignore[method-assign]
    spin.BusyPoll.__call__ = counted_call  # type: ignore[method-assign]
    spin.BusyPoll._look = counted_look  # type: ignore[method-assign]
    spin.BusyPoll._pause_for = counted_pause  # type: ignore[method-assign]
    return counts


def serve(root: str) -> None:
    """The spied server: its port on stdout, its counts on stderr when SIGTERM comes."""
    counts = _spy()
    from tftpdiag.engine.server import ServerConfig, TftpServer

    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    with TftpServer(ServerConfig(Path(root), bind=("127.0.0.1",), port=0)) as server:
        print(server.addresses[0][1], flush=True)
        signal.sigwait([signal.SIGTERM])
    print(" ".join(f"{k} {counts[k]}" for k in COUNTS), file=sys.stderr, flush=True)


def fetch(port: int, blksize: int, windowsize: int) -> None:
    """One spied download: its time and counts on stderr."""
    counts = _spy()
    from tftpdiag.engine.client import ClientRequest, ClientTransfer
    from tftpdiag.protocol.options import RequestedOptions

    start = time.perf_counter()
    options = RequestedOptions(blksize=blksize, windowsize=windowsize or None)
    outcome = ClientTransfer(ClientRequest("127.0.0.1", "f", port=port, options=options)).run()
    took = time.perf_counter() - start
    print(f"{'ok' if outcome.ok else 'FAILED'} {took:.3f} s " + " ".join(f"{k} {counts[k]}" for k in COUNTS),
          file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8, help="downloads (default 8)")
    parser.add_argument("--size", type=int, default=32, help="MiB (default 32)")
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--windowsize", type=int, default=16, help="0: lock-step (default 16)")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="CPU-bound programs beside (default 0)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--fetch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.fetch:
        return fetch(args.fetch, args.blksize, args.windowsize)
    me = os.path.abspath(__file__)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory() as root:
            Path(root, "f").write_bytes(os.urandom(args.size << 20))
            server = subprocess.Popen([sys.executable, me, "--serve", root], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            assert server.stdout is not None
            port = server.stdout.readline().strip()
            for run in range(args.runs):
                got = subprocess.run([sys.executable, me, "--fetch", port, "--blksize", str(args.blksize),
                                      "--windowsize", str(args.windowsize)], capture_output=True, text=True)
                print(f"client {run + 1}: {got.stderr.strip()}")
            server.send_signal(signal.SIGTERM)
            print(f"server, all {args.runs} sessions: {server.communicate(timeout=10)[1].strip()}")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    main()
