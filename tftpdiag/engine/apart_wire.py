"""How a batch of events crosses the pipe from a transfer run apart (engine/apart.py) to the view.

Pickling the event objects themselves cost the transfer's process 17 us an event and 2,848 bytes for a
1,468-byte DATA block (measured): the dataclass goes through copyreg, the Note enum is rebuilt by
value, and the block's bytes travel twice, once in ``raw`` and again in the decoded packet's payload.
At a windowed transfer's 50,000 events a second that was most of a core, taken from the transfer.

Here a packet event whose packet is a DATA block or an ACK travels as a plain tuple (pickle's C fast
path) with its datagram once; the view's side rebuilds the same event, the packet from the same bytes.
(An ACK pickled as its event object cost 29 us: in a lock-step transfer, one every block, it took the
transfer's process more time than the transfer's own work for that block.) Every other event (OACKs,
the rare ones) is pickled as it is. :func:`unpack` of :func:`pack` equals the batch.
"""

from __future__ import annotations

import pickle
from typing import Any

from tftpdiag.protocol.events import Event, Note, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Ack, Data, ack_packet

__all__ = ["pack", "unpack"]

# The first item of a packet event's tuple: whether its packet is DATA or an ACK, and (odd) received.
_SENT, _RECEIVED, _SENT_ACK, _RECEIVED_ACK = 0, 1, 2, 3
_NOTES = {note.value: note for note in Note}


def pack(events: list[Event]) -> bytes:
    items: list[Any] = []
    append = items.append
    for event in events:
        if isinstance(event, (PacketReceived, PacketSent)):
            packet, raw = event.packet, event.raw
            # Only a packet the datagram alone gives back goes as bytes alone: a DATA block whose payload
            # is the datagram's tail, an ACK whose block the datagram's bytes 2-3 name. Anything else (a
            # block the fault injector changed, say) keeps its own packet.
            received = isinstance(event, PacketReceived)
            if type(packet) is Data:
                if len(raw) != len(packet.payload) + 4 or not raw.endswith(packet.payload):
                    append(event)
                    continue
                tag = _RECEIVED if received else _SENT
            elif type(packet) is Ack and len(raw) >= 4 and ((raw[2] << 8) | raw[3]) == packet.block:
                tag = _RECEIVED_ACK if received else _SENT_ACK
            else:
                append(event)
                continue
            if isinstance(event, PacketReceived):
                append((tag, event.session, event.time, event.local, event.peer, raw, event.note.value,
                        event.detail))
            else:
                append((tag, event.session, event.time, event.local, event.peer, raw, event.note.value))
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
        tag, raw = item[0], item[5]
        number = (raw[2] << 8) | raw[3]
        packet: Data | Ack = Data(number, raw[4:]) if tag < _SENT_ACK else ack_packet(number)
        if tag & 1:  # received
            append(PacketReceived(item[1], item[2], item[3], item[4], raw, packet, notes[item[6]], item[7]))
        else:
            append(PacketSent(item[1], item[2], item[3], item[4], raw, packet, notes[item[6]]))
    return out
