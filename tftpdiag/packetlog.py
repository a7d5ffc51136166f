"""Every packet of one session, in columns: a few bytes a packet, not a Python object each.

The TUI's packet table is a view over this log: a row is rebuilt from the columns only when it is
drawn. Appending is the whole per-packet cost (a handful of array appends), so the UI thread can take
every packet event of a fast transfer instead of a sample of them.

Bytes a packet: time 8 (array 'd'), block 4 ('I', rollovers folded in: block + 65536 * wraps), size 2,
peer 2 (an index into a small table of addresses), kind 1 (opcode, direction, impairment), note 1.
Text exists only for the rare rows that carry some (requests, OACKs, errors, noted packets), in a dict.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from typing import NamedTuple

from tftpdiag.fmt import address as fmt_addr
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.events import (
    RUN_ACK,
    RUN_NOTE_SHIFT,
    RUN_RECEIVED,
    Address,
    CaptureGap,
    Impaired,
    Note,
    PacketReceived,
    PacketRun,
    PacketSent,
)
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, ProtocolError, Request, decode, error_code_name

__all__ = ["PacketLog", "PacketRow", "describe", "fmt_addr", "OPS", "BYTES_PER_PACKET"]

# Index: the opcode; 0 for undecodable; 7 for a marker where a capture lacks packets (not a packet).
OPS = ("?", "RRQ", "WRQ", "DATA", "ACK", "ERROR", "OACK", "GAP")
_OP_OF = {"RRQ": 1, "WRQ": 2, "DATA": 3, "ACK": 4, "ERROR": 5, "OACK": 6, "?": 0}
_GAP = 7
_OUT = 8  # kind bit: we sent it
_IMPAIRED = 16  # kind bit: a row for what --impair did to a datagram, not a packet on the wire
_NOTES = tuple(Note)
_NOTE_INDEX = {note: i for i, note in enumerate(_NOTES)}
_PROBLEM_NOTES = {Note.RETRANSMIT, Note.DUPLICATE, Note.OUT_OF_ORDER, Note.STRAY, Note.MALFORMED,
                  Note.UNEXPECTED, Note.LATE, Note.REACK}
_NONE = Note.NONE
BYTES_PER_PACKET = 8 + 4 + 2 + 2 + 1 + 1
# A PacketRun's tag (protocol/events.py) to this log's kind byte (opcode, and _OUT for a sent packet)
# and note index: bytes.translate maps a whole run's tags in C.
_RUN_KIND = bytes((4 if tag & RUN_ACK else 3) | (0 if tag & RUN_RECEIVED else _OUT) for tag in range(256))
_RUN_NOTE = bytes(tag >> RUN_NOTE_SHIFT for tag in range(256))

# A run's wire block numbers (array 'H') become the log's ('I', rollovers folded in) by moving bytes,
# not numbers: 'H' and 'I' are 2 and 4 bytes wherever CPython runs, in the machine's order. Read number
# by number (a list, then an array) they were half the view's fold of a fast transfer.
_LITTLE = sys.byteorder == "little"
_BYTES_FIT = array("H").itemsize == 2 and array("I").itemsize == 4
# The high bytes a run's blocks may have for the columns to be taken as they are, by the lowest allowed:
# 128 values (any two blocks then lie within half the number space), deleted by bytes.translate.
_WINDOWS = [bytes(range(low, min(low + 128, 256))) for low in range(256)]


def _high_bytes(raw: bytes) -> bytes:
    """The high byte of each 16-bit number in ``raw`` (an 'H' array's bytes), in order."""
    return raw[1::2] if _LITTLE else raw[0::2]


def _widened(raw: bytes, wraps: int) -> bytes:
    """An 'I' array's bytes holding ``wraps * 65536 + n`` for each 16-bit ``n`` in ``raw`` (an 'H'
    array's bytes): each number's two bytes, and the wrap count's two as the high half."""
    count = len(raw) // 2
    out = bytearray(4 * count)
    low, high = bytes((wraps & 0xFF,)) * count, bytes(((wraps >> 8) & 0xFF,)) * count
    if _LITTLE:
        out[0::4], out[1::4], out[2::4], out[3::4] = raw[0::2], raw[1::2], low, high
    else:
        out[0::4], out[1::4], out[2::4], out[3::4] = high, low, raw[0::2], raw[1::2]
    return bytes(out)


class PacketRow(NamedTuple):
    """One row of the packet table, made from the log when it is drawn."""

    t: float  # seconds since the session began
    outgoing: bool
    op: str
    block: str
    size: int
    peer: str
    note: str
    problem: bool  # drawn in red/yellow and kept by the "problems only" filter
    routine: bool  # ordinary DATA or ACK, hidden by the "no DATA/ACK" filter


def _words(options: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{clean(k)}={clean(v)}" for k, v in options)


def describe(packet: object, raw_len: int) -> tuple[str, str]:
    """(opcode, note text) for the packet column. Everything a packet quotes came from the network:
    this is the one place it is turned into text for the table, escaped."""
    if isinstance(packet, (Data, Ack)):
        return ("DATA" if isinstance(packet, Data) else "ACK"), ""
    if isinstance(packet, Request):
        text = f"{quote(packet.filename)} {clean(packet.mode)} {_words(packet.options)}"
        return packet.opcode.name, text.rstrip()
    if isinstance(packet, OAck):
        return "OACK", _words(packet.options)
    if isinstance(packet, Error):
        return "ERROR", f"{packet.code} {error_code_name(packet.code)}: {clean(packet.message)}"
    return "?", f"{raw_len} bytes undecodable"


class PacketLog:
    """Append-only columns of one session's packets, and the positions of the rows filters keep."""

    __slots__ = ("times", "kinds", "notes", "blocks", "sizes", "peers", "texts", "notable", "problems",
                 "peer_table", "_peer_index", "_last_peer", "_last_peer_i", "wraps", "_last_block",
                 "impaired", "forgotten", "gaps")

    def __init__(self) -> None:
        self.times = array("d")
        self.kinds = array("B")
        self.notes = array("B")
        self.blocks = array("I")
        self.sizes = array("H")
        self.peers = array("H")
        self.texts: dict[int, str] = {}
        self.notable = array("I")  # rows other than routine DATA/ACK: the "no DATA/ACK" filter
        self.problems = array("I")  # noted, erroneous or impaired rows: the "problems only" filter
        self.peer_table: list[str] = []
        self._peer_index: dict[Address, int] = {}
        self._last_peer: Address | None = None
        self._last_peer_i = 0
        self.wraps = 0  # block number rollovers seen
        self._last_block = 0
        self.impaired = 0  # rows that are --impair actions or capture gaps, not packets
        self.gaps = 0  # packets a capture lacks (marked by a GAP row each time), not in the count
        self.forgotten = 0  # packets dropped by forget() to bound memory

    def __len__(self) -> int:
        return len(self.times)

    @property
    def packets(self) -> int:
        """Packets on the wire recorded (impairment rows are not packets)."""
        return len(self.times) - self.impaired

    def nbytes(self) -> int:
        """Memory held by the columns and indexes (not counting the rare rows' text)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in
                   (self.times, self.kinds, self.notes, self.blocks, self.sizes, self.peers, self.notable,
                    self.problems))

    def _peer(self, peer: Address) -> int:
        if peer is self._last_peer or peer == self._last_peer:
            return self._last_peer_i
        index = self._peer_index.get(peer)
        if index is None:
            index = min(len(self.peer_table), 0xFFFF)
            if index < 0xFFFF:
                self._peer_index[peer] = index
                self.peer_table.append(fmt_addr(peer))
        self._last_peer, self._last_peer_i = peer, index
        return index

    def _block(self, number: int) -> int:
        # A jump back of more than half the space is a rollover, not a stale packet.
        if number < self._last_block - 0x8000:
            self.wraps += 1
        self._last_block = number
        return number + (self.wraps << 16)

    def add(self, event: PacketSent | PacketReceived) -> None:
        """One packet event: the per-packet cost of the whole live view."""
        packet = event.packet
        cls = type(packet)
        note = event.note
        pos = len(self.times)
        if type(packet) is Data or type(packet) is Ack:  # written out, not `cls`: mypy narrows by it
            block = self._block(packet.block)
            op = 3 if cls is Data else 4
            if note is _NONE and (op == 3 or block):  # ACK 0 answers an OACK: negotiation, not routine
                self._append(pos, event, op, block, 0)
                return
            text = ""
        else:
            block = 0
            name, text = describe(packet, len(event.raw))
            op = _OP_OF[name]
        detail = getattr(event, "detail", "")
        label = note.value
        if detail:
            label = f"{label}: {clean(detail)}" if label else clean(detail)
        if text:
            label = f"{label} {text}".strip() if label else text
        self._append(pos, event, op, block, _NOTE_INDEX[note])
        if label:
            self.texts[pos] = label
        self.notable.append(pos)
        if note in _PROBLEM_NOTES or op in (0, 5):
            self.problems.append(pos)

    def add_run(self, run: PacketRun) -> None:
        """A run of packets in columns, as :meth:`add` of each of its events leaves the log, at a
        fraction of the cost: the routine ones (no note, not an ACK 0) are the columns copied in C. A run
        holding any other goes packet by packet."""
        notes = run.tags.translate(_RUN_NOTE)
        if notes.count(0) != len(notes):
            self._add_one_by_one(run)
            return
        blocks = run.blocks
        # Rollovers: none within the run, nor before its first block, when all its blocks lie within
        # half the number space of each other and of the last block before it (see _block). Looked at by
        # the high bytes alone: all within 128 values that start at most 63 below the last block's, and
        # no lower than half the space below it (nor at 0 before a rollover: see below). Then the
        # columns are taken as they are, the wrap count added as the numbers' high half.
        last, wraps = self._last_block, self.wraps
        if _BYTES_FIT:
            raw = blocks.tobytes()
            lowest = max((last >> 8) - 63, -(-(last - 0x8000) // 256), 0 if wraps else 1)
            if not _high_bytes(raw).translate(None, _WINDOWS[lowest]):
                self._last_block = blocks[-1]
                self.blocks.frombytes(_widened(raw, wraps))
                self._add_columns(run, notes)
                return
        # Anything else (a transfer's first run, one across the wrap, a stray far block) is numbered one
        # by one. Block 0 only stands out as the ACK 0 that answers an OACK, before any rollover (see
        # add): block 0 after one is routine, and a run holding it (one in every 65,536 blocks of a long
        # transfer, a run of up to 1,024 packets) stays in columns.
        absolute = [self._block(b) for b in blocks]
        if 0 in absolute:
            self.wraps, self._last_block = wraps, last
            self._add_one_by_one(run)
            return
        self.blocks.fromlist(absolute)
        self._add_columns(run, notes)

    def _add_columns(self, run: PacketRun, notes: bytes) -> None:
        """The run's other columns, its blocks added."""
        self.times.extend(run.times)
        self.kinds.frombytes(run.tags.translate(_RUN_KIND))
        self.notes.frombytes(notes)
        self.sizes.extend(run.sizes)
        self.peers.extend(array("H", (self._peer(run.peer),)) * len(notes))

    def _add_one_by_one(self, run: PacketRun) -> None:
        for event in run:
            self.add(event)

    def _append(self, pos: int, event: PacketSent | PacketReceived, op: int, block: int, note: int) -> None:
        self.times.append(event.time)
        self.kinds.append(op | (_OUT if type(event) is PacketSent else 0))
        self.notes.append(note)
        self.blocks.append(block)
        self.sizes.append(min(len(event.raw), 0xFFFF))
        self.peers.append(self._peer(event.peer))

    def add_impaired(self, event: Impaired) -> None:
        """What --impair did to a datagram, as a row of its own where the packet would have been."""
        try:
            packet = decode(event.raw)
        except ProtocolError:
            packet = None
        name, _ = describe(packet, len(event.raw))
        block = self._block(packet.block) if isinstance(packet, (Data, Ack)) else 0
        label = f"impair: {clean(event.action)}"
        if event.delay and event.action != "dropped":
            label += f" {event.delay * 1000:.0f} ms"
        label += f" ({clean(event.why)})"
        pos = len(self.times)
        self.times.append(event.time)
        self.kinds.append(_OP_OF[name] | _IMPAIRED | (_OUT if event.direction == "out" else 0))
        self.notes.append(0)
        self.blocks.append(block)
        self.sizes.append(min(len(event.raw), 0xFFFF))
        self.peers.append(self._peer(event.peer))
        self.texts[pos] = label
        self.notable.append(pos)
        self.problems.append(pos)
        self.impaired += 1

    def add_gap(self, event: CaptureGap) -> None:
        """A row where a capture lacks packets the transfer shows were delivered: said, not skipped."""
        pos = len(self.times)
        self.times.append(event.time)
        self.kinds.append(_GAP | _IMPAIRED)
        self.notes.append(0)
        self.blocks.append(0)
        self.sizes.append(0)
        self.peers.append(0xFFFF)
        count = max(event.count, 0)
        self.texts[pos] = f"capture lacks {count:,} {clean(event.missing)}: {clean(event.detail)}"
        self.notable.append(pos)
        self.problems.append(pos)
        self.impaired += 1
        self.gaps += count

    def row(self, pos: int, started: float) -> PacketRow:
        kind = self.kinds[pos]
        op_i = kind & 7
        op = OPS[op_i]
        block = ""
        if op_i in (3, 4):
            number = self.blocks[pos]
            block = str(number & 0xFFFF) if number < 0x10000 else f"{number & 0xFFFF}↻{number >> 16}"
        note = _NOTES[self.notes[pos]]
        text = self.texts.get(pos, note.value)
        peer_i = self.peers[pos]
        peer = self.peer_table[peer_i] if peer_i < len(self.peer_table) else ("" if op_i == _GAP else "(many)")
        problem = bool(kind & _IMPAIRED) or note in _PROBLEM_NOTES or op_i in (0, 5)
        routine = (op_i in (3, 4) and note is _NONE and not kind & _IMPAIRED
                   and not (op_i == 4 and self.blocks[pos] == 0))
        return PacketRow(self.times[pos] - started, bool(kind & _OUT), op, block, self.sizes[pos], peer, text,
                         problem, routine)

    def find_block(self, number: int, start: int = 0) -> int | None:
        """Position of the first DATA or ACK numbered ``number`` at or after ``start``: the block as
        counted since the start (rollovers included) first, else the first with that 16-bit number."""
        blocks = self.blocks
        try:
            return blocks.index(number, start)
        except ValueError:
            pass
        if number <= 0xFFFF:
            for wraps in range(1, self.wraps + 1):
                try:
                    return blocks.index(number + (wraps << 16), start)
                except ValueError:
                    continue
        return None

    def search(self, query: str, start: int = 0) -> array:
        """Positions from ``start`` on whose row mentions ``query`` (case-insensitive): opcode, peer or
        note text. Routine rows are matched by (opcode, peer) pairs, not one by one in Python."""
        needle = query.lower()
        out = array("I")
        wanted_ops = {i for i, name in enumerate(OPS) if needle in name.lower()}
        wanted_peers = {i for i, peer in enumerate(self.peer_table) if needle in peer.lower()}
        texts = self.texts
        kinds, peers = self.kinds, self.peers
        for pos in range(start, len(kinds)):
            if ((kinds[pos] & 7) in wanted_ops or peers[pos] in wanted_peers
                    or (pos in texts and needle in texts[pos].lower())):
                out.append(pos)
        return out

    def forget(self) -> None:
        """Drop every packet (a finished session's, to bound memory); the count of what went stays."""
        self.forgotten += len(self.times) - self.impaired
        for name in ("times", "kinds", "notes", "blocks", "sizes", "peers", "notable", "problems"):
            setattr(self, name, array(getattr(self, name).typecode))
        self.texts = {}
        self.impaired = 0
