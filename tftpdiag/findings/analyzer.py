"""The analyzer: feed it events (live, in batches, or a whole finished list) and read the findings.

Cheap per event: a run of one session's DATA and ACKs is folded in one loop (:func:`fold.on_run`);
anything else costs a dict lookup for the session, one for the handler, a few attribute updates. The
rules (the family modules) run only when something they may depend on changed: an answer, an OACK, an
ERROR, a timeout, the end, a progress snapshot (at most five times a second per session) or a tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tftpdiag.findings import (
    content,
    errors,
    fold_runs,
    limits,
    loss,
    negotiation,
    reach,
    rollover,
    speed,
)
from tftpdiag.findings import fold as fd
from tftpdiag.findings.followups import FollowUps
from tftpdiag.findings.model import INFO, Finding
from tftpdiag.findings.rules import Context, Rule, order
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean
from tftpdiag.packetruns import packet_runs
from tftpdiag.protocol.events import (
    CaptureGap,
    Completed,
    Event,
    Failed,
    Impaired,
    OptionsNegotiated,
    PacketReceived,
    PacketRun,
    PacketSent,
    PeerLocked,
    Progress,
    RequestRefused,
    RequestRetried,
    Retransmit,
    SocketError,
    TimedOut,
    TransferStarted,
)

__all__ = ["IDS", "RULES", "Analyzer", "analyze"]

# Every rule, in the order their declarations (after=...) give; where they leave a choice, the order of
# the families here sets the order findings of one severity are listed in.
RULES: tuple[Rule, ...] = order((
    *reach.RULES, *limits.RULES, *errors.RULES, *negotiation.RULES, *loss.RULES, *speed.RULES, *rollover.RULES,
    *content.RULES,
))

# The shortest run folded in one loop (a single event goes straight to its handler).
_RUN_MIN = 2

IDS: tuple[str, ...] = tuple(dict.fromkeys(finding_id for r in RULES for finding_id in r.makes))


class Analyzer:
    """Findings for every session seen on an event stream.

    ``stall_after``: seconds without progress before a running transfer is reported ``stalled``.
    ``keep_sessions``: how many finished sessions keep their state (late packets, a size probe's
    second request) and findings; older ones are forgotten, so a server running for weeks stays small.
    ``rules``: the rules to run (all of them unless given), ordered by their declarations.
    """

    def __init__(self, *, stall_after: float = 3.0, keep_sessions: int = 5000,
                 rules: Sequence[Rule] | None = None) -> None:
        self.rules = RULES if rules is None else order(rules)
        self._after_end = tuple(r for r in self.rules if r.after_end)
        self.stall_after = stall_after
        self.keep_sessions = keep_sessions
        self.now = 0.0
        self._states: dict[int, SessionState] = {}
        self._found: dict[int, dict[str, Finding]] = {}
        self._found_at: dict[tuple[int, str], float] = {}
        self._finished: deque[int] = deque()
        self._active: set[int] = set()  # sessions not finished, for tick()
        self._out: list[Finding] = []
        self._followups = FollowUps()  # server side: a size probe and the download after it
        self._dispatch: dict[type, Callable[[SessionState, Any], bool]] = {
            PacketReceived: fd.on_rx,
            PacketSent: fd.on_tx,
            Progress: fd.on_progress,
            TimedOut: fd.on_timeout,
            Retransmit: fd.on_retransmit,
            TransferStarted: self._on_started,
            PeerLocked: fd.on_locked,
            OptionsNegotiated: fd.on_negotiated,
            Completed: fd.on_end,
            Failed: fd.on_end,
            RequestRefused: fd.on_refused,
            RequestRetried: fd.on_retried,
            SocketError: fd.on_socket_error,
            Impaired: fd.ignore,  # fault injection is the test bench, never evidence
            CaptureGap: fd.on_capture_gap,
        }

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> list[Finding]:
        """Fold events in; returns the findings that are new or changed because of them."""
        return self.feed_runs(packet_runs(events))

    def feed_runs(self, runs: list[Sequence[Event]]) -> list[Finding]:
        """:meth:`feed`, for events already split by :func:`tftpdiag.packetruns.packet_runs`."""
        out = self._out = []
        states = self._states
        dispatch = self._dispatch
        for chunk in runs:
            if type(chunk) is PacketRun:  # a run in columns (from a transfer run apart): read as columns
                s = states.get(chunk.session)
                if s is not None and fold_runs.on_columns(s, chunk):
                    continue
            # A run of one session's DATA and ACKs, most of a transfer, is folded in one loop when it can be.
            elif len(chunk) >= _RUN_MIN:
                s = states.get(chunk[0].session)
                if s is not None and fd.on_run(s, chunk):  # type: ignore[arg-type]  # a run: packets only
                    continue
            for ev in chunk:
                s = states.get(ev.session)
                if s is None:
                    s = self._open(ev)
                try:
                    handler = dispatch[type(ev)]
                except KeyError:
                    continue  # an event type newer than this analyzer
                if handler(s, ev):
                    self.now = ev.time
                    self._evaluate(s)
                    if s.finished:
                        self._retire(s)
                elif s.copies_late:
                    # A capture's copy after the end (of a final packet): only the rules whose tally goes on
                    # past the end look again; the others' findings stay as the end made them.
                    s.copies_late = False
                    self.now = ev.time
                    self._evaluate(s, self._after_end)
        return out

    def tick(self, now: float) -> list[Finding]:
        """Let time pass (live use): a running transfer without progress for ``stall_after`` seconds is
        reported as stalled, and a client still waiting for any reply as getting none."""
        out = self._out = []
        self.now = now
        states = self._states
        for sid in list(self._active):
            s = states.get(sid)
            if s is None or s.finished or (s.role is None and now - s.last_time > 60.0):
                self._active.discard(sid)  # ended, or stray events of a session long forgotten
                continue
            since = s.last_move if s.last_move is not None else s.t0
            if now - since >= self.stall_after:
                self._evaluate(s)
        return out

    def finish(self) -> list[Finding]:
        """The stream has ended (a trace read to its end): decide what waited for more events."""
        out = self._out = []
        for s in list(self._states.values()):
            if not s.finished:
                self.now = s.last_time
                self._evaluate(s)
        return out

    # -- output --------------------------------------------------------------------------------------

    def findings(self, session: int | None = None) -> list[Finding]:
        """Current findings, errors first, of one session or of all (in session order)."""
        if session is not None:
            found = self._found.get(session)
            return sorted(found.values(), key=_order) if found else []
        out: list[Finding] = []
        for sid in sorted(self._found):
            out.extend(sorted(self._found[sid].values(), key=_order))
        return out

    def state(self, session: int) -> SessionState | None:
        return self._states.get(session)

    # -- machinery -----------------------------------------------------------------------------------

    def _open(self, ev: Event) -> SessionState:
        s = SessionState(ev.session, ev.time)
        self._states[ev.session] = s
        self._active.add(ev.session)
        return s

    def _on_started(self, s: SessionState, ev: TransferStarted) -> bool:
        fd.on_started(s, ev)
        if not s.client_side and ev.role.is_download:
            probe = self._followups.read_started(ev)
            old = self._states.get(probe) if probe is not None else None
            if old is not None and old.followup is None:
                self.now = ev.time
                self._evaluate(old)
        return False

    def _evaluate(self, s: SessionState, rules: tuple[Rule, ...] | None = None) -> None:
        found = self._found.get(s.session)
        kept = found is not None
        if found is None:
            found = {}  # kept only once a rule finds something: most sessions never have a finding
        ctx = Context(self.now, self.stall_after, found, lambda: self._followups.after(s))
        for r in self.rules if rules is None else rules:
            result = r.fn(s, ctx.for_rule(r))
            if result is None:
                if r.transient is not None and r.transient in found:
                    self._recovered(s, found, r.transient)
                continue
            for finding in (result if isinstance(result, list) else (result,)):
                if finding.id not in r.makes:
                    raise ValueError(f"rule {r.name} made {finding.id!r}, which it does not declare")
                if not kept:
                    self._found[s.session] = found
                    kept = True
                if found.get(finding.id) != finding:
                    found[finding.id] = finding
                    self._found_at[(s.session, finding.id)] = self.now
                    self._out.append(finding)

    def _recovered(self, s: SessionState, found: dict[str, Finding], finding_id: str) -> None:
        """A live hypothesis (the peer went quiet...) that progress has since disproved becomes info."""
        prior = found[finding_id]
        if prior.severity == INFO:
            return
        res = s.result
        if s.last_move is not None and s.last_move > self._found_at.get((s.session, finding_id), float("inf")):
            tail = "; then the transfer went on"
        elif isinstance(res, Failed):
            tail = f"; then it ended otherwise: {clean(res.message)}"
        else:
            return
        recovered = Finding(finding_id, INFO, prior.summary + tail, prior.evidence,
                            "Nothing to do unless it happens again.", s.session)
        found[finding_id] = recovered
        self._out.append(recovered)

    def _retire(self, s: SessionState) -> None:
        if s.retired:
            return
        s.retired = True
        self._active.discard(s.session)
        self._finished.append(s.session)
        while len(self._finished) > self.keep_sessions:
            old = self._finished.popleft()
            self._states.pop(old, None)
            for finding_id in self._found.pop(old, {}):
                self._found_at.pop((old, finding_id), None)


def _order(f: Finding) -> tuple[int]:
    return (-f.rank,)


def analyze(events: Iterable[Event], *, stall_after: float = 3.0) -> list[Finding]:
    """All findings of a finished event list (a run that has ended, a trace file), errors first per
    session."""
    analyzer = Analyzer(stall_after=stall_after)
    analyzer.feed(events)
    analyzer.finish()
    return analyzer.findings()
