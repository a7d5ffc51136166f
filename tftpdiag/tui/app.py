"""The Textual app. It never touches sockets and never handles events one by one as they happen: a
timer drains the feed in batches, folds them into the model and redraws inside one batch update."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from textual import work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane

from tftpdiag.findings import Analyzer
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.packets import Options
from tftpdiag.tui.model import Changes, Filter, LiveModel
from tftpdiag.tui.screens.detail import SessionDetailScreen
from tftpdiag.tui.screens.devices import DevicesScreen
from tftpdiag.tui.screens.help import HelpScreen
from tftpdiag.tui.screens.save import SaveTraceScreen, save_and_tell
from tftpdiag.tui.ticked import TickedApp
from tftpdiag.tui.widgets.serve_view import ServerInfo, ServeView
from tftpdiag.tui.widgets.session_list import SessionList
from tftpdiag.tui.widgets.session_panel import SessionPanel

__all__ = ["TftpDiagApp", "Feed", "RecordedFeed", "ProbeControl", "Mode"]

Mode = Literal["probe", "serve", "demo", "trace", "watch"]
TICK = 1 / 15  # redraws a second, at most
# The view's share of its thread's CPU, at most: a tick that (with the frame Textual composed after the
# last one) took 30 ms of CPU waits 300 ms before the next. A 200x55 view of a fast transfer took 30 ms
# a frame here, so at 15 frames a second it kept nearly half a core busy: taken from the transfer it
# shows (a lock-step pair needs both cores of a 2-core machine, and on one the view shares its
# transfer's CPU: engine/apart.py) or from the engine's interpreter (serve). Frames slow down where
# they are dear, on a slow or busy machine, and only there. A quarter, as this was, left a lock-step
# download in the view 1.39x its headless time; a tenth, 1.15x (9 interleaved rounds, 32 MiB). A tenth
# still cost a long transfer more than that: 256 MiB in the view, 1.23x its headless time lock-step and
# 1.24x windowed (medians of 10 and 15 interleaved rounds, each against its own server); a twentieth,
# 1.17x and 1.13x. A frame at 200x55 then took some 20 ms (Textual's composing most of it; the fold of
# the tick's packets 4-5 ms), so a view of a transfer that fast redraws two or three times a second.
DUTY = 0.05
SLOWEST_TICK = 1.0  # but a live view moves at least once a second
# The probe starts once the screen has settled (see TftpDiagApp._start_when_settled): looked at every
# SETTLE_STEP seconds, started after SETTLE_AT_MOST whatever the view is doing.
SETTLE_STEP = 0.02
SETTLE_AT_MOST = 0.5
# Events folded per tick at most; the rest wait for the next tick (the bus never makes the engine wait).
# The fold costs a few microseconds an event, so this bounds a tick's fold to a few tens of ms.
MAX_EVENTS_PER_TICK = 20000


class Feed(Protocol):
    def drain(self, limit: int | None = None) -> list[Event]: ...


class RecordedFeed:
    """Events recorded earlier (tests, screenshots, a trace file), handed over in one batch."""

    def __init__(self, events: list[Event]) -> None:
        self._events = list(events)

    def drain(self, limit: int | None = None) -> list[Event]:
        events, self._events = self._events, []
        return events


class ProbeControl(Protocol):
    """What the app may ask of the probe it shows."""

    def start(self) -> None: ...
    def current_session(self) -> int | None: ...
    def rerun(self) -> None: ...
    def cancel(self) -> None: ...
    def summary_line(self) -> str: ...
    def exit_code(self) -> int: ...


def drawable(app: App[Any]) -> bool:
    """False once the app is shutting down: its timer can still fire while the widgets are removed."""
    try:
        return app.is_running and app.screen.is_attached  # is_attached is False once exit() was called
    except ScreenStackError:
        return False


class TftpDiagApp(TickedApp):
    TITLE = "tftpdiag"
    # The palette's footer entry took the room of "? Help" at 80 columns, and it offers nothing the
    # keys do not.
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    CSS = """
    .panel { border: round $primary-darken-1; border-title-color: $text; padding: 0 1; }
    .panel:focus-within { border: round $accent; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; }
    /* Narrow terminals stack the option panel above the rate graph. */
    Screen.-narrow SessionPanel .top { layout: vertical; }
    Screen.-narrow SessionPanel #options { width: 100%; }
    Screen.-narrow SessionPanel #graph { width: 100%; height: 6; }
    /* 24 lines: a one-row graph and a short outcome box (its title counts the findings, and it
       scrolls), so the packet table keeps a few rows. */
    Screen.-short SessionPanel #graph { height: 5; }
    Screen.-short SessionPanel #outcome { max-height: 5; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("s", "save", "Save trace"),
        Binding("p", "pause", "Pause"),
        Binding("f", "filter", "Filter"),
        Binding("slash", "find", "Find", key_display="/"),
        Binding("o", "order", "Order", show=False),
        Binding("r", "rerun", "Run again", show=True),
        Binding("d", "devices", "Devices"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, *, mode: Mode, feed: Feed, label: str = "", server: ServerInfo | None = None,
                 probe: ProbeControl | None = None, saver: Callable[[Path], str] | None = None,
                 clock: Callable[[], float] = time.time, tick: float | None = TICK, impair: str = "",
                 findings_feed: Feed | None = None, cpu_clock: Callable[[], float] = time.thread_time,
                 asked: Options = ()) -> None:
        super().__init__()
        self.impair = impair
        self.asked = asked  # the probe's options, known before it starts (SessionPanel shows their rows)
        # Findings need every event; the main feed may be sampled, so a lossless one can be given for
        # them (without one, they read the same events as the views: right for a recorded stream).
        self.findings_feed = findings_feed
        self.analyzer = Analyzer()
        self.mode = mode
        self.feed = feed
        self.label = label
        self.server_info = server
        self.probe = probe
        self.saver = saver
        self.clock = clock
        self.tick_interval = tick
        self.model = LiveModel()
        self.model.every_role = mode in ("trace", "watch")  # a capture's sessions, none of them ours
        self.packet_filter = Filter.ALL
        self.paused = False
        self.ticks = 0
        self.longest_tick = 0.0
        self.next_tick = tick  # seconds to the next tick (longer when frames cost much: see DUTY)
        self.cpu_clock = cpu_clock  # this thread's CPU time (see DUTY)
        self._cpu_mark = 0.0  # cpu_clock() at the last tick
        self._settling = (0.0, 0.0)  # (cpu_clock() when last looked, when to start regardless): see on_mount
        self.device_quiet = 30.0  # seconds of silence after which a device has finished (watch: --idle)
        self.device_macs: dict[str, str] | None = None  # watch: client address -> MAC, from the capture

    # -- layout -----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.mode == "probe":
            yield SessionPanel(label=self.label, impair=self.impair, asked=self.asked, id="probe")
        elif self.mode == "demo":
            assert self.server_info is not None
            with TabbedContent(initial="probe-tab"):
                with TabPane("Probe (client)", id="probe-tab"):
                    yield SessionPanel(label=self.label, asked=self.asked, id="probe")
                with TabPane("Server", id="serve-tab"):
                    yield ServeView(self.server_info, id="serve")
        else:
            assert self.server_info is not None
            yield ServeView(self.server_info, id="serve")
        yield Footer()

    def on_mount(self) -> None:
        # Everything built so far (Textual's DOM, styles, the engine) lives as long as the app. Frozen,
        # the cyclic garbage collector stops walking it on every full pass: at tens of thousands of
        # events a second those passes otherwise stall a redraw for a tenth of a second.
        gc.collect()
        gc.freeze()
        self.sub_title = self.mode
        self._cpu_mark = self.cpu_clock()
        if self.tick_interval:
            self.set_timer(self.tick_interval, self._tick)
        self.refresh_now()
        if self.mode in ("serve", "trace", "watch"):
            self.query_one(SessionList).focus()
        if self.probe is not None:
            self._settling = (self.cpu_clock(), time.monotonic() + SETTLE_AT_MOST)
            self.set_timer(SETTLE_STEP, self._start_when_settled)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "serve-tab":
            self.query_one(SessionList).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause", "filter", "find", "order") and self.screen is not self.default_screen:
            # These act on the main screen's views: under another screen (the devices) they changed a view
            # out of sight. A screen with keys of its own (a session's detail) binds them itself.
            return False
        if action == "rerun":
            return self.probe is not None
        if action == "save":
            return self.saver is not None
        if action == "order":
            return self._serve_focused() is not None
        if action == "devices":
            return self.mode in ("serve", "trace", "watch", "demo")
        return True

    # -- the tick ---------------------------------------------------------------------------------

    def _start_when_settled(self) -> None:
        """Start the probe once this thread has drawn the screen and gone quiet (it used at most a
        tenth of the last SETTLE_STEP), or after SETTLE_AT_MOST whatever it does.

        Why: mounting, laying out and drawing the first screens takes a few hundred ms of this thread's
        CPU, on the CPU the view shares with its transfer (engine/apart.py). Started at mount, a
        lock-step download in the view took 0.3 s longer than headless; started after the first
        refresh, the passes that drew it still took 40-70 ms of a 0.3 s windowed transfer (measured:
        the view's CPU in the transfer's time), and 10 ms once the screen had settled."""
        if self.probe is None or not drawable(self):
            return
        mark, deadline = self._settling
        cpu = self.cpu_clock()
        self._settling = (cpu, deadline)
        if cpu - mark <= SETTLE_STEP / 10 or time.monotonic() >= deadline:
            self.probe.start()
        else:
            self.set_timer(SETTLE_STEP, self._start_when_settled)

    def _tick(self) -> None:
        """Redraw, then wait for the next tick at least TICK (at most SLOWEST_TICK), and long enough
        that this thread's CPU since the last tick (what this one did and the frame composed after the
        last) is at most DUTY of the time (see DUTY)."""
        assert self.tick_interval is not None
        self.refresh_now()
        cpu = self.cpu_clock()
        used, self._cpu_mark = cpu - self._cpu_mark, cpu
        self.next_tick = min(max(self.tick_interval, used / DUTY), SLOWEST_TICK)
        self.set_timer(self.next_tick, self._tick)

    def refresh_now(self) -> None:
        """Drain what the feed holds and redraw what changed (the timer calls this)."""
        if not drawable(self):
            return
        started = time.perf_counter()
        events = self.feed.drain(MAX_EVENTS_PER_TICK)
        changes = self.model.apply(events) if events else Changes()
        if len(events) >= 50_000:
            # A trace opened whole (or a large backlog): its records live as long as the app. Frozen,
            # a full pass of the collector no longer walks 100,000 sessions in the middle of a redraw.
            gc.freeze()
        now = self.clock()
        self.analyzer.feed(self.findings_feed.drain() if self.findings_feed is not None else events)
        self.analyzer.tick(now)
        with self.batch_update():
            self._update_views(changes, now)
        self.ticks += 1
        self.longest_tick = max(self.longest_tick, time.perf_counter() - started)

    def _probe_session(self) -> int | None:
        if self.probe is not None:
            return self.probe.current_session()
        for view in reversed(self.model.views.values()):  # the newest client session
            if view.record.role is not None and view.record.role.is_client:
                return view.record.session
        return None

    def _update_views(self, changes: Changes, now: float) -> None:
        screen = self.screen
        if isinstance(screen, DevicesScreen):
            screen.update_view(self.model, now)
        elif isinstance(screen, SessionDetailScreen):
            screen.update_view(self.model, now, self.analyzer)
        # The views underneath keep up whatever screen is on top: a tick's changes (its refusals, endings
        # and new sessions) are handed over once, so a view that skipped them would never show them.
        for panel in self.query("#probe").results(SessionPanel):
            sid = self._probe_session()
            if self.probe is not None:
                panel.extra_summary = self.probe.summary_line()
            panel.show(self.model.view(sid) if sid is not None else None, now, self.packet_filter, self.paused,
                       self.analyzer.findings(sid) if sid is not None else [])
        for serve in self.query("#serve").results(ServeView):
            serve.update_view(self.model, changes, now, self.analyzer)

    # -- actions ----------------------------------------------------------------------------------

    def _serve_focused(self) -> ServeView | None:
        if self.mode in ("serve", "trace", "watch"):
            return self.query_one(ServeView)
        if self.mode == "demo" and self.query_one(TabbedContent).active == "serve-tab":
            return self.query_one(ServeView)
        return None

    def action_pause(self) -> None:
        serve = self._serve_focused()
        if serve is not None:
            serve.paused = not serve.paused
        else:
            self.paused = not self.paused
        self.refresh_now()

    def action_filter(self) -> None:
        serve = self._serve_focused()
        if serve is not None:
            serve.cycle_filter(self.model, self.clock())
        else:
            self.packet_filter = self.packet_filter.next()
        self.refresh_now()

    def action_find(self) -> None:
        serve = self._serve_focused()
        if serve is not None:
            serve.open_find()
        else:
            self.query_one("#probe", SessionPanel).open_find()

    def action_order(self) -> None:
        serve = self._serve_focused()
        if serve is not None:
            serve.cycle_sort(self.model, self.clock())

    def action_devices(self) -> None:
        if not isinstance(self.screen, DevicesScreen):
            self.push_screen(DevicesScreen(self.device_quiet, ended=self.mode == "trace"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_rerun(self) -> None:
        if self.probe is not None:
            self.probe.rerun()
            self.notify("probing again")
            self.refresh_now()

    def on_session_list_selected(self, event: SessionList.Selected) -> None:
        self.push_screen(SessionDetailScreen(event.session))

    def action_save(self) -> None:
        if self.saver is None:
            return
        default = datetime.now().strftime("tftpdiag-%Y%m%d-%H%M%S.pcap")

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._save(path)

        self.push_screen(SaveTraceScreen(default), chosen)

    @work(thread=True, exclusive=True, group="save")
    def _save(self, path: Path) -> None:
        assert self.saver is not None
        save_and_tell(self, self.saver, path)

    async def action_quit(self) -> None:
        if self.probe is not None:
            self.probe.cancel()
        self.exit(self.probe.exit_code() if self.probe is not None else 0)
