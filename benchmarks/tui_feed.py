"""Does the TUI stay responsive and truthful under a flood of events and with very large records?

    python benchmarks/tui_feed.py flood                 # 20,000 events/s for 30 s into the live app
    python benchmarks/tui_feed.py flood --rate 40000 --seconds 10
    python benchmarks/tui_feed.py million               # a 1,000,000-packet session: fold, memory, scrolling
    python benchmarks/tui_feed.py sessions             # a 100,000-session trace: load, scrolling, find

flood: the real app (headless) fed packet events at a fixed rate from a worker thread, as the engine
does, through a lossless subscription. Reports the gaps between UI ticks (aim: under 100 ms), the
longest tick, peak memory, and that both the trace recorder and the UI's record hold every packet.

million: 1,000,000 packet events folded into the app as its ticks do (events/s the fold sustains,
with the findings analyzer), bytes of memory per recorded packet (aim: under 64), then the longest
time from a key (Home, End, PgUp/PgDn, a block number) to the redrawn screen, idle and while the
rest of the session arrives at 20,000 events/s (the compositor's layout and line rendering, timed).

sessions: 100,000 finished transfers opened as a trace: time to load, then key-to-screen times for
End, Home, paging, typing a filter and changing the order.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import tui_samples  # noqa: E402
from tests.support.simnet import run_transfer  # noqa: E402
from tftpdiag.cli.main import GIL_SWITCH_INTERVAL  # noqa: E402
from tftpdiag.engine.bus import EventBus  # noqa: E402
from tftpdiag.protocol.events import Event, PacketReceived, PacketSent  # noqa: E402
from tftpdiag.protocol.options import RequestedOptions  # noqa: E402
from tftpdiag.trace.recorder import TraceRecorder  # noqa: E402
from tftpdiag.tui.app import RecordedFeed, TftpDiagApp  # noqa: E402
from tftpdiag.tui.widgets.packet_list import PacketList  # noqa: E402
from tftpdiag.tui.widgets.serve_view import ServerInfo  # noqa: E402
from tftpdiag.tui.widgets.session_list import SessionList  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def template() -> list[Event]:
    """One real transfer's events (a 60k-block download), replayed again and again with new times."""
    result = run_transfer("read", bytes(1468) * 60_000, options=RequestedOptions(blksize=1468, tsize=True))
    return [e for e in result.events if e.session == 1]


def produce(bus: EventBus, events: Iterable[Event], rate: float, seconds: float, stop: threading.Event,
            counter: list[int], retime: bool = True) -> None:
    """Publish ``rate`` events a second in batches every 5 ms, like the engine does."""
    batch = max(int(rate * 0.005), 1)
    source: Iterator[Event] = iter(events)
    started = time.perf_counter()
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
            event = next(source, None)
            if event is None:
                stop.set()
                break
            chunk.append(replace(event, time=now) if retime else event)
        bus.publish(chunk)
        counter[0] += len(chunk)


def _cycle(events: list[Event]) -> Iterator[Event]:
    while True:
        yield from events


def _gaps(ticks: list[float]) -> str:
    gaps = sorted(b - a for a, b in pairwise(ticks))
    if not gaps:
        return "no ticks"
    return (f"median {gaps[len(gaps) // 2] * 1000:.0f} ms, p99 {gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, "
            f"longest {gaps[-1] * 1000:.0f} ms")


def _timed_ticks(app: TftpDiagApp) -> list[float]:
    ticks: list[float] = []
    original = app.refresh_now

    def timed_refresh() -> None:
        ticks.append(time.perf_counter())
        original()

    app.refresh_now = timed_refresh  # type: ignore[method-assign]
    return ticks


async def flood(rate: float, seconds: float) -> None:
    events = template()
    gc.collect()
    gc.freeze()  # the replayed template is scaffolding: keep the collector from walking it
    baseline = rss_mib()
    bus = EventBus()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "flood.jsonl"
        recorder = TraceRecorder.open(trace, bus)
        feed = bus.subscribe()  # lossless, as the app's launcher subscribes
        app = TftpDiagApp(mode="probe", feed=feed, label="flood")
        ticks = _timed_ticks(app)
        published = [0]
        stop = threading.Event()
        peak = baseline
        async with app.run_test(size=(120, 40)) as pilot:
            producer = threading.Thread(target=produce, args=(bus, _cycle(events), rate, seconds, stop, published))
            producer.start()
            while producer.is_alive():
                await asyncio.sleep(0.1)
                peak = max(peak, rss_mib())
            for _ in range(100):  # let the UI drain what is left
                await pilot.pause()
                if not feed.pending():
                    break
                await asyncio.sleep(0.05)
            stop.set()
            shown = sum(v.log.packets for v in app.model.views.values())
        recorder.close()
        with open(trace) as lines:
            written = sum(1 for _ in lines) - 1  # the header line
    sent = sum(1 for i in range(published[0]) if isinstance(events[i % len(events)], (PacketSent, PacketReceived)))
    print(f"flood: fed {published[0]:,} events in {seconds:g} s ({published[0] / seconds:,.0f}/s); "
          f"UI ticks: {len(ticks)} ({len(ticks) / seconds:.1f}/s)")
    print(f"  gap between UI ticks: {_gaps(ticks)} (longest tick itself {app.longest_tick * 1000:.0f} ms)")
    print(f"  memory: {baseline:.0f} MiB before, peak {peak:.0f} MiB "
          f"(+{peak - baseline:.0f} MiB: every packet is kept)")
    print(f"  trace file holds {written:,} of {published[0]:,} events "
          f"({'none lost' if written == published[0] else 'LOST EVENTS'}); the UI's records hold {shown:,} of "
          f"{sent:,} packets ({'every one' if shown == sent else 'MISSING PACKETS'})")


class Redraws:
    """Times every redraw: the compositor's layout (reflow) and its rendering of what changed into
    lines (render_update, which asks the widgets for the visible lines). A pilot's own waits (tens of
    ms on an empty app) are not the app's and are not counted."""

    def __init__(self) -> None:
        from textual._compositor import Compositor

        self.times: list[float] = []
        self._originals = {}
        for name in ("reflow", "render_update", "render_full_update"):
            original = getattr(Compositor, name)
            self._originals[name] = original
            setattr(Compositor, name, self._timed(original))

    def _timed(self, original):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.times.append(time.perf_counter() - started)
        return timed

    def take(self) -> list[float]:
        times, self.times = self.times, []
        return times


async def _keys(pilot, keys: list[tuple[str, ...]]) -> int:  # type: ignore[no-untyped-def]
    for key in keys:
        await pilot.press(*key)
        await pilot.pause()
    return len(keys)


def _report_redraws(label: str, keys: int, times: list[float]) -> None:
    times = sorted(times)
    print(f"  {label}: {keys} keys, {len(times)} redraws, longest {times[-1] * 1000:.1f} ms, "
          f"median {times[len(times) // 2] * 1000:.1f} ms")


_SCROLL_KEYS = [("home",), ("pagedown",), ("pagedown",), ("end",), ("pageup",), ("pageup",), ("home",),
                ("slash", *"250000", "enter"), ("pagedown",), ("end",)] * 3


async def million(packets: int) -> None:
    blocks = packets // 2
    extra = 100_000  # the rest of the session, fed live at 20,000 events/s while scrolling
    source = tui_samples.iter_big_session(blocks + extra // 2)
    bus = EventBus()
    feed = bus.subscribe()
    app = TftpDiagApp(mode="probe", feed=feed, label="million", tick=1 / 15)
    gc.collect()
    gc.freeze()
    before = rss_mib()
    # The fold, as ticks do it: model and findings analyzer, in batches; the events are made on the fly
    # (not held), so the memory that grows is the record's.
    folded, fold_time, batch = 0, 0.0, []
    for event in source:
        batch.append(event)
        if len(batch) == 2000:
            started = time.perf_counter()
            app.model.apply(batch)
            app.analyzer.feed(batch)
            fold_time += time.perf_counter() - started
            folded += len(batch)
            batch = []
            if folded >= packets:
                break
    after = rss_mib()
    log = app.model.view(1).log  # type: ignore[union-attr]
    print(f"million: folded {folded:,} events ({log.packets:,} packets) at {folded / fold_time:,.0f} events/s "
          f"({fold_time / folded * 1e6:.2f} µs an event, model and findings)")
    print(f"  memory per recorded packet: {log.nbytes() / log.packets:.1f} bytes in the columns; "
          f"{(after - before) * 1024 * 1024 / log.packets:.1f} bytes of process growth")
    ticks = _timed_ticks(app)
    redraws = Redraws()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.query_one(PacketList).focus()
        redraws.take()
        keys = await _keys(pilot, _SCROLL_KEYS)
        _report_redraws("idle", keys, redraws.take())
        stop, published = threading.Event(), [0]
        producer = threading.Thread(target=produce, args=(bus, source, 20_000, extra / 20_000, stop, published,
                                                          False))
        ticks.clear()
        app.longest_tick = 0.0
        producer.start()
        keys = 0
        while producer.is_alive():
            keys += await _keys(pilot, _SCROLL_KEYS[:5])
        stop.set()
        for _ in range(100):
            await pilot.pause()
            if not feed.pending():
                break
            await asyncio.sleep(0.05)
        _report_redraws(f"while {published[0]:,} more events arrived at 20,000/s", keys, redraws.take())
        print(f"  gap between UI ticks meanwhile: {_gaps(ticks)} "
              f"(longest tick itself {app.longest_tick * 1000:.0f} ms)")
        print(f"  rows in the table at the end: {app.query_one(PacketList).row_count:,}")


async def sessions(count: int) -> None:
    events = tui_samples.many_sessions(count)
    end = max(e.time for e in events)
    info = ServerInfo("busy.pcap", f"{count} transfers", False, kind="trace")
    app = TftpDiagApp(mode="trace", feed=RecordedFeed(events), server=info, clock=lambda: end, tick=None)
    started = time.perf_counter()
    redraws = Redraws()
    async with app.run_test(size=(200, 55)) as pilot:
        await pilot.pause()
        loaded = time.perf_counter() - started
        rows = app.query_one(SessionList).row_count
        print(f"sessions: {count:,} transfers loaded and drawn in {loaded:.2f} s; {rows:,} rows in the table")
        keys = [("end",), ("home",), ("pagedown",), ("pagedown",), ("pageup",), ("end",), ("o",), ("home",),
                ("slash", *"firmware-0123"), ("escape",), ("o",), ("o",)]
        redraws.take()
        count_keys = await _keys(pilot, keys)
        _report_redraws("scrolling, ordering and finding", count_keys, redraws.take())


def main() -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as the tftpdiag command sets it
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("flood", "million", "sessions"), nargs="?", default="flood")
    parser.add_argument("--rate", type=float, default=20_000, help="flood: events a second (default 20000)")
    parser.add_argument("--seconds", type=float, default=30, help="flood: how long (default 30)")
    parser.add_argument("--packets", type=int, default=1_000_000, help="million: packets (default 1,000,000)")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions: how many (default 100,000)")
    args = parser.parse_args()
    if args.what == "flood":
        asyncio.run(flood(args.rate, args.seconds))
    elif args.what == "million":
        asyncio.run(million(args.packets))
    else:
        asyncio.run(sessions(args.sessions))


if __name__ == "__main__":
    main()
