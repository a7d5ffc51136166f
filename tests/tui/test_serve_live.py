"""The live server view while other screens are on top, while paused, and its filters: nothing a tick
hands over is lost, and the keys a screen shows act on that screen."""

from __future__ import annotations

from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import RichLog

from tests.support import tui_samples
from tests.support.tui_samples import PushFeed
from tftpdiag.protocol.events import Event, TransferStarted
from tftpdiag.tui.app import TftpDiagApp
from tftpdiag.tui.screens.devices import DevicesScreen
from tftpdiag.tui.widgets import serve_view
from tftpdiag.tui.widgets.serve_view import ServeView
from tftpdiag.tui.widgets.session_list import SessionList

SIZE = tui_samples.SIZE



def plain(widget: Widget) -> str:
    strips = widget.render_lines(Region(0, 0, *widget.outer_size))
    return "\n".join(strip.text for strip in strips)


def _serve_app() -> tuple[TftpDiagApp, PushFeed, list[Event]]:
    events = tui_samples.serve_sessions()
    end = tui_samples.end_time(events)
    feed = PushFeed()
    app = TftpDiagApp(mode="serve", feed=feed, server=tui_samples.SERVER_INFO, clock=lambda: end, tick=None)
    return app, feed, events


def _split(events: list[Event]) -> tuple[list[Event], list[Event]]:
    """The first transfer alone, then everything else (four more sessions, both refusals)."""
    second = next(e.session for e in events if isinstance(e, TransferStarted) and e.session != 10)
    cut = next(i for i, e in enumerate(events) if e.session == second)
    return events[:cut], events[cut:]


def _listed(app: TftpDiagApp) -> set[int]:
    return {r.session for r in app.query_one(SessionList).records}


def _server_sessions(app: TftpDiagApp) -> set[int]:
    return {r.session for r in app.model.server_records() if r.role is not None}


def _log(app: TftpDiagApp) -> str:
    return "\n".join(str(line.text) for line in app.query_one(RichLog).lines)


async def test_what_happens_while_the_devices_screen_is_open_reaches_the_server_view() -> None:
    app, feed, events = _serve_app()
    before, during = _split(events)
    async with app.run_test(size=SIZE) as pilot:
        feed.pending = before
        app.refresh_now()
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DevicesScreen)
        feed.pending = during  # new sessions, endings and both refusals, while the devices are shown
        app.refresh_now()
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DevicesScreen)
        assert _listed(app) == _server_sessions(app) and len(_listed(app)) == 6
        log = _log(app)
        assert "../../etc/shadow" in log and "PXELINUX.0" in log
        assert "failed:" in log  # the duplicate session the lossy client refused


async def test_sessions_that_begin_while_paused_are_listed_once_resumed() -> None:
    app, feed, events = _serve_app()
    before, during = _split(events)
    async with app.run_test(size=SIZE) as pilot:
        feed.pending = before
        app.refresh_now()
        await pilot.pause()
        await pilot.press("p")
        assert app.query_one(ServeView).paused
        feed.pending = during
        app.refresh_now()
        await pilot.pause()
        assert _listed(app) == {10}  # frozen while paused
        await pilot.press("p")  # resumed, with nothing new since: the held sessions come now
        await pilot.pause()
        assert _listed(app) == _server_sessions(app) and len(_listed(app)) == 6
        assert len(app.query_one(SessionList).records) == 6  # each once


async def test_a_filtered_table_catches_up_on_changes_held_back_by_its_resort_pace() -> None:
    """A sorted or filtered table re-sorts at most every RESORT_EVERY seconds: what ended within that
    time is applied at a later tick, even a tick that brings nothing new."""
    events = tui_samples.serve_sessions()
    clock = [tui_samples.end_time(events)]
    feed = PushFeed()
    app = TftpDiagApp(mode="serve", feed=feed, server=tui_samples.SERVER_INFO, clock=lambda: clock[0], tick=None)
    before, during = _split(events)
    async with app.run_test(size=SIZE) as pilot:
        feed.pending = before
        app.refresh_now()
        await pilot.pause()
        await pilot.press("o")  # by client: rebuilt now
        feed.pending = during
        app.refresh_now()  # within RESORT_EVERY of that rebuild: held back
        await pilot.pause()
        assert _listed(app) == {10}
        clock[0] += serve_view.RESORT_EVERY
        app.refresh_now()  # nothing new, but the held changes are applied
        await pilot.pause()
        assert _listed(app) == _server_sessions(app)


async def test_the_problems_filter_keeps_a_session_marked_with_a_warning() -> None:
    """A binary file sent as netascii ends done, with no retransmit or timeout, and a warning (⚠1)."""
    import random
    from dataclasses import replace

    from tests.support.simnet import run_transfer
    from tftpdiag.protocol.events import Completed, RequestRefused

    data = random.Random(3).randbytes(20_000)
    served = [replace(e, time=e.time + tui_samples.EPOCH + 2.0)  # after the others began
              for e in run_transfer("read", data, mode="netascii").events if e.session != 1]
    events = [e for e in tui_samples.serve_sessions() if not isinstance(e, RequestRefused)] + served
    end = tui_samples.end_time(events)
    app = TftpDiagApp(mode="serve", feed=tui_samples.RecordedFeed(events), server=tui_samples.SERVER_INFO,
                      clock=lambda: end, tick=None)
    (sid,) = {e.session for e in served}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        record = app.model.views[sid].record
        assert isinstance(record.result, Completed) and not record.retransmits and not record.timeouts
        assert [f.id for f in app.analyzer.findings(sid) if f.severity != "info"] == ["netascii-binary"]
        await pilot.press("f", "f")
        assert app.query_one(ServeView).filter == "problems"
        assert sid in _listed(app)
        assert "⚠1" in plain(app.query_one(SessionList))


async def test_the_devices_screen_offers_no_keys_that_act_on_the_hidden_sessions() -> None:
    app, feed, events = _serve_app()
    async with app.run_test(size=SIZE) as pilot:
        feed.pending = events
        app.refresh_now()
        await pilot.pause()
        serve = app.query_one(ServeView)
        shown = {key for key, active in app.screen.active_bindings.items() if active.binding.show}
        assert {"p", "f", "slash"} <= shown  # on the sessions, they are there
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DevicesScreen)
        bound = set(app.screen.active_bindings)
        assert not bound & {"p", "f", "slash", "o"}, bound
        footer = plain(app.screen.query_one("Footer"))
        assert "Filter" not in footer and "Find" not in footer and "Pause" not in footer
        await pilot.press("f", "p", "o", "slash")
        await pilot.pause()
        assert (serve.filter, serve.paused, serve.sort) == ("all", False, 0)
        assert not app.query_one("#session-find").has_class("-shown")
        await pilot.press("escape")
        await pilot.pause()
        assert {"p", "f", "slash"} <= set(app.screen.active_bindings)


async def test_the_server_header_keeps_each_figure_with_its_unit_at_80_columns() -> None:
    app = tui_samples.serve_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = [line.replace("\xa0", " ").strip() for line in plain(app.query_one("#serve-header")).splitlines()]
        assert len(lines) == 3, lines  # the figures no longer fit on one line at 80 columns
        assert any(line.endswith("now 26.8 KiB/s") for line in lines), lines
        assert not any(line.startswith(("KiB", "B/s", "MiB")) for line in lines), lines


def _stray_events() -> list[Event]:
    """What the server's listener publishes for 6 undecodable bytes (answered: ERROR 4 says why) and for
    a stray ACK (only logged), as engine/server_requests turns them away."""
    from tftpdiag.protocol.packets import Ack, ProtocolError, decode, encode
    from tftpdiag.protocol.server import refuse

    end = tui_samples.end_time(tui_samples.serve_sessions())
    where = dict(client=("10.0.0.77", 4000), local=("10.0.0.2", 69), now=end)
    junk = b"\x00\x09junk"
    try:
        decode(junk)
        raise AssertionError("decoded")
    except ProtocolError as exc:
        _, answered = refuse(900, raw=junk, packet=None, code=exc.code, message=exc.message, why="malformed",
                             **where)  # type: ignore[arg-type]
    _, ignored = refuse(901, raw=encode(Ack(1)), packet=Ack(1), code=5, message="not a request",
                        why="not-a-request", answer=False, **where)  # type: ignore[arg-type]
    return answered + ignored


async def test_stray_packets_say_whether_they_were_answered_and_are_no_refused_requests() -> None:
    app, feed, events = _serve_app()
    async with app.run_test(size=(120, 32)) as pilot:
        feed.pending = events + _stray_events()
        app.refresh_now()
        await pilot.pause()
        log = " ".join(_log(app).split())  # (the log wraps its lines)
        assert "sent 6 undecodable bytes to the listening port, which takes only requests (answered with " \
               "ERROR 4 unknown opcode 9)" in log, log
        assert "sent ACK 1 to the listening port, which takes only requests (ignored)" in log, log
        header = " ".join(plain(app.query_one("#serve-header")).split())
        assert "2 refused" in header and "2 stray" in header, header  # the sample's two refusals only


async def test_the_log_pane_wraps_its_lines_whole_at_80_columns() -> None:
    app = tui_samples.serve_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        rows = plain(app.query_one(RichLog)).splitlines()[1:-1]  # inside the border
        text = " ".join(" ".join(row.strip("│ ").split()) for row in rows)
        assert "ERROR 1 (file not found) file not found; nearest existing file: 'pxelinux.0'" in text, rows
        assert "the client sent ERROR 5 (unknown transfer ID): unknown transfer ID" in text, rows


def _served(name: str, client: tuple[str, int], session: int, at: float) -> list[Event]:
    """A download of ``name`` as our server records it, begun at ``at``."""
    from tests.support.simnet import run_transfer

    result = run_transfer("read", b"x" * 3000, filename=name)
    start = min(e.time for e in result.events)
    return tui_samples._retime([e for e in result.events if e.session != 1], offset=at - start,
                               session_map={2: session}, client=client)


def _not_found(name: str, client: tuple[str, int], session: int, at: float) -> list[Event]:
    from tftpdiag.protocol.packets import Opcode, Request, encode
    from tftpdiag.protocol.server import refuse

    request = Request(Opcode.RRQ, name, "octet", ())
    return refuse(session, raw=encode(request), packet=request, client=client, local=tui_samples.SERVER_ADDR,
                  now=at, code=1, message="file not found", why="not-found")[1]


async def test_the_devices_table_and_pane_show_the_same_moment_and_the_files_use_the_width() -> None:
    """A device's missing file, then (between two judgings) its download: the pane listed the new session
    under the old verdict while the row had not counted it; once judged, the row cut its files where the
    first one had ended ("nothere.bin ✘ → small.bi") on a 200-column screen."""
    from textual.widgets import DataTable

    t0 = 1_795_000_000.0
    clock = [t0 + 1.0]
    feed = PushFeed()
    app = TftpDiagApp(mode="serve", feed=feed, server=tui_samples.SERVER_INFO, clock=lambda: clock[0], tick=None)
    other, device = ("10.0.0.40", 2000), ("10.0.0.50", 3000)
    async with app.run_test(size=(200, 40)) as pilot:
        feed.pending = _served("early.bin", other, 40, t0) + _not_found("nothere.bin", device, 41, t0 + 0.5)
        app.refresh_now()
        await pilot.press("d")
        await pilot.pause()
        app.refresh_now()  # judged once laid out (a resize asks for it)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DevicesScreen)
        table = screen.query_one(DataTable)
        timeline = screen.query_one("#device-timeline")

        def row(address: str) -> tuple[str, ...]:
            return tuple(str(cell) for cell in table.get_row(address))

        assert row("10.0.0.50")[1:] == ("in-progress", "nothere.bin ✘", "1")
        late = _served("small.bin", device, 42, t0 + 1.5)
        clock[0] = max(e.time for e in late) + 0.1  # within the judging's interval: not judged again yet
        feed.pending = late
        app.refresh_now()
        await pilot.press("down", "up")  # the pane drawn again, for 10.0.0.50
        await pilot.pause()
        pane = plain(timeline)
        assert "nothere.bin" in pane and "small.bin" not in pane and "in-progress" in pane, pane

        clock[0] += DevicesScreen.EVERY
        app.refresh_now()
        await pilot.pause()
        assert row("10.0.0.50")[1:] == ("booted", "nothere.bin · → small.bin ✔", "2")
        pane = plain(timeline)
        assert "small.bin" in pane and "booted" in pane, pane
        shown = next(line for line in plain(table).splitlines() if "10.0.0.50" in line)
        assert "nothere.bin · → small.bin ✔" in shown and shown.strip("│ ").endswith("  2"), shown


def _garbage(client: tuple[str, int], session: int, at: float) -> list[Event]:
    """What the listener publishes for garbage from ``client``, as engine/server_requests turns it away:
    an opcode 9, a 0- and a 1-byte datagram (answered with ERROR 4), a stray ERROR (only logged)."""
    from tftpdiag.protocol.packets import Error, ProtocolError, decode, encode
    from tftpdiag.protocol.server import refuse

    events: list[Event] = []
    where = dict(client=client, local=tui_samples.SERVER_ADDR, now=at)
    for i, junk in enumerate((b"\x00\x09junk", b"", b"\x01")):
        try:
            decode(junk)
            raise AssertionError("decoded")
        except ProtocolError as exc:
            events += refuse(session + i, raw=junk, packet=None, code=exc.code, message=exc.message,
                             why="malformed", **where)[1]  # type: ignore[arg-type]
    stray = Error(0, "late")
    events += refuse(session + 3, raw=encode(stray), packet=stray, code=5, message="not a request",
                     why="not-a-request", answer=False, **where)[1]  # type: ignore[arg-type]
    return events


async def test_garbage_at_the_listening_port_is_no_step_of_a_devices_boot() -> None:
    """Undecodable datagrams and a stray ERROR from a device are not RRQs it made: its boot sequence in
    the devices view holds its one request, and the log names each for what it was."""
    from textual.widgets import DataTable

    t0 = 1_795_000_000.0
    feed = PushFeed()
    app = TftpDiagApp(mode="serve", feed=feed, server=tui_samples.SERVER_INFO, clock=lambda: t0 + 1.0, tick=None)
    device = ("10.0.0.50", 3000)
    async with app.run_test(size=(200, 40)) as pilot:
        feed.pending = _not_found("nothere.bin", device, 41, t0) + _garbage(device, 50, t0 + 0.5)
        app.refresh_now()
        await pilot.pause()
        log = " ".join(_log(app).split())
        assert "sent 1 undecodable byte to the listening port" in log, log
        assert "sent ERROR to the listening port, which takes only requests (ignored)" in log, log
        await pilot.press("d")
        await pilot.pause()
        app.refresh_now()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DevicesScreen)
        row = tuple(str(cell) for cell in screen.query_one(DataTable).get_row("10.0.0.50"))
        assert row[2:] == ("nothere.bin ✘", "1"), row
        pane = plain(screen.query_one("#device-timeline"))
        assert "RRQ nothere.bin" in pane and "RRQ   refused" not in pane and pane.count("RRQ") == 1, pane
