"""One shared ACK packet (and its bytes) per block number, for the hot paths of the session machines and the trace
rebuild: Ack is immutable, so one instance per block number serves every ACK (most of an upload's
packets, and half of every lock-step transfer's).
"""

from __future__ import annotations

from tftpdiag.protocol.packets import Ack, encode_ack

__all__ = ["ack_packet", "ack_bytes"]

# Made on first use: building all 65536 at import would slow every start of the program.
_ACKS: list[Ack | None] = [None] * 0x10000


def ack_packet(block: int) -> Ack:
    packet = _ACKS[block]
    if packet is None:
        packet = _ACKS[block] = Ack(block)
    return packet


_ACK_BYTES: list[bytes | None] = [None] * 0x10000


def ack_bytes(block: int) -> bytes:
    """The four bytes of ACK ``block`` (0..65535)."""
    raw = _ACK_BYTES[block]
    if raw is None:
        raw = _ACK_BYTES[block] = encode_ack(block)
    return raw
