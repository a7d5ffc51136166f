"""Figures the live views show, folded by the model: the server's "now" rate, a session's peak rate,
and the devices built from the sessions."""

from __future__ import annotations

import pytest

from tests.support.tui_samples import PushFeed
from tftpdiag.protocol.events import Completed, Event, Progress, Role, TransferStarted, TransferStats
from tftpdiag.tui.model import LiveModel

T0 = 1_795_000_000.0
SERVER = ("10.0.0.2", 69)
MB = 1_000_000



def _stats(moved: int, duration: float) -> TransferStats:
    return TransferStats(moved, duration, moved // 512 + 1, 0, 0, 0, 0, 0, 0, 0)


def _transfer(session: int, start: float, progress: list[tuple[float, int]], *, end: bool = True,
              role: Role = Role.SERVER_READ, client: tuple[str, int] = ("10.0.0.9", 3000)) -> list[Event]:
    """A download: started at ``start``, its progress samples (seconds after the start, bytes so far),
    and (``end``) completed at the last of them."""
    local, peer = (client, SERVER) if role.is_client else (SERVER, client)
    events: list[Event] = [TransferStarted(session, start, role, "image.bin", "octet", local, peer, ())]
    for after, moved in progress:
        events.append(Progress(session, start + after, moved, None, _stats(moved, after)))
    if end:
        after, moved = progress[-1]
        events.append(Completed(session, start + after, _stats(moved, after)))
    return events


def test_the_now_rate_of_a_transfer_that_ended_is_what_it_moved_within_the_window() -> None:
    """A 20 MB download in 0.13 s read as 150 MB/s for the 2 s after it (its bytes over its own span)."""
    model = LiveModel()
    model.apply(_transfer(1, T0, [(0.05, 8 * MB), (0.1, 15 * MB), (0.13, 20 * MB)]))
    assert model.aggregate_rate(T0 + 0.5) == pytest.approx(20 * MB / 2.0)
    assert model.aggregate_rate(T0 + 2.2) == 0.0  # the window has passed it


def test_the_now_rate_counts_only_the_bytes_moved_within_the_window() -> None:
    """A steady 1 MB/s download for 10 s, running: the last 2 s moved 2 MB; one that ended 1.5 s ago
    (4 MB/s for 1 s) moved 2 MB in the window's first half second."""
    model = LiveModel()
    model.apply(_transfer(1, T0, [(i / 10, i * MB // 10) for i in range(1, 101)], end=False))
    model.apply(_transfer(2, T0 + 7.5, [(i / 10, i * 4 * MB // 10) for i in range(1, 11)]))
    assert model.aggregate_rate(T0 + 10.0) == pytest.approx((2 * MB + 2 * MB) / 2.0)


def test_a_demo_counts_each_transfer_once_in_its_device() -> None:
    """A demo's stream holds both sides of each transfer: its probe's client session and the server's.
    A device's sequence is what the server served it; the probe's own session counted every file twice."""
    from tests.support.simnet import run_transfer

    events = run_transfer("read", b"x" * 3000, filename="firmware-demo.bin").events
    assert {e.session for e in events if isinstance(e, TransferStarted)} == {1, 2}  # client and server
    model = LiveModel()
    model.apply(events)
    (device,) = model.devices.judge(max(e.time for e in events))
    assert [(a.name, a.outcome) for a in device.attempts] == [("firmware-demo.bin", "done")]
    assert device.attempts[0].session == 2  # the server's


def test_a_capture_s_devices_hold_its_client_sessions() -> None:
    """A trace or a watch rebuilds every transfer from the client's side: those are the devices' sessions."""
    from tests.support import tui_samples

    app = tui_samples.trace_app()
    assert app.model.every_role
    events = tui_samples.trace_events()
    app.model.apply(events)
    (device,) = app.model.devices.judge(tui_samples.end_time(events))
    assert len(device.attempts) == 4



async def test_the_peak_rate_never_falls_as_the_transfer_goes_on() -> None:
    """1 MB/s with a burst of 3 MB/s for a tenth of a second: the peak was the graph's highest column,
    and as the graph's columns widened with the transfer the burst was averaged away (233.9, then 233.8)."""
    from textual.geometry import Region

    from tftpdiag.tui.app import TftpDiagApp
    from tftpdiag.tui.widgets.rate_graph import RateGraph

    moved, progress = 0, []
    for i in range(1, 301):  # 30 s, a report every 0.1 s
        moved += 300_000 if i == 11 else 100_000
        progress.append((i / 10, moved))
    events = _transfer(1, T0, progress, end=False, role=Role.CLIENT_READ)  # events[i]: the i-th report
    clock = [T0]
    feed = PushFeed()
    app = TftpDiagApp(mode="probe", feed=feed, label="10.0.0.2:69", clock=lambda: clock[0], tick=None)
    peaks = []
    async with app.run_test(size=(120, 36)) as pilot:
        shown = 0
        for upto in (12, 20, 50, 100, 200, 300):  # just after the burst, then ever longer after it
            feed.pending, shown = events[shown:upto + 1], upto + 1
            clock[0] = events[upto].time
            app.refresh_now()
            await pilot.pause()
            graph = app.query_one(RateGraph)
            text = " ".join(strip.text for strip in graph.render_lines(Region(0, 0, *graph.outer_size)))
            peaks.append(text.split(" · peak ", 1)[1].split(" ")[:2])
    assert peaks == [["2.9", "MiB/s"]] * len(peaks), peaks
    assert app.model.view(1).record.peak == pytest.approx(3_000_000)  # type: ignore[union-attr]


def test_a_peak_is_never_read_from_a_sliver_of_time() -> None:
    """The last report comes with the end, soon after the one before: 50 KB in 5 ms is no 10 MB/s peak.
    A transfer over before PEAK_SPAN is measured by its average."""
    model = LiveModel()
    model.apply(_transfer(1, T0, [(0.1, 100_000), (0.2, 200_000), (0.205, 250_000)]))
    # Measured from the report at least PEAK_SPAN before it: 150 KB in 0.105 s, not 50 KB in 5 ms.
    assert model.view(1).record.peak == pytest.approx(150_000 / 0.105)  # type: ignore[union-attr]
    model.apply(_transfer(2, T0, [(0.04, 40_000)]))
    assert model.view(2).record.peak == pytest.approx(1_000_000)  # type: ignore[union-attr]
