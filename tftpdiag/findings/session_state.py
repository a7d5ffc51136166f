"""What the rules know about one session: counters and a few capped notes, filled in by the event fold
(:mod:`tftpdiag.findings.fold`), with the small readings every rule uses (relative times, blocks moved,
who the other end is)."""

from __future__ import annotations

from tftpdiag.findings.model import fmt_t
from tftpdiag.fmt import own_end
from tftpdiag.protocol.doubled import capture_doubled
from tftpdiag.protocol.events import (
    Address,
    Completed,
    Failed,
    Note,
    RequestRefused,
    RequestRetried,
    Role,
    SocketError,
    TimedOut,
    TransferStats,
)
from tftpdiag.protocol.observer_copies import COPY_WITHIN
from tftpdiag.protocol.options import Negotiated
from tftpdiag.protocol.packets import Options, Packet, Request

__all__ = ["LOG_CAP", "QUICK", "RTT_WAITING", "SessionState"]

# A duplicate this soon after the first copy was not a retransmission after a timeout: the figure by which
# the observer tells a capture's copies (one home for it).
QUICK = COPY_WITHIN
LOG_CAP = 6  # notes kept per kind of anomaly, for evidence
RTT_WAITING = 64  # round trips sampled before they are smoothed in, unless read first (memory stays small)


class SessionState:
    """What the rules know about one session. Times are absolute; :meth:`t` makes them relative."""

    __slots__ = (
        # identity
        "session", "t0", "last_time", "role", "client_side", "receiver", "filename", "mode", "local", "peer",
        "listen", "requested", "req", "request", "scan",
        # answer and negotiation
        "locked", "lock_time", "negotiated", "neg_time", "blksize", "windowsize", "tsize",
        "oacks_rx", "oack_tx", "oack_tx_times", "requests_tx", "request_times", "requests_rx",
        "req_timeouts", "peer_answered", "ack0_t", "first_data_t", "first_data_len",
        # movement
        "data_rx", "data_tx", "acks_rx", "pos", "first_move", "last_move", "fresh_t", "rtt_samples", "_rtt", "_rtt_min",
        "_rtt_n",
        "bytes", "total", "stats",
        # anomalies
        "dup_data", "dup_ack", "dup_other", "dup_quick", "dup_first", "ooo", "ooo_first",
        "episodes", "episode_open", "open_since", "open_timeouts", "n_timeouts", "timeouts", "last_timeout",
        "window_gaps", "peer_resends", "quiet_episodes",
        "copies_rx", "copies_tx", "copies_end", "copies_late", "copy_first",
        "stray", "stray_from", "stray_first", "stray_answered", "unexpected", "malformed", "late", "late_log",
        "dupack_block", "ack_tx", "data_tx_block", "overrun", "overrun_first", "sas_hits", "sas_first", "sas_base",
        "err_rx", "err_tx", "sock_errors",
        "bare_nul", "bare_cr", "high", "scanned", "cr_pending", "binary_block",
        "stall_max", "stall_pos", "followup", "eval_t", "retired", "gap_data", "gap_ack", "gap_log",
        # outcome
        "result", "refused", "retried", "observed",
    )

    def __init__(self, session: int, t: float) -> None:
        self.session = session
        self.t0 = t
        self.last_time = t
        self.role: Role | None = None
        self.client_side = True
        self.receiver = True
        self.filename = ""
        self.mode = "octet"
        self.local: Address | None = None
        self.peer: Address | None = None
        self.listen: Address | None = None
        self.requested: Options = ()
        self.req: dict[str, str] = {}
        self.request: Request | None = None
        self.scan = False
        self.locked: Address | None = None
        self.lock_time: float | None = None
        self.negotiated: Negotiated | None = None
        self.neg_time: float | None = None
        self.blksize = 512
        self.windowsize = 1
        self.tsize: int | None = None
        self.oacks_rx: list[tuple[float, Options, Note, str]] = []
        self.oack_tx = 0
        self.oack_tx_times: list[float] = []
        self.requests_tx = 0
        self.request_times: list[float] = []
        self.requests_rx = 0
        self.req_timeouts = 0
        self.peer_answered: float | None = None
        self.ack0_t: float | None = None
        self.first_data_t: float | None = None
        self.first_data_len: int | None = None
        self.data_rx = 0
        self.data_tx = 0
        self.acks_rx = 0
        self.pos: int | None = None
        self.first_move: float | None = None
        self.last_move: float | None = None
        self.fresh_t: float | None = None
        self.rtt_samples: list[float] = []  # round trips sampled, not yet in the estimate (see smooth_rtt)
        self._rtt: float | None = None
        self._rtt_min: float | None = None
        self._rtt_n = 0
        self.bytes = 0
        self.total: int | None = None
        self.stats: TransferStats | None = None
        self.dup_data = 0
        self.dup_ack = 0
        self.dup_other = 0
        self.dup_quick = 0
        self.dup_first: tuple[float, str] | None = None
        self.ooo = 0
        self.ooo_first: tuple[float, str] | None = None
        self.episodes = 0
        self.episode_open = False
        self.open_since: float | None = None
        self.open_timeouts = 0
        self.n_timeouts = 0
        self.timeouts: list[TimedOut] = []
        self.last_timeout: TimedOut | None = None
        self.window_gaps = 0
        # The peer's packets sent again (after a pause: its timer) since this end last sent anything, and the
        # loss episodes they opened: an end that answers none of them went quiet (a capture's client that
        # stopped answering, client-stopped-acking), and those are not losses the transfer got over.
        self.peer_resends = 0
        self.quiet_episodes = 0
        # A capture's copies (Note.COPY): datagrams seen again, asked for by nothing, from the other end (those
        # that decode, as the observer counts them) and from this one, all of them and as they were when the
        # final figures were made, and the first of them; no other count of the fold has them.
        self.copies_rx = 0
        self.copies_tx = 0
        self.copies_end: tuple[int, int] | None = None
        self.copies_late = False  # a copy came after the end: for the rules that look again then (Rule.after_end)
        self.copy_first: tuple[float, str] | None = None
        self.stray = 0
        self.stray_from: dict[Address, int] = {}
        self.stray_first: tuple[float, Address, Packet | None] | None = None
        # ERRORs this end sent to a stray source: tftpdiag answers each (but an ERROR) with ERROR 5; the
        # client in a capture may answer, or not
        self.stray_answered = 0
        self.unexpected: list[tuple[float, str, str]] = []
        self.malformed = 0
        self.late = 0
        self.late_log: list[tuple[float, Packet | None]] = []
        self.dupack_block: int | None = None
        self.ack_tx: int | None = None  # the block number of our last ACK
        self.data_tx_block: int | None = None  # the block number of our last fresh DATA (who owes the next packet)
        self.overrun = 0  # DATA beyond the window our last ACK allowed
        self.overrun_first: tuple[float, int, int] | None = None
        self.sas_hits = 0
        self.sas_first: tuple[float, int] | None = None
        self.sas_base = 0
        self.err_rx: tuple[float, int, str] | None = None
        self.err_tx: tuple[float, int, str] | None = None
        self.sock_errors: list[SocketError] = []
        self.bare_nul = 0
        self.bare_cr = 0
        self.high = 0
        self.scanned = 0
        self.cr_pending = False
        self.binary_block: int | None = None
        self.stall_max = 0.0  # the longest stall seen live, and where: for the finding once it went on
        self.stall_pos: int | None = None
        self.followup: tuple[float, int, str] | None = None  # a size probe's download, once seen
        self.eval_t = -1.0
        self.retired = False
        self.gap_data = 0  # DATA and ACKs a rebuilt capture lacks although the transfer shows them delivered
        self.gap_ack = 0
        self.gap_log: list[tuple[float, str]] = []
        self.result: Completed | Failed | None = None
        self.refused: RequestRefused | None = None
        self.retried: tuple[RequestRetried, float] | None = None  # the refusal, and when the first request left
        self.observed = False  # a capture's transfer: the client's side is not tftpdiag's

    # -- the round trip ----------------------------------------------------------------------------
    # The fold samples a round trip a block (an append); the estimate takes them in when it is read, or
    # RTT_WAITING at a time: in one loop, the same arithmetic in the same order as one by one.

    @property
    def rtt(self) -> float | None:
        """The smoothed round trip, in seconds."""
        if self.rtt_samples:
            self.smooth_rtt()
        return self._rtt

    @property
    def rtt_min(self) -> float | None:
        """The smallest round trip sampled."""
        if self.rtt_samples:
            self.smooth_rtt()
        return self._rtt_min

    @property
    def rtt_n(self) -> int:
        """Round trips in the smoothed estimate."""
        if self.rtt_samples:
            self.smooth_rtt()
        return self._rtt_n

    def smooth_rtt(self) -> None:
        """The waiting samples, in order, into the estimate. Samples far above the smallest seen waited
        for a retransmission on the other side and are left out."""
        samples = self.rtt_samples
        self.rtt_samples = []
        low, rtt, n = self._rtt_min, self._rtt, self._rtt_n
        limit = 0.0 if low is None else 4 * low + 0.001
        for sample in samples:
            if low is None or sample < low:
                low = sample
                limit = 4 * low + 0.001
                if rtt is not None and rtt > limit:
                    rtt = None  # it started from a sample that waited for a retransmission
            if sample <= limit:
                rtt = sample if rtt is None else rtt + (sample - rtt) * 0.125
                n += 1
        self._rtt_min, self._rtt, self._rtt_n = low, rtt, n

    # -- reading helpers for the rules ------------------------------------------------------------

    def t(self, when: float) -> str:
        return fmt_t(when - self.t0)

    def doubled(self, received: bool) -> bool:
        """Whether the copies from the other end (``received``) or from this one are the capture point's
        copies, counted in nothing, or duplicates that reached the receiver (protocol/doubled.py), as the
        transfer's figures say: the copies they were made with against its packets."""
        stats = self.stats
        if stats is None:
            return False
        copies = self.copies_end or (self.copies_rx, self.copies_tx)
        return capture_doubled(copies[0] if received else copies[1],
                               stats.packets_received if received else stats.packets_sent)

    @property
    def finished(self) -> bool:
        return self.result is not None or self.refused is not None

    @property
    def moved(self) -> int:
        """Blocks that made progress: DATA received in order, or ACKs of our DATA."""
        return self.data_rx if self.receiver else self.acks_rx

    @property
    def recovered_losses(self) -> int:
        """Loss episodes the transfer got over: those of a final stall that it never recovered from are
        the stall's business (a peer gone, a path that drops large blocks), not packet loss. The stall is
        one episode, however many timeouts it saw; the peer's resends this end never answered are the
        stall too (in a capture, the server's to a client that went quiet)."""
        unfinished = self.result is None or isinstance(self.result, Failed)
        episodes = self.episodes - (self.quiet_episodes if self.peer_resends and unfinished else 0)
        if self.open_timeouts and self.open_since == self.last_move and unfinished:
            return max(episodes - 1, 0)
        return episodes

    @property
    def bytes_now(self) -> int:
        """Bytes moved so far: the last snapshot, or more if blocks moved since (live)."""
        if self.receiver:
            return max(self.bytes, self.data_rx * self.blksize)
        return max(self.bytes, self.acks_rx * self.blksize) if self.windowsize == 1 else self.bytes

    @property
    def kind(self) -> str:
        """RRQ or WRQ."""
        if self.role is not None:
            return "RRQ" if self.role.is_download else "WRQ"
        if self.request is not None:
            return "RRQ" if self.request.is_read else "WRQ"
        return "request"

    @property
    def other(self) -> str:
        """The other end in words: 'the server' or 'the client'."""
        return "the server" if self.client_side else "the client"

    # -- this end in words ---------------------------------------------------------------------------
    # A capture's events read as the client's (its packets are "sent", its ERROR "local"), so the rules
    # treat it as they treat tftpdiag's own client; but tftpdiag only watched, and a text that says it
    # resent, refused or ended something tells the engineer something false. Every text that speaks of
    # this end takes its words from here.

    @property
    def us(self) -> str:
        """This end as a sentence's subject: 'tftpdiag', or in a capture 'the client ADDRESS'."""
        return own_end(self.observed, self.local)

    @property
    def our(self) -> str:
        """This end's, before a noun: 'our', or in a capture "the client's"."""
        return "the client's" if self.observed else "our"

    def ours_only(self, text: str) -> str:
        """``text`` where tftpdiag is an end of the transfer (what it does, a flag to give it); nothing in
        a capture, where neither end is tftpdiag and the fix is on the device or its server."""
        return "" if self.observed else text
