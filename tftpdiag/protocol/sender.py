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

from tftpdiag.protocol.blocks import at_or_after, wire
from tftpdiag.protocol.events import Address, Note, PacketSent, Retransmit
from tftpdiag.protocol.netascii import encode as netascii_encode
from tftpdiag.protocol.packets import Ack, Data, ack_of, encode_data
from tftpdiag.protocol.session import Session, State, StorageError

__all__ = ["Sender"]

_TRANSFERRING = State.TRANSFERRING  # module constants: an enum member looked up per datagram costs
_NONE = Note.NONE
_RETRANSMIT = Note.RETRANSMIT
_READ_AHEAD = 1 << 16  # bytes a sender asks to be fed at a time


class Sender(Session):
    """See the module docstring. Blocks are counted from 1 past every rollover (absolute numbers);
    :mod:`blocks` maps them to and from the wire."""

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
        self._netascii = netascii
        self._acked = 0  # highest block acknowledged
        self._next = 1  # next block to put on the wire
        self._sent_max = 0
        self._payloads: dict[int, tuple[Data, bytes]] = {}  # sent, not yet acknowledged: packet, datagram
        self._final: int | None = None
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
        # The next new blocks, encoded ahead: block numbers follow _sent_max; a short block ends the
        # file. prefetch() fills it while the peer is busy, so answering its ACK only hands them out;
        # otherwise _fill_window fills it as it needs them.
        self._prepared: deque[tuple[Data, bytes]] = deque()
        self._prepared_end = False

    def prefetch(self) -> int:
        """Encode the next window's new blocks now, while waiting for the peer, so that answering its
        ACK only hands them out; then say how many more bytes of the file the sender wants fed (0: none
        now). The caller invokes this after sending; it never changes what is sent, only when the work
        happens."""
        # Only once the block size is settled: before the OACK a block would be cut at the wrong size.
        if self._final is None and self.state is _TRANSFERRING and self.locked:
            self._prepare(self.windowsize)
        if self._eof or self._read_error is not None:
            return 0
        held = len(self._buf) - self._pos + self._fed_bytes
        blksize, windowsize = self.blksize, self.windowsize
        if held >= windowsize * blksize:
            return 0
        # Whole blocks, and so many that what is held ends on a block boundary (see _fed_chunks).
        return blksize * max(windowsize, _READ_AHEAD // blksize) - held % blksize

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
        if self._final is None:  # what prefetch() could not prepare for want of bytes
            self._prepare(self.windowsize)
        return False

    def _prepare(self, count: int) -> None:
        """Cut and encode new blocks from the bytes fed until ``count`` are prepared, the file ends or
        the bytes fed run out (a partial block waits for the rest, or for the end of the file)."""
        prepared = self._prepared
        if self._prepared_end or len(prepared) >= count:
            return
        blksize, rollover, buf, eof = self.blksize, self.timing.rollover, self._buf, self._eof
        pos, end = self._pos, len(self._buf)
        n = self._sent_max + 1 + len(prepared)
        while len(prepared) < count:
            if end - pos < blksize:
                if self._fed_chunks:  # on to the next chunk (nothing is copied when none is left here)
                    chunk = self._fed_chunks.popleft()
                    self._fed_bytes -= len(chunk)
                    buf, pos = buf[pos:] + chunk, 0
                    end = len(buf)
                    self._buf = buf
                    continue
                if not eof:
                    break
            payload = buf[pos:pos + blksize]
            pos += len(payload)
            block = wire(n, rollover)
            prepared.append((Data(block, payload), encode_data(block, payload)))
            n += 1
            if len(payload) < blksize:
                self._prepared_end = True
                break
        self._pos = pos

    def _fill_window(self, now: float) -> None:
        """Send every block the window allows; resent blocks are marked as retransmits."""
        limit = self._acked + self.windowsize
        if self._final is not None and self._final < limit:
            limit = self._final
        n = self._next
        if n <= limit:
            prepared, payloads, blksize = self._prepared, self._payloads, self.blksize
            session, local, peer = self.session_id, self.local, self.peer
            out, events = self._out.append, self._events.append
            first = n
            while n <= limit:
                entry = payloads.get(n)
                if entry is not None:  # sent before: a retransmit
                    note = _RETRANSMIT
                else:  # a new block: n is _sent_max + 1, the first of those prepared
                    if not prepared:
                        self._prepare(limit - n + 1)
                        if not prepared:  # its bytes have not been fed, or could not be read
                            self.packets_sent += n - first
                            self._next = n
                            if self._read_error is not None:
                                self._storage_failed(self._read_error, now)
                                return
                            self._starved = True
                            self._arm(now)
                            return
                    entry = payloads[n] = prepared.popleft()
                    note = _NONE
                    if len(entry[0].payload) < blksize:
                        self._final = limit = n
                    if self._timer.mark is None:
                        self._timer.mark = now
                        self._rtt_block = n
                    self._sent_max = n
                packet, raw = entry
                out((raw, peer))
                events(PacketSent(session, now, local, peer, raw, packet, note))
                n += 1
            self.packets_sent += n - first
            self._next = n
        self._arm(now)

    def _resend_from(self, first: int, now: float, reason: str) -> None:
        self._next = first
        self._timer.mark = None  # Karn: a resent block does not time the round trip
        count = min(self._acked + self.windowsize, self._sent_max) - first + 1
        if count > 0:
            self.retransmits += count
            self._events.append(Retransmit(self.session_id, now, reason, wire(first, self.timing.rollover), count,
                                           self._timer.attempt))
        self._fill_window(now)

    def _on_ack(self, packet: Ack, raw: bytes, now: float) -> None:
        # An ACK can only acknowledge a block that was sent: counted forward from the last one acknowledged.
        absolute = at_or_after(packet.block, self._acked, self.timing.rollover)
        if absolute is None or absolute > self._sent_max:
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
        if absolute >= self._rtt_block:
            self._timer.end_sample(now)
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
        """The transfer ID and the options are settled: the first window goes."""
        self.state = State.TRANSFERRING
        self._fill_window(now)

    def _sender_timeout(self, now: float) -> None:
        self._resend_from(self._acked + 1, now, "timeout")

    def _waiting_for(self) -> str:
        return f"ACK {wire(self._next - 1, self.timing.rollover)}"

    def _unreachable_hint(self) -> str:
        if self._final is not None and self._sent_max == self._final and self._acked == self._final - 1:
            return ("; the last block had been sent: the peer probably received everything and closed its "
                    "port after its final ACK was lost")
        return ""
