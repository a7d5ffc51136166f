"""How a batch of events crosses the pipe from a transfer run apart (engine/apart.py) to the view.

Pickling the event objects themselves cost the transfer's process 17 us an event and 2,848 bytes for a
1,468-byte DATA block (measured): the dataclass goes through copyreg, the Note enum is rebuilt by
value, and the block's bytes travel twice, once in ``raw`` and again in the decoded packet's payload.
At a windowed transfer's 50,000 events a second that was most of a core, taken from the transfer.

Here a packet event whose packet is a DATA block travels as a plain tuple (pickle's C fast path) with
its datagram once; the view's side rebuilds the same event, the block from the same bytes. Every other
event (ACKs, OACKs, the rare ones) is pickled as it is. :func:`unpack` of :func:`pack` equals the batch.
"""

from __future__ import annotations

import pickle
from typing import Any

from tftpdiag.protocol.events import Event, Note, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Data

__all__ = ["pack", "unpack"]

_SENT, _RECEIVED = 0, 1
_NOTES = {note.value: note for note in Note}


def pack(events: list[Event]) -> bytes:
    items: list[Any] = []
    append = items.append
    for event in events:
        if isinstance(event, (PacketReceived, PacketSent)):
            packet, raw = event.packet, event.raw
            # Only a DATA block whose payload is the datagram's tail is sent as bytes alone: anything
            # else (a block the fault injector changed, say) keeps its own packet.
            if type(packet) is Data and len(raw) == len(packet.payload) + 4 and raw.endswith(packet.payload):
                if isinstance(event, PacketReceived):
                    append((_RECEIVED, event.session, event.time, event.local, event.peer, raw,
                            event.note.value, event.detail))
                else:
                    append((_SENT, event.session, event.time, event.local, event.peer, raw, event.note.value))
                continue
        append(event)
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes | memoryview) -> list[Event]:
    out: list[Event] = []
    append = out.append
    notes = _NOTES
    for item in pickle.loads(blob):
        if type(item) is not tuple:
            append(item)
            continue
        raw = item[5]
        packet = Data((raw[2] << 8) | raw[3], raw[4:])
        if item[0] == _RECEIVED:
            append(PacketReceived(item[1], item[2], item[3], item[4], raw, packet, notes[item[6]], item[7]))
        else:
            append(PacketSent(item[1], item[2], item[3], item[4], raw, packet, notes[item[6]]))
    return out
