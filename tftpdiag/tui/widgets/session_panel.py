"""Everything about one transfer on one screen: header, option negotiation, rate, packets, outcome.

The probe view, a server session's detail and a transfer from a trace all use this panel.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Static

from tftpdiag.findings import Finding
from tftpdiag.fmt import duration as fmt_duration
from tftpdiag.packetlog import PacketLog
from tftpdiag.protocol.events import Completed, Failed, Role
from tftpdiag.protocol.options import Verdict
from tftpdiag.protocol.packets import Options
from tftpdiag.report import explain_failure, unseen_options_text
from tftpdiag.sessions import SessionRecord, fmt_addr, fmt_bytes, fmt_rate
from tftpdiag.tui.model import Filter, SessionView, quoted, quoted_mode
from tftpdiag.tui.widgets.packet_list import HEADER, PacketList
from tftpdiag.tui.widgets.rate_graph import RateGraph

__all__ = ["SessionPanel", "state_text", "options_table"]

_STATE_STYLE = {
    "requesting": "yellow",
    "negotiating": "yellow",
    "transferring": "cyan",
    "done": "bold green",
    "failed": "bold red",
    "refused": "bold red",
}
_VERDICT_STYLE = {
    Verdict.ACCEPTED: "green",
    Verdict.REDUCED: "yellow",
    Verdict.IGNORED: "yellow",
    Verdict.REFUSED: "bold red",
    Verdict.DROPPED: "bold red",
}


_FINDING_STYLE = {"error": ("bold red", "✘"), "warning": ("yellow", "⚠"), "info": ("dim", "ℹ")}
_VERB = {Role.CLIENT_READ: "downloaded", Role.CLIENT_WRITE: "uploaded", Role.SERVER_READ: "sent",
         Role.SERVER_WRITE: "received", None: "transferred"}


def _findings_count(findings: Sequence[Finding]) -> str:
    """"3 findings (1 error, 2 warnings)": how many there are, so none hides below the fold."""
    if not findings:
        return "no findings"
    kinds: dict[str, int] = {}
    for finding in findings:
        kinds[finding.severity] = kinds.get(finding.severity, 0) + 1
    parts = ", ".join(f"{n} {kind}{'s' if n != 1 and kind != 'info' else ''}" for kind, n in kinds.items())
    return f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ({parts})"


def state_text(record: SessionRecord) -> Text:
    state = record.state
    return Text(f"● {state}", style=_STATE_STYLE.get(state, ""))


def options_table(record: SessionRecord, compact: bool = False) -> Table | Text:
    if record.role is None:
        return Text("waiting for the request…", style="dim")
    if record.joined:
        text = unseen_options_text(record)
        return Text(f"{text[:1].upper()}{text[1:]}.", style="dim")
    if not record.requested and record.retried is None:
        return Text("No options asked: plain RFC 1350, 512-byte blocks, one ACK per block.", style="dim")
    negotiated = record.negotiated
    if negotiated is None:
        return pending_options(record.requested, record.finished, compact)
    if compact:
        return _options_lines(record)
    table = _options_frame()
    for o in negotiated.outcomes:
        table.add_row(Text(o.name), Text(o.asked or "-"), Text(o.granted or "-"),
                      Text(o.verdict.value, style=_VERDICT_STYLE[o.verdict]), Text(o.meaning))
    return table


def pending_options(requested: Options, finished: bool = False, compact: bool = False) -> Table | Text:
    """The options asked, before the answer (or with none, ``finished``). Also what the probe's view
    shows before its transfer starts, from the request: the panel then has the rows it keeps."""
    if compact:
        tail = "not negotiated: the transfer ended first" if finished else "… pending"
        text = Text()
        for name, value in requested:
            text.append(f"{name:<11}{value} → {tail}\n", style="dim")
        text.rstrip()  # as many lines as the answer's, which take the same rows
        return text
    table = _options_frame()
    verdict, meaning = ("-", "not negotiated: the transfer ended first") if finished else \
        ("pending", "waiting for the answer")
    # Cells are Text, never plain strings: a table reads those as markup, and these came from a peer.
    for name, value in requested:
        table.add_row(Text(name), Text(value), "…" if not finished else "-", Text(verdict, style="dim"),
                      Text(meaning, style="dim"))
    return table


def _options_frame() -> Table:
    table = Table(box=None, padding=(0, 1), expand=True, show_edge=False)
    table.add_column("option", style="bold", no_wrap=True)
    table.add_column("asked", no_wrap=True)
    table.add_column("granted", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("what it means", ratio=1)
    return table


def _options_lines(record: SessionRecord) -> Text:
    """One line per option for narrow terminals: name, asked → granted, verdict: meaning."""
    text = Text()
    negotiated = record.negotiated
    assert negotiated is not None  # (pending_options draws the rest)
    for o in negotiated.outcomes:
        text.append(f"{o.name:<11}", style="bold")
        text.append(f"{o.asked or '-'} → {o.granted or '-'} ")
        text.append(o.verdict.value, style=_VERDICT_STYLE[o.verdict])
        text.append(f": {o.meaning}\n", style="dim")
    text.rstrip()
    return text


def _set_title(widget: Widget, name: str, title: str) -> None:
    """Set a border title only when it changes: setting one repaints the widget, and a tick sets each."""
    key = "_shown_" + name
    if getattr(widget, key, None) != title:
        setattr(widget, key, title)
        setattr(widget, name, title)


def _update(widget: Static, content: RenderableType, key: object, height: object = None) -> None:
    """``widget.update(content)`` unless ``key`` says it shows that already, and without the layout (a
    repaint of the whole screen) when ``height`` says it takes the same lines: each tick of a transfer
    changes the header's figures, seldom its height, and the outcome's words seldom at all."""
    if getattr(widget, "_shown_key", None) == key:
        # The same content, measured again (at its laid-out width, once there is one): what the next
        # content's height is compared with.
        widget._shown_height = height  # type: ignore[attr-defined]
        return
    same_height = height is not None and getattr(widget, "_shown_height", None) == height
    widget._shown_key = key  # type: ignore[attr-defined]
    widget._shown_height = height  # type: ignore[attr-defined]
    widget.update(content, layout=not same_height)


def _lines(text: Text, width: int) -> tuple[int, int]:
    """(lines ``text`` takes at ``width``, the width): a header that keeps it keeps its height."""
    width = max(width, 1)
    return sum(-(-max(len(part), 1) // width) for part in text.plain.split("\n")), width


def _height(lines: Sequence[Text], width: int) -> tuple[int, int]:
    """(lines these take at ``width``, the width)."""
    return sum(_lines(text, width)[0] for text in lines), width


class OptionsPanel(Widget):
    """Chooses the table or the one-line-per-option form from its own width at each render."""

    DEFAULT_CSS = """
    OptionsPanel { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.record: SessionRecord | None = None
        self.asked: Options = ()
        self._shown: tuple[object, ...] = ()

    def show_asked(self, asked: Options) -> None:
        """Before the transfer starts: the rows of the options it will ask, so that its first frames find
        the panel at the height they need."""
        self.asked = asked
        self.refresh(layout=True)

    def show(self, record: SessionRecord) -> None:
        # What options_table reads, compared first: a refresh with layout lays out and repaints the
        # whole screen (half a frame's CPU, measured), and during a transfer none of this changes.
        shown = (record, record.role, record.requested, record.retried, record.negotiated, record.finished)
        if len(shown) == len(self._shown) and all(a is b for a, b in zip(shown, self._shown, strict=True)):
            return
        self._shown = shown
        before = self._lines()
        self.record = record
        # New words in the rows it has (the answer to the options asked): a repaint of this panel alone.
        self.refresh(layout=self._lines() != before)

    def _lines(self) -> int:
        """The lines the panel's content takes at its width (as Textual's own measure for its height)."""
        width = self.content_size.width
        if width <= 0:
            return -1  # not laid out yet: a layout comes anyway
        console = self.app.console
        return len(console.render_lines(self.render(), console.options.update_width(width), pad=False))

    def render(self) -> Table | Text:
        compact = self.content_size.width < 86
        if self.record is None:
            return pending_options(self.asked, compact=compact) if self.asked else Text("")
        return options_table(self.record, compact=compact)


class SessionPanel(Vertical):
    DEFAULT_CSS = """
    SessionPanel { height: 1fr; }
    SessionPanel .session-header { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    SessionPanel .top { height: auto; }
    SessionPanel #options { width: 1fr; height: auto; min-height: 3; }
    SessionPanel #graph { width: 1fr; height: 8; }
    SessionPanel .packets { height: 1fr; min-height: 5; }
    SessionPanel .packet-header { height: 1; color: $text-muted; text-style: bold; }
    SessionPanel #find { height: 1; border: none; padding: 0 1; display: none; }
    SessionPanel #find.-shown { display: block; }
    SessionPanel #outcome { height: auto; max-height: 9; min-height: 3; padding: 0 1; border: round $primary-darken-1;
                            border-title-color: $text; }
    SessionPanel #outcome:focus-within { border: round $accent; }
    SessionPanel #summary { height: auto; }
    """

    def __init__(self, *, label: str = "", impair: str = "", asked: Options = (), id: str | None = None) -> None:
        super().__init__(id=id)
        self.asked = asked  # a probe's options, known before it starts: their rows are shown from the start
        self.label = label  # e.g. the target as the user typed it
        self.impair = impair  # the --impair spec in force, shown so nobody mistakes it for the network
        self.extra_summary: str = ""
        # Search of the packet table: the query, the log positions that match, and how far it has read.
        self.search: str = ""
        self._matches: array | None = None
        self._searched = 0
        self._search_log: PacketLog | None = None
        self._view: SessionView | None = None

    def on_mount(self) -> None:
        if self.asked:
            self.query_one(OptionsPanel).show_asked(self.asked)

    def compose(self) -> ComposeResult:
        yield Static(classes="session-header")
        with Horizontal(classes="top"):
            options = OptionsPanel(id="options", classes="panel")
            options.border_title = "Option negotiation"
            yield options
            graph = RateGraph(id="graph")
            graph.add_class("panel")
            graph.border_title = "Transfer rate"
            yield graph
        with Vertical(classes="panel packets") as packets:
            packets.border_title = "Packets"
            yield Static(HEADER, classes="packet-header")
            yield PacketList(id="packets")
            yield Input(placeholder="block number to jump to, or text to find (op, peer, note); esc: all rows",
                        id="find")
        with VerticalScroll(id="outcome"):
            yield Static(id="summary")

    # -- find: a block number to jump to, or text to keep only the rows that mention it --------------

    def open_find(self) -> None:
        field = self.query_one("#find", Input)
        field.add_class("-shown")
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "find":
            return
        event.stop()
        query = event.value.strip()
        field = event.input
        field.remove_class("-shown")
        packets = self.query_one(PacketList)
        packets.focus()
        view = self._view
        if view is None:
            return
        if query.isdigit():
            self.search = ""
            self._matches = None
            position = view.log.find_block(int(query))
            if position is None:
                self.app.notify(f"no DATA or ACK numbered {query} in this session", severity="warning")
                return
            self._refresh_packets()
            packets.show_position(position)
            return
        self.search = query
        self._matches, self._searched, self._search_log = None, 0, None
        packets.marked = None
        self._refresh_packets()
        if query:
            packets.scroll_home(animate=False)

    def on_key(self, event: events.Key) -> None:
        field = self.query_one("#find", Input)
        if event.key == "escape" and (field.has_focus or self.search):
            event.stop()
            field.remove_class("-shown")
            field.value = ""
            self.search, self._matches = "", None
            packets = self.query_one(PacketList)
            packets.marked = None
            packets.focus()
            self._refresh_packets()

    def _positions(self, view: SessionView, flt: Filter) -> array | None:
        if not self.search:
            return view.positions(flt)
        log = view.log
        if self._matches is None or self._search_log is not log:
            self._matches, self._searched, self._search_log = array("I"), 0, log
        if self._searched < len(log):  # only the packets that arrived since the last look
            self._matches.extend(log.search(self.search, self._searched))
            self._searched = len(log)
        return self._matches

    def _refresh_packets(self) -> None:
        if self._view is not None and hasattr(self, "_flt"):
            self._show_packets(self._view, self._flt, False)

    def _show_packets(self, view: SessionView, flt: Filter, paused: bool) -> None:
        log = view.log
        packets = self.query_one(".packets", Vertical)
        title = f"Packets · {flt.value}" if not self.search else f"Packets · find {self.search!r}"
        positions = self._positions(view, flt)
        count = len(log) if positions is None else len(positions)
        total = log.packets
        title += f" · {count:,} rows" if positions is not None or log.impaired else ""
        title += f" · {total:,} packet{'s' if total != 1 else ''}"
        if log.gaps:
            title += f" · the capture lacks {log.gaps:,} (GAP rows)"
        elif log.impaired:
            title += f" + {log.impaired:,} impair"
        if log.forgotten:
            title += f" · {log.forgotten:,} older packets forgotten to bound memory"
        if paused:
            title += " · PAUSED (p to resume)"
        _set_title(packets, "border_title", title)
        _set_title(packets, "border_subtitle", "/ find or block no. · home/end · pgup/pgdn")
        if not paused:
            self.query_one(PacketList).set_source(log, positions, view.started)

    def show(self, view: SessionView | None, now: float, flt: Filter, paused: bool,
             findings: Sequence[Finding] = ()) -> None:
        header = self.query_one(".session-header", Static)
        if view is None:
            if self.extra_summary:  # the transfer could not start: say why instead of waiting for ever
                text = Text(f" {self.label}  {self.extra_summary.strip()}", style="bold red")
            else:
                text = Text(f" {self.label}  waiting for the transfer to start…", style="dim")
            # With its height: the transfer's first frame, a header of as many lines, lays nothing out.
            _update(header, text, text, _lines(text, header.content_size.width))
            waiting = [Text("waiting…", style="dim")]
            summary = self.query_one("#summary", Static)
            _update(summary, Group(*waiting), waiting, _height(waiting, summary.content_size.width))
            return
        record = view.record
        if view is not self._view:
            self.search, self._matches = "", None
        self._view, self._flt = view, flt
        text = self._header(record, now, paused)
        _update(header, text, text, _lines(text, header.content_size.width))
        self.query_one(OptionsPanel).show(record)
        self.query_one(RateGraph).show(view, now)
        self._show_packets(view, flt, paused)
        lines = self._summary(record, findings)
        summary = self.query_one("#summary", Static)
        _update(summary, Group(*lines), lines, _height(lines, summary.content_size.width))
        outcome = self.query_one("#outcome")
        _set_title(outcome, "border_title", f"Outcome · {_findings_count(findings)}")
        self.call_after_refresh(self._scroll_hint)

    def _scroll_hint(self) -> None:
        # After the layout: only then is it known whether the outcome is taller than its box.
        outcome = self.query_one("#outcome")
        _set_title(outcome, "border_subtitle", "scrolls: tab here, ↑↓" if outcome.max_scroll_y > 0 else "")

    def _header(self, record: SessionRecord, now: float, paused: bool) -> Text:
        text = Text(" ")
        # A capture's transfer (observed) is no probe of ours, though its events read as the client's.
        if record.role is not None and record.role.is_client and not record.observed:
            verb = "probe" if record.role.is_download else "put"
            text.append(f"{verb} ", style="bold")
            text.append(f"{self.label or fmt_addr(record.peer)} ")
            if self.label and record.peer is not None and fmt_addr(record.peer) != self.label:
                text.append(f"({fmt_addr(record.peer)}) ", style="dim")
        else:
            text.append("session ", style="bold")
            text.append(f"{fmt_addr(record.client)} ")
        text.append(f"{quoted(record.filename)} ", style="bold")
        mode = quoted_mode(record.mode)  # said where it is not octet, as in every view (report.mode_text)
        text.append(f"{mode}  " if mode else " ", style="dim")
        text.append_text(state_text(record))
        elapsed = record.duration if record.finished else max(now - (record.started or now), 0.0)
        text.append(f"  {fmt_duration(elapsed, places=2)}", style="dim")
        if paused:
            text.append("  PAUSED", style="bold yellow")
        if self.impair:
            # A line of its own: appended to a long header it was cut down to a bare sign at 80 columns.
            text.append("\n")
            text.append(f" ⚠ impaired here by --impair {self.impair} (not the network) ", style="bold black on yellow")
        return text

    def _summary(self, record: SessionRecord, findings: Sequence[Finding] = ()) -> list[Text]:
        result = record.result
        lines: list[Text] = []
        if isinstance(result, Completed):
            stats = result.stats
            lines.append(Text.assemble(("✔ ", "bold green"), (f"{_VERB[record.role]} {fmt_bytes(stats.bytes)}", "bold"),
                                       f" in {fmt_duration(stats.duration)} = {fmt_rate(stats.rate_bps)} · "
                                       f"{stats.retransmits} retransmits, {stats.timeouts} timeouts, "
                                       f"{stats.duplicates} duplicates"))
        elif isinstance(result, Failed) or record.refused is not None:
            lines.append(Text.assemble(("✘ failed: ", "bold red"), explain_failure(record)))
            if record.bytes:
                lines.append(Text(f"  {fmt_bytes(record.bytes)} had arrived before it ended", style="dim"))
        else:
            lines.append(Text(f"{record.state}…", style="dim"))
        if record.replied_from is not None and record.peer is not None and record.replied_from[0] != record.peer[0]:
            lines.append(Text(f"  reply came from {fmt_addr(record.replied_from)}, not from {fmt_addr(record.peer)} "
                              "where the request went", style="yellow"))
        if self.extra_summary:
            lines.append(Text(self.extra_summary))
        for finding in findings:
            style, icon = _FINDING_STYLE.get(finding.severity, ("", "-"))
            line = Text.assemble((f"{icon} ", style), (finding.summary, style))
            if finding.suggestion and finding.severity != "info":
                line.append(f"  → {finding.suggestion}", style="dim")
            lines.append(line)
        return lines
