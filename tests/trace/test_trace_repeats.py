"""A client's ACK sent again, as a capture shows it and as the live client noted it: the same packets
are retransmits after a silence (its timeouts), never duplicates. Ground truth from
tests/support/simnet.py, whose client noted each packet as it sent it."""

from __future__ import annotations

import random

import pytest

from tests.support.simnet import Impairment, drop_once, impatient_client, lost_once_then_resent, run_transfer
from tests.trace.test_trace_rebuild import client_view, dgram, summaries, wire_view
from tftpdiag.findings import Analyzer, analyze
from tftpdiag.protocol.datagram import Datagram
from tftpdiag.protocol.events import Address, Completed, Note, PacketReceived, PacketSent, Retransmit, TimedOut
from tftpdiag.protocol.packets import Ack, Data, OAck, Opcode, Request, decode, encode
from tftpdiag.protocol.timer import Timing
from tftpdiag.report import session_summary
from tftpdiag.sessions import SessionTable
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


C: Address = ("10.0.0.1", 40000)
S: Address = ("10.0.0.2", 69)
T: Address = ("10.0.0.2", 50000)


def _lockstep_download(lost: set[int], resent: set[int], blocks: int = 100, timeout: str | None = "6",
                       wait: float = 6.0, acks_lost: frozenset[int] = frozenset()) -> list[Datagram]:
    """A capture at the client of a lock-step download (blksize 1468, and the timeout option granted
    unless None): the server's first copy of each of ``lost`` never reached the tap, so its resend,
    ``wait`` later, is the first the capture sees; each of ``resent`` the capture sees twice (the
    client's ACK was lost after the tap); each ACK of ``acks_lost`` comes ``wait`` late (the capture at
    the server, the client's first copy lost before it)."""
    options: tuple[tuple[str, str], ...] = (("blksize", "1468"),)
    if timeout is not None:
        options += (("timeout", timeout),)
    wire = [dgram(0.0, C, S, encode(Request(Opcode.RRQ, "fw.bin", "octet", options))),
            dgram(0.001, T, C, encode(OAck(options))), dgram(0.002, C, T, encode(Ack(0)))]
    t = 0.003
    for k in range(1, blocks + 1):
        data = encode(Data(k, bytes(1468 if k < blocks else 7)))
        if k in lost:
            t += wait  # the original went by before the tap
        wire.append(dgram(t, T, C, data))
        if k in resent:
            t += wait
            wire.append(dgram(t, T, C, data))
        if k in acks_lost:
            t += wait  # the client's first ACK went by before the tap: its timer sends it again
        wire.append(dgram(t + 0.0002, C, T, encode(Ack(k))))
        t += 0.001
    return wire


def test_data_lost_before_the_capture_point_is_the_servers_resend_after_a_timeout() -> None:
    """The tester's case: serve with loss, the capture at the client. A block that comes only a timeout
    after the ACK that asked for it is the server's resend, counted as one seen twice is."""
    rebuilt = rebuild(_lockstep_download(lost={20, 50, 80}, resent={35}))
    resends = [(r.reason, r.first_block) for r in rebuilt if isinstance(r, Retransmit)]
    assert resends == [("timeout", 20), ("timeout", 35), ("timeout", 50), ("timeout", 80)]
    notes = [(e.packet.block, e.note) for e in rebuilt if isinstance(e, PacketReceived)
             and isinstance(e.packet, Data) and e.note is not Note.NONE]
    assert notes == [(20, Note.RETRANSMIT), (35, Note.RETRANSMIT), (50, Note.RETRANSMIT), (80, Note.RETRANSMIT)]
    (seen,) = summaries(rebuilt)
    assert seen["ok"] and seen["bytes"] == 99 * 1468 + 7
    assert (seen["retransmits"], seen["timeouts"], seen["duplicates"]) == (4, 0, 0)
    # The first copies the capture saw moved the transfer, for the findings too.
    analyzer = Analyzer()
    analyzer.feed(rebuilt)
    state = analyzer.state(1)
    assert state is not None and (state.data_rx, state.pos, state.dup_data) == (100, 100, 4)
    findings = analyze(rebuilt)
    (loss,) = [f for f in findings if f.id == "packet-loss"]
    assert "4 losses" in loss.summary and "(0 timeouts, 4 packets resent by the server)" in loss.summary, \
        loss.summary
    assert "client-stopped-acking" not in {f.id for f in findings}


def test_an_ack_lost_before_the_capture_point_is_the_clients_timeout() -> None:
    rebuilt = rebuild(_lockstep_download(lost=set(), resent=set(), acks_lost=frozenset({60})))
    (timeout,) = [e for e in rebuilt if isinstance(e, TimedOut)]
    assert timeout.waiting_for == "DATA 61" and timeout.waited == pytest.approx(6.0, abs=0.01)
    assert [(e.packet.block, e.note) for e in rebuilt if isinstance(e, PacketSent) and e.note is not Note.NONE] \
        == [(60, Note.RETRANSMIT)]
    (seen,) = summaries(rebuilt)
    assert seen["ok"] and (seen["retransmits"], seen["timeouts"]) == (1, 1)


def test_without_the_timeout_option_a_silence_of_the_common_timeout_is_a_resend() -> None:
    """Without the timeout option, a second (RESEND_SILENCE) is a resend; half a second may as well be a
    slow server, and is not; nor is half the granted timeout."""
    (seen,) = summaries(rebuild(_lockstep_download(lost={20}, resent=set(), timeout=None, wait=1.0)))
    assert seen["retransmits"] == 1
    for timeout, wait in ((None, 0.5), ("6", 3.0)):
        rebuilt = rebuild(_lockstep_download(lost={20}, resent=set(), timeout=timeout, wait=wait))
        (seen,) = summaries(rebuilt)
        assert seen["retransmits"] == 0 and "packet-loss" not in {f.id for f in analyze(rebuilt)}


def test_an_uploads_packets_lost_before_the_capture_point() -> None:
    """The mirror: the client's DATA 10 never reached the tap, so its resend, a second later, is the first
    the capture sees: the client's timeout, as it counted it; the server's ACK 15 likewise, whose resend
    on its timer is the server's."""
    wire = [dgram(0.0, C, S, encode(Request(Opcode.WRQ, "up.bin", "octet", ()))), dgram(0.001, T, C, encode(Ack(0)))]
    t = 0.002
    for k in range(1, 21):
        if k == 10:
            t += 1.0
        wire.append(dgram(t, C, T, encode(Data(k, bytes(512 if k < 20 else 3)))))
        if k == 15:
            t += 1.0
        wire.append(dgram(t + 0.0002, T, C, encode(Ack(k))))
        t += 0.001
    rebuilt = rebuild(wire)
    (timeout,) = [e for e in rebuilt if isinstance(e, TimedOut)]
    assert timeout.waiting_for == "ACK 10"
    assert [(r.first_block, r.attempt) for r in rebuilt if isinstance(r, Retransmit)] == [(10, 1), (15, 1)]
    (seen,) = summaries(rebuilt)
    assert seen["ok"] and (seen["retransmits"], seen["timeouts"]) == (2, 1)
    (loss,) = [f for f in analyze(rebuilt) if f.id == "packet-loss"]
    assert "2 losses" in loss.summary and "(1 timeout, 1 packet resent by the server)" in loss.summary, loss.summary
    analyzer = Analyzer()
    analyzer.feed(rebuilt)
    state = analyzer.state(1)
    assert state is not None and (state.acks_rx, state.pos) == (20, 20)


def test_an_ack_that_came_twice_after_the_end_is_in_the_log_not_in_the_counts() -> None:
    """The server's final ACK again after the upload ended, with nothing from the client between: a
    duplicate in the packet log, but the transfer's figures are final, and the record's own count
    agrees with them (and with the JSON)."""
    wire = [dgram(0.0, C, S, encode(Request(Opcode.WRQ, "up.bin", "octet", ()))), dgram(0.001, T, C, encode(Ack(0))),
            dgram(0.002, C, T, encode(Data(1, b"x"))), dgram(0.003, T, C, encode(Ack(1))),
            dgram(0.5, T, C, encode(Ack(1))), dgram(0.6, ("10.0.0.3", 9), C, encode(Ack(1)))]
    rebuilt = rebuild(wire)
    assert [e.note for e in rebuilt if isinstance(e, PacketReceived)][-2:] == [Note.DUPLICATE, Note.STRAY]
    table = SessionTable(keep_packets=True)
    table.apply(rebuilt)
    (record,) = table
    end = record.result
    assert isinstance(end, Completed)
    assert record.duplicates == end.stats.duplicates == session_summary(record)["duplicates"] == 0
    assert record.stray == end.stats.stray == 0
