"""A client's ACK sent again, as a capture shows it and as the live client noted it: the same packets
are retransmits after a silence (its timeouts), never duplicates. Ground truth from
tests/support/simnet.py, whose client noted each packet as it sent it."""

from __future__ import annotations

import random

from tests.support.simnet import lost_once_then_resent
from tests.trace.test_trace_rebuild import client_view, summaries
from tftpdiag.protocol.events import Note, PacketSent
from tftpdiag.protocol.packets import Ack
from tftpdiag.trace.rebuild import rebuild


def test_a_clients_repeated_acks_read_as_the_live_client_noted_them() -> None:
    """The server waits longer than the client (tftpd-hpa ignores repeated ACKs): each lost DATA has
    the client send its ACK again several times, at growing intervals, before the server resends."""
    lose = {15, 40, 41, 90}
    data = random.Random(8).randbytes(512 * 120 + 5)
    res, _ = lost_once_then_resent(lose, data)
    assert res.received == data

    def ack_notes(events: list) -> list[tuple[int, Note]]:
        return [(e.packet.block, e.note) for e in events
                if isinstance(e, PacketSent) and e.session == 1 and isinstance(e.packet, Ack)]

    live = ack_notes(res.events)
    assert sum(1 for _, note in live if note is Note.RETRANSMIT) > len(lose)  # the case: several each
    rebuilt = rebuild(client_view(res))
    assert ack_notes(rebuilt) == live
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    assert (seen["retransmits"], seen["timeouts"], seen["duplicates"]) == \
        (was["retransmits"], was["timeouts"], was["duplicates"]) != (0, 0, 0)
