"""The boot file's first bytes (its header tells the firmware it was built for) are kept from the probe's
packets, whichever form they arrive in."""

from __future__ import annotations

import os

from tftpdiag.engine.apart_wire import pack, unpack
from tftpdiag.engine.bus import EventBus
from tftpdiag.protocol.events import Event, PacketReceived, PacketSent
from tftpdiag.protocol.packets import Ack, Data, encode
from tftpdiag.pxe.run import HEAD_BYTES, HeadGrabber

LOCAL, PEER = ("127.0.0.1", 40000), ("127.0.0.1", 69)


def _download(blocks: int) -> tuple[list[Event], bytes]:
    first = os.urandom(512)
    events: list[Event] = []
    for n in range(1, blocks + 1):
        data = Data(n, first if n == 1 else os.urandom(512))
        events.append(PacketReceived(1, float(n), LOCAL, PEER, encode(data), data))
        events.append(PacketSent(1, n + 0.5, LOCAL, PEER, encode(Ack(n)), Ack(n)))
    return events, first


def test_the_head_is_kept_from_runs_in_columns_as_a_view_s_transfer_sends_them() -> None:
    """In the view the probe runs apart and its packets arrive in PacketRuns, many batches before the
    grabber's window of the newest few would let it see block 1; the reader lends it its gaps."""
    events, first = _download(600)
    bus = EventBus()
    grab = HeadGrabber(bus)
    for i in range(0, len(events), 64):  # as the reader publishes each batch, then lends its gap
        bus.publish(unpack(pack(events[i:i + 64])))
        bus.idle()
    grab.close()
    assert grab.head == first[:HEAD_BYTES] and len(grab.head) == min(HEAD_BYTES, 512)


def test_the_head_is_kept_from_single_events() -> None:
    events, first = _download(3)
    bus = EventBus()
    grab = HeadGrabber(bus)
    bus.publish(events)
    bus.idle()
    grab.close()
    assert grab.head == first[:HEAD_BYTES]
