"""IP fragments put back together, as the receiving host's stack would: a UDP datagram larger than the
path's MTU (an OACK with a huge value, DATA with blksize 8192 over Ethernet) crosses the network in IP
fragments, and only the first holds the UDP header. The capture reader (links.py decodes, files.py
reads) hands every fragment of a UDP datagram here and gets the whole datagram back when its last
fragment has come, with that fragment's time.

A datagram whose fragments do not all come reads as it did without reassembly: its first fragment as
a datagram the capture cut (payload shorter than its length on the wire). So that it keeps its place,
the datagrams after a first fragment wait behind it (``held``) until it is whole or given up.

Bounded whatever the capture holds: at most MAX_PENDING datagrams in reassembly (a new one past it
gives up the oldest), each at most MAX_SIZE bytes in at most MAX_PIECES fragments, given up WAIT
seconds (capture time) after its first fragment came or when MAX_HELD datagrams wait behind it.
Fragments that overlap (other than the same fragment seen again) give the datagram up, as Linux and
RFC 5722 do: overlaps are how firewalls are evaded, and no honest sender makes them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Final

from tftpdiag.protocol.datagram import Datagram

__all__ = ["Fragments", "MAX_PENDING", "MAX_SIZE", "MAX_PIECES", "WAIT", "MAX_HELD"]

MAX_PENDING: Final = 64  # datagrams in reassembly at once
MAX_SIZE: Final = 65535  # bytes of a datagram's fragmented part (UDP header and payload): IP's limit
# A 65,535-byte datagram needs 117 fragments at IPv4's smallest MTU (576); more is a hostile capture.
MAX_PIECES: Final = 256
# Fragments of one datagram leave their sender back to back; seconds is already a broken path (Linux
# waits 30 s, but a reader that holds later datagrams back must not wait that long for one that is lost).
WAIT: Final = 2.0
MAX_HELD: Final = 4096  # datagrams held back behind a first fragment at most


class _Partial:
    """One datagram in reassembly: its fragments by offset and, once its first fragment came, that
    fragment read as a cut datagram (what it reads as if the rest never comes)."""

    __slots__ = ("key", "since", "pieces", "size", "total", "first", "settled")

    def __init__(self, key: Hashable, since: float) -> None:
        self.key = key
        self.since = since
        self.pieces: dict[int, bytes] = {}
        self.size = 0  # bytes held; whole when it equals total (no overlaps are kept)
        self.total: int | None = None  # known once the last fragment (no more-fragments flag) came
        self.first: Datagram | None = None
        self.settled = False  # made whole (first is None) or given up (first, if any, stands for it)


class Fragments:
    """The reassembly table of one capture being read. ``reassembled`` counts the datagrams made whole,
    ``incomplete`` those given up (fragments missing, overlapping or past the bounds)."""

    __slots__ = ("_table", "held", "reassembled", "incomplete")

    def __init__(self) -> None:
        self._table: dict[Hashable, _Partial] = {}
        # Datagrams in the order read, behind the first fragment of one in reassembly (a _Partial holds
        # its place); empty while nothing waits, so the reader's usual path is one test of it.
        self.held: deque[Datagram | _Partial] = deque()
        self.reassembled = 0
        self.incomplete = 0

    def add(self, key: Hashable, offset: int, more: bool, piece: bytes, cut: bool, time: float,
            src: str, dst: str, first: Datagram | None) -> Datagram | None:
        """One fragment of a UDP datagram: ``key`` names the datagram (addresses, IP id, version),
        ``offset`` and ``piece`` its bytes within it, ``more`` its more-fragments flag, ``cut`` whether the
        snap length cut it. ``first``: a first fragment read as a cut datagram (None for the others).
        Returns the whole datagram when this fragment completes it, else None (or, when the fragment can
        never be put together, what the reader returned without reassembly)."""
        if offset == 0 and not more:
            return first  # an IPv6 atomic fragment: whole as it is
        table = self._table
        p = table.get(key)
        if p is None:
            self._expire(time)
            if len(table) >= MAX_PENDING:
                self._give_up(next(iter(table)))
            p = table[key] = _Partial(key, time)
        stop = offset + len(piece)
        if cut or stop > MAX_SIZE or (more and len(piece) & 7) or len(p.pieces) >= MAX_PIECES:
            self._give_up(key)
            return first
        old = p.pieces.get(offset)
        if old is not None:
            if old == piece and (more or p.total == stop):
                return None  # the same fragment again (a copy the capture point made)
            self._give_up(key)
            return None
        total = p.total
        if not more:
            if total is not None or any(o + len(b) > stop for o, b in p.pieces.items()):
                self._give_up(key)
                return None
            p.total = total = stop
        elif total is not None and stop > total:
            self._give_up(key)
            return None
        if any(offset < o + len(b) and o < stop for o, b in p.pieces.items()):
            self._give_up(key)
            return None
        p.pieces[offset] = piece
        p.size += len(piece)
        if first is not None:
            p.first = first
            self.held.append(p)  # its place in the order read
        if total is None or p.size != total:
            return None
        del table[key]
        p.settled = True
        p.first = None
        data = b"".join(p.pieces[o] for o in sorted(p.pieces))
        if len(data) < 8:
            self.incomplete += 1
            return None
        ulen = data[4] << 8 | data[5]
        if ulen < 8:
            self.incomplete += 1
            return None  # malformed; no stack would have delivered it
        self.reassembled += 1
        sport, dport = data[0] << 8 | data[1], data[2] << 8 | data[3]
        return Datagram(time, (src, sport), (dst, dport), data[8:ulen], ulen - 8)

    def release(self, datagram: Datagram | None, time: float) -> Iterator[Datagram]:
        """While datagrams are held: ``datagram`` (the reader's next, None if it read none) joins them,
        and those no longer waiting for a first fragment come out in the order read."""
        held = self.held
        if datagram is not None:
            held.append(datagram)
        self._expire(time)
        while len(held) > MAX_HELD:
            front = held[0]
            if isinstance(front, _Partial) and not front.settled:
                self._give_up(front.key)
            yield from self._pop_settled()
        yield from self._pop_settled()

    def flush(self) -> Iterator[Datagram]:
        """The capture ended: what is still in reassembly is given up, and every held datagram comes out."""
        for key in list(self._table):
            self._give_up(key)
        yield from self._pop_settled()

    def _pop_settled(self) -> Iterator[Datagram]:
        held = self.held
        while held:
            front = held[0]
            if isinstance(front, _Partial):
                if not front.settled:
                    return
                held.popleft()
                if front.first is not None:
                    yield front.first
            else:
                held.popleft()
                yield front

    def _expire(self, time: float) -> None:
        table = self._table
        while table:
            key = next(iter(table))  # the oldest first: the table keeps the order datagrams began in
            if time - table[key].since <= WAIT:
                return
            self._give_up(key)

    def _give_up(self, key: Hashable) -> None:
        """No whole datagram from these fragments: its first fragment, if it came, stands for it (cut)."""
        p = self._table.pop(key)
        p.settled = True
        self.incomplete += 1
