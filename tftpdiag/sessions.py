"""Per-session records built from the event stream: what the headless printer, the TUI and the trace
reader summarise. Live sessions and transfers rebuilt from a capture pass through the same code."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

# The names every view imports from here:
from tftpdiag.fmt import address as fmt_addr
from tftpdiag.fmt import rate as fmt_rate
from tftpdiag.fmt import size as fmt_bytes
from tftpdiag.packetlog import PacketLog
from tftpdiag.packetruns import packet_runs
from tftpdiag.protocol.doubled import capture_doubled
from tftpdiag.protocol.events import (
    RUN_ACK,
    RUN_NOTE_SHIFT,
    RUN_RECEIVED,
    Address,
    CaptureGap,
    Completed,
    ContentDigest,
    Event,
    Failed,
    Impaired,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketRun,
    PacketSent,
    PeerLocked,
    Progress,
    RequestRefused,
    RequestRetried,
    Retransmit,
    Role,
    Side,
    SocketError,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.options import Negotiated
from tftpdiag.protocol.packets import Data, Options

_NONE = Note.NONE
# A peak rate is measured over this long at least: progress comes about every 0.1 s (Timing.progress_interval,
# and a capture's), and the last report comes with the end, often soon after the one before: over that
# sliver alone a transfer read several times faster than it ever ran.
PEAK_SPAN = 0.1
_sample_time = itemgetter(0)  # a progress sample's time: what bytes_at bisects on
# A PacketRun's tag (protocol/events.py) to 1 for a received packet, and to 1 for a DATA: counted in C.
_RUN_RX = bytes(tag & RUN_RECEIVED for tag in range(256))
_RUN_DATA = bytes(0 if tag & RUN_ACK else 1 for tag in range(256))
_NOTE_INDEX = {note: i for i, note in enumerate(Note)}

__all__ = ["SessionRecord", "SessionTable", "fmt_addr", "fmt_bytes", "fmt_rate"]


@dataclass(slots=True, eq=False)
class SessionRecord:
    """One session, every packet of it held compactly: what each view, summary and finding reads."""

    session: int
    role: Role | None = None
    filename: str = ""
    mode: str = ""
    local: Address | None = None
    peer: Address | None = None  # the client (server side) or the server as first addressed (client side)
    replied_from: Address | None = None  # client side: the transfer ID the server answered from
    requested: Options = ()
    negotiated: Negotiated | None = None
    started: float | None = None
    last: float | None = None
    bytes: int = 0
    total: int | None = None
    packets_sent: int = 0
    packets_received: int = 0
    retransmits: int = 0
    timeouts: int = 0
    duplicates: int = 0
    stray: int = 0
    data_seen: bool = False
    result: Completed | Failed | None = None
    refused: RequestRefused | None = None
    retried: RequestRetried | None = None  # the server refused our options; we asked again without them
    socket_errors: list[SocketError] = field(default_factory=list)
    # Every packet, when the table keeps them (the TUI): what its packet table shows.
    packets: PacketLog | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes so far), from Progress
    sha256: str | None = None  # a download's digest as a capture saw it whole (watch), else unknown
    observed: bool = False  # rebuilt from a capture: the client's side is not tftpdiag's (TransferStarted)
    # A capture's copies (Note.COPY) from the server and from the client until the end: what its final figures
    # were made with, and the share read them by (protocol/doubled.py).
    copies_received: int = 0
    copies_sent: int = 0
    # DATA payload bytes moved, from the packets: the receiver's in-order DATA, the sender's fresh DATA.
    # What ``bytes`` says until the first Progress (a record cut before one still has figures).
    data_bytes: int = 0
    peak: float = 0.0  # the highest rate so far, bytes a second over PEAK_SPAN or more (see _note_peak)

    def window_rate(self, now: float, window: float = 2.0) -> float:
        """Bytes a second over the newest ``window`` seconds of progress; the average once finished.

        Read from the record, not from a graph column: the column for "now" is still empty while a
        fast transfer runs, which read as "0 B/s" for all of it."""
        if self.finished:
            return self.rate
        samples = self.samples
        if not samples or samples[-1][0] < now - max(window, 1.0) * 2:
            return 0.0  # nothing new for a while: a stall, truthfully
        newest_t, newest_b = samples[-1]
        older = samples[0] if len(samples) > 1 else (self.started or newest_t, 0)
        for sample in reversed(samples):
            if sample[0] <= newest_t - window:
                older = sample
                break
        span = newest_t - older[0]
        return (newest_b - older[1]) / span if span > 0 else 0.0

    def _note_peak(self, t: float, moved: int) -> None:
        """Raise the peak to the rate since the newest sample at least PEAK_SPAN older than this one (or
        since the start). Kept as the samples come, so it never goes down: the highest graph column it was
        read from before averaged over wider slices as the transfer went on, and the peak fell."""
        samples = self.samples
        i = len(samples) - 2  # the sample before this one
        while i >= 0 and samples[i][0] > t - PEAK_SPAN:
            i -= 1
        if i >= 0:
            since, before = samples[i]
        elif self.started is not None and self.started <= t - PEAK_SPAN:
            since, before = self.started, 0
        else:
            return
        if t > since:
            self.peak = max(self.peak, (moved - before) / (t - since))

    def bytes_at(self, t: float) -> float:
        """Bytes moved by time ``t``, read from the progress samples: spread evenly between two samples
        (and between the start and the first), the newest sample's count after it, 0 before the start."""
        samples = self.samples
        if not samples:
            return 0.0
        if t >= samples[-1][0]:
            return float(samples[-1][1])
        after = bisect_right(samples, t, key=_sample_time)  # the first sample later than t
        t1, b1 = samples[after]
        if after:
            t0, b0 = samples[after - 1]
        else:
            t0, b0 = (self.started if self.started is not None else t1), 0
        if t <= t0 or t1 <= t0:
            return float(b0)
        return b0 + (b1 - b0) * (t - t0) / (t1 - t0)

    @property
    def state(self) -> str:
        if self.refused is not None:
            return "refused"
        if isinstance(self.result, Completed):
            return "done"
        if isinstance(self.result, Failed):
            return "failed"
        if self.data_seen or self.bytes:
            return "transferring"
        return "requesting" if self.negotiated is None else "negotiating"

    @property
    def joined(self) -> bool:
        """A capture's transfer joined mid-way: its request (and OACK) went by before the capture began, so
        its start has no mode (a request, as decoded, always has one)."""
        return self.observed and not self.mode and self.refused is None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.refused is not None

    @property
    def acks_an_error(self) -> bool:
        """A client's ACK of the ERROR that refused it (tftp-hpa sends one): the end of that refusal,
        shown with its packets, never as a refusal of its own."""
        return self.refused is not None and self.refused.why == "error-acked"

    @property
    def duration(self) -> float:
        if isinstance(self.result, (Completed, Failed)):
            return self.result.stats.duration
        if self.started is None or self.last is None:
            return 0.0
        return max(self.last - self.started, 0.0)

    @property
    def rate(self) -> float:
        d = self.duration
        return self.bytes / d if d > 0 else 0.0

    @property
    def direction(self) -> str:
        if self.role is None:
            return "download" if self.refused is None or self.refused.is_read else "upload"
        return "download" if self.role.is_download else "upload"

    @property
    def error_sender(self) -> str | None:
        """The side that sent the ERROR that ended this session, by its role: "client" or "server"; None
        when no ERROR went (a timeout, a stray packet at the listening port only logged). A failure's
        ``raised_by`` says local or peer from the record's own side, which is tftpdiag's live but, in a
        capture, the side whose role the record plays (the client's): only the role names it for both."""
        if self.refused is not None:
            return "server" if self.refused.answered else None
        result = self.result
        if not isinstance(result, Failed) or result.code is None or self.role is None:
            return None
        return "client" if (result.raised_by is Side.LOCAL) == self.role.is_client else "server"

    @property
    def client(self) -> Address | None:
        """The client's address, from either side's point of view."""
        if self.role is not None and self.role.is_client:
            return self.local
        return self.peer

    def add_packets(self, run: Sequence[PacketReceived | PacketSent]) -> None:
        """Fold in a run of this session's packet events (see :mod:`tftpdiag.packetruns`), in one loop."""
        if self.started is None:
            self.started = run[0].time
        self.last = run[-1].time
        log = self.packets
        received = 0
        noted = False
        for event in run:
            # (The note read in the branch of each type: see findings.fold.on_run.)
            if type(event) is PacketReceived:
                received += 1
                if event.note is not _NONE:
                    noted = True
            elif event.note is not _NONE:
                noted = True
            if log is not None:
                log.add(event)
        self.packets_received += received
        self.packets_sent += len(run) - received
        if not self.data_seen:
            self.data_seen = any(type(event.packet) is Data for event in run)
        if not self.samples and self.result is None and self.role is not None:  # before the first Progress
            kind = PacketReceived if self.role.is_client == self.role.is_download else PacketSent
            self.data_bytes += sum(len(event.raw) - 4 for event in run
                                   if type(event) is kind and event.note is _NONE and type(event.packet) is Data)
            self.bytes = self.data_bytes
        if noted:
            self._noted(run)

    def _noted(self, run: Sequence[PacketReceived | PacketSent]) -> None:
        """Rare: a run with noted packets counted once more, one by one. A capture's copy: whether it is a
        packet at all is the share's to say (protocol/doubled.py). Until the end the observer's figures
        (Progress, the result) bring what it says; after it (a copy of a final packet) the share as the final
        figures read it does: the capture point's copy is in no count, a duplicate is a packet, as a live end
        counts one after its end. The duplicates are counted only until the final figures, which are the
        transfer's own."""
        result = self.result
        for event in run:
            note = event.note
            if note is Note.COPY:
                received = type(event) is PacketReceived
                if result is None:
                    if received:
                        self.copies_received += event.packet is not None  # as the observer counts them
                    else:
                        self.copies_sent += 1
                elif (not received or event.packet is not None) and not capture_doubled(
                        self.copies_received if received else self.copies_sent,
                        result.stats.packets_received if received else result.stats.packets_sent):
                    continue  # a duplicate after the end: a packet
                if received:
                    self.packets_received -= 1
                else:
                    self.packets_sent -= 1
            elif result is None and type(event) is PacketReceived:
                if note is Note.DUPLICATE:
                    self.duplicates += 1
                elif note is Note.STRAY:
                    self.stray += 1

    def add_run(self, run: PacketRun) -> None:
        """:meth:`add_packets` for a run in columns (from a transfer run apart), reading the columns."""
        times, tags = run.times, run.tags
        if self.started is None:
            self.started = times[0]
        self.last = times[-1]
        if self.packets is not None:
            self.packets.add_run(run)
        received = tags.translate(_RUN_RX).count(1)
        self.packets_received += received
        self.packets_sent += len(tags) - received
        if not self.data_seen:
            self.data_seen = tags.translate(_RUN_DATA).count(1) > 0
        if not self.samples and self.result is None and self.role is not None:  # as add_packets
            mine = RUN_RECEIVED if self.role.is_client == self.role.is_download else 0  # DATA, no note
            self.data_bytes += sum(size - 4 for tag, size in zip(tags, run.sizes, strict=True) if tag == mine)
            self.bytes = self.data_bytes
        if max(tags) >> RUN_NOTE_SHIFT and self.result is None:  # rare: a noted packet (as add_packets)
            for note, count in ((Note.DUPLICATE, "duplicates"), (Note.STRAY, "stray")):
                code = RUN_RECEIVED | _NOTE_INDEX[note] << RUN_NOTE_SHIFT
                seen = tags.count(code) + tags.count(code | RUN_ACK)
                if seen:
                    setattr(self, count, getattr(self, count) + seen)

    def apply(self, event: Event) -> None:
        if type(event) is PacketRun:
            self.add_run(event)
            return
        if type(event) is PacketReceived or type(event) is PacketSent:
            self.add_packets((event,))
            return
        t = event.time
        if self.started is None:
            self.started = t
        self.last = t
        if isinstance(event, Progress):
            # A sampled stream may miss packet events; the snapshot's counters are exact.
            self.samples.append((t, event.bytes))
            self._note_peak(t, event.bytes)
            self.bytes = event.bytes
            if event.total is not None:
                self.total = event.total
            stats = event.stats
            self.packets_sent, self.packets_received = stats.packets_sent, stats.packets_received
            self.retransmits, self.timeouts, self.duplicates = stats.retransmits, stats.timeouts, stats.duplicates
        elif isinstance(event, Retransmit):
            self.retransmits += event.count
        elif isinstance(event, TimedOut):
            self.timeouts += 1
        elif isinstance(event, TransferStarted):
            self.role, self.filename, self.mode = event.role, event.filename, event.mode
            self.local, self.peer, self.requested = event.local, event.peer, event.requested
            self.observed = event.observed
        elif isinstance(event, PeerLocked):
            self.replied_from = event.peer
        elif isinstance(event, OptionsNegotiated):
            self.negotiated = event.negotiated
            if event.negotiated.tsize is not None:
                self.total = event.negotiated.tsize
        elif isinstance(event, (Completed, Failed)):
            self.result = event
            stats = event.stats
            self.bytes = stats.bytes
            if not self.peak:  # over before PEAK_SPAN: its only measure is its average
                self.peak = self.rate
            self.packets_sent, self.packets_received = stats.packets_sent, stats.packets_received
            self.retransmits, self.timeouts, self.duplicates = stats.retransmits, stats.timeouts, stats.duplicates
        elif isinstance(event, RequestRefused):
            self.refused = event
            self.peer = event.peer
            self.filename, self.mode, self.requested = event.filename, event.mode, event.requested
        elif isinstance(event, SocketError):
            self.socket_errors.append(event)
        elif isinstance(event, Impaired):
            if self.packets is not None:
                self.packets.add_impaired(event)
        elif isinstance(event, CaptureGap):
            if self.packets is not None:
                self.packets.add_gap(event)
        elif isinstance(event, ContentDigest):
            self.sha256 = event.sha256
        elif isinstance(event, RequestRetried):
            self.retried = event
            self.requested = event.requested
            self.negotiated = None
            self.replied_from = None


class SessionTable:
    """Every session seen on a stream, by id, in the order they began."""

    def __init__(self, *, keep_packets: bool = False) -> None:
        self.sessions: dict[int, SessionRecord] = {}
        self.keep_packets = keep_packets  # every packet in each record's PacketLog (the TUI)

    def apply(self, events: Iterable[Event]) -> list[SessionRecord]:
        """Fold events in; returns the sessions that finished with these events."""
        return self.apply_runs(packet_runs(events))

    def apply_runs(self, runs: list[Sequence[Event]]) -> list[SessionRecord]:
        """:meth:`apply`, for events already split by :func:`tftpdiag.packetruns.packet_runs`."""
        ended: list[SessionRecord] = []
        sessions = self.sessions
        keep = self.keep_packets
        for chunk in runs:
            if type(chunk) is PacketRun:  # a run in columns: no event built
                record = sessions.get(chunk.session)
                if record is None:
                    record = sessions[chunk.session] = SessionRecord(chunk.session)
                if keep and record.packets is None:
                    record.packets = PacketLog()
                record.add_run(chunk)
                continue
            event = chunk[0]
            kind = type(event)
            record = sessions.get(event.session)
            if record is None:
                record = sessions[event.session] = SessionRecord(event.session)
            if keep and record.packets is None and (kind is PacketSent or kind is PacketReceived or kind is Impaired
                                                    or kind is CaptureGap):
                record.packets = PacketLog()  # on the first packet: a trace of many sessions may have none
            if kind is PacketSent or kind is PacketReceived:
                record.add_packets(chunk)  # type: ignore[arg-type]  # a run holds only packet events
                continue  # a packet never ends a session
            was_finished = record.finished
            record.apply(event)
            if not was_finished and record.finished:
                ended.append(record)
        return ended

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(self.sessions.values())

    def __len__(self) -> int:
        return len(self.sessions)
