"""What the passive observer keeps for one transfer, and the events it makes from it.

The counters, block positions and phases of one transfer seen from outside, and the small helpers every
rule of :mod:`tftpdiag.protocol.observer` and :mod:`tftpdiag.protocol.observer_flow` uses to publish an
event: a packet sent or received (from the client's point of view), progress, the negotiated options,
the ending. Block numbers are absolute (counting past rollovers) and go to and from the wire only
through :mod:`tftpdiag.protocol.blocks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tftpdiag.protocol import blocks
from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.doubled import capture_doubled
from tftpdiag.protocol.events import (
    CaptureGap,
    Completed,
    ContentDigest,
    Event,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    Progress,
    Role,
    TimedOut,
    TransferStats,
)
from tftpdiag.protocol.options import (
    DEFAULT_BLKSIZE,
    Negotiated,
    OptionOutcome,
    Verdict,
    option_number,
    options_ignored,
)
from tftpdiag.protocol.packets import Error, Options, Packet

__all__ = ["ObserverState", "lenient", "REQUESTING", "NEGOTIATING", "TRANSFERRING", "ENDED", "PROGRESS_INTERVAL",
           "MAX_PENDING_BLOCKS"]

# Phases, from the client's side: request sent; OACK seen, waiting for ACK 0 (download) or DATA 1
# (upload); blocks flowing; ended by completion, an ERROR or the capture giving up on it.
REQUESTING, NEGOTIATING, TRANSFERRING, ENDED = 0, 1, 2, 3

PROGRESS_INTERVAL = 0.1  # as Timing.progress_interval: a rate graph from a capture is as dense as a live one
# Blocks kept per transfer while they wait for an ACK (sizes of blocks past a gap, or sent but not yet
# acknowledged): a window holds at most 65535, so more is a hostile or broken peer and is not kept.
MAX_PENDING_BLOCKS = 0x10000
# A silence after which a fresh packet can only be its sender's timer resending it (observer_flow's
# _resent_unseen), when no timeout option was granted: the retransmit timeout of tftpd-hpa, dnsmasq and most
# firmware clients. Shorter silences may as well be a slow sender (a disk, a flash write), so they are not.
RESEND_SILENCE = 1.0


class ObserverState:
    """One transfer's state; slotted attributes rather than a dataclass because the hot path reads them."""

    __slots__ = (
        "sid", "is_read", "client", "server", "tid", "request_raw", "kind", "options", "start", "last",
        "phase", "blksize", "windowsize", "oack_raw", "pending_oack", "total",
        "data_max", "acked", "expected", "final", "finishing", "finish_time", "ahead", "sizes",
        "rollover", "wrap_decided", "bytes", "blocks", "sent", "received", "retransmits", "duplicates",
        "timeouts", "out_of_order", "stray", "last_progress", "requests",
        "client_heard", "server_heard", "client_sent_at", "client_attempt", "ack_again", "ack_attempt",
        "run_index", "run_next", "run_first", "run_attempt", "strays", "refusal", "dropped",
        "ahead_at", "ack_floor", "proofs", "proof_first",
        "events", "_base", "_own", "unordered", "cut", "coalesced", "capture_gaps", "midstream", "digest",
        "resend_after", "seen_c", "seen_s", "newest_c", "newest_s", "count_c", "count_s", "data_last", "ack_last",
        "asking", "copies_c", "copies_s", "copies_doubled",
    )  # fmt: skip

    def __init__(self, sid: int, is_read: bool, client: Address, server: Address, time: float,
                 sink: list[Event] | None) -> None:
        self.sid = sid
        self.is_read = is_read
        self.client = client
        self.server = server  # as the client addressed it
        self.tid: Address | None = None  # who answered; fixed by the first reply
        # A download's bytes hashed in order as seen (set by whoever asks for it, e.g. watch); None once a
        # byte was not seen (cut by the snap length, or delivered where the capture lacks it).
        self.digest: Any = None
        self.request_raw = b""
        self.kind = "RRQ" if is_read else "WRQ"
        self.options: Options = ()
        self.start = self.last = time
        self.phase = REQUESTING
        self.blksize = DEFAULT_BLKSIZE
        self.windowsize = 1
        self.oack_raw: bytes | None = None
        self.pending_oack: Options | None = None  # an OACK our client would refuse; C's next packet decides
        self.total: int | None = None
        self.data_max = 0  # highest block the data sender has sent
        self.acked = -1  # highest block acknowledged (0: the OACK's or the WRQ's ACK 0)
        self.expected = 1  # download: next block C needs in order
        self.final: int | None = None  # the short block that ends the transfer
        self.finishing = False  # download: final block delivered; Completed waits for C's ACK of it
        self.finish_time = time
        self.ahead: dict[int, int] = {}  # download: blocks seen past a gap -> wire payload length
        self.sizes: dict[int, int] = {}  # upload: blocks sent but not yet acknowledged -> payload length
        self.rollover = 0  # what the sender numbers the block after 65535: 0, or 1 (blocks.rollover_of)
        self.wrap_decided = False
        self.bytes = self.blocks = self.sent = self.received = 0
        self.retransmits = self.duplicates = self.timeouts = self.out_of_order = self.stray = 0
        self.last_progress = time
        self.requests = 0
        self.client_heard = False  # C heard from the TID since C last sent
        self.server_heard = False  # the TID heard from C since it last sent
        self.client_sent_at = time
        self.client_attempt = 0
        self.ack_again = -1  # upload: the block whose ACK the server last sent again on its timer
        self.ack_attempt = 0  # and how many times in a row
        self.run_index = -1  # position (in the event stream) of the Retransmit event of the current run
        self.run_next = 0
        self.run_first: int | None = None
        self.run_attempt = 0
        self.strays: set[Address] | None = None  # other addresses that answered (e.g. repeated requests)
        # The server's ERROR refusing the request's options, and when: the client's next packet decides
        # whether it asks again without them (the transfer goes on) or not (the ERROR ended it).
        self.refusal: tuple[Error, float] | None = None
        self.dropped: tuple[OptionOutcome, ...] = ()  # options a refusal took out of the request asked again
        # Capture gaps (what the capture lacks but the transfer shows was delivered):
        self.ahead_at: dict[int, int] = {}  # download: blocks noted out of order -> position of their event
        self.ack_floor = 0  # the lowest ACK the data sender must have had, from what it sent
        self.proofs = 0  # fresh DATA that only an ACK the capture lacks allowed, waiting for the next ACK
        self.proof_first = 0  # the first of those DATA blocks
        # Where events go: a list shared by every observer of a capture (trace), or this one's own, which
        # take() empties; _base counts the events taken, so a position minus _base indexes the list.
        self.events: list[Event] = [] if sink is None else sink
        self._base = 0
        self._own = sink is None
        self.unordered = False  # an event went in behind a later one (a transfer found to have stopped earlier)
        self.cut = 0  # DATA the capture's snap length cut short
        self.coalesced = 0  # windows captured as one datagram (UDP offload), taken apart
        self.capture_gaps = 0  # packets the capture lacks although the transfer shows they were delivered
        self.midstream = False  # joined without its request (the capture began after it)
        self.resend_after = RESEND_SILENCE  # see RESEND_SILENCE; from the timeout option once one is granted
        # The capture's copies (observer_copies): the last distinct datagrams from C (seen_c) and to C (seen_s)
        # by their first four bytes, oldest first, and the newest of each side; how many datagrams (not
        # copies) each side sent; the blocks of the data sender's last DATA and of the receiver's last ACK in a
        # window, and how many of its DATA asked for an ACK again.
        self.seen_c: dict[bytes, list[Any]] = {}
        self.seen_s: dict[bytes, list[Any]] = {}
        self.newest_c: list[Any] | None = None
        self.newest_s: list[Any] | None = None
        self.count_c = self.count_s = 0
        self.data_last = self.ack_last = -1
        self.asking = 0
        # Datagrams the capture saw twice (noted COPY), from C and to C (those that decode), in no other
        # count; whether each side's are the capture point's, once the transfer ended (see doubled()).
        self.copies_c = self.copies_s = 0
        self.copies_doubled: tuple[bool, bool] | None = None

    @property
    def role(self) -> Role:
        return Role.CLIENT_READ if self.is_read else Role.CLIENT_WRITE

    def wire(self, n: int) -> int:
        return blocks.wire(n, self.rollover)

    def absolute(self, wire: int) -> int:
        """The absolute block nearest to the highest one sent that has this wire number."""
        return blocks.absolute(wire, self.data_max, self.rollover)

    def doubled(self, from_client: bool) -> bool:
        """Whether the copies of one side's datagrams are the capture point's (doubled.capture_doubled), as
        the transfer's final figures said once it ended: copies after its end (of its final packets) count
        toward the trace's warning and change no decision its figures already show."""
        if self.copies_doubled is not None:
            return self.copies_doubled[0 if from_client else 1]
        if from_client:
            return capture_doubled(self.copies_c, self.sent)
        return capture_doubled(self.copies_s, self.received)

    def copies(self) -> tuple[int, int]:
        """The copies seen so far: the capture point's, and those that are duplicates (by the share)."""
        ours = theirs = 0
        for copies, from_client in ((self.copies_c, True), (self.copies_s, False)):
            if copies and self.doubled(from_client):
                ours += copies
            else:
                theirs += copies
        return ours, theirs

    def stats(self, now: float) -> TransferStats:
        # The capture point's copies are in no figure: the packets are what each end sent. A few copies are
        # duplicates, packets as a live end counts them (one received twice is two received; one its sender
        # sent twice, two sent), and duplicates either side's (the capture's counts are both sides', as its
        # retransmits are).
        sent, received, duplicates = self.sent, self.received, self.duplicates
        if self.copies_s and not self.doubled(False):
            received += self.copies_s
            duplicates += self.copies_s
        if self.copies_c and not self.doubled(True):
            sent += self.copies_c
            duplicates += self.copies_c
        return TransferStats(
            bytes=self.bytes, duration=max(now - self.start, 0.0), blocks=self.blocks,
            packets_sent=sent, packets_received=received, retransmits=self.retransmits,
            duplicates=duplicates, timeouts=self.timeouts, out_of_order=self.out_of_order, stray=self.stray,
        )  # fmt: skip

    # -- packet events ------------------------------------------------------------------------------

    def _packet(self, d: Datagram, packet: Packet, from_client: bool, note: Note) -> None:
        if from_client:
            self._sent(d, packet, note)
        else:
            self._received(d, packet, note)

    def _sent(self, d: Datagram, packet: Packet | None, note: Note) -> None:
        now = d.time
        self.events.append(PacketSent(self.sid, now, self.client, d.dst, d.payload, packet, note))
        self.sent += 1
        self.last = now
        self.client_sent_at = now
        self.client_heard = False
        self.server_heard = True

    def _received(self, d: Datagram, packet: Packet | None, note: Note, detail: str = "") -> None:
        now = d.time
        self.events.append(PacketReceived(self.sid, now, self.client, d.src, d.payload, packet, note, detail))
        if packet is not None:  # a live client does not count what it could not decode
            self.received += 1
        self.last = now
        self.client_heard = True
        self.server_heard = False
        self.client_attempt = 0

    def _progress(self, now: float) -> None:
        self.last_progress = now
        self.events.append(Progress(self.sid, now, self.bytes, self.total, self.stats(now)))

    def _client_timeout(self, now: float) -> None:
        """C sent again without having heard from the TID since it last sent: one timeout of C's."""
        self.timeouts += 1
        self.client_attempt += 1
        waiting = f"DATA {self.wire(self.expected)}" if self.is_read else f"ACK {self.wire(self.data_max)}"
        self.events.append(TimedOut(self.sid, now, now - self.client_sent_at, self.client_attempt, waiting))

    def _capture_gap(self, now: float, missing: str, count: int, detail: str) -> None:
        self.capture_gaps += count
        self.events.append(CaptureGap(self.sid, now, missing, count, detail))

    # -- negotiation ----------------------------------------------------------------------------------

    def _begin_data(self, now: float) -> None:
        """The first DATA (or an upload's first ACK): without an OACK the server ignored every option
        (RFC 2347); after an OACK our client would refuse, C went on, so it ran with the OACK's values."""
        if self.phase == REQUESTING:
            self._negotiated(options_ignored(self.options), now)
        elif self.pending_oack is not None:
            self._negotiated(lenient(self.options, self.pending_oack), now)
        self.phase = TRANSFERRING

    def _apply(self, negotiated: Negotiated) -> None:
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        if negotiated.timeout:
            # Both ends resend after this many seconds (RFC 2349); a little less, as the silence the capture
            # sees starts when the packet asking for the lost one went by, after its sender's timer began.
            self.resend_after = 0.9 * negotiated.timeout
        if self.is_read and negotiated.tsize is not None:
            self.total = negotiated.tsize

    def _blocks_show(self, blksize: int, now: float) -> None:
        """A transfer joined without its request and OACK: the largest DATA seen shows its block size.
        Published as its options, as an OACK's would be, so the record and every finding that reads the
        block size get the one the transfer ran with, not the RFC 1350 default. No option was seen
        (outcomes and OACK stay empty); the window is not shown either: the event says lock-step, as the
        findings read a transfer without options, while this observer keeps its own unknown window."""
        self.blksize = blksize
        self.events.append(OptionsNegotiated(self.sid, now, Negotiated(blksize=blksize)))

    def _negotiated(self, negotiated: Negotiated, now: float) -> None:
        if self.dropped:
            negotiated = dataclasses.replace(negotiated, outcomes=self.dropped + negotiated.outcomes)
        self.pending_oack = None
        self._apply(negotiated)
        self.events.append(OptionsNegotiated(self.sid, now, negotiated))

    # -- endings ----------------------------------------------------------------------------------

    def _end(self, result: Completed | Failed) -> None:
        # The share's decision as the final figures (result.stats) made it, kept for what comes after.
        self.copies_doubled = (self.doubled(True), self.doubled(False))
        events = self.events
        if events and events[-1].time > result.time:
            self.unordered = True  # a transfer found to have stopped earlier, while others went on
        events.append(Progress(self.sid, result.time, self.bytes, self.total, result.stats))
        events.append(result)
        self.phase = ENDED
        self.refusal = None  # a refusal not yet judged is moot once the transfer ended some other way
        self.finishing = False
        self.ahead = {}
        self.ahead_at = {}
        self.proofs = 0
        self.sizes = {}
        self.run_index = -1

    def _complete(self, now: float) -> None:
        self.finishing = False
        if self.digest is not None:
            self.events.append(ContentDigest(self.sid, now, self.digest.hexdigest(), self.bytes))
            self.digest = None
        self._end(Completed(self.sid, now, self.stats(now)))


def lenient(requested: Options, oack: Options) -> Negotiated:
    """What a transfer ran with after an OACK our client would refuse but the capture's client took."""
    got = dict(oack)
    outcomes = []
    for name, asked in requested:
        granted = got.get(name)
        granted_n, asked_n = option_number(granted), option_number(asked)
        if granted is None:
            outcomes.append(OptionOutcome(name, asked, None, Verdict.IGNORED))
        elif name in ("blksize", "windowsize") and granted_n is not None and asked_n is not None \
                and granted_n < asked_n:
            outcomes.append(OptionOutcome(name, asked, granted, Verdict.REDUCED))
        else:
            outcomes.append(OptionOutcome(name, asked, granted, Verdict.ACCEPTED))

    def number(name: str, default: int | None) -> int | None:
        value = option_number(got.get(name))
        return default if value is None else value

    return Negotiated(
        blksize=max(number("blksize", DEFAULT_BLKSIZE) or DEFAULT_BLKSIZE, 1),
        windowsize=max(number("windowsize", 1) or 1, 1),
        timeout=number("timeout", None), tsize=number("tsize", None), outcomes=tuple(outcomes), oack=oack,
    )  # fmt: skip
