"""The side that sends DATA (a client writing, a server answering a read): the window, the reading
ahead of the source, and what an ACK means.

Windowed (RFC 7440): up to ``windowsize`` blocks are in flight. DATA is resent only on a timeout, or
once per window when the receiver's ACK shows a gap; a duplicate ACK is never answered with DATA in
lock-step (RFC 1123's fix for the Sorcerer's Apprentice bug).

The data to send is the caller's to read (h11 leaves body bytes to its caller): :meth:`Sender.prefetch`,
called while the peer is busy (after sending), encodes the next window's blocks from the bytes held and
says how many more bytes of the file the sender wants; the caller reads them and hands them over with
:meth:`Sender.feed` (or :meth:`Sender.read_failed`). A read is one call per 64 KiB, at the moment the
machine's own read used to happen, so answering an ACK still only hands out blocks already encoded.
Netascii conversion happens here, on what is fed. A sender whose next block has not been fed yet
waits (it is starved) and sends it when fed; a read failure ends the transfer when the sender reaches
the bytes it could not read, never sooner, so every block before them still goes.
"""

from __future__ import annotations

from collections import deque

from tftpdiag.protocol.blocks import at_or_after, wire, wires
from tftpdiag.protocol.events import RUN_NOTE_TAGS, Address, Note, PacketSent, Retransmit
from tftpdiag.protocol.netascii import encode as netascii_encode
from tftpdiag.protocol.packets import Ack, Data, ack_of, encode_data
from tftpdiag.protocol.session import Session, State, StorageError
from tftpdiag.protocol.steady import Steady, SteadySend, room_for

__all__ = ["Sender"]

_TRANSFERRING = State.TRANSFERRING  # module constants: an enum member looked up per datagram costs
_NONE = Note.NONE
_RETRANSMIT = Note.RETRANSMIT
_SENT = RUN_NOTE_TAGS[_NONE]  # a DATA block sent, in a run's tags (Session.record_runs), and resent
_RESENT = RUN_NOTE_TAGS[_RETRANSMIT]
_READ_AHEAD = 1 << 16  # bytes a sender asks to be fed at a time


class Sender(Session):
    """See the module docstring. Blocks are counted from 1 past every rollover (absolute numbers);
    :mod:`blocks` maps them to and from the wire."""

    # The sender's own state lives in slots, not in the instance's dict: CPython 3.11 shares a class's
    # attribute names among its instances' dicts only up to 30 of them, and past that every instance
    # gets a dict of its own, on which a method call (self._on_ack(...)) is not specialised: it costs a
    # dictionary lookup per call, about 2x. Session's attributes then stay under that limit.
    __slots__ = ("_netascii", "_rollover", "_acked", "_next", "_sent_max", "_final", "_final_short",
                 "_rewound_for", "_rtt_block", "_buf", "_pos", "_fed_chunks", "_fed_bytes", "_eof",
                 "_read_error", "_starved", "_ahead", "_prepared_until", "_prepared_end", "_runs")

    def receive(self, datagram: bytes, addr: Address, now: float) -> None:
        # Mid-transfer, an ACK from our peer goes straight to the window: decoding it is one look at
        # its opcode, and the base's checks (state, transfer ID) have all been made here.
        if self.state is _TRANSFERRING and addr == self.peer and self.locked:
            ack = ack_of(datagram)
            if ack is not None:
                self.packets_received += 1
                self._on_ack(ack, datagram, now)
                return
        Session.receive(self, datagram, addr, now)

    def _init_sender(self, netascii: bool) -> None:
        self._runs = False
        self._netascii = netascii
        self._rollover = self.timing.rollover  # asked per ACK: one attribute, not two
        self._acked = 0  # highest block acknowledged
        self._next = 1  # next block to put on the wire
        self._sent_max = 0
        self._final: int | None = None  # the last block's number, once it is prepared (the file ended)
        self._final_short = 0  # how much shorter than blksize the last block is
        self._rewound_for = -1
        self._rtt_block = 0  # the block whose ACK ends the round trip being timed
        # What the caller fed, not yet in a block (wire bytes): _buf[_pos:], then the chunks fed since
        # (_fed_chunks, _fed_bytes in all), and whether the file ended. Chunks are kept apart rather than
        # joined: while they hold whole blocks, taking the next one copies nothing.
        self._buf = b""
        self._pos = 0
        self._fed_chunks: deque[bytes] = deque()
        self._fed_bytes = 0
        self._eof = False
        self._read_error: StorageError | None = None  # the caller's failed read, reported when its bytes are due
        self._starved = False  # a block was due before its bytes were fed: feed() sends it
        # The blocks after the last one acknowledged, in order, as (packet, datagram): blocks _acked + 1
        # .. _sent_max were sent (a retransmit takes them from here); the rest are encoded ahead, cut a
        # read's worth at a time (see _prepare), so that answering an ACK only hands the next ones out.
        # A short block ends the file.
        self._ahead: list[tuple[Data, bytes]] = []
        self._prepared_until = 0  # the last block in _ahead (_acked + len(_ahead), kept: asked per block)
        self._prepared_end = False

    def steady(self) -> SteadySend | None:
        """Mid-transfer in lock-step, with one block in flight (sent once or resent), the next blocks
        already prepared as steady turns (protocol/steady.py): up to steady.room_for the block size,
        none past the wrap of the block numbers (the general path's), and never the last block's ACK
        (which ends the transfer)."""
        acked = self._acked
        if self.state is not _TRANSFERRING or self.windowsize != 1 or not self._runs or not self.locked \
                or self._starved or self._next != acked + 2 or self._sent_max != acked + 1 \
                or self._rtt_block > acked + 1:
            return None
        most = room_for(self.blksize)
        if self._prepared_until - acked <= most and not self._prepared_end:
            self._prepare()  # from what was fed (prefetch asks for enough: see _lead)
        block = wire(acked + 1, self._rollover)
        room = min(most, 0xFFFF - block, self._prepared_until - acked - 1)
        if room <= 0:
            return None
        return SteadySend(self.peer, block, [raw for _, raw in self._ahead[1:room + 1]], room,
                          self._last_progress, self.timing.progress_interval)

    def settle(self, steady: Steady) -> None:
        """Take back the turns ``steady`` took: as :meth:`_on_ack` and :meth:`_fill_window` would have,
        each ACK counted and timed, each block it drew sent and timed."""
        assert type(steady) is SteadySend
        taken = len(steady)
        if not taken:
            return
        now = steady.times[-1]
        self.packets_received += taken
        self.packets_sent += taken
        del self._ahead[:taken]
        self.blocks = self._acked = acked = self._acked + taken
        self.bytes = acked * self.blksize  # (never the last block: steady() leaves its ACK)
        self._next += taken
        self._sent_max = self._rtt_block = self._sent_max + taken
        self._record_turns(steady)
        timer = self._timer
        timer.turns(steady.times)
        timer.heard(now)  # (no progress was due at any turn: steady objects leave those turns to the machine)
        self._arm(now)

    def prefetch(self) -> int:
        """Encode the next blocks now, while waiting for the peer, so that answering its ACK only hands
        them out; then say how many more bytes of the file the sender wants fed (0: none now). The
        caller invokes this after sending; it never changes what is sent, only when the work happens."""
        lead = self._lead()
        if self._prepared_until - self._sent_max >= lead:  # the next window is ready (most calls)
            return 0
        # Only once the block size is settled: before the OACK a block would be cut at the wrong size.
        if not self._prepared_end and self.state is _TRANSFERRING and self.locked:
            self._prepare()
        if self._eof or self._read_error is not None:
            return 0
        blksize = self.blksize
        held = (self._prepared_until - self._sent_max) * blksize + len(self._buf) - self._pos + self._fed_bytes
        if held >= lead * blksize:
            return 0
        # Whole blocks, and so many that what is held ends on a block boundary (see _fed_chunks).
        return blksize * max(lead, _READ_AHEAD // blksize) - held % blksize

    def _lead(self) -> int:
        """The blocks to have prepared past those sent: a window, or in lock-step recording runs as many
        as steady turns take at a time (see :meth:`steady`)."""
        windowsize = self.windowsize
        return room_for(self.blksize) + 1 if windowsize == 1 and self._runs else windowsize

    def feed(self, data: bytes, now: float, eof: bool = False) -> bool:
        """The next bytes of the file, in order (as many as :meth:`prefetch` asked, fewer only at the
        end); ``eof``: nothing follows. True when the sender, which was waiting for them, has DATA to
        send now."""
        if self._netascii:
            data = netascii_encode(data)  # each byte maps on its own: chunks convert independently
        if data:
            self._fed_chunks.append(data)
            self._fed_bytes += len(data)
        self._eof = self._eof or eof
        return self._fed(now)

    def read_failed(self, now: float, error: StorageError) -> bool:
        """The caller could not read the next bytes: the transfer fails once the blocks before them are
        sent (see :meth:`feed` for what True means)."""
        self._read_error = error
        return self._fed(now)

    def _fed(self, now: float) -> bool:
        if self.state is not _TRANSFERRING or not self.locked:
            return False
        if self._starved:
            self._starved = False
            self._fill_window(now)
            return bool(self._out)
        if not self._prepared_end:  # what prefetch() could not prepare for want of bytes
            self._prepare()
        return False

    def _prepare(self) -> None:
        """Cut and encode new blocks from the bytes fed until a read's worth (_READ_AHEAD, or a window
        if that is more) are prepared, the file ends or the bytes fed run out (a partial block waits for
        the rest, or for the end of the file). Each chunk fed is cut in one go, not block by block."""
        ahead = self._ahead
        blksize = self.blksize
        n = self._prepared_until + 1
        room = max(self._lead(), _READ_AHEAD // blksize) - (n - 1 - self._sent_max)
        buf, pos, chunks = self._buf, self._pos, self._fed_chunks
        while room > 0:
            whole = min((len(buf) - pos) // blksize, room)
            if whole:
                stop = pos + whole * blksize
                payloads = [buf[start:start + blksize] for start in range(pos, stop, blksize)]
                pos = stop
            elif chunks:  # on to the next chunk (nothing is copied when none is left here)
                chunk = chunks.popleft()
                self._fed_bytes -= len(chunk)
                buf, pos = buf[pos:] + chunk, 0
                continue
            elif self._eof:  # the last block: shorter than blksize, perhaps empty
                payloads = [buf[pos:]]
                pos = len(buf)
                self._prepared_end = True
                self._final = n
                self._final_short = blksize - len(payloads[0])
            else:
                break
            numbers = wires(n, len(payloads), self._rollover)
            ahead += zip(map(Data, numbers, payloads), map(encode_data, numbers, payloads), strict=True)
            n += len(payloads)
            room -= len(payloads)
            if self._prepared_end:
                break
        self._buf, self._pos = buf, pos
        self._prepared_until = n - 1

    def _fill_window(self, now: float) -> None:
        """Send every block the window allows; resent blocks are marked as retransmits."""
        acked = self._acked
        limit = acked + self.windowsize
        final = self._final
        if final is not None and final < limit:
            limit = final
        n = self._next
        if n <= limit:
            session, local, peer = self.session_id, self.local, self.peer
            out, events = self._out.append, self._events.append
            # Recording runs, each block goes in the run's columns (every block here is one this
            # sender encoded from its number and payload: its datagram gives it back).
            record = self._record if self._runs else None
            ahead = self._ahead
            first = n
            sent_max = self._sent_max
            if n <= sent_max:  # sent before: retransmits
                last = min(limit, sent_max)
                for packet, raw in ahead[n - acked - 1:last - acked]:
                    out((raw, peer))
                    if record is not None:
                        record(_RESENT, now, packet.block, raw, peer)
                    else:
                        events(PacketSent(session, now, local, peer, raw, packet, _RETRANSMIT))
                n = last + 1
            if n <= limit:  # new blocks, from those prepared
                if self._prepared_until < limit:
                    self._prepare()
                batch = ahead[n - acked - 1:limit - acked]
                if batch:
                    timer = self._timer
                    if timer.mark is None:
                        timer.mark = now
                        self._rtt_block = n
                    if record is not None:
                        for packet, raw in batch:
                            out((raw, peer))
                            record(_SENT, now, packet.block, raw, peer)
                    else:
                        for packet, raw in batch:
                            out((raw, peer))
                            events(PacketSent(session, now, local, peer, raw, packet, _NONE))
                    n += len(batch)
                    self._sent_max = n - 1
                if n <= limit:  # the next block's bytes have not been fed, or could not be read
                    self.packets_sent += n - first
                    self._next = n
                    if self._read_error is not None:
                        self._storage_failed(self._read_error, now)
                        return
                    self._starved = True
                    self._arm(now)
                    return
            self.packets_sent += n - first
            self._next = n
        self._arm(now)

    def _resend_from(self, first: int, now: float, reason: str) -> None:
        self._next = first
        self._timer.mark = None  # Karn: a resent block does not time the round trip
        count = min(self._acked + self.windowsize, self._sent_max) - first + 1
        if count > 0:
            self.retransmits += count
            self._events.append(Retransmit(self.session_id, now, reason, wire(first, self._rollover), count,
                                           self._timer.attempt))
        self._fill_window(now)

    def _on_ack(self, packet: Ack, raw: bytes, now: float) -> None:
        # An ACK can only acknowledge a block that was sent: counted forward from the last one acknowledged.
        acked = self._acked
        absolute = at_or_after(packet.block, acked, self._rollover)
        if absolute is None or absolute > self._sent_max:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE, "ACK for a block outside the window")
            return
        if absolute == acked:
            self.duplicates += 1
            self._note_received(raw, packet, self.peer, now, Note.DUPLICATE)
            # In a window, an ACK of the last acknowledged block means the window's first block was lost.
            if self.windowsize > 1 and self._sent_max > acked and self._rewound_for != absolute:
                self._rewound_for = absolute
                self._resend_from(absolute + 1, now, "window-gap")
            return
        self._note_received(raw, packet, self.peer, now)
        if absolute >= self._rtt_block:
            self._timer.end_sample(now)
        del self._ahead[:absolute - acked]
        # Every block but the last is blksize long: the bytes acknowledged follow from the block number.
        final = absolute == self._final
        self.bytes = absolute * self.blksize - (self._final_short if final else 0)
        self.blocks = self._acked = absolute
        # (_rewound_for needs no reset: it holds an earlier _acked, never this one.)
        self._progressed(now)
        if final:
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
        """The transfer ID and the options are settled: the first window goes."""
        self.state = State.TRANSFERRING
        self._fill_window(now)

    def _sender_timeout(self, now: float) -> None:
        self._resend_from(self._acked + 1, now, "timeout")

    def _waiting_for(self) -> str:
        return f"ACK {wire(self._next - 1, self._rollover)}"

    def _unreachable_hint(self) -> str:
        if self._final is not None and self._sent_max == self._final and self._acked == self._final - 1:
            return ("; the last block had been sent: the peer probably received everything and closed its "
                    "port after its final ACK was lost")
        return ""
