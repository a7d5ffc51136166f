"""SVG snapshots of the main screens at a fixed size, from recorded events with time frozen.

Update after an intended change with: python -m pytest tests/tui/test_tui_snapshots.py --snapshot-update
(then regenerate screenshots/ with scripts/screenshots.py).
"""

from __future__ import annotations

from tests.support import tui_samples

SIZE = tui_samples.SIZE


class TestProbeView:
    def test_success(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_success()), terminal_size=SIZE)

    def test_file_not_found(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_failure()), terminal_size=SIZE)

    def test_no_reply(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_timeout()), terminal_size=SIZE)

    def test_small_terminal(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_success()), terminal_size=(80, 24))

    def test_problems_filter(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_success()), press=["f", "f"], terminal_size=SIZE)


class TestServeView:
    def test_sessions(self, snap_compare) -> None:
        assert snap_compare(tui_samples.serve_app(), terminal_size=SIZE)

    def test_session_detail(self, snap_compare) -> None:
        assert snap_compare(tui_samples.serve_app(), press=["down", "enter"], terminal_size=SIZE)


class TestTraceView:
    def test_transfers_from_a_capture(self, snap_compare) -> None:
        assert snap_compare(tui_samples.trace_app(), terminal_size=SIZE)

    def test_a_failed_transfer_in_detail(self, snap_compare) -> None:
        assert snap_compare(tui_samples.trace_app(), press=["down", "down", "down", "enter"], terminal_size=SIZE)


class TestHelp:
    def test_help_screen(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_success()), press=["question_mark"],
                            terminal_size=SIZE)


def _big_session_app():
    events = tui_samples.big_session(70_000)
    return tui_samples.probe_app(events)


class TestLargeViews:
    """Every packet of a 140,000-packet session, from the first to the last; 100,000 sessions."""

    def test_first_packets_of_a_large_session(self, snap_compare) -> None:
        assert snap_compare(_big_session_app(), press=["home"], terminal_size=SIZE)

    def test_last_packets_of_a_large_session(self, snap_compare) -> None:
        assert snap_compare(_big_session_app(), press=["home", "end"], terminal_size=SIZE)

    def test_findings_counted_at_80x24(self, snap_compare) -> None:
        assert snap_compare(tui_samples.probe_app(tui_samples.probe_success()), terminal_size=(80, 24))

    def test_a_trace_of_100000_transfers(self, snap_compare) -> None:
        events = tui_samples.many_sessions(100_000)
        end = tui_samples.end_time(events)
        info = tui_samples.ServerInfo("busy.pcap", "100000 transfers", False, kind="trace")
        app = tui_samples.TftpDiagApp(mode="trace", feed=tui_samples.RecordedFeed(events), server=info,
                                      clock=lambda: end, tick=None)
        assert snap_compare(app, press=["end"], terminal_size=SIZE)
