"""The analyzer: feed it events (live, in batches, or a whole finished list) and read the findings.

Cheap per event: one dict lookup for the session, one for the handler, a few attribute updates. The
rules (the family modules) run only when something they may depend on changed: an answer, an OACK, an
ERROR, a timeout, the end, a progress snapshot (at most five times a second per session) or a tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from tftpdiag.findings import content, errors, limits, loss, negotiation, reach, rollover, speed
from tftpdiag.findings import state as st
from tftpdiag.findings.model import INFO, Finding
from tftpdiag.findings.state import SessionState
from tftpdiag.protocol.events import (
    CaptureGap,
    Completed,
    Event,
    Failed,
    Impaired,
    OptionsNegotiated,
    PacketReceived,
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

Rule = Callable[[SessionState, "Analyzer"], "Finding | list[Finding] | None"]

# Order matters only for rules that look at what earlier ones found (stalled defers to the specific
# causes of a stall, so it comes last).
RULES: tuple[Rule, ...] = (
    *reach.RULES,
    *limits.RULES,  # before errors: local-error leaves these stops to them
    *errors.RULES,
    *negotiation.RULES,
    *loss.RULES,
    *speed.RULES,
    *rollover.RULES,
    *content.RULES,
    *reach.LAST_RULES,
)

IDS: tuple[str, ...] = (
    *reach.IDS, *errors.IDS, *negotiation.IDS, *loss.IDS, *speed.IDS, *rollover.IDS, *content.IDS, *limits.IDS,
)


class Analyzer:
    """Findings for every session seen on an event stream.

    ``stall_after``: seconds without progress before a running transfer is reported ``stalled``.
    ``keep_sessions``: how many finished sessions keep their state (late packets, a size probe's
    second request) and findings; older ones are forgotten, so a server running for weeks stays small.
    """

    def __init__(self, *, stall_after: float = 3.0, keep_sessions: int = 5000) -> None:
        self.stall_after = stall_after
        self.keep_sessions = keep_sessions
        self.now = 0.0
        self._states: dict[int, SessionState] = {}
        self._found: dict[int, dict[str, Finding]] = {}
        self._found_at: dict[tuple[int, str], float] = {}
        self._finished: deque[int] = deque()
        self._active: set[int] = set()  # sessions not finished, for tick()
        self._out: list[Finding] = []
        # Server side: (client host, file name) -> a size probe waiting for its download / recent reads.
        self._probes: dict[tuple[str, str], int] = {}
        self._reads: dict[tuple[str, str], list[tuple[float, int, tuple]]] = {}
        self._dispatch: dict[type, Callable[[SessionState, Any], bool]] = {
            PacketReceived: st.on_rx,
            PacketSent: st.on_tx,
            Progress: st.on_progress,
            TimedOut: st.on_timeout,
            Retransmit: st.on_retransmit,
            TransferStarted: self._on_started,
            PeerLocked: st.on_locked,
            OptionsNegotiated: st.on_negotiated,
            Completed: st.on_end,
            Failed: st.on_end,
            RequestRefused: st.on_refused,
            RequestRetried: st.on_retried,
            SocketError: st.on_socket_error,
            Impaired: st.ignore,  # fault injection is the test bench, never evidence
            CaptureGap: st.on_capture_gap,
        }

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> list[Finding]:
        """Fold events in; returns the findings that are new or changed because of them."""
        out = self._out = []
        states = self._states
        dispatch = self._dispatch
        for ev in events:
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

    def has(self, s: SessionState, finding_id: str) -> bool:
        found = self._found.get(s.session)
        return found is not None and finding_id in found

    def get(self, s: SessionState, finding_id: str) -> Finding | None:
        found = self._found.get(s.session)
        return None if found is None else found.get(finding_id)

    def state(self, session: int) -> SessionState | None:
        return self._states.get(session)

    # -- machinery -----------------------------------------------------------------------------------

    def _open(self, ev: Event) -> SessionState:
        s = SessionState(ev.session, ev.time)
        self._states[ev.session] = s
        self._active.add(ev.session)
        return s

    def _on_started(self, s: SessionState, ev: TransferStarted) -> bool:
        st.on_started(s, ev)
        if not s.client_side and ev.role.is_download:
            # Server side: remember reads by client host and file, to pair a size probe with the download
            # that follows it (the two may be published in either order).
            key = (ev.peer[0], ev.filename)
            reads = self._reads.pop(key, [])
            reads.append((ev.time, ev.session, ev.requested))
            self._reads[key] = reads[-4:]
            if len(self._reads) > 4096:
                del self._reads[next(iter(self._reads))]
            probe = self._probes.pop(key, None)
            old = self._states.get(probe) if probe is not None else None
            if old is not None and old.followup is None:
                self.now = ev.time
                self._evaluate(old)
        return False

    def follow_up(self, s: SessionState) -> tuple[float, int, str] | None:
        """Server side, for the size-probe rule: the read of the same file by the same client host that
        came after session ``s`` (time, session, its options in words), or None yet (then it is watched
        for)."""
        if s.peer is None:
            return None
        key = (s.peer[0], s.filename)
        for t, sid, requested in self._reads.get(key, ()):
            if sid != s.session and s.t0 <= t <= s.last_time + 30.0:
                how = "with " + " ".join(f"{k}={v}" for k, v in requested) if requested else "without options"
                return t, sid, how
        if len(self._probes) < 10_000:
            self._probes[key] = s.session
        return None

    def _evaluate(self, s: SessionState) -> None:
        found = self._found.get(s.session)
        for rule in RULES:
            result = rule(s, self)
            if result is None:
                transient = getattr(rule, "transient", None)
                if transient is not None and found is not None and transient in found:
                    self._recovered(s, found, transient)
                continue
            for finding in (result if isinstance(result, list) else (result,)):
                if found is None:
                    found = self._found[s.session] = {}
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
            tail = f"; then it ended otherwise: {res.message}"
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
