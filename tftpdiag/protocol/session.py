"""Machinery shared by the four session machines: the retransmit timer with backoff, the transfer-ID
check, the sending and receiving halves of a transfer (windowed, RFC 7440), dallying, and events.

A machine is driven like aioquic's connection: ``receive(datagram, addr, now)`` and
``handle_timeout(now)`` feed it; ``datagrams_to_send()``, ``events()`` and ``next_timeout()`` tell the
caller what to do. The caller owns the socket and the clock; nothing here blocks or reads the time.
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, Sequence

from tftpdiag.protocol.events import (
    Address,
    Completed,
    Event,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    PeerLocked,
    Progress,
    Reason,
    Retransmit,
    Role,
    Side,
    TimedOut,
    TransferStats,
)
from tftpdiag.protocol.fast import ack_bytes, ack_packet
from tftpdiag.protocol.netascii import NetasciiDecoder
from tftpdiag.protocol.options import Negotiated
from tftpdiag.protocol.packets import (
    Ack,
    Request,
    Data,
    Error,
    ErrorCode,
    Packet,
    ProtocolError,
    decode,
    encode,
    encode_data,
)

__all__ = ["Timing", "State", "Session", "Sender", "Receiver", "Readable", "Writable"]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Timing:
    """Retransmission and ending rules. Times in seconds."""

    initial_timeout: float = 1.0
    min_timeout: float = 0.1  # floor of the adaptive timeout (RFC 1123 asks for adaptive timeouts)
    max_timeout: float = 8.0  # cap of the exponential backoff
    retries: int = 5  # consecutive timeouts before giving up (at least this many, when give_up is set)
    # Seconds with no progress from the peer before giving up, as well as `retries` timeouts: a count
    # alone ends far sooner on a fast link, whose adaptive timeout is short, than the peer's own
    # patience (tftp-hpa waits 25 s, U-Boot 10 x 5 s). 0: the count alone decides.
    give_up: float = 0.0
    # How long the side that sent the final ACK stays to re-ACK a repeated final DATA. It must outlast
    # the peer's retransmissions of that DATA, which back off: a few seconds costs only a socket.
    dally: float = 3.0
    progress_interval: float = 0.1
    rollover: int = 0  # the block number that follows 65535 when we send (0, or 1 as some peers do)
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.rollover not in (0, 1):
            raise ValueError("rollover must be 0 or 1")
        if self.retries < 0 or self.initial_timeout <= 0 or self.min_timeout <= 0 or self.give_up < 0:
            raise ValueError("timeouts must be positive and retries and give_up not negative")


class State(Enum):
    REQUESTING = "requesting"  # client: request sent, waiting for the first reply
    NEGOTIATING = "negotiating"  # OACK exchanged, waiting for the first DATA or ACK
    TRANSFERRING = "transferring"
    DALLYING = "dallying"  # done; lingering to re-ACK a repeated final DATA
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (State.DALLYING, State.DONE, State.FAILED)


_TRANSFERRING = State.TRANSFERRING  # module constants: an enum member looked up per datagram costs
_NONE = Note.NONE
_RETRANSMIT = Note.RETRANSMIT
_READ_AHEAD = 1 << 16  # bytes a sender reads from its source at a time, in whole blocks
_UNBOUNDED = 1 << 62  # a block number no transfer reaches: no limit


class _Timer:
    """RFC 6298 smoothed RTT estimate with Karn's rule and exponential backoff.

    Once settled, one sample in SAMPLE_EVERY is used: in lock-step every block is a round trip, and
    the estimate needs only a few a second, not tens of thousands.
    """

    SAMPLE_EVERY = 8
    __slots__ = ("timing", "srtt", "rttvar", "base", "backoff", "fixed", "samples")

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base = timing.initial_timeout
        self.backoff = 0
        self.fixed = False
        self.samples = 0

    def fix(self, seconds: float) -> None:
        """A negotiated timeout option (RFC 2349) replaces the estimate."""
        self.fixed = True
        self.base = seconds

    def sample(self, rtt: float) -> None:
        if self.fixed or not self.timing.adaptive:
            return
        self.samples += 1
        if self.samples > self.SAMPLE_EVERY and self.samples % self.SAMPLE_EVERY:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.base = min(max(self.srtt + 4 * self.rttvar, self.timing.min_timeout), self.timing.max_timeout)

    def current(self) -> float:
        if not self.backoff:
            return self.base
        return min(self.base * (1 << self.backoff), max(self.timing.max_timeout, self.base))


def _wire_block(n: int, rollover: int) -> int:
    if rollover == 0 or n <= 0xFFFF:
        return n & 0xFFFF
    return (n - 1) % 0xFFFF + 1


class _Unrecorded:
    """The place, in a machine's event list, of the PacketReceived events of a run of DATA blocks
    taken in order: datagrams[start:end], their payloads, the first one's block number."""

    __slots__ = ("now", "addr", "datagrams", "start", "end", "payloads", "first_block")

    def __init__(self, now: float, addr: Address, datagrams: Sequence[bytes], start: int, end: int,
                 payloads: list[bytes], first_block: int) -> None:
        self.now, self.addr, self.datagrams, self.start, self.end = now, addr, datagrams, start, end
        self.payloads = payloads
        self.first_block = first_block


def _recorded(events: list, session: int, local: Address) -> list[Event]:
    """``events`` with each _Unrecorded run replaced by its PacketReceived events, in order."""
    out: list[Event] = []
    add = out.append
    for event in events:
        if type(event) is not _Unrecorded:
            add(event)
            continue
        now, addr, block = event.now, event.addr, event.first_block
        for datagram, payload in zip(event.datagrams[event.start:event.end], event.payloads):
            add(PacketReceived(session, now, local, addr, datagram, Data(block, payload), _NONE, ""))
            block = (block + 1) & 0xFFFF
    return out


class Session:
    """Base of the four machines; see the module docstring for how to drive one."""

    role: Role
    _BUFFERED = ()

    def __init__(self, session_id: int, *, local: Address, peer: Address, timing: Timing, now: float) -> None:
        self.session_id = session_id
        self.local = local
        self.peer = peer  # where packets go; fixed once the transfer ID is locked
        self.requested_peer = peer
        self.locked = False
        self.timing = timing
        self.started = now
        self.state = State.TRANSFERRING
        self.negotiated = Negotiated()
        self.blksize = 512
        self.windowsize = 1
        self.total: int | None = None
        self.result: Completed | Failed | None = None
        self._timer = _Timer(timing)
        self._deadline: float | None = None
        self._attempt = 0
        self._heard_at = now  # the last progress from the peer (or the start): when give_up counts from
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self._unrecorded = False  # _events holds runs of DATA whose events are still to be made
        self._last_progress = now
        self._rtt_mark: float | None = None  # when the packet being timed was sent (Karn: first sends only)
        self.bytes = 0
        self.blocks = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.retransmits = 0
        self.duplicates = 0
        self.timeouts = 0
        self.out_of_order = 0
        self.stray = 0

    # -- the caller's interface -------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        if self._unrecorded:
            self._unrecorded = False
            events = _recorded(events, self.session_id, self.local)
        return events

    def next_timeout(self) -> float | None:
        return self._deadline

    @property
    def finished(self) -> bool:
        """Completed or failed (the machine may still be dallying)."""
        return self.state.finished

    @property
    def closed(self) -> bool:
        """Nothing more to do: the caller may drop the machine and close its socket."""
        return self.state in (State.DONE, State.FAILED)

    def handle_timeout(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self.state is State.DALLYING:
            self.state = State.DONE
            self._deadline = None
            return
        self._attempt += 1
        self.timeouts += 1
        waited = self._timer.current()
        self._events.append(TimedOut(self.session_id, now, waited, self._attempt, self._waiting_for()))
        timing = self.timing
        quiet = now - self._heard_at
        if self._attempt > timing.retries and quiet >= timing.give_up:
            silence = f" in {quiet:.1f} s" if timing.give_up else ""
            self._fail(now, Reason.TIMEOUT, Side.LOCAL, None,
                       f"no answer after {self._attempt} attempts{silence} (last wait {waited:.2f} s)", send=False)
            return
        self._timer.backoff = self._attempt
        self._rtt_mark = None
        self._on_timeout(now)
        if timing.give_up and self._attempt >= timing.retries:
            # The last wait ends when give_up does, not a backed-off wait later: the session lets go of
            # its peer after give_up seconds, not up to max_timeout more.
            end = self._heard_at + timing.give_up
            if end > now and self._deadline is not None and self._deadline > end:
                self._deadline = end

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        if self.state in (State.DONE, State.FAILED):
            self._note_received(datagram, self._try_decode(datagram), addr, now, Note.LATE)
            return
        if self.locked and addr != self.peer:
            self._stray(datagram, addr, now)
            return
        try:
            packet = decode(datagram)
        except ProtocolError as exc:
            self._note_received(datagram, None, addr, now, Note.MALFORMED, exc.message)
            if self.state is State.DALLYING:
                return
            self._lock(addr, now)
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, exc.code, exc.message)
            return
        self.packets_received += 1
        self._on_packet(packet, datagram, addr, now)

    def receive_many(self, datagrams: Sequence[bytes], addr: Address, now: float) -> None:
        """Datagrams that arrived together from ``addr`` (a run the kernel coalesced, UDP GRO): the
        same as :meth:`receive` on each in turn."""
        receive = self.receive
        for datagram in datagrams:
            receive(datagram, addr, now)

    def abort(self, now: float, message: str = "transfer cancelled", code: int = ErrorCode.NOT_DEFINED) -> None:
        """Stop at once (user cancel, deadline, local failure), telling the peer with an ERROR."""
        if self.state.finished:
            if self.state is State.DALLYING:
                self.state, self._deadline = State.DONE, None
            return
        self._fail(now, Reason.CANCELLED, Side.LOCAL, int(code), message)

    def local_io_error(self, now: float, exc: OSError) -> None:
        """The caller could not store or read the data (its disk): stop, telling the peer with an ERROR."""
        if not self.state.finished:
            self._local_io_error(exc, now)

    def abandon(self, now: float, message: str) -> None:
        """Stop at once without a word to the peer: a server making room drops a session whose client
        never answered, which may be a forged address that must not be sent an ERROR as well."""
        if self.state is State.DALLYING:
            self.state, self._deadline = State.DONE, None
        elif not self.state.finished:
            self._fail(now, Reason.TIMEOUT, Side.LOCAL, None, message, send=False)

    def unreachable(self, now: float, message: str) -> None:
        """The network reported the peer unreachable (ICMP); nobody is there to hear an ERROR."""
        if not self.state.finished:
            self._fail(now, Reason.UNREACHABLE, Side.PEER, None, message + self._unreachable_hint(), send=False)

    def _unreachable_hint(self) -> str:
        return ""

    # -- for subclasses -----------------------------------------------------------------------------

    def _on_packet(self, packet: Packet, raw: bytes, addr: Address, now: float) -> None:
        raise NotImplementedError

    def _on_timeout(self, now: float) -> None:
        raise NotImplementedError

    def _waiting_for(self) -> str:
        raise NotImplementedError

    def _try_decode(self, datagram: bytes) -> Packet | None:
        try:
            return decode(datagram)
        except ProtocolError:
            return None

    def _note_received(self, raw: bytes, packet: Packet | None, addr: Address, now: float,
                       note: Note = Note.NONE, detail: str = "") -> None:
        self._events.append(PacketReceived(self.session_id, now, self.local, addr, raw, packet, note, detail))

    def _send(self, packet: Packet, raw: bytes, now: float, note: Note = Note.NONE, to: Address | None = None) -> None:
        dest = self.peer if to is None else to
        self._out.append((raw, dest))
        self._events.append(PacketSent(self.session_id, now, self.local, dest, raw, packet, note))
        self.packets_sent += 1

    def _arm(self, now: float) -> None:
        self._deadline = now + self._timer.current()

    def _progressed(self, now: float) -> None:
        """Something new arrived: the backoff ends and the timer restarts."""
        self._heard_at = now
        if self._attempt:
            self._attempt = 0
            self._timer.backoff = 0
        if now - self._last_progress >= self.timing.progress_interval:
            self._report_progress(now)

    def _report_progress(self, now: float) -> None:
        self._last_progress = now
        self._events.append(Progress(self.session_id, now, self.bytes, self.total, self.stats(now)))

    def _sample_rtt(self, now: float) -> None:
        if self._rtt_mark is not None:
            self._timer.sample(now - self._rtt_mark)
            self._rtt_mark = None

    def _lock(self, addr: Address, now: float) -> None:
        if not self.locked:
            self.locked = True
            self.peer = addr
            self._events.append(PeerLocked(self.session_id, now, addr, self.requested_peer))

    def _stray(self, raw: bytes, addr: Address, now: float) -> None:
        """RFC 1350: a packet from another transfer ID gets ERROR 5; this transfer carries on."""
        self.stray += 1
        packet = self._try_decode(raw)
        self._note_received(raw, packet, addr, now, Note.STRAY, "unknown transfer ID")
        if not isinstance(packet, Error):  # an ERROR is never answered
            reply = Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID")
            self._send(reply, encode(reply), now, to=addr)

    def _set_negotiated(self, negotiated: Negotiated, now: float) -> None:
        self.negotiated = negotiated
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        if negotiated.timeout is not None:
            self._timer.fix(float(negotiated.timeout))
        self._events.append(OptionsNegotiated(self.session_id, now, negotiated))

    def stats(self, now: float) -> TransferStats:
        return TransferStats(
            bytes=self.bytes, duration=max(now - self.started, 0.0), blocks=self.blocks,
            packets_sent=self.packets_sent, packets_received=self.packets_received,
            retransmits=self.retransmits, duplicates=self.duplicates, timeouts=self.timeouts,
            out_of_order=self.out_of_order, stray=self.stray,
        )

    def _complete(self, now: float, dally: bool) -> None:
        self.result = Completed(self.session_id, now, self.stats(now))
        self._events.append(Progress(self.session_id, now, self.bytes, self.total, self.stats(now)))
        self._events.append(self.result)
        if dally and self.timing.dally > 0:
            self.state = State.DALLYING
            self._deadline = now + self.timing.dally
        else:
            self.state = State.DONE
            self._deadline = None

    def _fail(self, now: float, reason: Reason, raised_by: Side, code: int | None, message: str,
              send: bool = True) -> None:
        """End the transfer. When we raise it and ``send`` holds, the peer is told with an ERROR."""
        if send and raised_by is Side.LOCAL and code is not None:
            error = Error(code, message)
            self._send(error, encode(error), now)
        self.state = State.FAILED
        self._deadline = None
        self.result = Failed(self.session_id, now, reason, raised_by, code, message, self.stats(now))
        self._events.append(self.result)

    def _peer_error(self, packet: Error, now: float) -> None:
        self._fail(now, Reason.PEER_ERROR, Side.PEER, packet.code, packet.message or packet.code_name)

    def _local_io_error(self, exc: OSError, now: float) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            code, message = ErrorCode.DISK_FULL, f"disk full: {exc.strerror}"
        elif exc.errno == errno.EEXIST:
            code, message = ErrorCode.FILE_EXISTS, "file already exists"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            code, message = ErrorCode.ACCESS_VIOLATION, f"access violation: {exc.strerror}"
        else:
            code, message = ErrorCode.NOT_DEFINED, f"local I/O error: {exc.strerror or exc}"
        self._fail(now, Reason.LOCAL, Side.LOCAL, int(code), message)


class Sender(Session):
    """The side that sends DATA: a client writing, a server answering a read.

    Windowed (RFC 7440): up to ``windowsize`` blocks are in flight. DATA is resent only on a timeout,
    or once per window when the receiver's ACK shows a gap; a duplicate ACK is never answered with DATA
    in lock-step (RFC 1123's fix for the Sorcerer's Apprentice bug).
    """

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        # The common case, an ACK from our peer mid-transfer, skips the generic decoder; what it records
        # and does is exactly what the general path would.
        if (len(datagram) == 4 and datagram[:2] == b"\x00\x04" and self.state is _TRANSFERRING
                and addr == self.peer and self.locked):
            self.packets_received += 1
            self._on_ack(ack_packet((datagram[2] << 8) | datagram[3]), datagram, now)
            return
        super().receive(datagram, addr, now)

    def _init_sender(self, source: Readable) -> None:
        self._source = source
        self._acked = 0  # highest block acknowledged (absolute, counting past rollovers)
        self._next = 1  # next block to put on the wire
        self._sent_max = 0
        self._payloads: dict[int, tuple[Data, bytes]] = {}  # sent, not yet acknowledged: packet, datagram
        self._final: int | None = None
        self._rewound_for = -1
        self._rtt_block = 0
        # What was read from the source ahead of the blocks sent: reading many blocks at a time costs one
        # call where a block at a time costs one each, and prefetch() does it while the peer is busy.
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._read_error: OSError | None = None  # a failed read, reported when the block it held is due
        # The next new blocks, read and encoded by prefetch() while the peer is busy: answering its ACK
        # then only hands them out. Block numbers follow _sent_max; a short block ends the file.
        self._prepared: deque[tuple[Data, bytes, PacketSent]] = deque()
        self._prepared_end = False

    def prefetch(self) -> None:
        """Read and encode the next window's new blocks now, while waiting for the peer, so that
        answering its ACK only hands them out.

        The caller invokes this after sending; it never changes what is sent, only when the work happens.
        """
        # Only once the block size is settled: before the OACK a block would be read at the wrong size.
        if self._prepared_end or self._read_error is not None or self._final is not None \
                or self.state is not _TRANSFERRING or not self.locked:
            return
        prepared, blksize, rollover = self._prepared, self.blksize, self.timing.rollover
        session, local, peer = self.session_id, self.local, self.peer
        n = self._sent_max + 1 + len(prepared)
        while len(prepared) < self.windowsize:
            try:
                payload = self._read_block()
            except OSError as exc:
                # Not retried: a failed read may have taken part of a block with it, and reading on
                # would send the rest shifted. The error ends the transfer when the block is needed.
                self._read_error = exc
                return
            block = _wire_block(n, rollover)
            packet, raw = Data(block, payload), encode_data(block, payload)
            # The event is made here too, off the critical path; _fill_window stamps its time when it
            # hands the datagram out, before anyone sees it.
            prepared.append((packet, raw, PacketSent(session, 0.0, local, peer, raw, packet, _NONE)))
            n += 1
            if len(payload) < blksize:
                self._prepared_end = True
                return

    def _refill(self) -> None:
        size = self.blksize
        want = size * max(1, _READ_AHEAD // size)
        read = self._source.read
        data = read(want)
        while 0 < len(data) < want:  # a short read is not the end until a read returns nothing
            more = read(want - len(data))
            if not more:
                break
            data += more
        if len(data) < want:
            self._eof = True
        self._buf = self._buf[self._pos:] + data
        self._pos = 0

    def _read_block(self) -> bytes:
        if self._read_error is not None:
            raise self._read_error
        size = self.blksize
        pos = self._pos
        if len(self._buf) - pos < size and not self._eof:
            self._refill()
            pos = 0
        block = self._buf[pos:pos + size]
        self._pos = pos + len(block)
        return block

    def _fill_window(self, now: float) -> None:
        """Send every block the window allows; resent blocks are marked as retransmits."""
        limit = self._acked + self.windowsize
        if self._final is not None and self._final < limit:
            limit = self._final
        n = self._next
        if n <= limit:
            prepared = self._prepared
            payloads, blksize, rollover = self._payloads, self.blksize, self.timing.rollover
            session, local, peer = self.session_id, self.local, self.peer
            out, events = self._out.append, self._events.append
            first = n
            while n <= limit:
                entry = payloads.get(n)
                if entry is not None:  # sent before: a retransmit
                    packet, raw = entry
                    out((raw, peer))
                    events(PacketSent(session, now, local, peer, raw, packet, _RETRANSMIT))
                    n += 1
                    continue
                # A new block: n is _sent_max + 1, the first of those prepared.
                if prepared:
                    packet, raw, sent = prepared.popleft()
                    sent.time = now
                else:
                    try:
                        payload = self._read_block()
                    except OSError as exc:
                        self.packets_sent += n - first
                        self._next = n
                        self._local_io_error(exc, now)
                        return
                    block = _wire_block(n, rollover)
                    packet, raw = Data(block, payload), encode_data(block, payload)
                    sent = PacketSent(session, now, local, peer, raw, packet, _NONE)
                payloads[n] = (packet, raw)
                out((raw, peer))
                events(sent)
                if len(packet.payload) < blksize:
                    self._final = limit = n
                if self._rtt_mark is None:
                    self._rtt_mark = now
                    self._rtt_block = n
                if n > self._sent_max:
                    self._sent_max = n
                n += 1
            self.packets_sent += n - first
            self._next = n
        self._arm(now)

    def _resend_from(self, first: int, now: float, reason: str) -> None:
        self._next = first
        self._rtt_mark = None
        count = min(self._acked + self.windowsize, self._sent_max) - first + 1
        if count > 0:
            self.retransmits += count
            self._events.append(Retransmit(self.session_id, now, reason, _wire_block(first, self.timing.rollover), count, self._attempt))
        self._fill_window(now)

    def _ack_to_absolute(self, wire: int) -> int | None:
        """Map an ACK's block number to our absolute count, or None if it is outside the window."""
        acked = self._acked
        if wire == (acked + 1) & 0xFFFF and self._sent_max > acked and self.timing.rollover == 0:
            return acked + 1  # the usual case: the next block in order
        if acked == 0:
            absolute = wire
        elif self.timing.rollover == 0:
            absolute = acked + ((wire - acked) & 0xFFFF)
        else:
            if wire == 0:
                return None
            absolute = acked + (wire - _wire_block(acked, 1)) % 0xFFFF
        return absolute if absolute <= self._sent_max else None

    def _on_ack(self, packet: Ack, raw: bytes, now: float) -> None:
        absolute = self._ack_to_absolute(packet.block)
        if absolute is None:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE, "ACK for a block outside the window")
            return
        if absolute == self._acked:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
            # In a window, an ACK of the last acknowledged block means the window's first block was lost.
            if self.windowsize > 1 and self._sent_max > self._acked and self._rewound_for != absolute:
                self._rewound_for = absolute
                self._resend_from(absolute + 1, now, "window-gap")
            return
        self._note_received(raw, packet, self.peer, now)
        if self._rtt_mark is not None and absolute >= self._rtt_block:
            self._sample_rtt(now)
        pop = self._payloads.pop
        size = blocks = 0
        for n in range(self._acked + 1, absolute + 1):
            entry = pop(n, None)
            if entry is not None:
                size += len(entry[0].payload)
                blocks += 1
        self.bytes += size
        self.blocks += blocks
        self._acked = absolute
        self._rewound_for = -1
        self._progressed(now)
        if absolute == self._final:
            self._complete(now, dally=False)
            return
        if absolute < self._next - 1:
            # This ACK already rewound the window: a duplicate of it (network copy, receiver timeout)
            # carries no news, so it must not rewind again.
            self._rewound_for = absolute
            self._resend_from(absolute + 1, now, "window-gap")
        else:
            self._fill_window(now)

    def _start_data(self, now: float) -> None:
        self.state = State.TRANSFERRING
        self._fill_window(now)

    def _sender_timeout(self, now: float) -> None:
        self._resend_from(self._acked + 1, now, "timeout")

    def _waiting_for(self) -> str:
        return f"ACK {_wire_block(self._next - 1, self.timing.rollover)}"

    def _unreachable_hint(self) -> str:
        if self._final is not None and self._sent_max == self._final and self._acked == self._final - 1:
            return ("; the last block had been sent: the peer probably received everything and closed its "
                    "port after its final ACK was lost")
        return ""


class Receiver(Session):
    """The side that receives DATA: a client reading, a server taking an upload.

    It ACKs the last block of each window (every block in lock-step), ACKs the last in-order block once
    when a gap shows, re-ACKs a repeated copy of the newest block, and on a timeout repeats its last ACK.
    """

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        if not (self.state is _TRANSFERRING and addr == self.peer and self._plain and self.locked
                and not self._wrap_to_one and self._in_order((datagram,), 0, addr, now)):
            Session.receive(self, datagram, addr, now)

    def receive_many(self, datagrams: Sequence[bytes], addr: Address, now: float) -> None:
        count = len(datagrams)
        i = 0
        while i < count:
            if self.state is _TRANSFERRING and addr == self.peer and self._plain and self.locked \
                    and not self._wrap_to_one:
                i = self._in_order(datagrams, i, addr, now)
                if i == count:
                    return
            Session.receive(self, datagrams[i], addr, now)
            i += 1

    def _in_order(self, datagrams: Sequence[bytes], i: int, addr: Address, now: float) -> int:
        """The common case, the next DATA blocks in order from our peer mid-transfer, from ``i`` on:
        the general path (decode, _on_data, _accept) inlined, with what it counts kept in locals
        across the run and stored back before anything that reads it. Returns the index of the first
        datagram not taken (the general path's to handle).

        Their PacketReceived events are made later, by events(): the ACK that ends a window then leaves
        without waiting for sixteen events to be built. A placeholder keeps their place in the order."""
        count = len(datagrams)
        expected = self._expected
        since = self._since_ack
        blksize, windowsize = self.blksize, self.windowsize
        safe = self._safe_blocks  # past this block a limit may be crossed: the general path checks it
        write = self._write
        interval = self.timing.progress_interval
        start = first = i
        payloads: list[bytes] = []
        keep = payloads.append
        while i < count:
            datagram = datagrams[i]
            size = len(datagram) - 4
            if size < 0 or datagram[1] != 3 or datagram[0] \
                    or ((datagram[2] << 8) | datagram[3]) != expected & 0xFFFF or size > blksize \
                    or expected > safe:
                break
            payload = datagram[4:]
            keep(payload)
            if since == 0 and self._rtt_mark is not None:
                self._timer.sample(now - self._rtt_mark)
                self._rtt_mark = None
            expected += 1
            since += 1
            i += 1
            if size:
                try:
                    write(payload)
                except OSError as exc:
                    self._took(expected, since, datagrams, first, i, payloads, addr, now)
                    self._local_io_error(exc, now)
                    return i
            if self._attempt:
                self._attempt = 0
                self._timer.backoff = 0
            if now - self._last_progress >= interval:
                self._took(expected, since, datagrams, first, i, payloads, addr, now)
                first, payloads = i, []
                keep = payloads.append
                self._report_progress(now)
            if size < blksize:
                self._took(expected, since, datagrams, first, i, payloads, addr, now)
                self._finish(now)
                return i
            if since >= windowsize:
                since = 0
                self._took(expected, since, datagrams, first, i, payloads, addr, now)
                first, payloads = i, []
                keep = payloads.append
                self._ack(expected - 1, now)
        if i > start:
            self._took(expected, since, datagrams, first, i, payloads, addr, now)
            self._heard_at = now
            self._deadline = now + self._timer.current()
        return i

    def _took(self, expected: int, since: int, datagrams: Sequence[bytes], first: int, end: int,
              payloads: list[bytes], addr: Address, now: float) -> None:
        """Store what _in_order counted in its locals, and put datagrams[first:end] in the events."""
        self._expected = expected
        self._since_ack = since
        blocks = end - first
        if blocks:
            self._gap_acked = False
            self.packets_received += blocks
            self.blocks += blocks
            self.bytes += sum(map(len, payloads))
            block = (expected - blocks) & 0xFFFF
            if blocks == 1:  # lock-step: nothing to gain by waiting
                self._events.append(PacketReceived(self.session_id, now, self.local, addr, datagrams[first],
                                                   Data(block, payloads[0]), _NONE, ""))
            else:
                self._events.append(_Unrecorded(now, addr, datagrams, first, end, payloads, block))  # type: ignore[arg-type]
                self._unrecorded = True

    def _init_receiver(self, sink: Writable, netascii: bool, max_bytes: int | None = None) -> None:
        self._sink = sink
        self._write = sink.write
        self._decoder = NetasciiDecoder() if netascii else None
        self._plain = not netascii  # what the fast path of receive() leaves out
        self._expected = 1
        self._since_ack = 0
        self._gap_acked = False
        self._wrap_to_one = False
        self._max_bytes = max_bytes
        self._announced: int | None = None  # the size the peer announced (tsize) that it must not run past
        self._safe_blocks = _UNBOUNDED
        self._bounds_changed()
        self._last_reply: tuple[Packet, bytes] | None = None  # what a timeout repeats
        self._final_block: int | None = None

    def _set_negotiated(self, negotiated: Negotiated, now: float) -> None:
        Session._set_negotiated(self, negotiated, now)
        self._bounds_changed()

    def _expect_at_most(self, announced: int | None) -> None:
        """The peer announced the transfer's size (tsize): running past it is an error, not more data."""
        self._announced = announced
        self._bounds_changed()

    def _announced_allowance(self) -> int | None:
        """The most bytes the announced size lets the peer send. None in netascii: servers announce the
        file's size, the wire's, or even 0 (atftpd) and then send the file, so the size says nothing."""
        return None if self._decoder is not None else self._announced

    def _bounds_changed(self) -> None:
        """Every block up to _safe_blocks is full-sized or the last, so those blocks cannot cross a
        limit: the fast path takes them unchecked, and the general path checks the ones after."""
        bounds = [b for b in (self._max_bytes, self._announced_allowance()) if b is not None]
        self._safe_blocks = min(bounds) // self.blksize if bounds else _UNBOUNDED

    def _past_a_bound(self, now: float) -> bool:
        """Fail the transfer if the bytes received so far run past the announced size or our limit."""
        allowance = self._announced_allowance()
        if allowance is not None and self.bytes > allowance:
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.DISK_FULL,
                       f"DATA ran past the announced tsize of {self._announced} bytes: "
                       f"{self.bytes} bytes by block {self._wire(self._expected - 1)}")
            return True
        if self._max_bytes is not None and self.bytes > self._max_bytes:
            what = "download" if self.role is Role.CLIENT_READ else "upload"
            self._fail(now, Reason.LOCAL, Side.LOCAL, ErrorCode.DISK_FULL,
                       f"{what} exceeds the limit of {self._max_bytes} bytes")
            return True
        return False

    def _wire(self, n: int) -> int:
        return _wire_block(n, 1 if self._wrap_to_one else 0)

    def _data_offset(self, wire: int) -> int:
        """Signed distance of a DATA block number from the one expected."""
        expected = self._expected
        if expected > 0xFFFF and expected & 0xFFFF == 0 and wire == min(self.windowsize, 0xFFFF) \
                and not self._wrap_to_one:
            # The peer went 65535 -> 1 instead of 65535 -> 0: follow it. Only block number `windowsize`
            # proves it: a sender wrapping to 0 is at most windowsize - 1 blocks ahead of us, so in a
            # window a lost block 0 followed by block 1 is a gap, not a wrap to 1 (lock-step: block 1).
            self._wrap_to_one = True
        if self._wrap_to_one:
            if wire == 0:
                return 0x8000
            delta = (wire - _wire_block(expected, 1)) % 0xFFFF
            return delta - 0xFFFF if delta >= 0x7FFF else delta
        delta = (wire - expected) & 0xFFFF
        return delta - 0x10000 if delta >= 0x8000 else delta

    def _ack(self, block_abs: int, now: float, note: Note = _NONE) -> None:
        wire = self._wire(block_abs)
        packet = ack_packet(wire)
        raw = ack_bytes(wire)
        self._last_reply = (packet, raw)
        self._send(packet, raw, now, note)
        if note is _NONE:
            self._rtt_mark = now

    def _on_data(self, packet: Data, raw: bytes, now: float) -> None:
        payload = packet.payload
        if self.state is State.DALLYING:
            if packet.block == self._wire(self._final_block or 0):
                self.duplicates += 1
                self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
                self._ack(self._final_block or 0, now, Note.REACK)
            else:
                self._note_received(raw, packet, self.peer, now, Note.LATE)
            return
        if len(payload) > self.blksize:
            self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED, "DATA larger than the block size")
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.ILLEGAL_OPERATION,
                       f"DATA block {packet.block} holds {len(payload)} bytes, more than the negotiated {self.blksize}")
            return
        offset = self._data_offset(packet.block)
        if offset == 0:
            self._note_received(raw, packet, self.peer, now)
            self._accept(payload, now)
        elif offset < 0:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
            # The peer did not hear our ACK of its newest block. Only in lock-step: with a window, a
            # repeated block may come from a rewind the sender made on a duplicated ACK, and answering
            # it would rewind the next window too, and so on (a windowed Sorcerer's Apprentice). The
            # receive timer repeats our ACK instead.
            if offset == -1 and self.windowsize == 1:
                self._ack(self._expected - 1, now, Note.REACK)
        else:
            self.out_of_order += 1
            self._note_received(raw, packet, self.peer, now, Note.OUT_OF_ORDER)
            if self.windowsize > 1 and not self._gap_acked:
                self._gap_acked = True
                self._since_ack = 0
                self._ack(self._expected - 1, now)

    def _accept(self, payload: bytes, now: float) -> None:
        if self._since_ack == 0:
            self._sample_rtt(now)
        final = len(payload) < self.blksize
        self._expected += 1
        self._since_ack += 1
        self._gap_acked = False
        self.bytes += len(payload)
        self.blocks += 1
        if self.bytes > self._safe_blocks * self.blksize and self._past_a_bound(now):
            return
        try:
            if self._decoder is not None:
                payload = self._decoder.feed(payload)
            if payload:
                self._sink.write(payload)
        except OSError as exc:
            self._local_io_error(exc, now)
            return
        self._progressed(now)
        if final:
            self._finish(now)
            return
        if self._since_ack >= self.windowsize:
            self._since_ack = 0
            self._ack(self._expected - 1, now)
        self._arm(now)

    def _finish(self, now: float) -> None:
        try:
            if self._decoder is not None:
                tail = self._decoder.finish()
                if tail:
                    self._sink.write(tail)
            # A sink that stores the data somewhere (an upload's target file) does so now, before the
            # final ACK tells the peer it succeeded: a failure still reaches the peer as an ERROR.
            commit = getattr(self._sink, "commit", None)
            if commit is not None:
                commit()
        except OSError as exc:
            self._local_io_error(exc, now)
            return
        self._final_block = self._expected - 1
        self._ack(self._final_block, now)
        self._complete(now, dally=True)

    def _receiver_timeout(self, now: float) -> None:
        if self._last_reply is None:
            return
        packet, raw = self._last_reply
        self.retransmits += 1
        first = packet.block if isinstance(packet, Ack) else None
        self._events.append(Retransmit(self.session_id, now, "timeout", first, 1, self._attempt))
        # A request goes again where it went first (the server's well-known port), even if a stray reply
        # has meanwhile fixed the transfer ID: that port is where a request is understood.
        to = self.requested_peer if isinstance(packet, Request) else None
        self._send(packet, raw, now, Note.RETRANSMIT, to=to)
        self._arm(now)

    def _waiting_for(self) -> str:
        return f"DATA {self._wire(self._expected)}"
