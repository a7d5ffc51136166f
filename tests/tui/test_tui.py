"""Pilot tests of the TUI: keys, filters, selection and state changes, fed from recorded events, and
one end-to-end run against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.geometry import Region
from textual.widget import Widget

from tests.support import tui_samples
from tests.support.tui_samples import PushFeed
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing
from tftpdiag.tui.app import TftpDiagApp
from tftpdiag.tui.model import Filter, LiveModel
from tftpdiag.tui.screens.detail import SessionDetailScreen
from tftpdiag.tui.screens.help import HelpScreen
from tftpdiag.tui.screens.save import SaveTraceScreen
from tftpdiag.tui.widgets.packet_list import PacketList
from tftpdiag.tui.widgets.session_panel import SessionPanel

SIZE = (100, 32)



def probe_app(events: list[Event]) -> TftpDiagApp:
    return tui_samples.probe_app(events)


def plain(widget: Widget) -> str:
    """What the widget shows, as plain text."""
    strips = widget.render_lines(Region(0, 0, *widget.outer_size))
    return "\n".join(strip.text for strip in strips)


def header_text(app: TftpDiagApp) -> str:
    return plain(app.query_one(SessionPanel).query_one(".session-header"))


async def test_probe_shows_state_changes_as_events_arrive() -> None:
    events = tui_samples.probe_success()
    feed = PushFeed()
    app = TftpDiagApp(mode="probe", feed=feed, label="10.0.0.2:69", clock=lambda: events[-1].time, tick=None)
    async with app.run_test(size=SIZE) as pilot:
        first_data = next(i for i, e in enumerate(events) if type(e).__name__ == "OptionsNegotiated")
        feed.pending = events[:2]  # TransferStarted and the RRQ
        app.refresh_now()
        await pilot.pause()
        assert "requesting" in header_text(app)
        feed.pending = events[2:first_data + 1]
        app.refresh_now()
        await pilot.pause()
        assert "negotiating" in header_text(app)
        middle = first_data + 60
        feed.pending = events[first_data + 1:middle]
        app.refresh_now()
        await pilot.pause()
        assert "transferring" in header_text(app)
        feed.pending = events[middle:]
        app.refresh_now()
        await pilot.pause()
        assert "done" in header_text(app)
        assert "downloaded" in plain(app.query_one("#summary"))


async def test_filter_key_cycles_and_hides_routine_packets() -> None:
    app = probe_app(tui_samples.probe_success())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        packets = app.query_one(PacketList)
        all_rows = packets.row_count
        await pilot.press("f")
        assert app.packet_filter is Filter.NO_DATA
        no_data = packets.row_count
        await pilot.press("f")
        assert app.packet_filter is Filter.PROBLEMS
        problems = packets.row_count
        await pilot.press("f")
        assert app.packet_filter is Filter.ALL
        assert packets.row_count == all_rows
    assert all_rows > no_data > problems > 0


async def test_pause_freezes_the_packet_table_until_resumed() -> None:
    events = tui_samples.probe_success()
    feed = PushFeed()
    app = TftpDiagApp(mode="probe", feed=feed, label="x", clock=lambda: events[-1].time, tick=None)
    async with app.run_test(size=SIZE) as pilot:
        feed.pending = events[:100]
        app.refresh_now()
        await pilot.pause()
        before = app.query_one(PacketList).row_count
        await pilot.press("p")
        assert app.paused
        feed.pending = events[100:]
        app.refresh_now()
        await pilot.pause()
        assert app.query_one(PacketList).row_count == before
        assert "PAUSED" in header_text(app)
        await pilot.press("p")
        assert app.query_one(PacketList).row_count > before


async def test_help_opens_and_closes() -> None:
    app = probe_app(tui_samples.probe_failure())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_failure_is_explained_in_the_summary() -> None:
    app = probe_app(tui_samples.probe_failure())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        summary = plain(app.query_one("#summary"))
        assert "ERROR 1" in summary and "file not found" in summary and "the server sent" in summary
        assert "failed" in header_text(app)


serve_app = tui_samples.serve_app


async def test_serve_lists_sessions_and_logs_refusals() -> None:
    app = serve_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one("#sessions")
        assert table.row_count == 6  # five transfers plus the duplicate session the lossy client refused
        log_lines = [str(line.text) for line in app.query_one("#log").lines]
        assert any("path-escape" in line and "../../etc/shadow" in line for line in log_lines)
        assert any("nearest existing file: 'pxelinux.0'" in line for line in log_lines)
        header = plain(app.query_one("#serve-header"))
        assert "1 active" in header and "2 refused" in header


async def test_enter_opens_the_selected_session_and_escape_returns() -> None:
    app = serve_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionDetailScreen)
        view = app.model.view(screen.session)
        assert view is not None and view.record.client == ("192.168.7.22", 49152)
        assert screen.query_one(PacketList).row_count > 0
        await pilot.press("f")
        assert screen.filter is Filter.NO_DATA
        await pilot.press("escape")
        assert not isinstance(app.screen, SessionDetailScreen)


async def test_serve_filter_shows_problem_sessions_only() -> None:
    app = serve_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one("#sessions")
        await pilot.press("f")  # active
        assert table.row_count == 1
        await pilot.press("f")  # problems: the failed duplicate and the lossy transfer
        assert table.row_count == 2


async def test_save_key_asks_for_a_name_and_writes_the_trace(tmp_path: Path) -> None:
    saved: list[Path] = []

    def saver(path: Path) -> str:
        path.write_text("trace")
        saved.append(path)
        return f"saved to {path}"

    app = probe_app(tui_samples.probe_success())
    app.saver = saver
    target = tmp_path / "out.pcap"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, SaveTraceScreen)
        field = app.screen.query_one("#path")
        field.value = str(target)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert saved == [target] and target.read_text() == "trace"


async def test_save_screen_shows_its_whole_hint_and_saves_a_relative_name_where_it_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    saved: list[Path] = []

    def saver(path: Path) -> str:
        saved.append(path)
        return f"saved to {path}"

    app = probe_app(tui_samples.probe_success())
    app.saver = saver
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, SaveTraceScreen)
        await pilot.pause()
        shown = " ".join(strip.text.replace("│", " ") for strip in app.screen._compositor.render_strips())
        assert "Enter saves, escape cancels." in " ".join(shown.split()), shown
        app.screen.query_one("#path").value = "out.pcap"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert saved == [tmp_path / "out.pcap"]  # the toast names the file where it is, not relative to an unnamed place


def _packet_events(events: list[Event]) -> list[Event]:
    return [e for e in events if type(e).__name__ in ("PacketSent", "PacketReceived")]


def test_filters_find_the_request_after_thousands_of_data_rows() -> None:
    from tests.support.simnet import run_transfer

    result = run_transfer("read", bytes(512 * 3000), options=RequestedOptions(blksize=512, tsize=True))
    events = [e for e in result.events if e.session == 1]
    model = LiveModel()
    model.apply(events)
    view = model.view(1)
    assert view is not None and view.log.packets == len(_packet_events(events))  # every one of them
    assert [r.op for r in view.visible_rows(Filter.NO_DATA)][:3] == ["RRQ", "OACK", "ACK"]
    assert view.visible_rows(Filter.ALL)[0].op == "RRQ"


def test_model_keeps_every_packet_and_counts_rollover() -> None:
    from tests.support.simnet import run_transfer

    result = run_transfer("read", bytes(8 * 70000), options=RequestedOptions(blksize=8))
    events = [e for e in result.events if e.session == 1]
    model = LiveModel()
    for start in range(0, len(events), 997):  # in ticks, as the app folds them
        model.apply(events[start:start + 997])
    view = model.view(1)
    assert view is not None
    packets = _packet_events(events)
    assert view.log.packets == len(packets) == view.record.packets_sent + view.record.packets_received
    rows = view.visible_rows(Filter.ALL)
    assert [(r.op, r.size) for r in rows] == [(p.packet.opcode.name, len(p.raw)) for p in packets]
    assert view.log.wraps == 1 and rows[-1].block.endswith("↻1")
    # Block 10 after the rollover is found by its number counted from the start, and by its 16-bit one.
    after = view.log.find_block(65536 + 10)
    assert after is not None and rows[after].block == "10↻1"
    assert view.log.find_block(70002) is None  # the last is 70001, empty


def test_a_long_running_server_forgets_old_packets_and_says_so() -> None:
    from tests.support.simnet import run_transfer

    model = LiveModel(packet_budget=3000)
    result = run_transfer("read", bytes(512 * 1000), options=RequestedOptions(blksize=512))
    one = [e for e in result.events if e.session == 1]
    for session in range(1, 6):  # five finished sessions of ~2000 packets each
        model.apply([replace(e, session=session) for e in one])
    kept = sum(len(v.log) for v in model.views.values())
    assert kept <= 3000 and model.kept_packets == kept
    gone = model.forgotten
    assert gone.packet_sessions >= 3 and gone.packets == 5 * len(_packet_events(one)) - kept
    first = model.view(1)
    assert first is not None and len(first.log) == 0 and first.log.forgotten > 0
    assert first.record.state == "done" and first.record.bytes == 512 * 1000  # the summary stays
    assert len(model.view(5).log) > 0  # the newest keeps its packets


async def until_done(app: TftpDiagApp, pilot: Any) -> None:
    """Let the app's own timer run until the probe's header says done (10 s at most)."""
    for _ in range(200):
        await asyncio.sleep(0.05)
        if "done" in header_text(app):
            break
    await pilot.pause()
    assert "done" in header_text(app)


async def test_live_probe_against_a_loopback_server(tmp_path: Path) -> None:
    """The whole path: our server, our client on a worker thread, the bus, the app's timer."""
    (tmp_path / "image.bin").write_bytes(bytes(range(256)) * 4000)
    bus = EventBus()
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        port = server.addresses[0][1]
        transfer = ClientTransfer(ClientRequest("127.0.0.1", "image.bin", port=port,
                                                options=RequestedOptions(blksize=1468, tsize=True),
                                                timing=Timing(dally=0.1)), bus)
        feed = bus.subscribe()
        app = TftpDiagApp(mode="probe", feed=feed, label=f"127.0.0.1:{port}", tick=1 / 20)
        async with app.run_test(size=SIZE) as pilot:
            transfer.start()
            await until_done(app, pilot)
            view = app.model.view(transfer.session_id)
            assert view is not None and view.record.bytes == 1_024_000
            assert app.ticks > 1
        transfer.join(5)


@pytest.mark.peers
async def test_live_probe_asks_again_when_tftpd_hpa_refuses_an_option(tmp_path: Path) -> None:
    """A probe from the TUI falls back like the headless one: tftpd-hpa refuses tsize in netascii."""
    from tests.support import peers

    (tmp_path / "notes.txt").write_bytes(b"line\n" * 500)
    (tmp_path / "notes.txt").chmod(0o644)
    tmp_path.chmod(0o755)
    port = peers.free_udp_port()
    bus = EventBus()
    with peers.tftpd_hpa(tmp_path, port):
        transfer = ClientTransfer(ClientRequest("127.0.0.1", "notes.txt", port=port, mode="netascii",
                                                options=RequestedOptions(tsize=True), timing=Timing(dally=0.1)),
                                  bus)
        app = TftpDiagApp(mode="probe", feed=bus.subscribe(), label=f"127.0.0.1:{port}",
                          tick=1 / 20)
        async with app.run_test(size=SIZE) as pilot:
            transfer.start()
            await until_done(app, pilot)
            # The options' panel grows to its rows at the next layout, which may come a frame after the
            # header said done (a tick lays out only what changed): wait for it, a bounded while.
            for _ in range(100):
                options = plain(app.query_one("#options"))
                if "dropped" in options:
                    break
                await pilot.pause(0.02)
            summary = plain(app.query_one("#summary"))
            assert "dropped" in options, options
            assert "refused the options with ERROR 8" in " ".join(summary.split()), summary
        transfer.join(5)


async def test_a_tick_while_the_app_shuts_down_is_ignored() -> None:
    """The refresh timer can fire while the widgets are being removed at exit: no traceback then."""
    app = probe_app(tui_samples.probe_success())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
    app.refresh_now()  # what a late tick does once the DOM is gone


def _synchronous(transfer: ClientTransfer) -> ClientTransfer:
    """The worst interleaving there is: the transfer runs to its end the moment it is started."""
    transfer.start = lambda: (transfer.run(), transfer)[1]  # type: ignore[method-assign]
    return transfer


async def test_a_probe_that_runs_before_the_app_draws_is_still_judged_whole(tmp_path: Path) -> None:
    """Readers subscribe before the probe starts: its findings never miss its own request (which once
    made a clean demo warn of a "bad OACK: blksize=1468, which was not asked for")."""
    from tftpdiag.tui.launch import client_app, demo_app

    (tmp_path / "image.bin").write_bytes(bytes(range(256)) * 400)
    for mode in ("probe", "demo"):
        bus = EventBus()
        with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
            port = server.addresses[0][1]
            transfer = _synchronous(ClientTransfer(ClientRequest(
                "127.0.0.1", "image.bin", port=port, options=RequestedOptions(blksize=1468, tsize=True),
                timing=Timing(dally=0.0)), bus))
            if mode == "probe":
                # In this process: a transfer run apart cannot finish the moment it starts (its child
                # takes a while to spawn), and waiting one pause for it raced with the spawn under load.
                app, probe, spool = client_app(transfer, bus, extra=lambda outcome: {}, apart=False)
            else:
                app, probe, spool = demo_app(server, transfer, bus)
                probe.start()
            try:
                async with app.run_test(size=SIZE) as pilot:
                    # The app starts its probe once its screen has settled; _synchronous runs it to its
                    # end then.
                    await until_done(app, pilot)
                    app.refresh_now()
                    await pilot.pause()
                    judged = app.analyzer.state(transfer.session_id)
                    assert judged is not None and judged.req == {"blksize": "1468", "tsize": "0"}, mode
                    assert judged.finished and app.analyzer.findings(transfer.session_id) == [], mode
            finally:
                spool.close()


@pytest.fixture(autouse=True)
def _no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blinking cursors make screens differ from one frame to the next."""
    from textual.widgets import Input

    monkeypatch.setattr(Input, "cursor_blink", False, raising=False)


async def test_sweep_view_speaks_words_opens_a_probe_and_saves(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from tftpdiag.sweep import DEFAULT_PROBES
    from tftpdiag.tui.sweep_app import SweepApp

    (tmp_path / "image.bin").write_bytes(bytes(range(256)) * 12_000)  # 3 MiB: the probes are capped
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        port = server.addresses[0][1]
        app = SweepApp("127.0.0.1", port, "image.bin", timing=Timing(initial_timeout=0.5, dally=0.05), tick=1 / 20)
        async with app.run_test(size=(140, 45)) as pilot:
            for _ in range(600):  # up to 30 s
                await asyncio.sleep(0.05)
                if app.report is not None:
                    break
            await pilot.pause()
            assert app.report is not None and len(app.results) == len(DEFAULT_PROBES)
            legend = plain(app.query_one("#legend"))
            assert "capped = stopped after 2.0 MiB, enough to measure" in " ".join(legend.split()), legend
            table = app.query_one(DataTable)
            cells = [str(c) for row in range(table.row_count) for c in table.get_row_at(row)]
            assert not any("-" in c and c.replace("-", "").isalpha() and c.islower() for c in cells), cells
            verdict = " ".join(plain(app.query_one("#verdict")).split())
            assert "Fastest without loss:" in verdict
            fastest = verdict.split("Fastest without loss:")[1].split("Recommended")[0]
            assert fastest.count("blksize") <= 1, fastest  # it no longer says the same thing twice
            # The selected probe, in words, then its packets.
            await pilot.press("down")
            await pilot.pause()
            assert "blksize 512: capped" in " ".join(plain(app.query_one("#explain")).split())
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, SessionDetailScreen)
            header = plain(app.screen.query_one(SessionPanel).query_one(".session-header"))
            assert "failed" in header, header  # capped: the sweep stopped it, and says so
            summary = " ".join(plain(app.screen.query_one("#summary")).split())
            assert "enough received: stopped after 2097" in summary, summary  # (one block past 2 MiB)
            assert app.screen.query_one(PacketList).row_count > 100
            assert app.screen.query_one(PacketList).size.height >= 10  # the view's own layout, whole
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, SessionDetailScreen)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            saved = tmp_path / "sweep.json"
            assert "saved 11 probes" in app.save(saved)
            report = json.loads(saved.read_text())
            assert [p["probe"] for p in report["probes"]] == [p.name for p in DEFAULT_PROBES]
            assert "saved" in app.save(tmp_path / "sweep.pcap")
            assert (tmp_path / "sweep.pcap").stat().st_size > 100_000


async def test_probe_view_runs_its_transfer_in_its_own_process(tmp_path: Path) -> None:
    """The view's transfer runs apart (engine/apart.py): its events arrive here whole."""
    import os

    from tftpdiag.engine.apart import RemoteTransfer
    from tftpdiag.protocol.events import Completed, PacketReceived, PacketSent
    from tftpdiag.trace.jsonl import read_events
    from tftpdiag.tui.launch import client_app

    (tmp_path / "a.bin").write_bytes(os.urandom(300_000))
    bus = EventBus()
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
        port = server.addresses[0][1]  # the with-block serves it: a second serve() loop raced with it
        transfer = ClientTransfer(ClientRequest("127.0.0.1", "a.bin", port=port), EventBus())
        app, probe, spool = client_app(transfer, transfer.bus, extra=lambda outcome: {})
        try:
            async with app.run_test(size=SIZE) as pilot:
                assert isinstance(probe.transfer, RemoteTransfer)
                outcome = await asyncio.to_thread(probe.transfer.wait, 30)
                assert outcome is not None and outcome.ok
                assert probe.transfer._process.pid != os.getpid()
                await asyncio.to_thread(probe.transfer.join, 10)
                app.refresh_now()
                await pilot.pause()
                record = app.model.view(outcome.session).record
                assert isinstance(record.result, Completed) and record.bytes == 300_000
                assert len(record.packets) == record.packets_sent + record.packets_received > 400
                assert "done" in header_text(app)
                # The save key's spool kept every event that crossed from the transfer's process.
                message = await asyncio.to_thread(spool.save, tmp_path / "run.jsonl")
                with open(tmp_path / "run.jsonl", encoding="utf-8") as f:
                    saved = list(read_events(f))
                assert message == f"saved {len(saved):,} events to {tmp_path / 'run.jsonl'}"
                saved = [e for e in saved if e.session == outcome.session]
                assert sum(isinstance(e, (PacketSent, PacketReceived)) for e in saved) == len(record.packets)
                # The store's zeros made ready ahead (DatagramStore.make_ready) that no datagram went over
                # were cut off when the transfer ended.
                store = probe.transfer.store
                assert store is not None and 300_000 < os.path.getsize(store) <= sum(
                    len(e.raw) for e in saved if isinstance(e, (PacketSent, PacketReceived)))
        finally:
            probe.cancel()
            spool.close()
            server.stop()


async def test_probe_view_says_why_its_transfer_process_could_not_start(tmp_path: Path) -> None:
    """A child that cannot run the transfer says why on screen, instead of the view waiting for ever."""
    from tftpdiag.tui.launch import client_app

    folder = tmp_path / "out"
    folder.mkdir()
    transfer = ClientTransfer(ClientRequest("127.0.0.1", "a.bin", port=9, output=folder / "a.bin"), EventBus())
    folder.rmdir()  # checked here when built; gone by the time the child builds its own
    app, probe, spool = client_app(transfer, transfer.bus, extra=lambda outcome: {})
    try:
        async with app.run_test(size=SIZE) as pilot:
            await asyncio.to_thread(probe.transfer.join, 30)
            app.refresh_now()
            await pilot.pause()
            assert "no such directory" in header_text(app), header_text(app)
            assert app.probe is not None and app.probe.exit_code() == 1
    finally:
        probe.cancel()
        spool.close()


@pytest.mark.parametrize(("cpu_per_tick", "expected"), [(0.001, 0.02), (0.02, 0.4), (5.0, 1.0)])
async def test_ticks_slow_down_when_frames_cost_much_cpu(cpu_per_tick: float, expected: float) -> None:
    # A 200x55 frame of a fast transfer cost 30 ms of CPU: at 15 a second the view took nearly half a
    # core from the transfer it showed. The next tick waits until the view has used at most a twentieth
    # (DUTY) of the time since the last one; cheap frames keep the set rate, and one a second at least.
    spent = [0.0]

    def cpu_clock() -> float:
        spent[0] += cpu_per_tick  # read once at mount and once a tick
        return spent[0]

    app = TftpDiagApp(mode="probe", feed=PushFeed(), label="x", tick=0.02, cpu_clock=cpu_clock)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(500):
            if app.ticks >= 2:  # the first draw at mount, then the first tick
                break
            await pilot.pause(0.01)
        assert app.ticks >= 2
        assert app.next_tick == pytest.approx(expected)
        if expected >= 1.0:  # and the timer keeps to it: no tick for the next tenths of a second
            ticks = app.ticks
            await pilot.pause(0.3)
            assert app.ticks == ticks


class StartRecorder:
    """A probe that only says when it is started (the app's side of ProbeControl)."""

    def __init__(self, on_start: Callable[[], object]) -> None:
        self.on_start = on_start

    def start(self) -> None:
        self.on_start()

    def current_session(self) -> int | None:
        return None

    def rerun(self) -> None: ...
    def cancel(self) -> None: ...

    def summary_line(self) -> str:
        return ""

    def exit_code(self) -> int:
        return 0


async def test_the_app_starts_its_probe_once_its_screen_is_drawn() -> None:
    """Mounting, laying out and drawing the screen takes a few hundred ms of CPU: the probe's transfer
    starts after it, not under it (and once, however the app is driven)."""
    starts: list[int] = []
    app = TftpDiagApp(mode="probe", feed=PushFeed(), label="x",
                      probe=StartRecorder(lambda: starts.append(app.ticks)))  # the draw at mount counts one
    assert starts == []
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(500):
            if starts:
                break
            await pilot.pause(0.01)
        await pilot.pause()
        assert len(starts) == 1 and starts[0] >= 1


async def test_the_probe_waits_for_the_screen_to_settle_but_not_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started while the view still draws (its thread busy), the transfer would share the CPU with it."""
    from tftpdiag.tui import app as app_module

    started: list[float] = []
    busy = [True]
    spent = [0.0]
    looks = [0]

    def cpu_clock() -> float:
        looks[0] += 1
        spent[0] += 0.05 if busy[0] else 0.0  # a thread still drawing, then a quiet one
        return spent[0]

    def record() -> None:
        started.append(spent[0])

    monkeypatch.setattr(app_module, "SETTLE_AT_MOST", 600.0)
    app = TftpDiagApp(mode="probe", feed=PushFeed(), label="x", probe=StartRecorder(record), tick=None,
                      cpu_clock=cpu_clock)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(500):
            if looks[0] >= 6:
                break
            await pilot.pause(0.01)
        assert looks[0] >= 6 and started == []  # looked again and again, busy all along
        busy[0] = False
        for _ in range(500):
            if started:
                break
            await pilot.pause(0.01)
        assert len(started) == 1
    # Busy for ever: started anyway, after SETTLE_AT_MOST.
    started.clear()
    busy[0] = True
    monkeypatch.setattr(app_module, "SETTLE_AT_MOST", 0.1)
    app = TftpDiagApp(mode="probe", feed=PushFeed(), label="x", probe=StartRecorder(record), tick=None,
                      cpu_clock=cpu_clock)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(500):
            if started:
                break
            await pilot.pause(0.01)
        assert len(started) == 1


@pytest.mark.parametrize("size", [(200, 55), (80, 24)])
async def test_a_transfer_s_first_frames_lay_nothing_out(monkeypatch: pytest.MonkeyPatch,
                                                         size: tuple[int, int]) -> None:
    """The first ticks of a running transfer laid out the whole screen two to four times (60-73 ms each
    with its repaint at 200x55, measured): the options table, the header and the outcome took their
    running heights, the options panel's new size asked for another, and the packet table's scrollbar
    appeared. The view knows the options its probe will ask before it starts and shows their rows, the
    header and the outcome keep their lines, and the table's scrollbar is always there: from the view's
    first frame to the transfer's end, nothing is laid out. (At 80 columns an option's answer may take
    more lines than its question: that tick, and no other, lays out.)"""
    import random

    from tests.support.simnet import run_transfer
    from tftpdiag.protocol.events import Completed

    options = RequestedOptions(blksize=1468, tsize=True)
    events = [e for e in run_transfer("read", random.Random(5).randbytes(300_000), options=options).events
              if e.session == 1]
    running = [e for e in events if not isinstance(e, Completed)]
    feed = PushFeed()
    now = [running[0].time]
    app = TftpDiagApp(mode="probe", feed=feed, label="10.0.0.2:69", tick=None, clock=lambda: now[0],
                      asked=options.to_wire())
    asked: list[str] = []
    refresh = Widget.refresh

    def recording(self: Widget, *regions: Any, **kwargs: Any) -> Any:
        if kwargs.get("layout") or kwargs.get("recompose"):
            asked.append(f"{type(self).__name__}#{self.id}.{'.'.join(self.classes)}")
        return refresh(self, *regions, **kwargs)

    async with app.run_test(size=size) as pilot:
        for _ in range(2):  # the view waiting for its transfer, laid out
            app.refresh_now()
            await pilot.pause()
        monkeypatch.setattr(Widget, "refresh", recording)
        laid_out = []
        for step in range(0, len(running), 60):
            feed.pending = running[step:step + 60]
            now[0] = feed.pending[-1].time
            app.refresh_now()
            await pilot.pause()
            laid_out.append(asked[:])
            asked.clear()
        if size[0] >= 86:  # the options as a table: an answer takes the question's row
            assert laid_out == [[]] * len(laid_out)
        else:
            assert all(tick == [] for tick in laid_out[1:]), laid_out
        view = app.model.view(1)
        assert view is not None and view.record.negotiated is not None  # the answer is on screen
        rows = app.query_one(PacketList)
        assert rows.scroll_y == rows.max_scroll_y > 0  # following the newest packet


async def test_a_tick_of_a_running_transfer_lays_nothing_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout lays out and repaints the whole screen: asked for at every tick (by the header's figures,
    the packet table's growing length, the unchanged options), it was half of a 200x55 frame's CPU, and
    the view shares its CPU with the transfer it shows. Once the screen is up, a tick repaints what moved."""
    import random

    from textual.widget import Widget

    from tests.support.simnet import run_transfer
    from tftpdiag.protocol.events import Completed

    events = [e for e in run_transfer("read", random.Random(3).randbytes(400_000),
                                      options=RequestedOptions(blksize=1468, tsize=True)).events if e.session == 1]
    running = [e for e in events if not isinstance(e, Completed)]
    feed = PushFeed()
    now = [running[0].time]  # the simulated transfer's own clock: no stall at the real one
    app = TftpDiagApp(mode="probe", feed=feed, label="x", tick=None, clock=lambda: now[0])
    asked: list[str] = []
    refresh = Widget.refresh

    def recording(self: Widget, *regions: Any, **kwargs: Any) -> Any:
        if kwargs.get("layout"):
            asked.append(f"{type(self).__name__}#{self.id}.{'.'.join(self.classes)}")
        return refresh(self, *regions, **kwargs)

    async with app.run_test(size=(200, 55)) as pilot:
        feed.pending = running[:300]
        now[0] = running[299].time
        app.refresh_now()
        await pilot.pause()
        monkeypatch.setattr(Widget, "refresh", recording)
        for step in range(300, len(running), 100):
            feed.pending = running[step:step + 100]
            now[0] = feed.pending[-1].time
            app.refresh_now()
            await pilot.pause()
        assert asked == [], asked
        view = app.model.view(1)
        assert view is not None and len(view.log) == sum(1 for e in running if hasattr(e, "raw"))
        rows = app.query_one(PacketList)
        assert rows.scroll_y == rows.max_scroll_y > 0  # still following the newest packet


async def test_a_probe_that_took_milliseconds_says_so_in_its_header_not_zero() -> None:
    """A refusal answered in 2 ms read ``failed  0.00 s``; a 600-byte download in a few ms ``done  0.00 s``."""
    from tests.support.simnet import run_transfer

    small = [e for e in run_transfer("read", b"x" * 600).events if e.session == 1]
    for events, state in ((tui_samples.probe_failure(), "failed"), (small, "done")):
        async with probe_app(events).run_test(size=SIZE) as pilot:
            await pilot.pause()
            header = header_text(pilot.app)
            assert state in header and " ms" in header and "0.00 s" not in header, header
