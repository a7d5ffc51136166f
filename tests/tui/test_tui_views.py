"""Truthful live views: every packet in the table, every session in the list, every finding counted.

Pilot tests over recorded and synthetic sessions (tests/support/tui_samples.py): a session far larger than a
screen, a capture of 100,000 transfers, the findings box at 80x24.
"""

from __future__ import annotations

from textual.geometry import Region
from textual.widget import Widget

from tests.support import tui_samples
from tftpdiag.protocol.events import Completed, PacketReceived, PacketSent, Progress
from tftpdiag.sessions import fmt_addr
from tftpdiag.tui.app import RecordedFeed, TftpDiagApp
from tftpdiag.tui.model import Filter
from tftpdiag.tui.widgets.packet_list import PacketList
from tftpdiag.tui.widgets.rate_graph import RateGraph
from tftpdiag.tui.widgets.serve_view import ServerInfo
from tftpdiag.tui.widgets.session_list import SessionList

BLOCKS = 70_000  # 140,000 packets, past a block number rollover: the old table kept the newest 1,000 of a sample


def plain(widget: Widget) -> str:
    strips = widget.render_lines(Region(0, 0, *widget.outer_size))
    return "\n".join(strip.text for strip in strips)


def visible_rows(packets: PacketList) -> list[str]:
    return [line.strip() for line in plain(packets).splitlines() if line.strip()]


def _app(events: list, size_clock: float | None = None) -> TftpDiagApp:
    end = size_clock if size_clock is not None else max(e.time for e in events)
    return TftpDiagApp(mode="probe", feed=RecordedFeed(events), label="10.0.0.2:69", clock=lambda: end, tick=None)


async def test_the_packet_table_holds_every_packet_from_the_first_to_the_last() -> None:
    events = tui_samples.big_session(BLOCKS)
    packets_in_stream = sum(1 for e in events if isinstance(e, (PacketSent, PacketReceived)))
    app = _app(events)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        table = app.query_one(PacketList)
        assert table.row_count == packets_in_stream
        title = str(app.query_one(".packets").border_title)
        assert f"{packets_in_stream:,} packets" in title  # the count on screen is the stream's count
        # It follows the newest: the last rows are the last block and its ACK.
        rows = visible_rows(table)
        assert "DATA" in rows[-2] and f"{(BLOCKS + 1) & 0xFFFF}↻1" in rows[-2] and "ACK" in rows[-1]
        table.focus()
        await pilot.press("home")
        await pilot.pause()
        rows = visible_rows(table)
        assert rows[0].split()[2] == "RRQ" and rows[1].split()[2] == "OACK" and rows[3].split()[2:4] == ["DATA", "1"]
        await pilot.press("pagedown")
        await pilot.pause()
        first_after = visible_rows(table)[0]
        height = table.scrollable_content_region.height
        assert table.scroll_offset.y == height  # a page on, not a jump to a sample of the rows
        assert first_after.split()[2] in ("DATA", "ACK")
        await pilot.press("end")
        await pilot.pause()
        rows = visible_rows(table)
        assert "ACK" in rows[-1] and f"{(BLOCKS + 1) & 0xFFFF}↻1" in rows[-1]
        assert table.scroll_offset.y == table.row_count - height


async def test_a_block_number_jumps_to_its_row_and_text_finds_rows() -> None:
    app = _app(tui_samples.big_session(BLOCKS))
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        table = app.query_one(PacketList)
        await pilot.press("slash", *"12345", "enter")
        await pilot.pause()
        assert table.marked is not None
        assert any(row.split()[2:4] == ["DATA", "12345"] for row in visible_rows(table))
        await pilot.press("slash", *"oack", "enter")
        await pilot.pause()
        assert table.row_count == 1 and "OACK" in visible_rows(table)[0]
        await pilot.press("escape")
        await pilot.pause()
        assert table.row_count > 100_000


async def test_the_rate_while_a_fast_transfer_runs_is_not_zero() -> None:
    """Read from the graph's newest column, which is still empty, it said 0 B/s all along."""
    events = tui_samples.big_session(20_000)
    cut = [i for i, e in enumerate(events) if isinstance(e, Progress)][5]
    running = events[:cut + 1]
    now = running[-1].time + 0.09  # just before the next progress report
    app = _app(running, size_clock=now)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        graph = plain(app.query_one(RateGraph))
        assert "0 B/s ·" not in graph, graph
        assert "MiB/s" in graph  # 20,000 blocks of 1468 bytes a second: about 28 MiB/s


def screen_text(app: TftpDiagApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_findings_are_counted_and_reachable_at_80x24() -> None:
    app = tui_samples.probe_app(tui_samples.probe_success())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        findings = app.analyzer.findings(1)
        assert len(findings) >= 2
        outcome = app.query_one("#outcome")
        assert f"{len(findings)} findings" in str(outcome.border_title)
        assert f"{len(findings)} findings" in screen_text(app)
        # The box is on screen whole, above the footer, and scrolls to its last line.
        assert outcome.region.bottom <= 23
        last = " ".join(findings[-1].summary.split()[-3:])
        outcome.scroll_end(animate=False, immediate=True)
        await pilot.pause()
        assert last in " ".join(screen_text(app).replace("│", " ").split())


async def test_the_impairment_warning_is_readable_at_80_columns() -> None:
    app = tui_samples.probe_app(tui_samples.probe_success())
    app.impair = "loss=5%"
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one("#probe").impair = "loss=5%"
        app.refresh_now()
        await pilot.pause()
        header = " ".join(plain(app.query_one(".session-header")).split())
        assert "impaired here by --impair loss=5% (not the network)" in header


def _trace_app(events: list) -> TftpDiagApp:
    end = max(e.time for e in events)
    info = ServerInfo("busy.pcap", "100000 transfers", False, kind="trace")
    return TftpDiagApp(mode="trace", feed=RecordedFeed(events), server=info, clock=lambda: end, tick=None)


async def test_a_trace_of_100000_transfers_lists_every_one() -> None:
    count = 100_000
    app = _trace_app(tui_samples.many_sessions(count))
    async with app.run_test(size=(200, 55)) as pilot:
        await pilot.pause()
        sessions = app.query_one(SessionList)
        assert sessions.row_count == count
        header = " ".join(plain(app.query_one("#serve-header")).split())
        assert "90,000 completed" in header and "10,000 failed" in header
        await pilot.press("end")
        await pilot.pause()
        assert sessions.selected().session == count  # type: ignore[union-attr]
        assert "firmware-099999.bin" in plain(sessions)  # the whole name: the column is wide at 200
        await pilot.press("slash", *"firmware-01234")
        await pilot.pause()
        assert sessions.row_count == 10  # 012340 to 012349
        await pilot.press("escape")
        await pilot.pause()
        assert sessions.row_count == count
        await pilot.press("o")  # by client
        await pilot.press("home", "enter")
        await pilot.pause()
        assert app.screen.session == 1  # type: ignore[attr-defined] # 10.0.0.0 sorts first


async def test_a_batch_of_more_failures_than_the_log_keeps_writes_only_the_newest(monkeypatch) -> None:
    """A trace opened at once ends its every transfer in one batch: the pane keeps LOG_LINES lines, and
    lines written only to be dropped were each rendered first (a third of a 100,000-transfer trace's
    opening). The newest are the ones kept, as before."""
    from textual.widgets import RichLog

    from tftpdiag.tui.widgets import serve_view

    written: list[list[str]] = []  # the lines each update of the view wrote
    write, update = RichLog.write, serve_view.ServeView.update_view

    def counted(self: RichLog, content: object, *args: object, **kwargs: object) -> RichLog:
        if written:
            written[-1].append(str(content))
        return write(self, content, *args, **kwargs)  # type: ignore[arg-type]

    def updated(self: serve_view.ServeView, *args: object, **kwargs: object) -> None:
        written.append([])
        update(self, *args, **kwargs)  # type: ignore[arg-type]
        written.append([])  # (the pane writes again what was written before it had a size: not counted)

    monkeypatch.setattr(RichLog, "write", counted)
    monkeypatch.setattr(serve_view.ServeView, "update_view", updated)
    count = 6_000  # 600 failed, a line each: more than the pane keeps, all in one batch
    app = _trace_app(tui_samples.many_sessions(count))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert max(map(len, written)) == serve_view.LOG_LINES
        newest = next(lines for lines in written if lines)
        assert "firmware-005999.bin" in " ".join(newest[-2:])  # the newest failure is kept, and last
        log = app.query_one(RichLog)
        assert "firmware-005999.bin" in " ".join(str(strip.text) for strip in log.lines[-6:])


async def test_warnings_of_a_finished_transfer_are_marked_in_its_row_not_logged_as_refusals() -> None:
    app = tui_samples.serve_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        warned = [v.record for v in app.model.views.values() if isinstance(v.record.result, Completed)
                  and any(f.severity == "warning" for f in app.analyzer.findings(v.record.session))]
        assert warned  # the lossy download: about 8% of packets lost
        log = "\n".join(str(line.text) for line in app.query_one("#log").lines)
        sessions = app.query_one(SessionList)
        lines = plain(sessions).splitlines()
        for record in warned:
            for finding in app.analyzer.findings(record.session):
                assert finding.summary[:40] not in log
            assert "⚠" in lines[sessions.records.index(record)]


async def test_a_capture_gap_is_a_row_of_its_own() -> None:
    """Packets a capture lacks are marked where they are missing, not silently absent."""
    from tftpdiag.protocol.events import CaptureGap

    events = tui_samples.big_session(100)
    lost = [i for i, e in enumerate(events)
            if isinstance(e, PacketReceived) and getattr(e.packet, "block", 0) in (40, 41)]
    gap = CaptureGap(1, events[lost[-1]].time, "DATA", 2, "the ACK of block 41 covers DATA 40-41 the capture never saw")
    events = [e for i, e in enumerate(events) if i not in lost]
    events.insert(lost[0], gap)
    app = _app(events)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        view = app.model.view(1)
        rows = view.visible_rows(Filter.ALL)
        marker = next(i for i, r in enumerate(rows) if r.op == "GAP")
        assert rows[marker - 1].block == "39" and rows[marker + 1].block == "40"  # the ACK of 39, then 40's
        assert "capture lacks 2 DATA" in rows[marker].note
        assert view.log.packets == sum(1 for e in events if isinstance(e, (PacketSent, PacketReceived)))
        assert "the capture lacks 2" in str(app.query_one(".packets").border_title)
        assert any(r.op == "GAP" for r in view.visible_rows(Filter.PROBLEMS))


async def test_a_server_that_forgets_old_packets_says_so_on_screen() -> None:
    from tftpdiag.tui.model import LiveModel

    app = tui_samples.serve_app()
    app.model = LiveModel(packet_budget=1500)  # a server that has run for days, in miniature
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        gone = app.model.forgotten
        assert gone.packets > 0
        header = " ".join(plain(app.query_one("#serve-header")).split())
        assert f"packets of {gone.packet_sessions} older finished sessions ({gone.packets:,}) forgotten" in header
        first = next(v for v in app.model.views.values() if v.log.forgotten)
        sessions = app.query_one(SessionList)
        sessions.cursor = sessions.records.index(first.record)
        await pilot.press("enter")
        await pilot.pause()
        title = str(app.screen.query_one(".packets").border_title)
        assert f"{first.log.forgotten:,} older packets forgotten to bound memory" in title


async def test_a_captured_transfer_names_its_client_not_tftpdiag() -> None:
    """A capture's transfer opened from a trace: no "probe" in its header, the client's ERROR the
    client's, and no advice about tftpdiag's local disk."""
    from tests.trace.test_trace_sides import client_aborts
    from tftpdiag.trace.rebuild import rebuild
    from tftpdiag.tui.screens.detail import SessionDetailScreen
    from tftpdiag.tui.widgets.session_panel import SessionPanel

    app = _trace_app(rebuild(client_aborts()))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("home", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SessionDetailScreen)
        header = " ".join(plain(app.screen.query_one(SessionPanel).query_one(".session-header")).split())
        assert "probe" not in header and "192.0.2.10:40123 'big.bin'" in header, header
        summary = " ".join(plain(app.screen.query_one("#summary")).split())
        assert "the client 192.0.2.10:40123 sent ERROR 0" in summary, summary
        assert "tftpdiag" not in summary and "local disk" not in summary, summary


async def test_the_devices_of_a_trace_are_judged_as_ended() -> None:
    """A trace read to its end: its device's last request failed, so it is stuck, not in progress."""
    from textual.widgets import DataTable

    from tests.trace.test_trace_devices import download, missing
    from tftpdiag.trace.pcap import Datagram
    from tftpdiag.trace.rebuild import rebuild
    from tftpdiag.tui.screens.devices import DevicesScreen

    capture = [Datagram(t, src, dst, raw, len(raw))
               for t, src, dst, raw in download(0.0, "boot.cfg", 40001, 1, 100) + missing(0.5, "image.bin", 40002)]
    app = _trace_app(rebuild(capture))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DevicesScreen)
        table = app.screen.query_one(DataTable)
        await pilot.pause()
        assert table.row_count == 1 and str(table.get_row_at(0)[1]) == "stuck", table.get_row_at(0)


def test_the_options_cell_waits_with_an_ellipsis_only_while_a_session_runs() -> None:
    from tftpdiag.protocol.events import Failed, Reason, Side, TransferStats
    from tftpdiag.sessions import SessionRecord
    from tftpdiag.tui.widgets.serve_view import _granted

    running = SessionRecord(1, filename="nothere.bin", requested=(("blksize", "1468"),))
    assert _granted(running) == "…"
    stats = TransferStats(0, 0.0, 0, 1, 1, 0, 0, 0, 0, 0)
    running.result = Failed(1, 1.0, Reason.PEER_ERROR, Side.PEER, 1, "File not found", stats)
    assert _granted(running) == "-"  # ended with an ERROR before any OACK: nothing was negotiated


async def test_a_transfers_header_names_its_mode_as_every_view_does() -> None:
    """The detail header says the mode where it is not octet, as trace's and watch's lines do
    (report.mode_text): netascii by its word, an odd mode quoted, escaped once; octet left unsaid."""
    from tests.trace.test_trace_odd_requests import MODES_SENT
    from tftpdiag.trace.rebuild import rebuild
    from tftpdiag.tui.screens.detail import SessionDetailScreen
    from tftpdiag.tui.widgets.session_panel import SessionPanel

    app = _trace_app(rebuild(MODES_SENT))
    headers = []
    async with app.run_test(size=(120, 36)) as pilot:
        for row in range(3):
            await pilot.pause()
            await pilot.press("home", *["down"] * row, "enter")
            await pilot.pause()
            assert isinstance(app.screen, SessionDetailScreen)
            headers.append(" ".join(plain(app.screen.query_one(SessionPanel).query_one(".session-header")).split()))
            await pilot.press("escape")
    by_client = {h.split()[1]: h for h in headers}
    assert "'notes.txt' netascii ● done" in by_client["10.99.0.60:40001"], headers
    assert "'notes.txt' ● done" in by_client["10.99.0.61:40002"], headers
    assert "'notes.txt' 'oc\\x1b[2Jtet' ● failed" in by_client["10.99.0.62:40003"], headers


async def test_the_session_list_names_a_transfers_mode_after_its_name() -> None:
    """A netascii transfer (line ends converted: a config file that arrives changed) reads differently in
    the list from an octet one, as in the headlines and the detail header (report.mode_text): netascii by
    its word, an odd mode quoted, escaped once; octet left unsaid. At 80 columns the name is cut, not the
    mode."""
    from tests.trace.test_trace_odd_requests import MODES_SENT
    from tftpdiag.trace.rebuild import rebuild

    for size in ((120, 36), (80, 24)):
        app = _trace_app(rebuild(MODES_SENT))
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            sessions = app.query_one(SessionList)
            lines = plain(sessions).splitlines()
            rows = {fmt_addr(r.client): lines[i] for i, r in enumerate(sessions.records)}
        assert len(rows) == 3, lines
        assert "netascii" in rows["10.99.0.60:40001"], (size, rows)
        assert "octet" not in rows["10.99.0.61:40002"] and "netascii" not in rows["10.99.0.61:40002"], (size, rows)
        odd = rows["10.99.0.62:40003"]
        assert "\x1b" not in odd and "'oc\\x1b" in odd, (size, rows)
        if size[0] == 120:
            assert "notes.txt netascii" in rows["10.99.0.60:40001"], rows
            assert "notes.txt 'oc\\x1b[2Jtet'" in odd, rows


def test_the_mode_is_said_in_a_failure_line_and_found_by_find() -> None:
    """What the list says of a transfer's mode, its log line of a failure says too, and `/` finds it there
    (typing "netascii" keeps the netascii transfers); octet, left unsaid, is not matched."""
    from tests.trace.test_trace_odd_requests import MODES_SENT
    from tftpdiag.fmt import clean
    from tftpdiag.trace.rebuild import rebuild
    from tftpdiag.trace.summary import trace_records
    from tftpdiag.tui.widgets.serve_view import _failure_line, _found

    records = {fmt_addr(r.client): r for r in trace_records(rebuild(MODES_SENT))}
    netascii, octet, odd = records["10.99.0.60:40001"], records["10.99.0.61:40002"], records["10.99.0.62:40003"]
    assert _found(netascii, "netascii") and not _found(octet, "netascii") and not _found(octet, "octet")
    odd.mode = clean(odd.mode)  # (as the view's model keeps it: escaped once)
    line = _failure_line(odd).plain
    assert "RRQ 'notes.txt' 'oc\\x1b[2Jtet' failed:" in line and "\x1b" not in line, line
