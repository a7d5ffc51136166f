"""A machine's DATA and ACK kept in columns as it sends and receives them, when its caller asks
(:meth:`Session.record_runs`): the events come out as :class:`PacketRun` objects, not one event a
packet, and ``expand`` of them gives back exactly the events the machine would otherwise have made.

Why: a transfer run apart (engine/apart.py) sends its events to the view in columns. Made as an
event each and then taken apart again by the pipe's packer (4.9-5.9 us an event there, measured), the
packets cost the transfer's own process CPU it needs for the transfer. Kept in columns from the start,
a packet costs four appends: a windowed download apart (benchmarks/apart_cost.py, 6 interleaved
rounds) took 0.301 s instead of 0.345 s, 1.22x its time in one process instead of 1.28x; lock-step
1.434 s instead of 1.502 s. In one process it bought nothing (the headless probe measured 1.603 s
against 1.535 s, 6 rounds): there the events are folded where they are made, so only a transfer run
apart asks for it.

Only a packet its datagram gives back goes in a run (PacketRun's rule): a DATA block the machine encoded
or took whole from the datagram, an ACK whose block is the datagram's bytes 2-3, between the session's
own two addresses, none received with a detail. Every other event goes in the list as it is, in its
place, and the next packet starts a new run: the order of events is that of the work.
"""

from __future__ import annotations

from array import array
from typing import final

from tftpdiag.protocol.events import Address, Event, PacketRun

__all__ = ["OpenRun", "HOLD", "close_runs"]

# Packets a run still growing at the end of the list may hold before the machine's caller gets it
# (Session.settled_events): a run closed at every turn would cost an object per lock-step block.
HOLD = 32


@final
class OpenRun:
    """A run being recorded, in a machine's event list: its columns grow until another event follows
    it or the caller takes it, which closes it into a :class:`PacketRun`."""

    __slots__ = ("session", "local", "peer", "tags", "times", "blocks", "raws")

    def __init__(self, session: int, local: Address, peer: Address) -> None:
        self.session, self.local, self.peer = session, local, peer
        self.tags = bytearray()
        self.times = array("d")
        self.blocks = array("H")
        self.raws: list[bytes] = []

    def close(self) -> PacketRun:
        raws = self.raws
        return PacketRun(self.session, self.local, self.peer, bytes(self.tags), self.times, self.blocks,
                         array("H", map(len, raws)), b"".join(raws))


def close_runs(events: list[Event | OpenRun]) -> list[Event]:
    """``events`` with every OpenRun closed into its PacketRun."""
    return [event.close() if type(event) is OpenRun else event for event in events]
