"""A client's ACK sent again, as a capture shows it and as the live client noted it: the same packets
are retransmits after a silence (its timeouts), never duplicates. Ground truth from
tests/support/simnet.py, whose client noted each packet as it sent it."""

from __future__ import annotations

import random

from tests.support.simnet import drop_once, impatient_client, lost_once_then_resent
from tests.trace.test_trace_rebuild import client_view, summaries, wire_view
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Address, Completed, Note, PacketSent, Retransmit
from tftpdiag.protocol.packets import Ack, Data, decode
from tftpdiag.trace.rebuild import rebuild


def ack_notes(events: list) -> list[tuple[int, Note]]:
    return [(e.packet.block, e.note) for e in events
            if isinstance(e, PacketSent) and e.session == 1 and isinstance(e.packet, Ack)]


def test_a_clients_repeated_acks_read_as_the_live_client_noted_them() -> None:
    """The server waits longer than the client (tftpd-hpa ignores repeated ACKs): each lost DATA has
    the client send its ACK again several times, at growing intervals, before the server resends."""
    lose = {15, 40, 41, 90}
    data = random.Random(8).randbytes(512 * 120 + 5)
    res, _ = lost_once_then_resent(lose, data)
    assert res.received == data

    live = ack_notes(res.events)
    assert sum(1 for _, note in live if note is Note.RETRANSMIT) > len(lose)  # the case: several each
    rebuilt = rebuild(client_view(res))
    assert ack_notes(rebuilt) == live
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    assert (seen["retransmits"], seen["timeouts"], seen["duplicates"]) == \
        (was["retransmits"], was["timeouts"], was["duplicates"]) != (0, 0, 0)


def test_data_lost_past_the_capture_point_leaves_the_repeated_acks_retransmits() -> None:
    """A capture on the path sees each DATA that then never reaches the client (as --impair drops it
    after the wire): the client's ACK again after the silence is still its timer's retransmit, not a
    re-ack of DATA it never had, and the server's resend in lock-step is its timeout, not a window gap."""
    lose = {15, 40, 41, 90}
    res, dropped = lost_once_then_resent(lose, random.Random(9).randbytes(512 * 120 + 5))
    assert dropped == lose
    rebuilt = rebuild(wire_view(res))
    live = ack_notes(res.events)
    assert ack_notes(rebuilt) == live
    assert sum(1 for _, note in live if note is Note.RETRANSMIT) > len(lose)  # the case: several each
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    assert seen["timeouts"] == was["timeouts"]
    assert seen["retransmits"] == was["retransmits"] + len(lose)  # with the server's resends it saw
    assert {r.reason for r in rebuilt if isinstance(r, Retransmit)} == {"timeout"}
    (loss,) = [f for f in analyze(rebuilt) if f.id == "packet-loss"]
    assert f"{len(lose)} losses" in loss.summary and "window gap" not in loss.summary


def test_the_final_block_lost_past_the_capture_point_completes_with_its_resend() -> None:
    """The final DATA is seen and then lost on the way: the client's ACK again after the silence shows
    it never had it, so the transfer completes with the ACK of the resent block, as the live client
    did, and the counts at its end are those of the packets before it."""
    data = random.Random(10).randbytes(512 * 30 + 5)
    res, dropped = lost_once_then_resent({31}, data)
    assert dropped == {31} and res.received == data
    rebuilt = rebuild(wire_view(res))
    assert ack_notes(rebuilt) == ack_notes(res.events)
    (live_end,) = [e for e in res.events if isinstance(e, Completed) and e.session == 1]
    (end,) = [e for e in rebuilt if isinstance(e, Completed)]
    assert end.time == live_end.time
    resent = [r for r in rebuilt if isinstance(r, Retransmit) and r.time <= end.time]
    assert end.stats.retransmits == sum(r.count for r in resent) > 1
    assert end.stats.timeouts == live_end.stats.timeouts


def test_a_resend_lost_again_past_the_capture_point_is_another_loss() -> None:
    """DATA 20 is lost twice on the way to the client (its first resend too), DATA 60 once: the capture
    sees each of the three go by, then the client's ACK again after a silence, so it counts three
    losses, one per datagram gone missing, not one per block."""
    times = {20: 2, 60: 1}

    def drop(raw: bytes, src: Address, dst: Address) -> bool:
        packet = decode(raw)
        if isinstance(packet, Data) and times.get(packet.block, 0) > 0:
            times[packet.block] -= 1
            return True
        return False

    data = random.Random(11).randbytes(512 * 90 + 5)
    res = impatient_client("read", data, drop)
    assert res.received == data and not any(times.values())
    rebuilt = rebuild(wire_view(res))
    (loss,) = [f for f in analyze(rebuilt) if f.id == "packet-loss"]
    assert "3 losses" in loss.summary and "3 packets resent by the server" in loss.summary


def test_an_upload_whose_ack_is_lost_past_the_capture_point_reads_as_the_clients_timeouts() -> None:
    """The mirror of a lost DATA: the server's ACK goes by the capture and never reaches the client,
    which sends its DATA again on its timer. In lock-step that resend is the client's timeout, as the
    live client counted it, not a window gap."""
    lose = {10, 30}
    drop, dropped = drop_once(Ack, lose)
    res = impatient_client("write", random.Random(3).randbytes(512 * 50 + 3), drop)
    assert dropped == lose
    rebuilt = rebuild(wire_view(res))
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    assert (seen["retransmits"], seen["timeouts"]) == (was["retransmits"], was["timeouts"]) == (2, 2)
    assert {r.reason for r in rebuilt if isinstance(r, Retransmit)} == {"timeout"}
