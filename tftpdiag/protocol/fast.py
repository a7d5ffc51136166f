"""Fast constructors for the objects made for every datagram: DATA and ACK packets and the packet
events. The session machines' hot paths and the trace rebuild use them.

A 1 GiB transfer is about 1.5 million events; how fast they are made bounds the transfer rate and how
fast a capture opens. Nothing here changes what the objects are: they are the ordinary frozen classes
of :mod:`tftpdiag.protocol.events` and :mod:`tftpdiag.protocol.packets`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from tftpdiag.protocol.events import Address, Note, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Ack, Data, Packet

__all__ = ["ack_packet", "make_data", "make_sent", "make_received"]

# Ack is immutable, so one instance per block number serves every ACK (most of an upload's packets).
# Made on first use: building all 65536 at import would slow every start of the program.
_ACKS: list[Ack | None] = [None] * 0x10000


def ack_packet(block: int) -> Ack:
    packet = _ACKS[block]
    if packet is None:
        packet = _ACKS[block] = Ack(block)
    return packet


# A frozen dataclass's __init__ goes through object.__setattr__ once per field; the three classes made
# for every datagram are filled through their slot descriptors instead, which takes half the time.
# Only if their fields are exactly the ones expected: otherwise the ordinary constructor is used.
def _plain_slots(cls: type, names: tuple[str, ...]) -> bool:
    return tuple(f.name for f in fields(cls)) == names and all(
        type(vars(cls).get(n)).__name__ == "member_descriptor" for n in names
    )


def _fast_data() -> Callable[[int, bytes], Data]:
    if not _plain_slots(Data, ("block", "payload")):
        return Data
    new, set_block, set_payload = object.__new__, vars(Data)["block"].__set__, vars(Data)["payload"].__set__

    def make(block: int, payload: bytes) -> Data:
        packet = new(Data)
        set_block(packet, block)
        set_payload(packet, payload)
        return packet

    return make


_SENT_FIELDS = ("session", "time", "local", "peer", "raw", "packet", "note")


def _fast_sent() -> Callable[[int, float, Address, Address, bytes, Packet, Note], PacketSent]:
    if not _plain_slots(PacketSent, _SENT_FIELDS):
        return PacketSent
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6 = (vars(PacketSent)[n].__set__ for n in _SENT_FIELDS)

    def make(session: int, time: float, local: Address, peer: Address, raw: bytes, packet: Packet,
             note: Note) -> PacketSent:
        e = new(PacketSent)
        s0(e, session), s1(e, time), s2(e, local), s3(e, peer), s4(e, raw), s5(e, packet), s6(e, note)
        return e

    return make


def _fast_received() -> Callable[[int, float, Address, Address, bytes, Packet | None, Note, str], PacketReceived]:
    names = (*_SENT_FIELDS, "detail")
    if not _plain_slots(PacketReceived, names):
        return PacketReceived
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7 = (vars(PacketReceived)[n].__set__ for n in names)

    def make(session: int, time: float, local: Address, peer: Address, raw: bytes, packet: Packet | None,
             note: Note, detail: str) -> PacketReceived:
        e = new(PacketReceived)
        s0(e, session), s1(e, time), s2(e, local), s3(e, peer), s4(e, raw), s5(e, packet), s6(e, note), s7(e, detail)
        return e

    return make


make_data = _fast_data()
make_sent = _fast_sent()
make_received = _fast_received()
