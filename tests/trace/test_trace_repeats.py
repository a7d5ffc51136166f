"""A client's ACK sent again, as a capture shows it and as the live client noted it: the same packets
are retransmits after a silence (its timeouts), never duplicates. Ground truth from
tests/support/simnet.py, whose client noted each packet as it sent it."""

from __future__ import annotations

import random

from tests.support.simnet import Impairment, drop_once, impatient_client, lost_once_then_resent, run_transfer
from tests.trace.test_trace_rebuild import client_view, summaries, wire_view
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Address, Completed, Note, PacketReceived, PacketSent, Retransmit
from tftpdiag.protocol.packets import Ack, Data, decode
from tftpdiag.protocol.timer import Timing
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


def received_ack_notes(events: list) -> list[tuple[int, Note]]:
    """The server's ACKs as the client's events note them, the ordinary ones left out."""
    return [(e.packet.block, e.note) for e in events if isinstance(e, PacketReceived) and e.session == 1
            and isinstance(e.packet, Ack) and e.note is not Note.NONE]


def test_an_uploads_ack_sent_again_after_the_clients_resend_is_the_servers_re_ack_not_a_duplicate() -> None:
    """The same lost ACKs, from the server's side: the capture sees each ACK twice, but the client had
    only the second, the server's answer to the DATA sent again (as the live server notes it, a re-ack):
    no duplicate, and the counts are the live client's. The finding still tells the server's resends."""
    lose = {10, 30}
    drop, dropped = drop_once(Ack, lose)
    res = impatient_client("write", random.Random(3).randbytes(512 * 50 + 3), drop)
    assert dropped == lose
    rebuilt = rebuild(wire_view(res))
    assert received_ack_notes(rebuilt) == [(10, Note.REACK), (30, Note.REACK)]
    live_server = [(e.packet.block, e.note) for e in res.events
                   if isinstance(e, PacketSent) and e.session != 1 and e.note is not Note.NONE]
    assert live_server == [(10, Note.REACK), (30, Note.REACK)]  # what the server itself noted
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    counts = ("retransmits", "timeouts", "duplicates")
    assert [seen[k] for k in counts] == [was[k] for k in counts] == [2, 2, 0]
    (loss,) = [f for f in analyze(rebuilt) if f.id == "packet-loss"]
    assert "2 losses" in loss.summary and "2 packets resent by the server" in loss.summary, loss.summary


def test_an_uploads_ack_sent_again_on_the_servers_timer_is_its_retransmit() -> None:
    """The download's mirror, on the server's side: DATA 10 goes by the capture and never reaches the
    server, whose timer (shorter than the client's) sends ACK 9 again, four times, before the client
    resends. Each is the server's retransmit, as its DATA again in a download is, not a duplicate; the
    timeouts are still the client's alone."""
    drop, dropped = drop_once(Data, {10})
    res = run_transfer("write", random.Random(3).randbytes(512 * 50 + 3), impairment=Impairment(drop=drop),
                       client_timing=Timing(initial_timeout=1.0, min_timeout=1.0, adaptive=False, retries=10),
                       server_timing=Timing(initial_timeout=0.05, min_timeout=0.05, retries=10))
    assert dropped == {10}
    rebuilt = rebuild(wire_view(res))
    assert received_ack_notes(rebuilt) == [(9, Note.RETRANSMIT)] * 4
    server_resends = [r for r in rebuilt if isinstance(r, Retransmit) and r.first_block == 9]
    assert [(r.reason, r.attempt) for r in server_resends] == [("timeout", k) for k in range(1, 5)]
    (seen,) = summaries(rebuilt)
    (was,) = summaries(e for e in res.events if e.session == 1)
    assert (seen["retransmits"], seen["timeouts"], seen["duplicates"]) == (was["retransmits"] + 4, was["timeouts"], 0)
    # The count is the capture's, both sides' resends: not the client's alone (one of the five).
    (loss,) = [f for f in analyze(rebuilt) if f.id == "packet-loss"]
    assert "5 packets resent in the capture in" in "\n".join(loss.evidence), loss.evidence


def test_an_uploads_final_ack_sent_again_after_the_end_is_the_servers_re_ack() -> None:
    """The final ACK goes by the capture (which ends the upload there) and never reaches the client: the
    server's answer to the final DATA sent again is a re-ack as well, not a duplicate."""
    drop, dropped = drop_once(Ack, {51})
    res = impatient_client("write", random.Random(3).randbytes(512 * 50 + 3), drop)
    assert dropped == {51}
    rebuilt = rebuild(wire_view(res))
    assert received_ack_notes(rebuilt) == [(51, Note.REACK)]
    (seen,) = summaries(rebuilt)
    assert seen["ok"] and seen["duplicates"] == 0
