"""The side that receives DATA (a client reading, a server taking an upload): ordering, duplicates,
gaps, the ACKs they draw, and the limits on how much may arrive.

It ACKs the last block of each window (every block in lock-step), ACKs the last in-order block once
when a gap shows, re-ACKs a repeated copy of the newest block in lock-step, and on a timeout repeats
its last ACK.

The data received is the caller's to store (h11 leaves body bytes to its caller): the receiver keeps
the payloads it took, in order and netascii already decoded, and :meth:`Receiver.received` hands them
over, like ``datagrams_to_send()``. The caller drains them after sending the ACK, so hashing and disk
writes never delay it, and reports a failure to store them with ``local_error(now, StorageError)``.
Keeping a payload is one ``list.append`` per block, what the engine's sink cost when the machine called
it, and nothing else is done per block. The last block leaves the receiver STORING: the caller stores
everything, puts the file in place, and then calls :meth:`Receiver.stored`, which sends the final ACK,
so that the peer never hears of success for data that did not reach the disk (a failure there goes
to ``local_error`` and reaches the peer as an ERROR instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tftpdiag.protocol.blocks import absolute, shows_wrap_to_one, wire
from tftpdiag.protocol.events import (
    RUN_NOTE_TAGS,
    RUN_RECEIVED,
    Address,
    Event,
    Note,
    PacketReceived,
    Reason,
    Retransmit,
    Role,
    Side,
)
from tftpdiag.protocol.netascii import NetasciiDecoder
from tftpdiag.protocol.options import Negotiated
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    ErrorCode,
    Packet,
    Request,
    ack_reply,
)
from tftpdiag.protocol.runs import close_runs
from tftpdiag.protocol.said import TSIZE_SHORT
from tftpdiag.protocol.session import DeferredData, Session, State
from tftpdiag.protocol.steady import Steady, SteadyReceive, room_for

__all__ = ["Receiver"]

_TRANSFERRING = State.TRANSFERRING  # module constants: an enum member looked up per datagram costs
_STORING = State.STORING
_NONE = Note.NONE
_RECEIVED_DATA = RUN_RECEIVED | RUN_NOTE_TAGS[_NONE]  # a DATA block taken in order, in a run's tags
_UNBOUNDED = 1 << 62  # a byte count no transfer reaches: no limit


class Receiver(Session):
    """See the module docstring. Blocks are counted from 1 past every rollover (absolute numbers);
    :mod:`blocks` maps them to and from the wire."""

    # The receiver's own state lives in slots, as the sender's does (see Sender): a ClientRead had 41
    # attribute names in its dict, past CPython 3.11's 30 shared keys, so its method calls went
    # unspecialised, a dictionary lookup each.
    __slots__ = ("_received", "_decoder", "_expected", "_since_ack", "_gap_acked", "_rollover", "_max_bytes",
                 "_announced", "_exact", "_enough", "_safe_bytes", "_last_reply", "_final_block", "_deferred", "_runs")

    _deferred: bool  # _events holds DeferredData runs (set by _init_receiver)
    _received: list[bytes]  # the data taken, not yet handed to the caller (set by _init_receiver)
    _last_reply: tuple[Packet, bytes] | None  # what a timeout repeats (set by _init_receiver)

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        # Mid-transfer, DATA from our peer goes straight to _take, which reads what it needs of the
        # header; what it does not take (not DATA, not the next block) goes through the base.
        if not (self.state is _TRANSFERRING and addr == self.peer and self.locked and self._take((datagram,), 0, now)):
            Session.receive(self, datagram, addr, now)

    def receive_many(self, datagrams: Sequence[bytes], addr: Address, now: float) -> None:
        count = len(datagrams)
        i = 0
        while i < count:
            if self.state is _TRANSFERRING and addr == self.peer and self.locked:
                i = self._take(datagrams, i, now)
                if i == count:
                    return
            Session.receive(self, datagrams[i], addr, now)
            i += 1

    def events(self) -> list[Event]:
        events, self._events = self._events, []
        if not self._deferred:
            # _take sets _deferred whenever it leaves DeferredData: without it the list holds Events
            # (and, recording runs, OpenRuns: _take never defers then).
            if self._runs:
                return close_runs(events)  # type: ignore[arg-type]
            return events  # type: ignore[return-value]  # (typing.cast is a call per turn)
        self._deferred = False
        session, local = self.session_id, self.local
        out: list[Event] = []
        add = out.append
        for event in events:
            if type(event) is not DeferredData:
                add(event)  # type: ignore[arg-type]  # (no OpenRun: _take defers only without runs)
                continue
            run = event
            now, addr, start, payloads, first = run.now, run.addr, run.start, run.payloads, run.number
            numbers = range(first, first + len(payloads))
            # The run's datagrams, payloads and numbers have len(payloads) items each.
            for datagram, payload, number in zip(run.datagrams[start:start + len(payloads)], payloads, numbers,
                                                 strict=True):
                add(PacketReceived(session, now, local, addr, datagram, Data(number, payload), _NONE, ""))
        return out

    def received(self) -> list[bytes]:
        """The data taken since the last call, in order, for the caller to store (see the module
        docstring): call it after sending what ``datagrams_to_send()`` gave."""
        out, self._received = self._received, []
        return out

    def steady(self) -> SteadyReceive | None:
        """Mid-transfer in lock-step, the next blocks in order as steady turns (protocol/steady.py): up
        to steady.room_for the block size, and none past a limit on the bytes received or the wrap of
        the block numbers (both the general path's to check). Not in netascii, whose blocks are decoded
        here."""
        if self.state is not _TRANSFERRING or self.windowsize != 1 or not self._runs or self._decoder is not None \
                or not self.locked:
            return None
        block = wire(self._expected, self._rollover)
        room = min(room_for(self.blksize), 0x10000 - block, (self._safe_bytes - self.bytes) // self.blksize)
        if room <= 0:
            return None
        return SteadyReceive(self.peer, block, self.blksize, room, self._last_progress, self.timing.progress_interval)

    def settle(self, steady: Steady) -> None:
        """Take back the turns ``steady`` took: as :meth:`_take` would have, each block counted, kept for
        the caller and acknowledged (and timed), the ACK what a timeout repeats."""
        assert type(steady) is SteadyReceive
        taken = len(steady)
        if not taken:
            return
        raws = steady.raws
        now = steady.times[-1]
        self._received += [raw[4:] for raw in raws[::2]]
        self._expected += taken
        self._since_ack = 0
        self._gap_acked = False
        self.packets_received += taken
        self.packets_sent += taken
        self.blocks += taken
        self.bytes += taken * self.blksize
        self._record_turns(steady)
        timer = self._timer
        timer.turns(steady.times)
        timer.heard(now)
        self._last_reply = ack_reply(steady.first + taken - 1)
        self._arm(now)  # (no progress was due at any turn: steady objects leave those turns to the machine)

    @property
    def storing(self) -> bool:
        """The last block is in: the caller stores it all, then calls :meth:`stored` (or ``local_error``)."""
        return self.state is _STORING

    def stored(self, now: float) -> None:
        """The caller has stored everything received and put the file in place: the final ACK goes."""
        if self.state is State.STORING:
            self._ack(wire(self._final_block or 0, self._rollover), now)
            self._complete(now, dally=True)

    def _init_receiver(self, netascii: bool, max_bytes: int | None = None, enough: int | None = None) -> None:
        self._received = []
        self._decoder = NetasciiDecoder() if netascii else None
        self._expected = 1  # the absolute number of the next block in order
        self._since_ack = 0  # blocks taken since the last ACK
        self._gap_acked = False
        self._rollover = 0  # what follows 65535 on the wire: 0 until the peer shows it wraps to 1
        self._max_bytes = max_bytes
        self._enough = enough  # past this many bytes the caller wants no more: the transfer is cancelled
        self._announced: int | None = None  # the size the peer announced (tsize) that it must not run past
        self._exact = False  # and that it must reach: the transfer ends short of it as a failure
        self._safe_bytes = _UNBOUNDED
        self._bounds_changed()
        self._last_reply = None
        self._final_block: int | None = None
        self._deferred = False
        self._runs = False

    # -- the one path of DATA in order ------------------------------------------------------------

    def _take(self, datagrams: Sequence[bytes], i: int, now: float) -> int:
        """Take the DATA blocks in order from ``datagrams[i]`` on, from our peer mid-transfer: count,
        store and ACK them. Returns the index of the first datagram not taken (not DATA, not the next
        block, or larger than the block size: the general path's to judge).

        In a run of several, their PacketReceived events wait in a DeferredData placeholder until
        events(): the ACK that ends a window then leaves without waiting for sixteen events to be
        built. Whatever else happens meanwhile (an ACK, progress) goes after the placeholder, and the
        next block starts a new one, so the order of events is that of the work.

        In lock-step a run is one block: what is the same for every block of a run (its ``now``, so
        whether progress is due, and the peer having been heard) is worked out once per run, not per
        block, and what only matters near a limit is skipped until the run reaches it."""
        count = len(datagrams)
        blksize, windowsize, safe_bytes = self.blksize, self.windowsize, self._safe_bytes
        keep, decoder, events = self._received.append, self._decoder, self._events
        single = count - i == 1
        # Recording runs (Session.record_runs), each block goes in the run's columns (every DATA taken
        # here is its datagram, whole): the run at the end of the list, or a new one.
        record = self._record if self._runs else None
        peer = self.peer
        run: DeferredData | None = None
        defer: Callable[[bytes], None] | None = None  # appends to the current run's payloads
        # The counts live in locals across the run (an attribute costs a load and a store per block):
        # the blocks since our ACK, and the bytes taken since datagrams[counted]; _took stores them
        # before anything reads them.
        start = counted = i
        since, got = self._since_ack, 0
        # Progress is due, or not, for the whole run (Session._progressed's test): its blocks share ``now``.
        interval = self.timing.progress_interval
        due = now - self._last_progress >= interval
        # The wire numbers of a run are consecutive: datagrams[j] must carry ``first + j``. At the
        # wrap the comparison fails and the general path takes the block (blocks.absolute places it).
        first = wire(self._expected, self._rollover) - i
        while i < count:
            datagram = datagrams[i]
            size = len(datagram) - 4
            block = first + i
            if size < 0 or datagram[1] != 3 or datagram[0] or size > blksize \
                    or ((datagram[2] << 8) | datagram[3]) != block:
                break
            payload = datagram[4:]
            if record is not None:
                record(_RECEIVED_DATA, now, block, datagram, peer)
            elif single:
                events.append(PacketReceived(self.session_id, now, self.local, peer, datagram,
                                             Data(block, payload)))
            elif defer is not None and events[-1] is run:
                defer(payload)
            else:
                payloads = [payload]
                defer = payloads.append
                run = DeferredData(now, self.peer, datagrams, i, payloads, block)
                events.append(run)
                self._deferred = True
            if since == 0:
                self._timer.end_sample(now)  # the first block after our ACK answers it
            i += 1
            since += 1
            got += size
            if self.bytes + got > safe_bytes:  # near a limit (see _bounds_changed): check them
                self._took(i - counted, got, since, now)
                counted, got = i, 0
                if self._past_a_bound(now):
                    return i
            if decoder is not None:
                payload = decoder.feed(payload)
            if payload:
                keep(payload)
            if due:  # at the run's first block; after it, only when the interval is 0
                self._took(i - counted, got, since, now)
                counted, got = i, 0
                self._report_progress(now)
                due = now - self._last_progress >= interval
            if size < blksize:
                self._took(i - counted, got, since, now)
                self._finish(now)
                return i
            if since >= windowsize:
                since = 0
                self._ack(block, now)
        if i > start:
            self._took(i - counted, got, since, now)
            self._gap_acked = False
            self._arm(now)
        return i

    def _took(self, taken: int, got: int, since: int, now: float) -> None:
        """Store what _take counted in its locals: ``taken`` more blocks of ``got`` bytes, ``since``
        blocks since our ACK. The peer was heard: the backoff ends, give_up counts from ``now``."""
        self._expected += taken
        self._since_ack = since
        self.packets_received += taken
        self.blocks += taken
        self.bytes += got
        self._timer.heard(now)

    # -- everything else about DATA ---------------------------------------------------------------

    def _data_after_end(self, packet: Data, raw: bytes, now: float) -> None:
        """DATA while dallying: a repeated last block means our final ACK was lost, so it goes again."""
        if packet.block == wire(self._final_block or 0, self._rollover):
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
            self._ack(wire(self._final_block or 0, self._rollover), now, Note.REACK)
        else:
            self._note_received(raw, packet, self.peer, now, Note.LATE)

    def _on_data(self, packet: Data, raw: bytes, now: float) -> None:
        """DATA mid-transfer (the row receive() takes a shortcut to for the next block in order)."""
        payload = packet.payload
        if len(payload) > self.blksize:
            self._note_received(raw, packet, self.peer, now, Note.UNEXPECTED, "DATA larger than the block size")
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.ILLEGAL_OPERATION,
                       f"DATA block {packet.block} holds {len(payload)} bytes, more than the negotiated {self.blksize}")
            return
        offset = self._data_offset(packet.block)
        if offset == 0:
            self.packets_received -= 1  # Session.receive counted it, and _take counts what it takes
            taken = self._take((raw,), 0, now)
            assert taken == 1, "the next block in order is always taken"
        elif offset < 0:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
            # The peer did not hear our ACK of its newest block. Only in lock-step: with a window, a
            # repeated block may come from a rewind the sender made on a duplicated ACK, and answering
            # it would rewind the next window too, and so on (a windowed Sorcerer's Apprentice). The
            # receive timer repeats our ACK instead.
            if offset == -1 and self.windowsize == 1:
                self._ack(wire(self._expected - 1, self._rollover), now, Note.REACK)
        else:
            self.out_of_order += 1
            self._note_received(raw, packet, self.peer, now, Note.OUT_OF_ORDER)
            if self.windowsize > 1 and not self._gap_acked:
                self._gap_acked = True
                self._since_ack = 0
                self._ack(wire(self._expected - 1, self._rollover), now)

    def _data_offset(self, wire_block: int) -> int:
        """Signed distance of a DATA block number from the one expected (0: the next in order)."""
        expected = self._expected
        if not self._rollover and shows_wrap_to_one(wire_block, expected, self.windowsize):
            self._rollover = 1  # the peer went 65535 -> 1 instead of 65535 -> 0: follow it
        if self._rollover and wire_block == 0:
            return 0x8000  # no DATA is ever block 0 again once the sender wraps to 1: far ahead, a gap
        return absolute(wire_block, expected, self._rollover) - expected

    def _ack(self, number: int, now: float, note: Note = _NONE) -> None:
        """Send ACK ``number`` (the wire's): what a timeout repeats, and, unless it repeats one, timed."""
        self._last_reply = reply = ack_reply(number)
        self._send(reply[0], reply[1], now, note)
        if note is _NONE:
            self._timer.start_sample(now)

    def _finish(self, now: float) -> None:
        """The last block is in: wait for the caller to store it all (see :meth:`stored`), unless it
        ended short of a size the peer was held to (:meth:`_expect_exactly`): then the transfer fails,
        the peer hears an ERROR instead of the final ACK, and the caller keeps nothing."""
        allowance = self._announced_allowance()
        if self._exact and allowance is not None and self.bytes < allowance:
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.NOT_DEFINED,
                       f"transfer ended {TSIZE_SHORT} of {self._announced} bytes: "
                       f"{self.bytes} bytes by block {wire(self._expected - 1, self._rollover)}")
            return
        if self._decoder is not None:
            tail = self._decoder.finish()
            if tail:
                self._received.append(tail)
        self._final_block = self._expected - 1
        self.state = State.STORING
        self._deadline = None  # the caller answers at once; nothing is awaited from the peer

    def _data_while_storing(self, packet: Data, raw: bytes, now: float) -> None:
        """DATA while the caller stores the file: noted, not answered (the final ACK goes once it is stored)."""
        note = Note.DUPLICATE if packet.block == wire(self._final_block or 0, self._rollover) else Note.LATE
        if note is Note.DUPLICATE:
            self.duplicates += 1
        self._note_received(raw, packet, self.peer, now, note)

    def _receiver_timeout(self, now: float) -> None:
        if self._last_reply is None:
            return
        packet, raw = self._last_reply
        self.retransmits += 1
        first = packet.block if isinstance(packet, Ack) else None
        self._events.append(Retransmit(self.session_id, now, "timeout", first, 1, self._timer.attempt))
        # A request goes again where it went first (the server's well-known port), even if a stray reply
        # has meanwhile fixed the transfer ID: that port is where a request is understood.
        to = self.requested_peer if isinstance(packet, Request) else None
        self._send(packet, raw, now, Note.RETRANSMIT, to=to)
        self._arm(now)

    def _waiting_for(self) -> str:
        return f"DATA {wire(self._expected, self._rollover)}"

    # -- how much may arrive ------------------------------------------------------------------------

    def _set_negotiated(self, negotiated: Negotiated, now: float) -> None:
        Session._set_negotiated(self, negotiated, now)
        self._bounds_changed()

    def _expect_at_most(self, announced: int | None) -> None:
        """The peer announced the transfer's size (tsize): running past it is an error, not more data."""
        self._announced = announced
        self._bounds_changed()

    def _expect_exactly(self, announced: int | None) -> None:
        """The peer announced the transfer's size and must send exactly that: past it is an error (as
        :meth:`_expect_at_most`), and so is an end short of it."""
        self._expect_at_most(announced)
        self._exact = announced is not None

    def _announced_allowance(self) -> int | None:
        """The most bytes the announced size lets the peer send. None in netascii: servers announce the
        file's size, the wire's, or even 0 (atftpd) and then send the file, so the size says nothing."""
        return None if self._decoder is not None else self._announced

    def _bounds_changed(self) -> None:
        """Every block up to the last whole block under the limits is full-sized or the last, so the
        bytes up to _safe_bytes cannot cross a limit: _take checks the limits only past them."""
        bounds = [b for b in (self._max_bytes, self._announced_allowance(), self._enough) if b is not None]
        self._safe_bytes = min(bounds) // self.blksize * self.blksize if bounds else _UNBOUNDED

    def _past_a_bound(self, now: float) -> bool:
        """Fail the transfer if the bytes received so far run past the announced size or our limit;
        cancel it if they run past what the caller said is enough (a limit it expects to reach)."""
        allowance = self._announced_allowance()
        if allowance is not None and self.bytes > allowance:
            self._fail(now, Reason.PROTOCOL, Side.LOCAL, ErrorCode.DISK_FULL,
                       f"DATA ran past the announced tsize of {self._announced} bytes: "
                       f"{self.bytes} bytes by block {wire(self._expected - 1, self._rollover)}")
            return True
        if self._max_bytes is not None and self.bytes > self._max_bytes:
            what = "download" if self.role is Role.CLIENT_READ else "upload"
            self._fail(now, Reason.LOCAL, Side.LOCAL, ErrorCode.DISK_FULL,
                       f"{what} exceeds the limit of {self._max_bytes} bytes")
            return True
        if self._enough is not None and self.bytes > self._enough:
            self.abort(now, f"enough received: stopped after {self.bytes} bytes, past the {self._enough} asked for")
            return True
        return False
