"""How a batch of events crosses the pipe from a transfer run apart (engine/apart.py) to the view.

Pickling the event objects themselves cost the transfer's process 17 us an event and 2,848 bytes for a
1,468-byte DATA block (measured): the dataclass goes through copyreg, the Note enum is rebuilt by
value, and the block's bytes travel twice, once in ``raw`` and again in the decoded packet's payload.
At a windowed transfer's 50,000 events a second that was most of a core, taken from the transfer.

Here the packet events whose packet is a DATA block or an ACK the datagram alone gives back cross in
runs, as :class:`~tftpdiag.protocol.events.PacketRun` columns (the transfer's machine records them so
from the start, protocol/runs.py, and they cross as they are; events made one by one, as the view's
spool packs them, are put in columns here): a byte per packet (sent or received,
DATA or ACK, its note), arrays of times, block numbers and lengths, and the datagrams joined in one
bytes object, each datagram once. Pickling that is C copying buffers. Every other event (OACKs, a
received packet with a detail, a block the fault injector changed, the rare ones) is pickled as it is,
in its place.

:func:`unpack` gives the runs back as PacketRun objects, not as an event each: the view's side folds
their columns (building an event a packet had cost it 1.75 us each, measured) and builds events only
when something iterates a run. :func:`expand` of :func:`unpack` of :func:`pack` equals the batch.

With a :class:`DatagramStore` (the transfer's process, apart), a run's datagrams do not cross at all:
they are written to a file the view made, and the run carries where they are (:class:`StoredDatagrams`),
read only when something iterates it (a trace saved, a rare packet, a netascii scan). The view reads
no datagram of an ordinary run: shipped, its copies (joined, pickled, through the pipe, unpickled, and
written again by the save spool) took 0.10 s of a 0.25 s windowed transfer in the view, on the CPU the
view shares with its transfer (measured: 0.372 s against 0.268 s without them, 11 rounds).
"""

from __future__ import annotations

import os
import pickle
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from tftpdiag.protocol.events import (
    RUN_ACK,
    RUN_NOTE_TAGS,
    RUN_RECEIVED,
    Event,
    PacketReceived,
    PacketRun,
    PacketSent,
)
from tftpdiag.protocol.packets import Ack, Data

__all__ = ["pack", "unpack", "expand", "DatagramStore", "StoredDatagrams"]


class StoredDatagrams(NamedTuple):
    """A run's datagrams, ``length`` bytes at ``offset`` in the file at ``path`` (a DatagramStore's)."""

    path: str
    offset: int
    length: int

    def read(self) -> bytes:
        """The bytes (ValueError when the file lacks them: a damaged spool, a store gone)."""
        fd = _READERS.get(self.path)
        try:
            if fd is None:
                fd = _READERS[self.path] = os.open(self.path, os.O_RDONLY)
            data = os.pread(fd, self.length, self.offset)
        except OSError as exc:
            raise ValueError(f"a packet run's datagrams cannot be read: {exc.strerror}") from None
        if len(data) != self.length:
            raise ValueError("a packet run's datagrams are not all there")
        return data


_IOV_MAX = 1024  # buffers a writev takes (Linux's IOV_MAX)
READY_CHUNK = 1 << 20  # bytes DatagramStore.make_ready writes at once
# Packets a batch's consecutive machine runs of one session are joined into, at most. A windowed transfer's
# machine closes a run at every window (17 packets); crossed one by one, each cost the packing its own
# list, three arrays pickled, and the view a PacketRun to fold. Bounded: a fold's rare case builds a
# whole run's events, and reads all its datagrams.
MERGED = 1024
_READERS: dict[str, int] = {}  # a store's path -> a descriptor this process reads it with (pread: any thread)


class DatagramStore:
    """Where a transfer run apart appends its runs' datagrams (the file is the view's: it reads them
    back when asked, as long as it runs). A write that fails (a full disk) turns the store off: the
    datagrams then cross the pipe, as without one.

    :meth:`make_ready` writes zeros ahead, before the transfer starts, for its datagrams to overwrite.
    Why: appending made the kernel find a page for every 4 KiB the transfer sent or received, on the
    transfer's CPU: a windowed 32 MiB download apart took 0.101 s appending, 0.093 s overwriting pages
    made ready, 0.089 s keeping no datagram (measured, 14 interleaved rounds)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._end = os.fstat(self._fd).st_size  # where the next run goes
        self._zeroed = self._end  # the file's bytes up to here are written (make_ready's zeros or datagrams)
        self._limit = self._end  # runs go below it while they fit, over make_ready's zeros; then at _past
        self._past = self._end
        self._readying = False  # make_ready may be between a look at _stop and its write
        self._stop = False

    def make_ready(self, budget: int) -> None:
        """Write zeros after the end, at most ``READY_CHUNK`` at a time, until ``budget`` bytes are
        written (no more), a write falls short (a full disk), or :meth:`started` is called (from another
        thread: this one runs in the time before the transfer starts, at the lowest priority, see
        engine/apart.py)."""
        if self._fd is None:
            return
        # A descriptor of its own: the store's may be closed meanwhile, and its number given to another file.
        try:
            fd, zeros = os.dup(self._fd), memoryview(bytes(READY_CHUNK))
        except OSError:
            return
        self._readying = True
        try:
            while not self._stop and (left := budget - (self._zeroed - self._end)) > 0:
                want = min(left, READY_CHUNK)
                try:
                    written = os.pwrite(fd, zeros[:want], self._zeroed)
                except OSError:
                    return  # (no room: the runs append, and a write of theirs that fails says so)
                self._zeroed += written  # (only what is there: the runs' writes past it append)
                if written < want:
                    return
        finally:
            self._readying = False
            os.close(fd)

    def started(self) -> None:
        """Stop :meth:`make_ready`: runs go over its zeros, then after the chunk it may still be
        writing (a run there could be overwritten by its zeros)."""
        self._stop = True
        self._limit = self._zeroed
        self._past = self._zeroed + (READY_CHUNK if self._readying else 0)

    def put(self, datagrams: list[bytes]) -> StoredDatagrams | None:
        """Append ``datagrams``; where they went, or None once the store cannot take them."""
        where = self.put_runs([datagrams])
        return where[0] if where is not None else None

    def put_runs(self, runs: list[list[bytes]]) -> list[StoredDatagrams] | None:
        """Append each run's datagrams, all in as few system calls as writev allows (a batch of a
        lock-step transfer holds dozens of runs of 32 packets); where each run went, or None once the
        store cannot take them."""
        if self._fd is None:
            return None
        if not self._stop:  # (the transfer's first run: make_ready's zeros end here)
            self.started()
        out = []
        buffers: list[bytes] = []
        start = end = self._end
        for run in runs:
            total = sum(map(len, run))
            if self._limit < self._past and end < self._past and end + total > self._limit:  # (see started)
                if buffers and not self._write(buffers, start):
                    return None
                buffers, start = [], self._past
                end = self._past
            out.append(StoredDatagrams(self.path, end, total))
            buffers += run
            end += total
        if buffers and not self._write(buffers, start):
            return None
        self._end = end
        return out

    def _write(self, buffers: list[bytes], offset: int) -> bool:
        """``buffers`` written from ``offset`` (False, and the store off, if that fails)."""
        fd = self._fd
        assert fd is not None
        try:
            for first in range(0, len(buffers), _IOV_MAX):  # writev takes at most IOV_MAX buffers
                chunk = buffers[first:first + _IOV_MAX]
                want, written = sum(map(len, chunk)), os.pwritev(fd, chunk, offset)
                if written < want:  # (a regular file takes it all at once; a signal may cut it short)
                    rest = memoryview(b"".join(chunk))[written:]
                    while rest:
                        rest = rest[os.pwrite(fd, rest, offset + want - len(rest)):]
                offset += want
        except OSError:
            self.close()
            return False
        return True

    def finish(self) -> None:
        """The zeros no run went over cut off (the view keeps the file while it runs), and closed."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, self._end)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        self._stop = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def pack(events: Iterable[Event], store: DatagramStore | None = None) -> bytes:
    items: list[Any] = []
    append = items.append
    session, local, peer = -1, None, None
    kinds = bytearray()
    times = array("d")
    blocks = array("H")
    raws: list[bytes] = []
    codes = RUN_NOTE_TAGS
    grown: list[Any] | None = None  # the machine's run last appended, which the next of the same session joins
    for event in events:
        # Each type's attributes read on lines of their own: a line that sees one type keeps the
        # interpreter's specialised attribute load.
        if type(event) is PacketReceived:
            if event.detail:
                append(event)
                session = -1
                continue
            packet, raw, tag = event.packet, event.raw, RUN_RECEIVED
            this, at, to = event.session, event.local, event.peer
            when, note = event.time, event.note
        elif type(event) is PacketSent:
            packet, raw, tag = event.packet, event.raw, 0
            this, at, to = event.session, event.local, event.peer
            when, note = event.time, event.note
        elif type(event) is PacketRun:  # already in columns: a machine's (protocol/runs.py), or what the
            # view's spool packs of what it was sent
            joined = event.joined
            if type(joined) is not bytes:  # where a store has them: as it is
                append([event.session, event.local, event.peer, bytes(event.tags), event.times, event.blocks,
                        event.sizes, joined])
            elif grown is not None and grown is items[-1] and len(grown[3]) < MERGED \
                    and event.session == grown[0] and event.local == grown[1] and event.peer == grown[2]:
                if type(grown[3]) is not bytearray:  # the first run's own columns are not ours to extend
                    grown[3:7] = [bytearray(grown[3]), array("d", grown[4]), array("H", grown[5]),
                                  array("H", grown[6])]
                grown[3] += event.tags
                grown[4] += event.times
                grown[5] += event.blocks
                grown[6] += event.sizes
                grown[7].append(joined)
            else:
                grown = [event.session, event.local, event.peer, event.tags, event.times, event.blocks,
                         event.sizes, [joined]]
                append(grown)
            session = -1
            continue
        else:
            append(event)
            session = -1
            continue
        # Only a packet the datagram alone gives back goes as its datagram: a DATA block whose number
        # and payload are the datagram's, an ACK whose block the datagram's bytes 2-3 name. Anything
        # else keeps its own packet.
        if type(packet) is Data:
            number = packet.block
            if len(raw) != len(packet.payload) + 4 or number != (raw[2] << 8 | raw[3]) \
                    or not raw.endswith(packet.payload):
                append(event)
                session = -1
                continue
        elif type(packet) is Ack and 4 <= len(raw) <= 0xFFFF and (raw[2] << 8 | raw[3]) == packet.block:
            number = packet.block
            tag |= RUN_ACK
        else:
            append(event)
            session = -1
            continue
        # (The engine hands the same address tuples to a session's events: identity first.)
        if this != session or (at is not local and at != local) or (to is not peer and to != peer):
            session, local, peer = this, at, to
            kinds, times, blocks, raws = bytearray(), array("d"), array("H"), []
            append([session, local, peer, kinds, times, blocks, raws])
        kinds.append(tag | codes[note])
        times.append(when)
        blocks.append(number)
        raws.append(raw)
    # A run's datagrams cross joined, with their lengths: pickling a list of 1,472-byte bytes objects
    # cost 0.75 us each (a memo entry and a buffer append per object), joining them 0.04 us. With a
    # store they stay here, the whole batch's in one write (a write a run had cost a lock-step transfer
    # 1,400 system calls), and the run crosses with where they are, as a plain tuple (unpack makes it a
    # StoredDatagrams again: pickling the named tuple ran Python code for each).
    runs = [item for item in items if type(item) is list]
    for item in runs:  # each run's last column: its datagrams as a list, or where a store has them
        if len(item) == 7:  # put in columns here, from events: the lengths still to add
            raws = item[6]
            item[3:] = [bytes(item[3]), item[4], item[5], array("H", map(len, raws)), raws]
        elif type(item[3]) is bytearray:  # machine's runs joined into one
            item[3] = bytes(item[3])
    loose = [item for item in runs if type(item[7]) is list]
    where = store.put_runs([item[7] for item in loose]) if store is not None and loose else None
    for i, item in enumerate(loose):
        item[7] = where[i] if where is not None else b"".join(item[7])
    items = [(*item[:7], tuple(item[7]) if type(item[7]) is StoredDatagrams else item[7])
             if type(item) is list else item for item in items]
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes | memoryview) -> list[Event]:
    """The batch :func:`pack` made, its runs as :class:`PacketRun` objects (raises ValueError, or what
    pickle raises, for bytes that are not such a batch)."""
    out: list[Event] = []
    for item in pickle.loads(blob):
        if type(item) is tuple:
            joined = item[7]
            out.append(PacketRun(item[0], item[1], item[2], item[3], item[4], item[5], item[6],
                                 StoredDatagrams(*joined) if type(joined) is tuple else joined))
        else:
            out.append(item)
    return out


def expand(events: Iterable[Event]) -> Iterator[Event]:
    """``events`` with each PacketRun replaced by its events: what the engine published."""
    for event in events:
        if type(event) is PacketRun:
            yield from event.events()
        else:
            yield event
