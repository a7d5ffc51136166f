"""The immutable events every layer above the protocol reads: TUI, headless printer, traces, findings.

A transfer makes one event per datagram, so these are small slotted records (tftpdiag/records.py). Every
event carries the ``session`` id the engine gave the machine and the ``time`` the caller passed in
(seconds, epoch).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import Protocol, overload

from tftpdiag.compat import StrEnum
from tftpdiag.protocol.options import Negotiated, OptionOutcome
from tftpdiag.protocol.packets import Ack, Data, Options, Packet, ack_packet
from tftpdiag.records import record

Address = tuple[str, int]

__all__ = [
    "Address",
    "Role",
    "Note",
    "Side",
    "Reason",
    "TransferStats",
    "TransferStarted",
    "PacketSent",
    "PacketReceived",
    "PacketRun",
    "StoredBytes",
    "RUN_RECEIVED",
    "RUN_ACK",
    "RUN_NOTE_SHIFT",
    "RUN_NOTE_TAGS",
    "PeerLocked",
    "OptionsNegotiated",
    "Retransmit",
    "TimedOut",
    "Progress",
    "Completed",
    "Failed",
    "RequestRefused",
    "SocketError",
    "Impaired",
    "RequestRetried",
    "CaptureGap",
    "ContentDigest",
    "Event",
]


class Role(StrEnum):
    CLIENT_READ = "client-read"
    CLIENT_WRITE = "client-write"
    SERVER_READ = "server-read"
    SERVER_WRITE = "server-write"

    @property
    def is_client(self) -> bool:
        return self in _CLIENT_ROLES

    @property
    def is_download(self) -> bool:
        """Data flows from server to client."""
        return self in _DOWNLOAD_ROLES


# (Sets, not a tuple of Role.X: reading an enum member off its class is an attribute lookup of its own,
# and every view, filter and finding asks a record's role these, 100,000 times for a large trace.)
_CLIENT_ROLES = frozenset({Role.CLIENT_READ, Role.CLIENT_WRITE})
_DOWNLOAD_ROLES = frozenset({Role.CLIENT_READ, Role.SERVER_READ})


class Note(StrEnum):
    """What was special about one datagram; empty for the ordinary ones."""

    NONE = ""
    RETRANSMIT = "retransmit"  # sent again after a timeout or a window gap
    REACK = "re-ack"  # an ACK repeated because the peer repeated its DATA
    DUPLICATE = "duplicate"  # received again (DATA or ACK or OACK already seen)
    OUT_OF_ORDER = "out-of-order"  # a DATA block ahead of the one expected (a gap)
    STRAY = "stray"  # from an address that is not this transfer's peer (unknown TID)
    MALFORMED = "malformed"  # could not be decoded
    UNEXPECTED = "unexpected"  # decoded, but not a packet this state accepts
    LATE = "late"  # arrived after the transfer had ended
    # A capture's datagram seen again within 20 ms, asked for by nothing: a copy the network or the capture
    # point made (the share says which at the end: protocol/doubled.py), no resend by either end. Last, so the
    # notes before it keep their index (PacketRun tags, packet logs).
    COPY = "copy"


class Side(StrEnum):
    LOCAL = "local"
    PEER = "peer"


class Reason(StrEnum):
    """Why a transfer failed."""

    PEER_ERROR = "peer-error"  # the peer sent ERROR
    PROTOCOL = "protocol"  # we sent ERROR because the peer broke the rules or asked for what we refuse
    TIMEOUT = "timeout"  # retries exhausted
    CANCELLED = "cancelled"  # stopped by the user
    LOCAL = "local"  # our side could not go on (disk, deadline, socket)
    INTERNAL = "internal"  # our side met an error it did not foresee: a bug of tftpdiag's (engine/broken.py)
    UNREACHABLE = "unreachable"  # the network said the peer's port or host cannot be reached (ICMP)


@record
class TransferStats:
    """A transfer's figures so far: bytes, time, blocks, packets, retransmits, duplicates, timeouts."""

    bytes: int
    duration: float
    blocks: int
    packets_sent: int
    packets_received: int
    retransmits: int
    duplicates: int
    timeouts: int
    out_of_order: int
    stray: int

    @property
    def rate_bps(self) -> float:
        """Bytes per second (0 for an instant transfer)."""
        return self.bytes / self.duration if self.duration > 0 else 0.0


@record
class TransferStarted:
    """A session began: its role, its ends and the request."""

    session: int
    time: float
    role: Role
    filename: str
    mode: str
    local: Address
    peer: Address
    requested: Options
    # Seen from outside (a capture, protocol/observer.py): neither end is tftpdiag. The events still read
    # as the client's (LOCAL is the client, PEER the server), so whatever speaks of "tftpdiag" or "our"
    # side speaks of the client instead.
    observed: bool = False


# The two packet events are made once per datagram (about 1.5 million for a 1 GiB transfer): as records
# (tftpdiag/records.py) their constructor assigns each field directly, where a frozen dataclass's went
# through object.__setattr__ (860 against 200 ns on CPython 3.11, measured). Like every event they are
# immutable by contract: made complete at the moment the datagram is sent or received, and nothing
# assigns to a field afterwards (the type checker rejects it; tests/protocol/test_events.py checks the
# machines never do).
@record
class PacketSent:
    """A datagram went out."""

    session: int
    time: float
    local: Address
    peer: Address
    raw: bytes
    packet: Packet | None  # None only in a capture rebuilt from the wire, for a datagram that does not decode
    note: Note = Note.NONE


@record
class PacketReceived:
    """A datagram came in."""

    session: int
    time: float
    local: Address
    peer: Address
    raw: bytes
    packet: Packet | None  # None when it could not be decoded
    note: Note = Note.NONE
    detail: str = ""


# A packet's tag in a PacketRun: bit 0 received (else sent), bit 1 an ACK (else DATA), the bits above
# its note's index in Note.
RUN_RECEIVED, RUN_ACK, RUN_NOTE_SHIFT = 1, 2, 2
_RUN_NOTES = tuple(Note)
RUN_NOTE_TAGS = {note: index << RUN_NOTE_SHIFT for index, note in enumerate(_RUN_NOTES)}  # a note's bits in a tag


class StoredBytes(Protocol):
    """Bytes kept elsewhere (a PacketRun's datagrams in a file: engine/apart_wire.py)."""

    @property
    def length(self) -> int: ...
    def read(self) -> bytes: ...


class PacketRun(Sequence[PacketSent | PacketReceived]):
    """Consecutive DATA and ACK events of one session between the same two addresses, in columns: what
    a transfer run apart (engine/apart.py) sends the view, kept in this form on the view's side.

    Why: built as one object each, a fast transfer's packet events cost the view's process 1.75 us
    apiece to unpack (measured) and as much again to fold, CPU a 2-core machine takes from the transfer
    it shows. The folds that see every packet (the session record and its packet log, the findings)
    read the columns instead, a run at a time; anything that wants the events (a trace written, a
    fold's rare case) iterates the run and gets them, built once, equal to those the engine published.

    Only packets their datagram gives back travel so: a DATA whose block and payload are its datagram's,
    an ACK whose block is its datagram's bytes 2-3, none received with a detail. ``tags`` holds a byte
    per packet (RUN_RECEIVED, RUN_ACK, the note's index shifted by RUN_NOTE_SHIFT); ``blocks`` the
    16-bit block numbers, ``sizes`` the datagrams' lengths, ``joined`` the datagrams end to end: as
    bytes, or as an object whose ``read()`` gives them and whose ``length`` is their total (a transfer run
    apart keeps its datagrams in a file of its own and sends where they are: engine/apart_wire.py).
    """

    __slots__ = ("session", "local", "peer", "tags", "times", "blocks", "sizes", "joined", "_events")

    def __init__(self, session: int, local: Address, peer: Address, tags: bytes, times: array,
                 blocks: array, sizes: array, joined: bytes | StoredBytes) -> None:
        total = len(joined) if isinstance(joined, bytes) else getattr(joined, "length", -1)
        if (times.typecode, blocks.typecode, sizes.typecode) != ("d", "H", "H") or not tags \
                or not (len(tags) == len(times) == len(blocks) == len(sizes)) or sum(sizes) != total \
                or max(tags) >> RUN_NOTE_SHIFT >= len(_RUN_NOTES):
            raise ValueError("a packet run's columns disagree")
        self.session = session
        self.local = local
        self.peer = peer
        self.tags = tags
        self.times = times
        self.blocks = blocks
        self.sizes = sizes
        self.joined = joined
        self._events: list[PacketSent | PacketReceived] | None = None

    @property
    def time(self) -> float:
        """The first packet's time (as every event has one)."""
        return float(self.times[0])

    def __len__(self) -> int:
        return len(self.tags)

    def events(self) -> list[PacketSent | PacketReceived]:
        """The run as the engine published it, one event a packet (built on the first call)."""
        out = self._events
        if out is not None:
            return out
        out = []
        append = out.append
        joined = self.joined if isinstance(self.joined, bytes) else self.joined.read()
        if len(joined) != sum(self.sizes):
            raise ValueError("a packet run's datagrams are not all there")
        session, local, peer, notes = self.session, self.local, self.peer, _RUN_NOTES
        end = 0
        for tag, when, number, size in zip(self.tags, self.times, self.blocks, self.sizes, strict=True):
            start, end = end, end + size
            raw = joined[start:end]
            packet: Data | Ack = ack_packet(number) if tag & RUN_ACK else Data(number, raw[4:])
            if tag & RUN_RECEIVED:
                append(PacketReceived(session, when, local, peer, raw, packet, notes[tag >> RUN_NOTE_SHIFT], ""))
            else:
                append(PacketSent(session, when, local, peer, raw, packet, notes[tag >> RUN_NOTE_SHIFT]))
        self._events = out
        return out

    def __iter__(self) -> Iterator[PacketSent | PacketReceived]:
        return iter(self.events())

    @overload
    def __getitem__(self, index: int) -> PacketSent | PacketReceived: ...
    @overload
    def __getitem__(self, index: slice) -> list[PacketSent | PacketReceived]: ...
    def __getitem__(self, index: int | slice) -> PacketSent | PacketReceived | list[PacketSent | PacketReceived]:
        return self.events()[index]

    def __eq__(self, other: object) -> bool:
        if type(other) is not PacketRun:
            return NotImplemented
        return (self.session, self.local, self.peer, bytes(self.tags), self.times, self.blocks, self.sizes,
                self.joined) == (other.session, other.local, other.peer, bytes(other.tags), other.times,
                                 other.blocks, other.sizes, other.joined)

    __hash__ = None  # type: ignore[assignment]  # mutable columns: equal runs, no hash

    def __repr__(self) -> str:
        return f"PacketRun(session={self.session}, packets={len(self.tags)}, first={self.time})"


@record
class PeerLocked:
    """The transfer ID is fixed: ``peer`` answered the request that was sent to ``requested``."""

    session: int
    time: float
    peer: Address
    requested: Address


@record
class OptionsNegotiated:
    """The options both ends now use."""

    session: int
    time: float
    negotiated: Negotiated

    @property
    def outcomes(self) -> tuple[OptionOutcome, ...]:
        return self.negotiated.outcomes


@record
class Retransmit:
    """Packets are about to be sent again; ``reason`` is 'timeout' or 'window-gap'."""

    session: int
    time: float
    reason: str
    first_block: int | None  # None when the packet resent is a request, an OACK or an ACK
    count: int  # how many packets are resent
    attempt: int


@record
class TimedOut:
    """Nothing came within the timeout."""

    session: int
    time: float
    waited: float
    attempt: int
    waiting_for: str  # e.g. "ACK 17", "DATA 3", "reply to RRQ"


@record
class Progress:
    """Sent at most every Timing.progress_interval, and at the end: the counters so far."""

    session: int
    time: float
    bytes: int
    total: int | None
    stats: TransferStats


@record
class Completed:
    """The transfer ended well."""

    session: int
    time: float
    stats: TransferStats


@record
class Failed:
    """The transfer ended in failure, and why."""

    session: int
    time: float
    reason: Reason
    raised_by: Side
    code: int | None  # the TFTP error code exchanged, if an ERROR was sent or received
    message: str
    stats: TransferStats


@record
class RequestRefused:
    """A server turned a request away before any transfer began (path escape, no such file, ...)."""

    session: int
    time: float
    peer: Address
    filename: str
    is_read: bool
    code: int
    message: str
    why: str  # the machine-readable cause: "path-escape", "not-found", "read-only", ...
    suggestion: str | None = None  # for a name not found: the existing name the client probably meant
    received: str = ""  # what arrived when it was not a request at all, e.g. "ACK 1"
    # An ERROR went back (a non-request is only logged; undecodable bytes are told why). A trace written
    # before this field says nothing of it: read as not answered.
    answered: bool = False
    # The request's mode as sent and its options, as a transfer's record has them (TransferStarted): a
    # refusal is of that request. Empty for what was no request, and in a trace written before these.
    mode: str = ""
    requested: Options = ()


@record
class SocketError:
    """The socket reported an error, usually from ICMP (e.g. port unreachable: nothing listens there)."""

    session: int
    time: float
    peer: Address | None  # where the datagram that drew the error was going, when the kernel says
    errno: int
    message: str


@record
class Impaired:
    """Fault injection (--impair) acted on a datagram on its way ``direction`` ("in" or "out")."""

    session: int
    time: float
    direction: str
    action: str  # "dropped", "delayed", "duplicated" or "reordered"
    peer: Address
    raw: bytes
    delay: float  # seconds the datagram was held (0 when dropped)
    why: str  # the rule that acted, e.g. "loss=5%" or "drop=data:3"


@record
class RequestRetried:
    """The server answered our request with an ERROR that refuses its options (ERROR 8, or one whose
    text names them); the client asks once more without them, as real clients fall back. ``asked``
    is what the refused request held, ``requested`` what the new one holds."""

    session: int
    time: float
    code: int
    message: str
    asked: Options
    requested: Options


@record
class CaptureGap:
    """Packets a capture lacks although the transfer shows they were delivered: the receiver's ACK
    covers DATA the capture never saw, or the sender went on as only an ACK the capture never saw
    allows. The capture dropped them (tcpdump's "packets dropped by kernel", a mirror port under
    load), not the network. Only a transfer rebuilt from a capture has these: a live session sees all
    its own packets."""

    session: int
    time: float  # when the packet that shows it was captured
    missing: str  # "DATA" or "ACK"
    count: int  # packets the capture lacks (for ACKs, the fewest that explain what followed)
    detail: str  # what shows it, in words


@record
class ContentDigest:
    """The SHA-256 of a download's bytes as a capture saw them, in order, when it saw every one: what
    the client received, checked without the client's help. Only a transfer rebuilt from a capture
    whose observer was asked to hash (watch) has one, just before its Completed."""

    session: int
    time: float
    sha256: str
    bytes: int


Event = (
    TransferStarted
    | PacketSent
    | PacketReceived
    | PacketRun
    | PeerLocked
    | OptionsNegotiated
    | Retransmit
    | TimedOut
    | Progress
    | Completed
    | Failed
    | RequestRefused
    | SocketError
    | Impaired
    | RequestRetried
    | CaptureGap
    | ContentDigest
)
