"""The option sweep: short probes of one file with different option sets, to learn what a server
supports and which settings are fastest without loss on this path.

Each probe is an ordinary :class:`ClientTransfer` (download, nothing kept: ``output=None``), watched
from the calling thread: its events feed a findings :class:`Analyzer`, and it is stopped early at the
first block past ``max_bytes`` (2 MiB by default; its machine checks as each block arrives) or once it
has run for ``probe_deadline`` seconds. A large file is never
read whole: 2 MiB take long enough (thousands of blocks, a few dozen windows) to measure the rate and
to show loss, and stopping is cheap (our side sends ERROR 0, "cancelled", which every server handles).
Such a probe is "capped": it counts as a success for what the server granted and for the rate.

Probes, in order: no options; blksize 512, 1468, 8192, 65464; windowsize 4, 16, 64 (with blksize
1468); tsize; timeout; netascii. Larger block sizes are skipped once one was lost on the path, and
windowsize 16 and 64 once the server did not grant 4. The sweep stops at once when the first probe
fails hard (no reply, nothing listening, no such file, access refused), or when the server stops being
reachable (ICMP) later; the report says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import TYPE_CHECKING, Any

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.findings import Analyzer, Finding
from tftpdiag.findings.model import fmt_bytes, fmt_rate
from tftpdiag.fmt import clean
from tftpdiag.protocol.events import Failed, OptionsNegotiated, Reason, RequestRetried
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing
from tftpdiag.records import record
from tftpdiag.report import SCHEMA, rates

if TYPE_CHECKING:  # rich is imported when a table is drawn, not for a JSON sweep
    from rich.table import Table

__all__ = [
    "DEFAULT_PROBES",
    "DEFAULT_TIMING",
    "ProbeResult",
    "ProbeSpec",
    "SweepReport",
    "render_table",
    "render_text",
    "run_sweep",
]

MAX_BYTES = 2 << 20
PROBE_DEADLINE = 10.0
DEFAULT_TIMING = Timing(initial_timeout=0.5, retries=3, max_timeout=2.0, dally=0.1)
_POLL = 0.005

# A probe with one of these (warning or worse) is not "safe": the path or the server loses packets.
LOSS_IDS = frozenset({"packet-loss", "large-block-loss", "sorcerers-apprentice", "stalled", "duplicates"})
# On the first probe these end the sweep: nothing else can work.
HARD_IDS = ("port-unreachable", "host-unreachable", "no-reply", "file-not-found", "access-violation")
# On a later probe only these do: the server went away.
GONE_IDS = ("port-unreachable", "host-unreachable")


@record
class ProbeSpec:
    """One probe of a sweep: a name and the options it asks for."""

    name: str
    options: RequestedOptions = field(default_factory=RequestedOptions)
    mode: str = "octet"
    group: str = "base"  # base, blksize, windowsize, tsize, timeout, netascii


DEFAULT_PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("no options"),
    ProbeSpec("blksize 512", RequestedOptions(blksize=512), group="blksize"),
    ProbeSpec("blksize 1468", RequestedOptions(blksize=1468), group="blksize"),
    ProbeSpec("blksize 8192", RequestedOptions(blksize=8192), group="blksize"),
    ProbeSpec("blksize 65464", RequestedOptions(blksize=65464), group="blksize"),
    ProbeSpec("windowsize 4", RequestedOptions(blksize=1468, windowsize=4), group="windowsize"),
    ProbeSpec("windowsize 16", RequestedOptions(blksize=1468, windowsize=16), group="windowsize"),
    ProbeSpec("windowsize 64", RequestedOptions(blksize=1468, windowsize=64), group="windowsize"),
    ProbeSpec("tsize", RequestedOptions(tsize=True), group="tsize"),
    ProbeSpec("timeout", RequestedOptions(timeout=1), group="timeout"),
    ProbeSpec("netascii", mode="netascii", group="netascii"),
)


@dataclass
class ProbeResult:
    """How one probe of a sweep went."""

    spec: ProbeSpec
    outcome: str  # completed, capped (stopped once it had moved enough), failed, skipped
    message: str = ""
    session: int | None = None
    requested: dict[str, str] = field(default_factory=dict)
    granted: dict[str, str] | None = None  # the OACK; None when the server sent none
    verdicts: dict[str, str] = field(default_factory=dict)
    blksize: int = 512
    windowsize: int = 1
    tsize: int | None = None
    bytes: int = 0
    duration: float = 0.0
    error_code: int | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ok(self) -> bool:
        return self.outcome in ("completed", "capped")

    @property
    def rate_bps(self) -> float:
        return self.bytes / self.duration if self.duration > 0 else 0.0

    @property
    def lossy(self) -> bool:
        return any(f.id in LOSS_IDS and f.rank >= 1 for f in self.findings)

    @property
    def safe(self) -> bool:
        return self.ok and not self.lossy

    def granted_value(self, name: str) -> int | None:
        value = (self.granted or {}).get(name)
        return int(value) if value is not None and value.isdigit() else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.name,
            "group": self.spec.group,
            "mode": self.spec.mode,
            "requested": self.requested,
            "granted": self.granted,
            "verdicts": self.verdicts,
            "effective": {"blksize": self.blksize, "windowsize": self.windowsize, "tsize": self.tsize},
            "outcome": self.outcome,
            "message": self.message,
            "session": self.session,
            "error_code": self.error_code,
            "bytes": self.bytes,
            "duration_s": round(self.duration, 6),
            **rates(self.rate_bps),
            "safe": self.safe,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class SweepReport:
    """A sweep's results, probe by probe."""

    host: str
    port: int
    filename: str
    max_bytes: int
    results: list[ProbeResult] = field(default_factory=list)
    stopped: str | None = None  # why the sweep ended early

    def result(self, name: str) -> ProbeResult | None:
        for r in self.results:
            if r.name == name:
                return r
        return None

    @property
    def ran(self) -> list[ProbeResult]:
        return [r for r in self.results if r.outcome != "skipped"]

    @property
    def file_size(self) -> int | None:
        for r in self.results:
            if r.tsize is not None:
                return r.tsize
        complete = [r.bytes for r in self.results if r.outcome == "completed" and r.spec.mode == "octet"]
        return complete[0] if complete else None

    @property
    def supports(self) -> dict[str, Any]:
        """What the server granted, per option: the largest value (blksize, windowsize) or True, False when
        it was asked and not granted, None when no probe found out."""
        ran = self.ran
        out: dict[str, Any] = {"options": any(r.granted is not None for r in ran) if ran else None}
        for name in ("blksize", "windowsize", "tsize", "timeout"):
            answered = [r for r in ran if name in r.requested and (r.ok or r.granted is not None)]
            values = [v for v in (r.granted_value(name) for r in answered) if v is not None]
            if not answered:
                out[name] = None
            elif name in ("blksize", "windowsize"):
                out[name] = max(values) if values else False
            else:
                out[name] = bool(values)
        netascii = [r for r in ran if r.spec.mode == "netascii"]
        out["netascii"] = any(r.ok for r in netascii) if netascii else None
        return out

    @property
    def fastest(self) -> ProbeResult | None:
        """The fastest probe that moved data without loss."""
        safe = [r for r in self.ran if r.safe and r.spec.mode == "octet" and r.bytes > 0]
        return max(safe, key=lambda r: r.rate_bps) if safe else None

    @property
    def recommended(self) -> dict[str, int] | None:
        """The largest blksize and windowsize granted in probes that ran without loss."""
        safe = [r for r in self.ran if r.safe and r.spec.mode == "octet"]
        if not safe:
            return None
        blk = [v for v in (r.granted_value("blksize") for r in safe) if v]
        win = [(ws, r.granted_value("blksize") or r.blksize) for r in safe if (ws := r.granted_value("windowsize"))]
        out = {"blksize": max(blk) if blk else 512, "windowsize": 1}
        if win:
            ws, with_blk = max(win)
            out["windowsize"] = ws
            out["windowsize_blksize"] = with_blk
        return out

    def to_dict(self) -> dict[str, Any]:
        fastest = self.fastest
        return {
            "schema": SCHEMA,
            "host": self.host,
            "port": self.port,
            "file": self.filename,
            "file_size": self.file_size,
            "max_bytes": self.max_bytes,
            "stopped": self.stopped,
            "supports": self.supports,
            "recommended": self.recommended,
            "fastest": None if fastest is None else {"probe": fastest.name, **rates(fastest.rate_bps),
                                                     "blksize": fastest.blksize,
                                                     "windowsize": fastest.windowsize},
            "probes": [r.to_dict() for r in self.results],
        }


def run_sweep(
    host: str,
    port: int,
    filename: str,
    *,
    family: int = 0,
    timing: Timing | None = None,
    probes: Sequence[ProbeSpec] = DEFAULT_PROBES,
    max_bytes: int = MAX_BYTES,
    probe_deadline: float = PROBE_DEADLINE,
    bus: EventBus | None = None,
    on_result: Callable[[ProbeResult], None] | None = None,
    on_start: Callable[[ProbeSpec, int], None] | None = None,
    cancel: threading.Event | None = None,
    analyzer: Analyzer | None = None,
) -> SweepReport:
    """Run the probes one after another against ``host:port`` for ``filename``; see the module doc.

    ``bus``: publish the probes' events there (a live view); ``on_start(spec, session)`` and
    ``on_result(result)`` are called from this thread as each probe starts and ends; ``cancel`` stops
    the sweep (the running probe is cancelled). Raises TransferSetupError for a host that does not
    resolve.
    """
    timing = timing or DEFAULT_TIMING
    bus = bus or EventBus()
    analyzer = analyzer or Analyzer(stall_after=max(2.0, timing.initial_timeout * 4))
    sub = bus.subscribe()
    report = SweepReport(host, port, filename, max_bytes)
    skip: dict[str, str] = {}
    transfers: list[ClientTransfer] = []
    try:
        for index, spec in enumerate(probes):
            if cancel is not None and cancel.is_set():
                report.stopped = "cancelled"
                break
            reason = _skip_reason(spec, skip)
            if reason is not None:
                result = ProbeResult(spec, "skipped", reason, requested=dict(spec.options.to_wire()))
            else:
                request = ClientRequest(host=host, filename=filename, port=port, mode=spec.mode,
                                        options=spec.options, timing=timing, family=family, output=None,
                                        deadline=probe_deadline, enough=max_bytes)
                transfer = ClientTransfer(request, bus)
                transfers.append(transfer)
                if on_start is not None:
                    on_start(spec, transfer.session_id)
                result = _run_probe(spec, transfer, sub, analyzer, max_bytes, cancel)
            report.results.append(result)
            if on_result is not None:
                on_result(result)
            stop = _hard_failure(result, first=index == 0)
            if stop is not None:
                report.stopped = stop
                break
            _learn(result, skip)
    finally:
        for transfer in transfers:
            if transfer.wait(0) is None:
                transfer.cancel()
            transfer.join(2.0)
        sub.close()
    if report.stopped is not None:
        for spec in probes[len(report.results):]:
            report.results.append(ProbeResult(spec, "skipped", "sweep stopped", requested=dict(spec.options.to_wire())))
    return report


def _run_probe(spec: ProbeSpec, transfer: ClientTransfer, sub: Any, analyzer: Analyzer, max_bytes: int,
               cancel: threading.Event | None) -> ProbeResult:
    sid = transfer.session_id
    negotiated: OptionsNegotiated | None = None
    retried: RequestRetried | None = None
    transfer.start()
    outcome = None
    while outcome is None:
        outcome = transfer.wait(_POLL)
        events = [e for e in sub.drain() if e.session == sid]
        for e in events:
            if type(e) is OptionsNegotiated:
                negotiated = e
            elif type(e) is RequestRetried:
                retried = e
        analyzer.feed(events)
        analyzer.tick(time.time())
        if outcome is None and cancel is not None and cancel.is_set():
            transfer.cancel()
    # Whatever the worker published up to the outcome (the dally may add a little later).
    events = [e for e in sub.drain() if e.session == sid]
    for e in events:
        if type(e) is OptionsNegotiated:
            negotiated = e
        elif type(e) is RequestRetried:
            retried = e
    analyzer.feed(events)
    result = outcome.result
    stats = result.stats
    # What the probe asked is what it tests, even when the server refused it and the retry ran without.
    asked = retried.asked if retried is not None else outcome.requested
    probe = ProbeResult(spec, "completed", session=sid, requested=dict(asked), bytes=stats.bytes,
                        duration=stats.duration)
    if retried is not None:
        dropped = sorted(set(dict(retried.asked)) - set(dict(retried.requested)))
        probe.message = (f"the server refused {', '.join(dropped)} with ERROR {retried.code}; "
                         f"ran again without {'them' if len(dropped) > 1 else 'it'}")
    n = negotiated.negotiated if negotiated is not None else outcome.negotiated
    probe.granted = dict(n.oack) if n.oack is not None else None
    probe.verdicts = {o.name: o.verdict.value for o in n.outcomes}
    probe.blksize, probe.windowsize, probe.tsize = n.blksize, n.windowsize, n.tsize
    if isinstance(result, Failed):
        probe.error_code = result.code
        # The machine stops a probe at the first block past max_bytes (ClientRequest.enough), as each
        # block arrives: a poll here let a fast one run on for a whole poll.
        capped = result.reason is Reason.CANCELLED and stats.bytes > max_bytes
        if capped:
            probe.outcome, probe.message = "capped", f"stopped after {fmt_bytes(stats.bytes)}: enough to measure"
        elif result.reason is Reason.CANCELLED and stats.bytes > 0 and (cancel is None or not cancel.is_set()):
            probe.outcome, probe.message = "capped", f"stopped at the deadline after {fmt_bytes(stats.bytes)}"
        else:
            probe.outcome, probe.message = "failed", result.message
    probe.findings = analyzer.findings(sid)
    return probe


def _skip_reason(spec: ProbeSpec, skip: dict[str, str]) -> str | None:
    if spec.group == "blksize" and spec.options.blksize is not None and "blksize" in skip:
        limit = int(skip["blksize"].split()[0])
        if spec.options.blksize > limit:
            return skip["blksize"].split(" ", 1)[1]
    if spec.group == "windowsize" and "windowsize" in skip:
        return skip["windowsize"]
    return None


def _learn(result: ProbeResult, skip: dict[str, str]) -> None:
    """What a probe's outcome rules out for the probes after it."""
    spec = result.spec
    if result.outcome == "skipped":
        return
    if spec.group == "blksize" and any(f.id == "large-block-loss" for f in result.findings):
        size = spec.options.blksize or 0
        current = int(skip["blksize"].split()[0]) if "blksize" in skip else 1 << 30
        if size < current:
            skip["blksize"] = f"{size} larger blocks are lost on this path (blksize {size} never arrived)"
    if spec.group == "windowsize" and "windowsize" not in skip:
        granted = result.granted_value("windowsize")
        if not result.ok:
            skip["windowsize"] = f"{spec.name} failed"
        elif granted is None:
            skip["windowsize"] = f"the server does not grant windowsize ({spec.name})"


def _hard_failure(result: ProbeResult, first: bool) -> str | None:
    if result.outcome != "failed":
        return None
    ids = {f.id: f for f in result.findings}
    for finding_id in (HARD_IDS if first else GONE_IDS):
        if finding_id in ids:
            return f"{finding_id}: {ids[finding_id].summary}"
    return None


# -- rendering ------------------------------------------------------------------------------------------

_MARK = {"error": "✘", "warning": "!", "info": "·"}


def _options_text(values: dict[str, str] | None) -> str:
    if values is None:
        return "no OACK"
    return _escape(" ".join(f"{clean(k)}={clean(v)}" for k, v in values.items())) or "-"


def render_table(report: SweepReport) -> Table:
    """A rich Table of the probes."""
    from rich.table import Table

    title = f"Option sweep of {_escape(clean(report.filename))} on {report.host}:{report.port}"
    table = Table(title=title, expand=False)
    for name in ("probe", "asked", "granted", "result"):
        table.add_column(name)
    table.add_column("bytes", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("findings")
    for r in report.results:
        asked = _options_text(r.requested) + (f" ({r.spec.mode})" if r.spec.mode != "octet" else "")
        granted = "" if r.outcome == "skipped" else _options_text(r.granted)
        style = {"completed": "green", "capped": "green", "failed": "red", "skipped": "dim"}[r.outcome]
        result = r.outcome if r.outcome != "failed" else f"failed: {clean(r.message)}"
        if r.ok and r.message and r.outcome == "completed":
            result += f" ({clean(r.message)})"
        if r.outcome == "skipped":
            result = f"skipped: {clean(r.message)}"
        findings = ", ".join(f"{_MARK[f.severity]}{f.id}" for f in r.findings)
        table.add_row(r.name, asked, granted, f"[{style}]{_escape(result)}[/]",
                      fmt_bytes(r.bytes) if r.outcome != "skipped" else "",
                      fmt_rate(r.rate_bps) if r.ok else "", findings)
    return table


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def summary_lines(report: SweepReport) -> list[str]:
    lines = []
    if report.stopped:
        lines.append(f"Stopped early: {report.stopped}")
    sup = report.supports
    if any(value is not None for name, value in sup.items() if name != "options"):
        def show(name: str) -> str:
            value = sup.get(name)
            return "not probed" if value is None else ("no" if value is False else "yes" if value is True
                                                        else f"up to {value}")
        lines.append("Supports: " + ", ".join(f"{name} {show(name)}" for name in
                                               ("blksize", "windowsize", "tsize", "timeout", "netascii")))
    fastest = report.fastest
    if fastest is not None:
        text = f"Fastest without loss: {fastest.name} at {fmt_rate(fastest.rate_bps)}"
        # Name the settings it ran with only where the probe's name does not already say them.
        ran = [f"blksize {fastest.blksize}"] + ([f"windowsize {fastest.windowsize}"] if fastest.windowsize > 1 else [])
        ran = [words for words in ran if words not in fastest.name]
        lines.append(text + (f" (ran with {', '.join(ran)})" if ran else ""))
    rec = report.recommended
    if rec is not None:
        text = f"Recommended: blksize {rec['blksize']}"
        if rec.get("windowsize", 1) > 1:
            text += f"; windowsize {rec['windowsize']} (with blksize {rec['windowsize_blksize']})"
        if rec["blksize"] > 1468:
            text += (" (blocks over 1468 bytes travel as IP fragments: fine on this path, but firewalls that drop "
                     "fragments are common; 1468 is the safe choice elsewhere)")
        lines.append(text)
    elif report.ran and not report.stopped:
        lines.append("No probe ran without loss: see the findings.")
    return lines


def render_text(report: SweepReport, width: int = 120) -> str:
    """The table and the summary as plain text (no colours), for logs and scripts."""
    from rich.console import Console

    buffer = StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, force_terminal=False)
    console.print(render_table(report))
    for line in summary_lines(report):
        console.print(line, markup=False, soft_wrap=True)  # not cut where a server's message chose
    return buffer.getvalue()
