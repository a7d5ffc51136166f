"""The state the trace rebuild keeps for one transfer: block numbering past rollovers, delivery and
counters, and the options a transfer ran with when its client took an OACK tftpdiag would refuse."""

from __future__ import annotations

from tftpdiag.protocol.events import Address, Role, TransferStats
from tftpdiag.protocol.options import (
    DEFAULT_BLKSIZE,
    Negotiated,
    OptionOutcome,
    Verdict,
)
from tftpdiag.protocol.packets import Error, Options

__all__ = ["TransferState", "lenient", "REQUESTING", "NEGOTIATING", "TRANSFERRING", "ENDED"]

# Phases, from the client's side: request sent; OACK seen, waiting for ACK 0 (download) or DATA 1
# (upload); blocks flowing; ended by completion, an ERROR or the capture giving up on it.
REQUESTING, NEGOTIATING, TRANSFERRING, ENDED = 0, 1, 2, 3


class TransferState:
    """One transfer's state; attributes rather than a dataclass because the hot path reads them."""

    __slots__ = (
        "sid", "is_read", "client", "server", "tid", "request_raw", "kind", "options", "start", "last",
        "phase", "blksize", "windowsize", "oack_raw", "pending_oack", "total",
        "data_max", "acked", "expected", "final", "finishing", "finish_time", "ahead", "sizes",
        "wrap1", "wrap_decided", "bytes", "blocks", "sent", "received", "retransmits", "duplicates",
        "timeouts", "out_of_order", "stray", "last_progress", "requests",
        "client_heard", "server_heard", "client_sent_at", "client_attempt",
        "run_index", "run_next", "run_first", "run_attempt", "prev", "strays", "refusal", "dropped",
        "ahead_at", "ack_floor", "proofs", "proof_first",
    )  # fmt: skip

    def __init__(self, sid: int, is_read: bool, client: Address, server: Address, time: float) -> None:
        self.sid = sid
        self.is_read = is_read
        self.client = client
        self.server = server  # as the client addressed it
        self.tid: Address | None = None  # who answered; fixed by the first reply
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
        # Block numbers are absolute (counting past rollovers); the wire's 16 bits are mapped near data_max.
        self.data_max = 0  # highest block the data sender has sent
        self.acked = -1  # highest block acknowledged (0: the OACK's or the WRQ's ACK 0)
        self.expected = 1  # download: next block C needs in order
        self.final: int | None = None  # the short block that ends the transfer
        self.finishing = False  # download: final block delivered; Completed waits for C's ACK of it
        self.finish_time = time
        self.ahead: dict[int, int] = {}  # download: blocks seen past a gap -> wire payload length
        self.sizes: dict[int, int] = {}  # upload: blocks sent but not yet acknowledged -> payload length
        self.wrap1 = False  # the sender numbers 65535 -> 1 (not -> 0) after a rollover
        self.wrap_decided = False
        self.bytes = self.blocks = self.sent = self.received = 0
        self.retransmits = self.duplicates = self.timeouts = self.out_of_order = self.stray = 0
        self.last_progress = time
        self.requests = 0
        self.client_heard = False  # C heard from the TID since C last sent
        self.server_heard = False  # the TID heard from C since it last sent
        self.client_sent_at = time
        self.client_attempt = 0
        self.run_index = -1  # index in the event list of the Retransmit event of the current run
        self.run_next = 0
        self.run_first: int | None = None
        self.run_attempt = 0
        self.prev: TransferState | None = None  # the transfer this client port ran before this one
        self.strays: set[Address] | None = None  # other addresses that answered (e.g. repeated requests)
        # The server's ERROR refusing the request's options, and when: the client's next packet decides
        # whether it asks again without them (the transfer goes on) or not (the ERROR ended it).
        self.refusal: tuple[Error, float] | None = None
        self.dropped: tuple[OptionOutcome, ...] = ()  # options a refusal took out of the request asked again
        # Capture gaps (what the capture lacks but the transfer shows was delivered):
        self.ahead_at: dict[int, int] = {}  # download: blocks noted out of order -> index of their event
        self.ack_floor = 0  # the lowest ACK the data sender must have had, from what it sent
        self.proofs = 0  # fresh DATA that only an ACK the capture lacks allowed, waiting for the next ACK
        self.proof_first = 0  # the first of those DATA blocks

    @property
    def role(self) -> Role:
        return Role.CLIENT_READ if self.is_read else Role.CLIENT_WRITE

    def wire(self, n: int) -> int:
        if self.wrap1 and n > 0xFFFF:
            return (n - 1) % 0xFFFF + 1
        return n & 0xFFFF

    def absolute(self, wire: int) -> int:
        """The absolute block nearest to the highest one sent that has this wire number."""
        ref = self.data_max
        if self.wrap1:
            if wire == 0:
                return 0  # only ever ACK 0; once wrapped to 1 it is a stale or bogus number
            delta = (wire - self.wire(ref)) % 0xFFFF
            return ref + (delta - 0xFFFF if delta >= 0x7FFF else delta)
        return ref + ((wire - ref + 0x8000) & 0xFFFF) - 0x8000  # signed 16-bit distance

    def stats(self, now: float) -> TransferStats:
        return TransferStats(
            bytes=self.bytes, duration=max(now - self.start, 0.0), blocks=self.blocks,
            packets_sent=self.sent, packets_received=self.received, retransmits=self.retransmits,
            duplicates=self.duplicates, timeouts=self.timeouts, out_of_order=self.out_of_order, stray=self.stray,
        )  # fmt: skip


def lenient(requested: Options, oack: Options) -> Negotiated:
    """What a transfer ran with after an OACK our client would refuse but the capture's client took."""
    got = dict(oack)
    outcomes = []
    for name, asked in requested:
        granted = got.get(name)
        if granted is None:
            outcomes.append(OptionOutcome(name, asked, None, Verdict.IGNORED))
        elif name in ("blksize", "windowsize") and asked.isdigit() and granted.isdigit() \
                and int(granted) < int(asked):
            outcomes.append(OptionOutcome(name, asked, granted, Verdict.REDUCED))
        else:
            outcomes.append(OptionOutcome(name, asked, granted, Verdict.ACCEPTED))

    def number(name: str, default: int | None) -> int | None:
        value = got.get(name, "")
        return int(value) if value.isdigit() and len(value) <= 12 else default

    return Negotiated(
        blksize=max(number("blksize", DEFAULT_BLKSIZE) or DEFAULT_BLKSIZE, 1),
        windowsize=max(number("windowsize", 1) or 1, 1),
        timeout=number("timeout", None), tsize=number("tsize", None), outcomes=tuple(outcomes), oack=oack,
    )  # fmt: skip
