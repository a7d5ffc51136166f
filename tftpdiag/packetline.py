"""``-v``: one line per packet, as tcpdump prints them, for plain output.

    14:10:49.123456 #1 127.0.0.1:40000 > 127.0.0.1:69: RRQ 'boot.img' octet blksize=1468 tsize=0, 44 bytes
    14:10:49.124001 #1 127.0.0.1:51234 > 127.0.0.1:40000: DATA 1, 1472 bytes
    14:10:49.124090 #1 127.0.0.1:40000 > 127.0.0.1:51234: ACK 1, 4 bytes, retransmit

The local wall-clock time with microseconds, the session, who sent it to whom, the packet as
:func:`tftpdiag.packetlog.describe` puts it (names and messages from the peer escaped), its size and
what was special about it. What ``--impair`` did to a datagram is a line of its own.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from tftpdiag.fmt import address, clean
from tftpdiag.packetlog import describe
from tftpdiag.protocol.events import Event, Impaired, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Ack, Data, ProtocolError, decode

__all__ = ["PACKET_EVENTS", "packet_line", "packet_lines"]

PACKET_EVENTS = (PacketSent, PacketReceived, Impaired)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"


def _digest(packet: object, size: int) -> str:
    if packet is None:
        return "undecodable"
    name, text = describe(packet, size)
    if isinstance(packet, (Data, Ack)):
        text = str(packet.block)
    return f"{name} {text}" if text else name


def packet_line(event: PacketSent | PacketReceived | Impaired) -> str:
    """The line for one packet event (or one thing --impair did)."""
    head = f"{_clock(event.time)} #{event.session}"
    if isinstance(event, Impaired):
        try:
            packet: object = decode(event.raw)
        except ProtocolError:
            packet = None
        held = f" {event.delay * 1000:.0f} ms" if event.delay and event.action != "dropped" else ""
        return (f"{head} impair {clean(event.direction)}: {clean(event.action)}{held} "
                f"{_digest(packet, len(event.raw))} ({clean(event.why)})")
    src, dst = (event.local, event.peer) if isinstance(event, PacketSent) else (event.peer, event.local)
    text = f"{head} {address(src)} > {address(dst)}: {_digest(event.packet, len(event.raw))}, {len(event.raw)} bytes"
    if event.note.value:
        text += f", {event.note.value}"
    detail = getattr(event, "detail", "")
    if detail:
        text += f": {clean(detail)}"
    return text


def packet_lines(events: Iterable[Event]) -> Iterator[str]:
    """The lines of the packet events among ``events``, in their order."""
    for event in events:
        if isinstance(event, PACKET_EVENTS):
            yield packet_line(event)
