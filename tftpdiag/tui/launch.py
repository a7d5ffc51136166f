"""Starts the TUI for each command: wires the engine, a trace spool for the save key, and the app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tftpdiag.engine.apart import RemoteTransfer
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientOutcome, ClientTransfer, TransferSetupError
from tftpdiag.engine.server import TftpServer

if TYPE_CHECKING:  # only `watch` needs the capture (and libpcap)
    from tftpdiag.engine.watch import Watcher
    from tftpdiag.headless import Serving
from tftpdiag.fmt import address, clean, line
from tftpdiag.protocol.events import Event, TransferStarted
from tftpdiag.protocol.packets import Options
from tftpdiag.report import file_size_text
from tftpdiag.sessions import fmt_addr
from tftpdiag.trace.spool import Spool
from tftpdiag.tui.app import RecordedFeed, TftpDiagApp
from tftpdiag.tui.widgets.serve_view import ServerInfo

__all__ = ["run_client_app", "run_server_app", "run_demo_app", "run_trace_app", "run_watch_app", "trace_app",
           "watch_app", "ClientProbe", "server_info"]


class ClientProbe:
    """The probe the app shows, and a way to run it again on the same bus. Started with :meth:`start`
    once every reader has subscribed: a transfer started earlier can publish its first events (the
    request, even all of it) before a reader exists, and that reader would judge it without them."""

    def __init__(self, transfer: ClientTransfer | RemoteTransfer, bus: EventBus,
                 extra: Callable[[ClientOutcome], dict[str, Any]]) -> None:
        self.bus = bus
        self.extra = extra
        self.transfer = transfer
        self.started = False

    def prepare(self) -> None:
        """Get a transfer run apart ready (its process spawned) without starting it."""
        if isinstance(self.transfer, RemoteTransfer):
            self.transfer.prepare()

    def start(self) -> None:
        """Start the transfer; once only (the app starts it once its screen has settled; a caller may have)."""
        if not self.started:
            self.started = True
            self.transfer.start()

    def current_session(self) -> int | None:
        return self.transfer.session_id

    def rerun(self) -> None:
        self.cancel()
        try:
            fresh = ClientTransfer(self.transfer.request, self.bus)
        except TransferSetupError:
            return
        self.transfer = (RemoteTransfer(fresh) if isinstance(self.transfer, RemoteTransfer) else fresh).start()
        self.started = True

    def cancel(self, reason: str = "cancelled by the user") -> None:
        self.transfer.cancel(reason)
        self.transfer.join(3)

    def outcome(self) -> ClientOutcome | None:
        return self.transfer.wait(0)

    def summary_line(self) -> str:
        outcome = self.outcome()
        if outcome is None:
            problem = getattr(self.transfer, "setup_error", None)
            if problem:  # the transfer's process could not run it: its last line says why
                return "✘ " + clean(problem.strip().splitlines()[-1])
            return ""
        extra = self.extra(outcome)
        parts = []
        if outcome.ok:
            sizes = file_size_text(outcome.file_bytes, outcome.result.stats.bytes)
            if sizes:
                parts.append(sizes)
            parts.append(f"sha256 {outcome.sha256}")
        if extra.get("failure"):
            parts.append(f"✘ {extra['failure']}")
        elif extra.get("sha256_match"):
            parts.append("matches --expect-sha256")
        if outcome.output:
            parts.append(f"saved to {outcome.output}")
        return "  " + " · ".join(parts) if parts else ""

    def exit_code(self) -> int:
        outcome = self.outcome()
        if outcome is None or not outcome.ok:
            return 1
        return 1 if self.extra(outcome).get("failure") else 0


def server_info(server: TftpServer) -> ServerInfo:
    cfg = server.config
    extra = []
    if cfg.single_port:
        extra.append("single-port")
    if cfg.policy.refuse:
        extra.append("refusing " + ", ".join(sorted(cfg.policy.refuse)))
    return ServerInfo(clean(str(server.root)), ", ".join(fmt_addr(a) for a in server.addresses), cfg.allow_upload,
                      " · ".join(extra), impair=str(cfg.impair) if cfg.impair is not None else "")


def _label(transfer: ClientTransfer) -> str:
    req = transfer.request
    return address((req.host, req.port))


def _asked(transfer: ClientTransfer) -> Options:
    """The options the probe's request will carry, as the machine encodes them (RequestedOptions.to_wire),
    so that the view has their rows before the transfer starts (see SessionPanel: no layout then)."""
    req = transfer.request
    size = None
    if req.source is not None:
        try:
            size = req.source.stat().st_size
        except OSError:
            pass
    return req.options.to_wire(size)


def _run(app: TftpDiagApp) -> int | None:
    # The CLI has already shortened the GIL switch interval, so engine threads are not starved by the UI.
    return app.run()


def client_app(transfer: ClientTransfer, bus: EventBus, *, extra: Callable[[ClientOutcome], dict[str, Any]],
               apart: bool = True) -> tuple[TftpDiagApp, ClientProbe, Spool]:
    """The probe's app with every reader subscribed, and the probe made ready: the app starts it once
    its screen has settled (see TftpDiagApp._start_when_settled)."""
    # Lossless: every packet goes into the session's record (the packet table shows them all), and the
    # findings read the same events.
    feed = bus.subscribe()
    spool = Spool(bus)
    # The transfer runs in a process of its own: the view's work per packet would otherwise hold the
    # interpreter lock its thread needs (see engine/apart.py for the figures).
    probe = ClientProbe(RemoteTransfer(transfer) if apart else transfer, bus, extra)
    impair = transfer.request.impair
    app = TftpDiagApp(mode="probe", feed=feed, label=_label(transfer), probe=probe, saver=spool.save,
                      impair=str(impair) if impair is not None else "", asked=_asked(transfer))
    probe.prepare()
    return app, probe, spool


def run_client_app(transfer: ClientTransfer, bus: EventBus, *, extra: Callable[[ClientOutcome], dict[str, Any]]) -> int:
    app, probe, spool = client_app(transfer, bus, extra=extra)
    reason = "cancelled by the user"
    try:
        code = _run(app)
    except KeyboardInterrupt as exc:  # SIGTERM or SIGHUP (cli.values.Terminated): the peer hears which
        reason = getattr(exc, "reason", reason)
        raise
    finally:
        probe.cancel(reason)
        spool.close()
    return code if code is not None else probe.exit_code()


def run_server_app(server: TftpServer, bus: EventBus) -> int:
    feed = bus.subscribe()  # lossless, as for the probe
    spool = Spool(bus)
    # Every reader subscribes before the first request can arrive.
    app = TftpDiagApp(mode="serve", feed=feed, server=server_info(server), saver=spool.save)
    return _run_beside(app, server, spool, "tftp-server")


def _run_beside(app: TftpDiagApp, engine: Serving, spool: Spool, name: str) -> int:
    """The app, with the engine (a server or a watcher) serving on its own thread until the app ends."""
    thread = threading.Thread(target=engine.serve, name=name, daemon=True)
    thread.start()
    try:
        _run(app)
    finally:
        engine.stop()
        thread.join(10)
        spool.close()
    return 0


def watch_app(watcher: Watcher, bus: EventBus) -> tuple[TftpDiagApp, Spool]:
    """The watch view: the sessions of a live capture, as `serve` shows its own."""
    from tftpdiag.watching import capture_words

    feed = bus.subscribe()  # lossless, as for serve
    spool = Spool(bus)
    cfg = watcher.config
    where = "server ports " + ", ".join(str(p) for p in cfg.ports)
    if cfg.hosts:
        where += " · hosts " + ", ".join(cfg.hosts)
    info = ServerInfo(clean(cfg.interface), where, False, kind="watch",
                      capture=lambda: capture_words(watcher.stats(), watcher.capture.packets))
    app = TftpDiagApp(mode="watch", feed=feed, server=info, saver=spool.save)
    app.device_quiet = cfg.idle
    app.device_macs = watcher.capture.macs
    return app, spool


def run_watch_app(watcher: Watcher, bus: EventBus) -> int:
    app, spool = watch_app(watcher, bus)
    return _run_beside(app, watcher, spool, "tftp-watch")


def demo_app(server: TftpServer, transfer: ClientTransfer, bus: EventBus) -> tuple[TftpDiagApp, ClientProbe, Spool]:
    """The demo's app with every reader subscribed; the caller starts the server, the app its probe."""
    feed = bus.subscribe()  # lossless, as for the probe
    # The demo's server sees every datagram its probe sees; the spool keeps the probe's view.
    spool = Spool(bus, only=lambda session: not server.owns(session))
    probe = ClientProbe(transfer, bus, lambda outcome: {})
    app = TftpDiagApp(mode="demo", feed=feed, label=_label(transfer), server=server_info(server), probe=probe,
                      saver=spool.save, asked=_asked(transfer))
    return app, probe, spool


def run_demo_app(server: TftpServer, transfer: ClientTransfer, bus: EventBus) -> int:
    app, probe, spool = demo_app(server, transfer, bus)
    thread = threading.Thread(target=server.serve, name="tftp-server", daemon=True)
    thread.start()
    try:
        code = _run(app)  # which starts the probe once its screen has settled
    finally:
        probe.cancel()
        server.stop()
        thread.join(10)
        spool.close()
    return code if code is not None else probe.exit_code()


def trace_app(path: Path, events: list[Event], warning: str | None) -> TftpDiagApp:
    """The app that shows a saved trace or capture: its transfers, then each in detail."""
    transfers = len({e.session for e in events if isinstance(e, TransferStarted)})
    summary = f"{transfers} transfer{'s' if transfers != 1 else ''}"
    if warning:
        summary += f" · ⚠ {warning}"
    end = max((e.time for e in events), default=0.0)
    # The path and the damage described come from the user and the file: shown escaped.
    info = ServerInfo(clean(str(path)), line(summary), False, kind="trace")
    return TftpDiagApp(mode="trace", feed=RecordedFeed(events), server=info, clock=lambda: end, tick=None)


def run_trace_app(path: Path, events: list[Event], warning: str | None) -> int:
    """A saved trace or capture in the same views as a live server."""
    trace_app(path, events, warning).run()
    return 0
