"""Timeouts on a machine: what is resent, backoff, give-up and RTT sampling as a transfer sees them."""

from __future__ import annotations

import itertools

import pytest

from tests.support.machines import (
    BLOCK,
    CLIENT,
    TID,
    ack,
    client_read,
    data,
    locked_client_read,
    notes_sent,
    oack,
    of,
    only_result,
    sent,
    sent_packets,
    server_read,
)
from tftpdiag.protocol.events import (
    Note,
    Reason,
    Retransmit,
    Side,
    TimedOut,
)
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    OAck,
)
from tftpdiag.protocol.timer import Timing

# == timeouts =======================================================================================

def drive_timeouts(m, expect_packet):
    """Fire every timeout until the machine gives up; return the gaps between deadlines."""
    gaps = []
    last = 0.0
    while m.next_timeout() is not None:
        deadline = m.next_timeout()
        gaps.append(round(deadline - last, 9))
        m.handle_timeout(deadline - 1e-6)  # early: nothing happens
        assert m.datagrams_to_send() == [] and m.next_timeout() == deadline
        m.handle_timeout(deadline)
        out = sent(m)
        if not m.finished:
            assert [p for p, _ in out] == [expect_packet]
        else:
            assert out == []
        last = deadline
    return gaps


def test_request_backoff_doubles_up_to_max_then_fails():
    timing = Timing(initial_timeout=1.0, max_timeout=8.0, retries=6)
    m, _ = client_read(timing=timing)
    rrq = sent_packets(m)[0]
    m.events()
    gaps = drive_timeouts(m, rrq)
    assert gaps == [1, 2, 4, 8, 8, 8, 8]
    events = m.events()
    timed_out = of(events, TimedOut)
    assert [t.attempt for t in timed_out] == [1, 2, 3, 4, 5, 6, 7]
    assert [t.waited for t in timed_out] == [1, 2, 4, 8, 8, 8, 8]
    assert {t.waiting_for for t in timed_out} == {"reply to RRQ"}
    retransmits = of(events, Retransmit)
    assert [(r.reason, r.first_block, r.count, r.attempt) for r in retransmits] == [
        ("timeout", None, 1, i) for i in range(1, 7)]
    assert [n for _, n in notes_sent(events)] == [Note.RETRANSMIT] * 6
    failed = only_result(events)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.TIMEOUT, Side.LOCAL, None)
    assert "7 attempts" in failed.message
    assert m.retransmits == 6 and m.timeouts == 7


def test_data_resent_only_on_timeout_with_backoff():
    timing = Timing(initial_timeout=0.5, max_timeout=3.0, retries=4, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    first = sent_packets(m)
    assert first == [Data(1, BLOCK)]
    m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == [0.5, 1.0, 2.0, 3.0, 3.0]
    events = m.events()
    assert [t.waiting_for for t in of(events, TimedOut)] == ["ACK 1"] * 5
    assert [(r.first_block, r.count) for r in of(events, Retransmit)] == [(1, 1)] * 4
    assert only_result(events).reason is Reason.TIMEOUT


def test_give_up_waits_for_time_not_only_a_count():
    """On a fast link the adaptive timeout sits at its floor: five retries end after 0.1+0.2+...+3.2 =
    6.3 s, long before a client's own patience (tftp-hpa 25 s). With give_up the session retransmits,
    backing off to max_timeout, until nothing has been heard for give_up seconds, and ends exactly then."""
    timing = Timing(initial_timeout=0.1, max_timeout=8.0, retries=5, give_up=30.0, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    assert sent_packets(m) == [Data(1, BLOCK)]
    m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0, 1.3])
    assert sum(gaps) == pytest.approx(30.0)
    events = m.events()
    failed = only_result(events)
    assert failed.reason is Reason.TIMEOUT and failed.time == pytest.approx(30.0)
    assert "10 attempts in 30.0 s" in failed.message
    assert m.retransmits == 9


def test_give_up_counts_from_the_last_progress():
    timing = Timing(initial_timeout=1.0, max_timeout=4.0, retries=1, give_up=10.0, adaptive=False)
    m = server_read(BLOCK * 3, timing=timing)
    m.datagrams_to_send()
    m.handle_timeout(1.0)
    m.handle_timeout(3.0)  # two timeouts: more than retries, but only 3 s of silence
    assert not m.finished
    m.receive(ack(1), CLIENT, 5.0)  # progress: the silence starts again from here
    assert sent_packets(m)[-1] == Data(2, BLOCK)
    while m.next_timeout() is not None:
        m.handle_timeout(m.next_timeout())
    failed = only_result(m.events())
    assert failed.time == pytest.approx(15.0)


def test_give_up_still_needs_the_retries():
    """A long first wait (a negotiated timeout) does not end the session before its retries are spent."""
    timing = Timing(initial_timeout=20.0, max_timeout=20.0, retries=2, give_up=5.0, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    m.datagrams_to_send(), m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == [20.0, 20.0, 20.0]
    assert only_result(m.events()).reason is Reason.TIMEOUT


def test_give_up_zero_keeps_the_count_rule():
    timing = Timing(initial_timeout=0.1, max_timeout=8.0, retries=5, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    m.datagrams_to_send(), m.events()
    assert sum(drive_timeouts(m, Data(1, BLOCK))) == pytest.approx(6.3)


def test_give_up_counts_from_in_order_data_on_the_fast_path():
    """A receiver taking DATA in order (its fast path) counts that as heard, like the general path."""
    timing = Timing(initial_timeout=1.0, max_timeout=2.0, retries=0, give_up=4.0, adaptive=False)
    m, _ = client_read(timing=timing)
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.5)
    m.receive(data(2, BLOCK), TID, 3.0)
    while m.next_timeout() is not None:
        m.handle_timeout(m.next_timeout())
    assert only_result(m.events()).time == pytest.approx(7.0)


def test_abandon_ends_without_a_word_to_the_peer():
    """A server making room drops a half-open session silently: its peer may be a forged address."""
    m = server_read(BLOCK * 2)
    m.datagrams_to_send(), m.events()
    m.abandon(0.5, "dropped to admit a new request")
    assert m.datagrams_to_send() == [] and m.closed and m.next_timeout() is None
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.TIMEOUT, Side.LOCAL, None)


def test_give_up_must_not_be_negative():
    with pytest.raises(ValueError):
        Timing(give_up=-1.0)


def test_progress_resets_backoff_and_karn_skips_ambiguous_samples():
    m = server_read(BLOCK * 3, timing=Timing(initial_timeout=1.0))
    m.datagrams_to_send()
    m.handle_timeout(1.0)  # DATA 1 resent; next wait 2 s
    assert m.next_timeout() == pytest.approx(3.0)
    m.datagrams_to_send()
    m.receive(ack(1), CLIENT, 1.01)  # ambiguous RTT: not sampled (Karn), backoff ends
    assert sent_packets(m) == [Data(2, BLOCK)]
    assert m.next_timeout() == pytest.approx(2.01)


def test_receiver_does_not_sample_rtt_across_its_own_retransmission():
    """Karn's rule on the receiving side: after our ACK was repeated, the next DATA could answer either
    copy, so its delay says nothing about the round trip."""
    m, _ = client_read(timing=Timing(initial_timeout=1.0, min_timeout=0.1))
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.01)  # RTT 0.01: the timeout drops to the 0.1 floor
    assert m.next_timeout() == pytest.approx(0.11)
    m.handle_timeout(0.11)  # ACK 1 repeated, wait doubled
    assert sent_packets(m) == [Ack(1), Ack(1)]
    assert m.next_timeout() == pytest.approx(0.31)
    m.receive(data(2, BLOCK), TID, 0.2)  # 0.19 after the first ACK 1: not a measurement
    assert m.next_timeout() == pytest.approx(0.3)


def test_adaptive_timeout_shrinks_towards_rtt():
    rtt = 0.01
    for floor in (0.001, 0.1):
        m = server_read(BLOCK * 40, timing=Timing(initial_timeout=1.0, min_timeout=floor))
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(1.0)
        now, waits = 0.0, []
        for block in range(1, 40):
            now += rtt
            m.receive(ack(block), CLIENT, now)
            assert len(m.datagrams_to_send()) == 1
            waits.append(m.next_timeout() - now)
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(waits)), waits
        assert min(waits) >= floor - 1e-9
        if floor < rtt:
            assert rtt <= waits[-1] < 2 * rtt
        else:
            assert waits[-1] == pytest.approx(floor)


def test_adaptive_off_keeps_initial_timeout():
    m = server_read(BLOCK * 5, timing=Timing(initial_timeout=0.7, adaptive=False))
    m.datagrams_to_send()
    for block in range(1, 4):
        m.receive(ack(block), CLIENT, block * 0.01)
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(block * 0.01 + 0.7)


def test_negotiated_timeout_fixes_base_timeout_client():
    m, _ = client_read(options=RequestedOptions(timeout=3))
    m.datagrams_to_send()
    m.receive(oack(("timeout", "3")), TID, 0.01)
    assert m.next_timeout() == pytest.approx(3.01)
    for block in range(1, 6):
        now = 0.01 + block * 0.001
        m.receive(data(block, BLOCK), TID, now)
        assert m.next_timeout() == pytest.approx(now + 3.0)


def test_negotiated_timeout_fixes_base_timeout_server():
    m = server_read(BLOCK * 10, ("timeout", "2"))
    assert sent_packets(m) == [OAck((("timeout", "2"),))]
    assert m.next_timeout() == pytest.approx(2.0)
    m.receive(ack(0), CLIENT, 0.002)
    m.datagrams_to_send()
    for block in range(1, 6):
        now = 0.002 + block * 0.001
        m.receive(ack(block), CLIENT, now)
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(now + 2.0)


def test_receiver_repeats_its_last_ack_on_timeout():
    m, _ = locked_client_read(timing=Timing(initial_timeout=1.0, adaptive=False))
    deadline = m.next_timeout()
    m.handle_timeout(deadline)
    assert sent(m) == [(Ack(1), TID)]
    events = m.events()
    assert [(r.first_block, r.count) for r in of(events, Retransmit)] == [(1, 1)]
    assert of(events, TimedOut)[0].waiting_for == "DATA 2"
