"""Micro benchmark of the analyzer's cost per event (not a test): ``python benchmarks/analyzer.py``.

Builds the event stream of real transfers by driving our client and server machines against each other
in memory (both sides' events, as a server that also probes would see them), then times
``Analyzer.feed`` over it in batches, as the engine publishes them.
"""

from __future__ import annotations

import random
import sys
import time

from tftpdiag.findings import Analyzer
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Request, decode
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.timer import Timing

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 69)
TID = ("10.0.0.2", 50000)


def transfer_events(blocks: int, options: RequestedOptions, loss: float = 0.0, seed: int = 1) -> list[Event]:
    """Events of one lock-step or windowed download through a lossless or lossy in-memory wire."""
    rng = random.Random(seed)
    blksize = options.blksize or 512
    data = rng.randbytes(blksize * blocks + 7)
    now = 0.0
    timing = Timing(retries=50)
    client = ClientRead(1, filename="image.bin", server=SERVER, local=CLIENT, now=now, options=options,
                        timing=timing)
    events = list(client.events())
    raw, _ = client.datagrams_to_send()[0]
    request = decode(raw)
    assert isinstance(request, Request)
    server = ServerRead(2, request=request, raw=raw, client=CLIENT, local=TID, file_size=len(data), now=now,
                        listen=SERVER, timing=timing)
    server.feed(data, now, eof=True)
    machines = {CLIENT: client, TID: server}
    queue = [(d, server.local) for d in server.datagrams_to_send()]
    events += server.events()
    while not client.closed or not server.closed:
        if not queue:
            now = min(t for t in (client.next_timeout(), server.next_timeout()) if t is not None)
            for m in (client, server):
                m.handle_timeout(now)
        else:
            now += 0.0001
            (raw, dst), src = queue.pop(0)
            if rng.random() >= loss:
                machines[dst].receive(raw, src, now)
                client.received()  # the data is not kept
                if client.storing:
                    client.stored(now)
        for m in (client, server):
            queue += [(d, m.local) for d in m.datagrams_to_send()]
            events += m.events()
    return events


def bench(events: list[Event], batch: int = 64, repeat: int = 5) -> float:
    """Best µs per event over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        analyzer = Analyzer()
        batches = [events[i:i + batch] for i in range(0, len(events), batch)]
        start = time.perf_counter()
        for b in batches:
            analyzer.feed(b)
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def main() -> None:
    cases = [
        ("lock-step 512, clean", 40_000, RequestedOptions(tsize=True), 0.0),
        ("blksize 1468 windowsize 16, clean", 40_000, RequestedOptions(blksize=1468, windowsize=16, tsize=True), 0.0),
        ("lock-step 512, 2% loss", 20_000, RequestedOptions(tsize=True), 0.02),
    ]
    for name, blocks, options, loss in cases:
        events = transfer_events(blocks, options, loss)
        us = bench(events)
        print(f"{name:<40} {len(events):>8,} events  {us:6.2f} µs/event  ({1e6 / us:,.0f} events/s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
