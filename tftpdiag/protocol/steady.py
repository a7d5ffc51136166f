"""The steady state of a lock-step transfer, taken a turn at a time without the machine.

In the middle of a lock-step transfer nearly every turn is the same: the receiver gets the next block
in order, full-sized, from its peer, and answers with its ACK; the sender gets the ACK of the block it
sent last and answers with the next block. Through the machine's general path such a turn cost each
end 31-37 us of CPU in user mode on a 2-core machine (46-54 us beside a CPU-bound program), against
10-16 us for a minimal Python pair (benchmarks/floor.py); with another program using a CPU, the two
ends of a transfer take turns on the one CPU left, and that difference was the transfer's time
(issue 16).

A steady object holds what such a turn needs: the next datagram expected, as its first bytes and its
size; the answer, already encoded. :meth:`take` is called with each datagram that arrives and the time,
and gives the datagram to send back, or None when the datagram is not a steady turn (another block, a
short last block, a duplicate, an ERROR: anything else). Every turn it takes goes in columns (the times,
and the datagrams received and sent, alternately); the machine that made the object then settles it
(:meth:`Receiver.settle`, :meth:`Sender.settle`): its counters, its retransmit timer, its record of the
packets and the data received end up exactly as if it had taken those turns itself, and a datagram the
object left is the machine's to take next, as it takes any other.

A steady object takes at most ``room`` turns: up to :func:`room_for` the block size (so that the
engine hands over its events, looks at the clock and the cancel flag and stores the data at least that
often), never past a limit the machine checks (the bytes it may receive) or the rollover of the wire's
block numbers; and none once ``interval`` has passed ``since`` the machine last reported its progress
(it then takes that turn itself, and its Progress event comes where it would have, with the same test):
so a run lasts at most the progress interval and a turn, however slow the peer. The engine checks who
sent a datagram (``peer``) before it hands it over.

Like the machines, this is sans-IO: bytes and time in, bytes out.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from struct import Struct
from typing import final

from tftpdiag.protocol.events import RUN_ACK, RUN_NOTE_TAGS, RUN_RECEIVED, Address, Note
from tftpdiag.protocol.runs import HOLD

__all__ = ["SteadyReceive", "SteadySend", "Steady", "room_for", "TURNS", "BYTES"]

# The most turns a steady object takes, and the most bytes of blocks they carry (as many turns as fit,
# never fewer than runs.HOLD): what the sender prepares ahead, and the receiver holds before they are
# stored, is at most that. Why so many: between runs each end settles the machine, stores and hashes
# the data, hands the events over and makes the next twin socket (engine/turns.py), some 250 us of
# CPU; a 32 MiB lock-step transfer (blksize 1468) between our client and server, each a fresh process,
# beside a CPU-bound program on a 2-core machine, took 1.80 s and 1.73 s with runs of 32 turns,
# 1.53 s and 1.46 s with 128, 1.43 s and 1.32 s with 256, 1.29 s and 1.35 s with 512 (interleaved).
TURNS = 256
BYTES = 384 * 1024


def room_for(blksize: int) -> int:
    """The most turns a steady object takes for blocks of ``blksize`` bytes (see TURNS)."""
    return max(HOLD, min(TURNS, BYTES // blksize))

_HEADER = Struct(">HH").pack  # a packet's opcode and block number
_DATA, _ACK = 3, 4
_ACK_OPCODE = b"\x00\x04"
_PLAIN = RUN_NOTE_TAGS[Note.NONE]  # a steady turn's packets carry no note
_RECEIVED_DATA_SENT_ACK = bytes((RUN_RECEIVED | _PLAIN, RUN_ACK | _PLAIN))  # a turn's two packets' tags in a run
_RECEIVED_ACK_SENT_DATA = bytes((RUN_RECEIVED | RUN_ACK | _PLAIN, _PLAIN))


def _twice(column: array) -> array:
    """Each item of ``column`` twice in a row: a turn's two packets share its time (and, receiving,
    its block number)."""
    out = array(column.typecode, bytes(2 * column.itemsize * len(column)))
    out[::2] = column
    out[1::2] = column
    return out


class _Turns:
    """What both sides' steady objects hold: the peer, the room and what is left of it, the first block
    number, when the machine last reported progress and how often it does; the turns taken, in columns:
    when each was taken (``times``), its datagram and its answer, alternately (``raws``)."""

    __slots__ = ("peer", "room", "left", "first", "_since", "_interval", "times", "raws")

    def __init__(self, peer: Address, block: int, room: int, since: float, interval: float) -> None:
        self.peer = peer
        self.room = self.left = room
        self.first = block
        self._since, self._interval = since, interval
        self.times = array("d")
        self.raws: list[bytes] = []

    def __len__(self) -> int:
        """Turns taken."""
        return self.room - self.left


@final
class SteadyReceive(_Turns):
    """Lock-step turns of the receiving side (see the module docstring): DATA block ``block`` (the
    wire's number), ``blksize`` bytes long, draws ACK ``block``; then the next block, up to ``room``."""

    __slots__ = ("_size", "_header")

    def __init__(self, peer: Address, block: int, blksize: int, room: int, since: float, interval: float) -> None:
        _Turns.__init__(self, peer, block, room, since, interval)
        self._size = blksize + 4
        self._header = _HEADER(_DATA, block)

    def take(self, datagram: bytes, now: float) -> bytes | None:
        """The ACK to send for ``datagram``, or None: not the next full block (the machine takes it)."""
        if len(datagram) != self._size or not datagram.startswith(self._header) or not self.left \
                or now - self._since >= self._interval:
            return None
        self.left -= 1
        ack = _ACK_OPCODE + datagram[2:4]
        self._header = _HEADER(_DATA, (self.first + self.room - self.left) & 0xFFFF)
        self.times.append(now)
        raws = self.raws
        raws.append(datagram)
        raws.append(ack)
        return ack

    def columns(self) -> tuple[bytes, array, array]:
        """The turns' packets as a run's columns (protocol/runs.py): their tags, times and block numbers."""
        taken = len(self)
        return (_RECEIVED_DATA_SENT_ACK * taken, _twice(self.times),
                _twice(array("H", range(self.first, self.first + taken))))


@final
class SteadySend(_Turns):
    """Lock-step turns of the sending side (see the module docstring): ACK ``block`` (the wire's number of
    the block sent last) draws ``blocks[0]``, the next full block already encoded; its ACK draws
    ``blocks[1]``, and so on, up to ``room`` (at most len(blocks))."""

    __slots__ = ("_blocks", "_expected")

    def __init__(self, peer: Address, block: int, blocks: Sequence[bytes], room: int, since: float,
                 interval: float) -> None:
        _Turns.__init__(self, peer, block, min(room, len(blocks)), since, interval)
        self._blocks = blocks
        self._expected = _HEADER(_ACK, block)

    def take(self, datagram: bytes, now: float) -> bytes | None:
        """The next DATA to send for ``datagram``, or None: not the ACK of the block sent last."""
        if datagram != self._expected or not self.left or now - self._since >= self._interval:
            return None
        taken = self.room - self.left
        self.left -= 1
        data = self._blocks[taken]
        self._expected = _HEADER(_ACK, (self.first + taken + 1) & 0xFFFF)
        self.times.append(now)
        raws = self.raws
        raws.append(datagram)
        raws.append(data)
        return data

    def columns(self) -> tuple[bytes, array, array]:
        """The turns' packets as a run's columns (protocol/runs.py): their tags, times and block numbers."""
        taken = len(self)
        blocks = array("H", bytes(4 * taken))
        blocks[::2] = array("H", range(self.first, self.first + taken))  # the ACKs
        blocks[1::2] = array("H", range(self.first + 1, self.first + taken + 1))  # the DATA they drew
        return _RECEIVED_ACK_SENT_DATA * taken, _twice(self.times), blocks


Steady = SteadyReceive | SteadySend
