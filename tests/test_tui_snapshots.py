"""SVG snapshots of the main screens at a fixed size, from recorded events with time frozen.

Update after an intended change with: python -m pytest tests/test_tui_snapshots.py --snapshot-update
(then regenerate screenshots/ with scripts/screenshots.py).
"""

from __future__ import annotations

from tests import tui_samples

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
