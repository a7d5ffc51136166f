"""The base of the four session machines: the caller's interface, the transfer-ID check, timeouts,
counters, and how a transfer ends.

A machine is driven like aioquic's connection: ``receive(datagram, addr, now)`` and
``handle_timeout(now)`` feed it; ``datagrams_to_send()``, ``events()`` and ``next_timeout()`` tell the
caller what to do. The caller owns the socket and the clock; nothing here blocks or reads the time.
It owns the files too (h11 leaves body bytes to its caller): a receiver hands over the data it took
(``received()``) and, after the last block, waits STORING until the caller has put the file in place
(``stored(now)``, or ``local_error(now, StorageError)``) before its final ACK; a sender asks for the
bytes it wants (``prefetch()`` returns how many) and is fed them (``feed``, ``read_failed``).
engine/files.py is the engine's half of that exchange.

Where each rule lives:

- which packet each role takes in each state, and the state it moves to: the role's ``TABLE`` (see
  :data:`Table`), one per role in :mod:`client` (ClientRead, ClientWrite) and :mod:`server`
  (ServerRead, ServerWrite), read by the one dispatch here (``Session._on_packet``); a packet no row
  takes falls to the one default, ``Session._unexpected``;
- the transfer ID, ERROR from the peer, ending (complete, fail, dally) and the counters: here;
- the timer and giving up: :mod:`timer`; block numbers and rollover: :mod:`blocks`;
- the window, read-ahead, being fed and what an ACK means: :mod:`sender`; ordering, duplicates and
  gaps of DATA, the ACKs they draw, the size limits and handing the data over: :mod:`receiver`;
- netascii: :mod:`netascii` (the sender encodes what it is fed, the receiver decodes what it takes);
- the request, its retry without refused options and the OACK: :mod:`client`; the request's mode,
  the server's negotiation, the OACK and refusals: :mod:`server`; option rules: :mod:`options`;
- DATA and ACK kept in columns, for a caller that asks (``record_runs()``): :mod:`runs`.

Mid-transfer, the next DATA in order (a receiver) and an ACK (a sender) skip the decode and the dispatch:
``receive()`` takes them straight to the handler of their row (``_on_data``'s ``_take``, ``_on_ack``),
the one path of that rule, which tests/protocol/test_tables.py holds to the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar, final

from tftpdiag.protocol.events import (
    RUN_ACK,
    RUN_NOTE_TAGS,
    RUN_RECEIVED,
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
    Role,
    Side,
    TimedOut,
    TransferStats,
)
from tftpdiag.protocol.options import Negotiated
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    Packet,
    ProtocolError,
    decode,
    encode,
)
from tftpdiag.protocol.runs import HOLD, OpenRun, close_runs
from tftpdiag.protocol.steady import Steady
from tftpdiag.protocol.timer import RetransmitTimer, Timing

__all__ = ["State", "Session", "StorageError", "DeferredData", "Table", "LIVE_STATES"]


@final
class DeferredData:
    """The place, in a Receiver's event list, of the PacketReceived events of a run of DATA blocks
    taken in order: datagrams[start:start + len(payloads)], their payloads (the list grows as the
    run does), the first one's wire number (a run never spans a wrap: its numbers are consecutive).
    Receiver.events() makes them, after the ACK that ends the window has left. It is declared here
    because the event list, which it shares with the Events, is Session's."""

    __slots__ = ("now", "addr", "datagrams", "start", "payloads", "number")

    def __init__(self, now: float, addr: Address, datagrams: Sequence[bytes], start: int,
                 payloads: list[bytes], number: int) -> None:
        self.now, self.addr, self.datagrams, self.start = now, addr, datagrams, start
        self.payloads, self.number = payloads, number


class StorageError(Exception):
    """The caller could not read the data to send or store the data received (its disk): the TFTP
    ERROR ``code`` and ``message`` the peer is told. The caller turns its own failures (an OSError's
    errno) into these; a machine knows nothing of files."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class State(Enum):
    REQUESTING = "requesting"  # client: request sent, waiting for the first reply
    NEGOTIATING = "negotiating"  # OACK exchanged, waiting for the first DATA or ACK
    TRANSFERRING = "transferring"
    STORING = "storing"  # a receiver has the last block; the caller stores the file before the final ACK
    DALLYING = "dallying"  # done; lingering to re-ACK a repeated final DATA
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


# Module constants: State.X is a lookup through the enum's class (about 0.1 us each), and these are
# asked per datagram and per turn of the engine's loop.
_FINISHED = (State.DALLYING, State.DONE, State.FAILED)
_CLOSED = (State.DONE, State.FAILED)


# The states in which a machine still takes packets (in DONE and FAILED every packet is late).
LIVE_STATES = (State.REQUESTING, State.NEGOTIATING, State.TRANSFERRING, State.STORING, State.DALLYING)

# A role's legal transitions, as data (h11's _state.py is the model): in each state, for each opcode a
# packet may carry, the method that handles it and the state the packet moves the machine to (None:
# the handler decides, from what the packet holds). A handler may always end the transfer instead:
# the last block or its ACK completes it, and anything wrong fails it. A packet whose opcode is not in
# its state's row is unexpected: Session._unexpected notes it, and nothing changes.
Table = Mapping[State, Mapping[Opcode, tuple[str, "State | None"]]]
_Handler = Callable[[Any, Any, bytes, float], None]  # (machine, packet, datagram, now)


class Session:
    """Base of the four machines; see the module docstring for how to drive one."""

    role: Role
    _runs: bool  # DATA and ACK kept in columns (record_runs); a slot of Sender's and Receiver's, set by their _init_
    TABLE: ClassVar[Table] = {}  # each role's own (see Table)
    _rows: ClassVar[dict[State, dict[Opcode, tuple[_Handler, State | None]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The table names methods; dispatch calls the functions they resolve to in this class.
        cls._rows = {state: {opcode: (getattr(cls, name), then)
                             for opcode, (name, then) in cls.TABLE.get(state, {}).items()}
                     for state in LIVE_STATES}

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
        self._timer = RetransmitTimer(timing, now)
        self._deadline: float | None = None
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event | DeferredData | OpenRun] = []  # only a Receiver leaves DeferredData
        self._last_progress = now
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
        if self._runs:
            return close_runs(events)  # type: ignore[arg-type]  # (only Receiver leaves DeferredData)
        # Only Receiver leaves DeferredData, and it overrides events(): here the list holds Events.
        return events  # type: ignore[return-value]  # (typing.cast is a call per turn)

    def record_runs(self) -> None:
        """From now on keep DATA and ACK in columns: :meth:`events` gives them as PacketRun objects
        (see :mod:`runs`), whose events are those it would have given one by one."""
        self._runs = True

    def settled_events(self) -> list[Event]:
        """As :meth:`events`, except that a run of packets still growing at the end of the list, with
        fewer than runs.HOLD packets, stays for a later call (with :meth:`record_runs`; without, the
        same as events()). A caller that asks every turn takes runs of many packets, not one a turn,
        and calls events() before it waits long or stops, so that nothing stays behind."""
        events = self._events
        if events:
            last = events[-1]
            if type(last) is OpenRun and len(last.raws) < HOLD:
                if len(events) == 1:
                    return []
                self._events = [last]
                return close_runs(events[:-1])  # type: ignore[arg-type]  # (no DeferredData with runs)
        return self.events()

    def steady(self) -> Steady | None:
        """An object to take the next lock-step turns without the machine (protocol/steady.py), or None
        when they may not be steady. Given back with :meth:`settle` before anything else is asked of the
        machine. Only while recording runs (:meth:`record_runs`): the turns are recorded in columns."""
        return None

    def settle(self, steady: Steady) -> None:
        """Take back what :meth:`steady` gave, and the turns it took."""
        raise NotImplementedError

    def quiet_until(self, steady: Steady) -> float | None:
        """While ``steady`` is out (the one question the machine answers before :meth:`settle`): no
        timeout can fall due before this, its last turn (when it sent its last answer) plus the shortest
        wait the retransmit timer can give once the turns are settled. None when it has taken no turn:
        settle it to know. (A server with many sessions asks on each look at its timers, instead of
        settling every session's turns there: engine/server.py.)"""
        if not len(steady):
            return None
        return steady.times[-1] + self._timer.soonest()

    def next_timeout(self) -> float | None:
        return self._deadline

    @property
    def finished(self) -> bool:
        """Completed or failed (the machine may still be dallying)."""
        return self.state in _FINISHED  # (State.finished's test, without a second property's call)

    @property
    def closed(self) -> bool:
        """Nothing more to do: the caller may drop the machine and close its socket."""
        return self.state in _CLOSED

    def handle_timeout(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self.state is State.DALLYING:
            self.state = State.DONE
            self._deadline = None
            return
        self.timeouts += 1
        timer = self._timer
        waited, give_up = timer.expire(now)
        self._events.append(TimedOut(self.session_id, now, waited, timer.attempt, self._waiting_for()))
        if give_up:
            silence = f" in {now - timer.heard_at:.1f} s" if self.timing.give_up else ""
            self._fail(now, Reason.TIMEOUT, Side.LOCAL, None,
                       f"no answer after {timer.attempt} attempts{silence} (last wait {waited:.2f} s)", send=False)
            return
        self._on_timeout(now)
        if self._deadline is not None:
            self._deadline = timer.cap(now, self._deadline)

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        if self.state in _CLOSED:
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

    def broken(self, now: float, message: str, told: str, reason: Reason = Reason.INTERNAL) -> None:
        """The caller met an error of its own it cannot go on from (a bug: INTERNAL, or a local failure
        nothing foresaw: LOCAL): stop, telling the peer ``told`` with ERROR 0 (words that say nothing of
        this machine, whose peer may be anyone), while the result keeps ``message``, the whole reason."""
        if self.state.finished:
            if self.state is State.DALLYING:
                self.state, self._deadline = State.DONE, None
            return
        self._fail(now, reason, Side.LOCAL, int(ErrorCode.NOT_DEFINED), message, told=told)

    def local_error(self, now: float, error: StorageError) -> None:
        """The caller could not store or read the data (its disk): stop, telling the peer with an ERROR."""
        if not self.state.finished:
            self._storage_failed(error, now)

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

    def stats(self, now: float) -> TransferStats:
        return TransferStats(
            bytes=self.bytes, duration=max(now - self.started, 0.0), blocks=self.blocks,
            packets_sent=self.packets_sent, packets_received=self.packets_received,
            retransmits=self.retransmits, duplicates=self.duplicates, timeouts=self.timeouts,
            out_of_order=self.out_of_order, stray=self.stray,
        )

    # -- for subclasses -----------------------------------------------------------------------------

    def _on_packet(self, packet: Packet, raw: bytes, addr: Address, now: float) -> None:
        """The one dispatch of a decoded packet from the peer: its row in the role's TABLE."""
        if not self.locked:  # the first reply to a request fixes the transfer ID, whatever it holds
            self._lock(addr, now)
        row = self._rows[self.state].get(packet.opcode)
        if row is None:
            self._unexpected(packet, raw, now)
            return
        handler, then = row
        if then is not None:
            self.state = then
        handler(self, packet, raw, now)

    # -- the rows every role shares ------------------------------------------------------------------

    def _unexpected(self, packet: Packet, raw: bytes, now: float) -> None:
        """The default: a packet no row of this state takes is noted, and changes nothing."""
        self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED)

    def _on_error(self, packet: Error, raw: bytes, now: float) -> None:
        """The peer ended the transfer."""
        self._note_received(raw, packet, self.peer, now)
        self._peer_error(packet, now)

    def _error_after_end(self, packet: Error, raw: bytes, now: float) -> None:
        """An ERROR while dallying: the transfer has completed, whatever the peer thinks now."""
        self._note_received(raw, packet, self.peer, now)

    def _on_timeout(self, now: float) -> None:
        raise NotImplementedError

    def _waiting_for(self) -> str:
        raise NotImplementedError

    def _unreachable_hint(self) -> str:
        return ""

    def _try_decode(self, datagram: bytes) -> Packet | None:
        try:
            return decode(datagram)
        except ProtocolError:
            return None

    def _note_received(self, raw: bytes, packet: Packet | None, addr: Address, now: float,
                       note: Note = Note.NONE, detail: str = "") -> None:
        # (Every DATA and ACK here was decoded from ``raw`` or read off it: its datagram gives it back.)
        if self._runs and not detail and len(raw) <= 0xFFFF:
            kind = type(packet)
            if kind is Ack:
                self._record(RUN_RECEIVED | RUN_ACK | RUN_NOTE_TAGS[note], now, packet.block, raw, addr)  # type: ignore[union-attr]
                return
            if kind is Data:
                self._record(RUN_RECEIVED | RUN_NOTE_TAGS[note], now, packet.block, raw, addr)  # type: ignore[union-attr]
                return
        self._events.append(PacketReceived(self.session_id, now, self.local, addr, raw, packet, note, detail))

    def _send(self, packet: Packet, raw: bytes, now: float, note: Note = Note.NONE, to: Address | None = None) -> None:
        dest = self.peer if to is None else to
        self._out.append((raw, dest))
        if self._runs and type(packet) is Ack and len(raw) == 4:  # (every ACK this sends is its 4 bytes)
            self._record(RUN_ACK | RUN_NOTE_TAGS[note], now, packet.block, raw, dest)
        else:
            self._events.append(PacketSent(self.session_id, now, self.local, dest, raw, packet, note))
        self.packets_sent += 1

    def _record(self, tag: int, now: float, block: int, raw: bytes, peer: Address) -> None:
        """A DATA or ACK between this session's address and ``peer``, in columns (see :mod:`runs`):
        added to the run at the end of the event list, or to a new one."""
        events = self._events
        run = events[-1] if events else None
        if type(run) is not OpenRun or (run.peer is not peer and run.peer != peer):
            run = OpenRun(self.session_id, self.local, peer)
            events.append(run)
        run.tags.append(tag)
        run.times.append(now)
        run.blocks.append(block)
        run.raws.append(raw)

    def _record_turns(self, steady: Steady) -> None:
        """A steady object's turns (protocol/steady.py) in the run at the end of the event list (or a new
        one), as _record would have put their packets there one by one."""
        tags, times, blocks = steady.columns()
        events, peer = self._events, steady.peer
        run = events[-1] if events else None
        if type(run) is not OpenRun or (run.peer is not peer and run.peer != peer):
            run = OpenRun(self.session_id, self.local, peer)
            events.append(run)
        run.tags += tags
        run.times += times
        run.blocks += blocks
        run.raws += steady.raws

    def _arm(self, now: float) -> None:
        self._deadline = now + self._timer.current()

    def _progressed(self, now: float) -> None:
        """Something new arrived: the backoff ends, give_up counts afresh, and progress is reported
        when it is due."""
        self._timer.heard(now)
        if now - self._last_progress >= self.timing.progress_interval:  # (Receiver._take: once per run)
            self._report_progress(now)

    def _report_progress(self, now: float) -> None:
        self._last_progress = now
        self._events.append(Progress(self.session_id, now, self.bytes, self.total, self.stats(now)))

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
              send: bool = True, told: str | None = None) -> None:
        """End the transfer. When we raise it and ``send`` holds, the peer is told with an ERROR (its
        text ``told``, when not ``message``)."""
        if send and raised_by is Side.LOCAL and code is not None:
            error = Error(code, message if told is None else told)
            self._send(error, encode(error), now)
        self.state = State.FAILED
        self._deadline = None
        self.result = Failed(self.session_id, now, reason, raised_by, code, message, self.stats(now))
        self._events.append(self.result)

    def _peer_error(self, packet: Error, now: float) -> None:
        self._fail(now, Reason.PEER_ERROR, Side.PEER, packet.code, packet.message or packet.code_name)

    def _storage_failed(self, error: StorageError, now: float) -> None:
        self._fail(now, Reason.LOCAL, Side.LOCAL, int(error.code), error.message)
