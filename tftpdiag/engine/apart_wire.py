"""How a batch of events crosses the pipe from a transfer run apart (engine/apart.py) to the view.

Pickling the event objects themselves cost the transfer's process 17 us an event and 2,848 bytes for a
1,468-byte DATA block (measured): the dataclass goes through copyreg, the Note enum is rebuilt by
value, and the block's bytes travel twice, once in ``raw`` and again in the decoded packet's payload.
At a windowed transfer's 50,000 events a second that was most of a core, taken from the transfer.

Here the packet events whose packet is a DATA block or an ACK the datagram alone gives back cross in
runs: one tuple per run of one session's packets between the same two addresses, holding a byte per
packet (sent or received, DATA or ACK, its note), their times, and their datagrams joined in one bytes
object with their lengths, each datagram once.
Pickling that is C copying lists (0.8 us a DATA event, measured; 2.8 us as a tuple per event, which was
half a windowed transfer's time in its process). Every other event (OACKs, a received packet with a
detail, a block the fault injector changed, the rare ones) is pickled as it is, in its place.
:func:`unpack` of :func:`pack` equals the batch.
"""

from __future__ import annotations

import pickle
from typing import Any

from tftpdiag.protocol.events import Event, Note, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Ack, Data, ack_packet

__all__ = ["pack", "unpack"]

# A packet's byte in a run: bit 0 received, bit 1 an ACK (else DATA), the bits above its note's index.
_RECEIVED, _ACK = 1, 2
_NOTE_LIST = list(Note)
_NOTE_CODE = {note: index << 2 for index, note in enumerate(_NOTE_LIST)}


def pack(events: list[Event]) -> bytes:
    items: list[Any] = []
    append = items.append
    session, local, peer = -1, None, None
    kinds = bytearray()
    times: list[float] = []
    raws: list[bytes] = []
    codes = _NOTE_CODE
    for event in events:
        # Each type's attributes read on lines of their own: a line that sees one type keeps the
        # interpreter's specialised attribute load.
        if type(event) is PacketReceived:
            if event.detail:
                append(event)
                session = -1
                continue
            packet, raw, tag = event.packet, event.raw, _RECEIVED
            this, at, to = event.session, event.local, event.peer
            when, note = event.time, event.note
        elif type(event) is PacketSent:
            packet, raw, tag = event.packet, event.raw, 0
            this, at, to = event.session, event.local, event.peer
            when, note = event.time, event.note
        else:
            append(event)
            session = -1
            continue
        # Only a packet the datagram alone gives back goes as its datagram: a DATA block whose number
        # and payload are the datagram's, an ACK whose block the datagram's bytes 2-3 name. Anything
        # else keeps its own packet.
        if type(packet) is Data:
            if len(raw) != len(packet.payload) + 4 or packet.block != (raw[2] << 8 | raw[3]) \
                    or not raw.endswith(packet.payload):
                append(event)
                session = -1
                continue
        elif type(packet) is Ack and len(raw) >= 4 and (raw[2] << 8 | raw[3]) == packet.block:
            tag |= _ACK
        else:
            append(event)
            session = -1
            continue
        # (The engine hands the same address tuples to a session's events: identity first.)
        if this != session or (at is not local and at != local) or (to is not peer and to != peer):
            session, local, peer = this, at, to
            kinds, times, raws = bytearray(), [], []
            append((session, local, peer, kinds, times, raws))
        kinds.append(tag | codes[note])
        times.append(when)
        raws.append(raw)
    # A run's datagrams cross joined, with their lengths: pickling a list of 1,472-byte bytes objects
    # cost 0.75 us each (a memo entry and a buffer append per object), joining them 0.04 us.
    for i, item in enumerate(items):
        if type(item) is tuple:
            raws = item[5]
            items[i] = item[:5] + (list(map(len, raws)), b"".join(raws))
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes | memoryview) -> list[Event]:
    out: list[Event] = []
    append = out.append
    notes = _NOTE_LIST
    for item in pickle.loads(blob):
        if type(item) is not tuple:
            append(item)
            continue
        session, local, peer, kinds, times, lengths, joined = item
        end = 0
        for code, when, length in zip(kinds, times, lengths, strict=True):
            start, end = end, end + length
            raw = joined[start:end]
            number = raw[2] << 8 | raw[3]
            if code & _ACK:
                packet: Data | Ack = ack_packet(number)
            else:
                packet = Data(number, raw[4:])
            if code & _RECEIVED:
                append(PacketReceived(session, when, local, peer, raw, packet, notes[code >> 2], ""))
            else:
                append(PacketSent(session, when, local, peer, raw, packet, notes[code >> 2]))
    return out
