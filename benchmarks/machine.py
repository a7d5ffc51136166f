"""CPU cost of the protocol machines alone: a server sending a file to a client, in memory, no sockets.

    python benchmarks/machine.py                      # 32 MiB, lock-step and windowed, 5 runs each
    python benchmarks/machine.py --size 8M --runs 3
    python benchmarks/machine.py --compare /work/main # interleaved with another checkout's code

A ServerRead and a ClientRead are joined by a loop that hands each one's datagrams to the other (a
window as one run, as the engine does with UDP GRO), drains both machines' events after every step
(the engine publishes them all), and after each step runs what the engine runs once its datagrams are
sent: the client's data is stored and the server is fed (or, in older checkouts, prefetches). The
figure is the median CPU time of the runs (process time: a busy neighbour taking the CPU does not
count); with --compare each run alternates between the two checkouts (each in a fresh interpreter), so
a busy neighbour slows both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

# name: (blksize, windowsize, size multiplier); lock-step at 512 bytes crosses the 65535 rollover with
# 32 MiB; the windowed transfer is four times the size, as it takes a tenth of the time.
SCENARIOS = {"lock-step": (512, None, 1), "windowed": (1468, 16, 4)}


class _Sink:
    """Keeps only the size of what arrived, as the engine's sink keeps only the data: the client's caller
    stores what the machine took after every step, as the engine does after sending its ACK."""

    def __init__(self) -> None:
        self.size = 0
        self._pending: list[bytes] = []
        self.write = self._pending.append  # checkouts whose machine calls write(): the engine's sink did this

    def flush(self) -> None:
        if self._pending:
            self.size += sum(map(len, self._pending))
            self._pending.clear()

    def store(self, chunks: list[bytes]) -> None:
        self.size += sum(map(len, chunks))

    def commit(self) -> None:
        pass


def _machines(content: bytes, blksize: int, windowsize: int | None) -> tuple[Any, Any, _Sink, Any]:
    """The two machines, the client's sink, and the step the engine runs after sending (storing what the
    client took, feeding the server what it asks for): it returns what it let the server send."""
    from tftpdiag.protocol.client import ClientRead
    from tftpdiag.protocol.options import RequestedOptions
    from tftpdiag.protocol.packets import decode
    from tftpdiag.protocol.server import ServerRead

    try:
        from tftpdiag.protocol.timer import Timing
    except ImportError:  # older checkouts
        from tftpdiag.protocol.session import Timing  # type: ignore[no-redef]
    import io

    timing = Timing(dally=0.0)
    sink = _Sink()
    source = io.BytesIO(content)
    options = RequestedOptions(blksize=blksize, windowsize=windowsize)
    client_at, server_at = ("10.0.0.1", 4000), ("10.0.0.2", 5000)
    if hasattr(ClientRead, "received"):  # the machines hand data over (the engine's files.py half)
        from tftpdiag.engine.files import feed_sender, store_received

        client = ClientRead(1, filename="f", server=("10.0.0.2", 69), local=client_at, now=0.0, options=options,
                            timing=timing)
        (raw, _), = client.datagrams_to_send()
        server = ServerRead(2, request=decode(raw), raw=raw, client=client_at, local=server_at, now=0.0,
                            file_size=len(content), timing=timing)

        def step(now: float) -> list[bytes]:
            if store_received(client, sink, now):
                for ack, _ in client.datagrams_to_send():
                    server.receive(ack, client_at, now)
            if feed_sender(server, source, now):
                return [raw for raw, _ in server.datagrams_to_send()]
            return []
    else:  # checkouts whose machines call the caller's sink and source
        client = ClientRead(1, filename="f", server=("10.0.0.2", 69), local=client_at, sink=sink, now=0.0,
                            options=options, timing=timing)
        (raw, _), = client.datagrams_to_send()
        server = ServerRead(2, request=decode(raw), raw=raw, client=client_at, local=server_at, source=source,
                            now=0.0, file_size=len(content), timing=timing)
        prefetch = server.prefetch

        def step(now: float) -> list[bytes]:
            sink.flush()
            prefetch()
            return []
    return client, server, sink, step


def run_once(size: int, blksize: int, windowsize: int | None, multiplier: int) -> float:
    size *= multiplier
    content = os.urandom(1 << 16) * (size >> 16)
    client, server, sink, step = _machines(content, blksize, windowsize)
    client.events()
    now = 0.0
    started = time.process_time()
    to_client = [raw for raw, _ in server.datagrams_to_send()] + step(now)
    server.events()
    while not client.finished:
        now += 0.0001
        if len(to_client) == 1:
            client.receive(to_client[0], server.local, now)
        else:
            client.receive_many(to_client, server.local, now)
        client.events()
        for raw, _ in client.datagrams_to_send():
            server.receive(raw, client.local, now)
        to_client = [raw for raw, _ in server.datagrams_to_send()]
        to_client += step(now)
        server.events()
        if not to_client and not client.finished:
            raise SystemExit("the transfer stalled")
    elapsed = time.process_time() - started
    if sink.size != len(content) or not server.finished:
        raise SystemExit(f"transfer incomplete: {sink.size} of {len(content)} bytes")
    return elapsed


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=_size, default=32 << 20, help="bytes per transfer (default 32M)")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument("--compare", metavar="CHECKOUT",
                        help="another checkout to time against, run for run (its code on PYTHONPATH)")
    parser.add_argument("--once", metavar="SCENARIO", help=argparse.SUPPRESS)  # one timing, for --compare
    args = parser.parse_args()
    if args.once:
        print(run_once(args.size, *SCENARIOS[args.once]))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkouts = {"this": here}
    if args.compare:
        checkouts = {"other": os.path.abspath(args.compare), "this": here}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for scenario in SCENARIOS:
            for name, path in checkouts.items():
                env = dict(os.environ, PYTHONPATH=path)
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--size", str(args.size),
                                      "--once", scenario], env=env, check=True, capture_output=True, text=True)
                times.setdefault((scenario, name), []).append(float(out.stdout))
    for scenario in SCENARIOS:
        cells = []
        for name, path in checkouts.items():
            runs = times[(scenario, name)]
            cells.append(f"{name} ({path}) median {statistics.median(runs):.3f} s "
                         f"[{' '.join(f'{t:.3f}' for t in runs)}]")
        print(f"{scenario:10} " + "\n           ".join(cells))


if __name__ == "__main__":
    main()
