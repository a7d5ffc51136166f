"""Does the TUI stay responsive under a flood of events? Feeds the real app (headless) with packet
events at a fixed rate from a worker thread, as the engine does, and reports:

- the longest gap between two UI timer ticks (the app's own redraw timer; aim: under 100 ms),
- the peak memory of the process (bounded: it must not grow with the number of events),
- that a trace recorder on the same bus wrote every event (nothing lost under load).

    python benchmarks/tui_feed.py                   # 20,000 events/s for 30 s
    python benchmarks/tui_feed.py --rate 40000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.simnet import run_transfer  # noqa: E402
from tftpdiag.cli import GIL_SWITCH_INTERVAL  # noqa: E402
from tftpdiag.engine.bus import EventBus  # noqa: E402
from tftpdiag.protocol.events import Event  # noqa: E402
from tftpdiag.protocol.options import RequestedOptions  # noqa: E402
from tftpdiag.trace.recorder import TraceRecorder  # noqa: E402
from tftpdiag.tui.app import TftpDiagApp  # noqa: E402
from tftpdiag.tui.launch import UI_PACKET_WINDOW  # noqa: E402


def template() -> list[Event]:
    """One real transfer's events (a 60k-block download), replayed again and again with new times."""
    result = run_transfer("read", bytes(1468) * 60_000, options=RequestedOptions(blksize=1468, tsize=True))
    return [e for e in result.events if e.session == 1]


def produce(bus: EventBus, events: list[Event], rate: float, seconds: float, stop: threading.Event,
            counter: list[int]) -> None:
    """Publish ``rate`` events a second in batches every 5 ms, re-timed to now, like the engine does."""
    from dataclasses import replace

    batch = max(int(rate * 0.005), 1)
    started = time.perf_counter()
    index = 0
    while not stop.is_set():
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - counter[0]
        if due <= 0:
            time.sleep(0.001)
            continue
        now = time.time()
        chunk = []
        for _ in range(min(due, batch * 4)):
            chunk.append(replace(events[index % len(events)], time=now))
            index += 1
        bus.publish(chunk)
        counter[0] += len(chunk)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run(rate: float, seconds: float) -> None:
    events = template()
    # The replayed template is benchmark scaffolding: keep the collector from walking it on every pass.
    gc.collect()
    gc.freeze()
    baseline = rss_mib()
    bus = EventBus()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "flood.jsonl"
        recorder = TraceRecorder.open(trace, bus)
        feed = bus.subscribe(packet_window=UI_PACKET_WINDOW)
        app = TftpDiagApp(mode="probe", feed=feed, label="flood")
        ticks: list[float] = []
        original = app.refresh_now

        def timed_refresh() -> None:
            ticks.append(time.perf_counter())
            original()

        app.refresh_now = timed_refresh  # type: ignore[method-assign]
        published = [0]
        stop = threading.Event()
        peak = [baseline]
        async with app.run_test(size=(120, 40)) as pilot:
            producer = threading.Thread(target=produce, args=(bus, events, rate, seconds, stop, published))
            producer.start()
            while producer.is_alive():
                await asyncio.sleep(0.1)
                peak[0] = max(peak[0], rss_mib())
            await pilot.pause()
            stop.set()
        recorder.close()
        written = sum(1 for _ in open(trace)) - 1  # the header line
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    gaps.sort()
    print(f"fed {published[0]:,} events in {seconds:g} s ({published[0] / seconds:,.0f}/s); "
          f"UI ticks: {len(ticks)} ({len(ticks) / seconds:.1f}/s)")
    print(f"gap between UI ticks: median {gaps[len(gaps) // 2] * 1000:.0f} ms, "
          f"p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, longest {gaps[-1] * 1000:.0f} ms "
          f"(longest tick itself {app.longest_tick * 1000:.0f} ms)")
    print(f"memory: {baseline:.0f} MiB before feeding (the replayed template), peak {peak[0]:.0f} MiB while "
          f"feeding (+{peak[0] - baseline:.0f} MiB); trace file holds {written:,} of {published[0]:,} events "
          f"({'none lost' if written == published[0] else 'LOST EVENTS'}); "
          f"the UI let {feed.dropped:,} packet events go (it keeps the newest {UI_PACKET_WINDOW} per tick)")


def main() -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as the tftpdiag command sets it
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20_000, help="events a second (default 20000)")
    parser.add_argument("--seconds", type=float, default=30, help="how long (default 30)")
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    main()
