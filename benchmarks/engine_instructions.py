"""Instructions the engine spends per transfer: a ClientTransfer against a TftpServer in one process,
over loopback, counted by callgrind (a count, unlike a time, is not disturbed by other programs).

    python benchmarks/engine_instructions.py                        # this checkout, both scenarios
    python benchmarks/engine_instructions.py --compare /work/main   # interleaved with another checkout

Each scenario runs twice under ``valgrind --tool=callgrind``: once for the full size and once for a
single block; the difference is the cost of the transfer's datagrams alone (start-up, imports and set-up
cancel out). Spinning is off on both ends (``busy_poll=0``): a spin's count depends on timing. The
scenarios are lock-step (blksize 512) and windowed (1428/16). ``--role client`` or ``server`` counts one
end alone, its peer running uncounted in a child process (the count then varies less: no second thread
takes the interpreter lock in turn).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCENARIOS = {"lock-step 4M": (4 << 20, 512, None), "windowed 16M": (16 << 20, 1428, 16)}


def _slow() -> Any:
    from tftpdiag.protocol.timer import Timing

    # Long timers: under valgrind everything is ~50x slower, and a retransmission would change the count.
    return Timing(initial_timeout=30.0, give_up=300.0, dally=0.0, adaptive=False)


def _server(root: str) -> Any:
    from tftpdiag.engine.server import ServerConfig, TftpServer

    return TftpServer(ServerConfig(Path(root), bind=("127.0.0.1",), port=0, busy_poll=0.0, timing=_slow()))


def _client(port: int, blksize: int, windowsize: int | None) -> None:
    from tftpdiag.engine.client import ClientRequest, ClientTransfer
    from tftpdiag.protocol.options import RequestedOptions

    request = ClientRequest("127.0.0.1", "f", port=port, busy_poll=0.0, timing=_slow(),
                            options=RequestedOptions(blksize=blksize, windowsize=windowsize))
    outcome = ClientTransfer(request).run()
    if not outcome.ok:
        raise SystemExit(f"transfer failed: {outcome.result}")


def run_once(role: str, size: int, blksize: int, windowsize: int | None) -> None:
    """One transfer; ``role`` runs in this process (the one counted), the other in a child process
    (not counted) unless the role is "both"."""
    with tempfile.TemporaryDirectory() as root:
        Path(root, "f").write_bytes(bytes(range(256)) * (size // 256))
        if role == "client":
            peer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", root],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert peer.stdout is not None and peer.stdin is not None
            try:
                _client(int(peer.stdout.readline()), blksize, windowsize)
            finally:
                peer.stdin.close()
                peer.wait()
            return
        with _server(root) as server:
            port = server.addresses[0][1]
            if role == "both":
                _client(port, blksize, windowsize)
            else:
                subprocess.run([sys.executable, os.path.abspath(__file__), "--fetch", str(port), str(blksize),
                                str(windowsize or 0)], check=True)


def serve(root: str) -> None:
    """The uncounted server of a client's count: its port on stdout, then serve until stdin closes."""
    with _server(root) as server:
        print(server.addresses[0][1], flush=True)
        sys.stdin.read()


def count(checkout: str, role: str, size: int, blksize: int, windowsize: int | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        argv = ["valgrind", "--tool=callgrind", "--trace-children=no", f"--callgrind-out-file={out}",
                sys.executable, os.path.abspath(__file__), "--once", role, str(size), str(blksize),
                str(windowsize or 0)]
        env = dict(os.environ, PYTHONPATH=checkout, PYTHONHASHSEED="0")  # the same dict layouts each run
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if found is None:
            raise SystemExit("no count in callgrind's output")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", metavar="CHECKOUT", help="another checkout to count against, run for run")
    parser.add_argument("--runs", type=int, default=1, help="counts per scenario and checkout (default 1)")
    parser.add_argument("--only", help="one scenario: " + ", ".join(SCENARIOS))
    parser.add_argument("--role", choices=("client", "server", "both"), default="both",
                        help="what is counted: the client, the server, or both in one process (default)")
    parser.add_argument("--once", nargs=4, help=argparse.SUPPRESS)  # one transfer, under valgrind
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the uncounted server
    parser.add_argument("--fetch", nargs=3, type=int, help=argparse.SUPPRESS)  # the uncounted client
    args = parser.parse_args()
    if args.once:
        role, size, blksize, windowsize = args.once
        run_once(role, int(size), int(blksize), int(windowsize) or None)
        return
    if args.serve:
        serve(args.serve)
        return
    if args.fetch:
        port, blksize, windowsize = args.fetch
        _client(port, blksize, windowsize or None)
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkouts = {"this": here} if not args.compare else {"other": os.path.abspath(args.compare), "this": here}
    for scenario, (size, blksize, windowsize) in SCENARIOS.items():
        if args.only and args.only != scenario:
            continue
        for _ in range(args.runs):
            for name, path in checkouts.items():
                full = count(path, args.role, size, blksize, windowsize)
                one = count(path, args.role, blksize - 1, blksize, windowsize)
                blocks = size // blksize + 1
                print(f"{scenario:13} {args.role:6} {name:6} {full - one:>14,} instructions  "
                      f"{(full - one) / blocks:>9,.0f} per block  ({path})", flush=True)


if __name__ == "__main__":
    main()
