"""protocol/timer.py: the retransmit timer's rules, exactly (RFC 6298 estimate, Karn, backoff, give-up)."""

from __future__ import annotations

import pytest

from tftpdiag.protocol.timer import RetransmitTimer, Timing


def timer(**timing: float) -> RetransmitTimer:
    return RetransmitTimer(Timing(**timing), now=100.0)  # type: ignore[arg-type]


def sample(t: RetransmitTimer, rtt: float, at: float = 200.0) -> None:
    t.start_sample(at)
    t.end_sample(at + rtt)


def test_first_sample_sets_srtt_and_half_of_it_as_variance():
    t = timer(min_timeout=0.01)
    sample(t, 0.2)
    assert t.srtt == pytest.approx(0.2) and t.rttvar == pytest.approx(0.1)
    assert t.current() == pytest.approx(0.2 + 4 * 0.1)


def test_later_samples_follow_rfc_6298_gains():
    t = timer(min_timeout=0.01)
    sample(t, 0.2)
    sample(t, 0.6)
    # RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R|, then SRTT <- 7/8 SRTT + 1/8 R, RTO = SRTT + 4 RTTVAR
    rttvar = 0.75 * 0.1 + 0.25 * 0.4
    srtt = 0.875 * 0.2 + 0.125 * 0.6
    assert (t.srtt, t.rttvar) == (pytest.approx(srtt), pytest.approx(rttvar))
    assert t.current() == pytest.approx(srtt + 4 * rttvar)


def test_estimate_is_clamped_between_min_and_max():
    low, high = timer(min_timeout=0.5), timer(max_timeout=2.0)
    sample(low, 0.001)
    sample(high, 5.0)
    assert low.current() == 0.5 and high.current() == 2.0


def test_only_one_sample_in_eight_once_settled():
    t = timer(min_timeout=0.001)
    for _ in range(RetransmitTimer.SAMPLE_EVERY):
        sample(t, 0.1)
    settled = t.srtt
    for _ in range(RetransmitTimer.SAMPLE_EVERY - 1):
        sample(t, 1.0)  # skipped
    assert t.srtt == settled
    sample(t, 1.0)  # the eighth counts
    assert t.srtt == pytest.approx(0.875 * settled + 0.125 * 1.0)


def test_karn_a_timeout_forgets_the_packet_being_timed():
    t = timer()
    t.start_sample(0.0)
    t.expire(1.0)
    t.end_sample(1.5)  # the answer may be to the first send or the resend: not a sample
    assert t.srtt is None and t.samples == 0


def test_end_sample_without_a_timed_packet_does_nothing():
    t = timer()
    t.end_sample(5.0)
    assert t.srtt is None and t.samples == 0


@pytest.mark.parametrize("how", ["fixed", "not adaptive"])
def test_a_fixed_or_non_adaptive_timer_ignores_samples(how):
    t = timer(adaptive=how != "not adaptive")
    if how == "fixed":
        t.fix(3.0)
    sample(t, 0.01)
    assert t.current() == (3.0 if how == "fixed" else 1.0)


def test_backoff_doubles_per_timeout_and_is_capped():
    t = timer(initial_timeout=1.0, max_timeout=5.0, retries=10)
    waits = []
    for k in range(5):
        waited, give_up = t.expire(10.0 + k)
        waits.append(waited)
        assert not give_up
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert t.attempt == 5


def test_a_fixed_timeout_above_the_cap_is_not_lowered_by_it():
    t = timer(max_timeout=2.0)
    t.fix(6.0)
    t.expire(1.0)
    assert t.current() == 6.0


def test_heard_ends_the_backoff_and_restarts_give_up():
    t = timer(retries=10)
    t.expire(101.0)
    t.expire(102.0)
    t.heard(103.0)
    assert t.attempt == 0 and t.heard_at == 103.0 and t.current() == 1.0


def test_restart_ends_the_backoff_and_forgets_the_timed_packet():
    t = timer(retries=10)
    t.start_sample(0.0)
    t.expire(101.0)
    t.start_sample(101.0)
    t.restart()
    assert t.attempt == 0 and t.mark is None


def test_give_up_after_retries_when_give_up_time_is_zero():
    t = timer(retries=2)
    assert [t.expire(101.0 + k)[1] for k in range(3)] == [False, False, True]


def test_give_up_needs_both_the_count_and_the_silence():
    t = timer(retries=1, give_up=10.0)  # heard at 100
    assert t.expire(101.0)[1] is False  # first timeout: within the count
    assert t.expire(105.0)[1] is False  # count reached, but only 5 s of silence
    assert t.expire(110.0)[1] is True  # 10 s of silence as well


def test_the_last_wait_ends_when_give_up_does():
    t = timer(retries=1, give_up=10.0, initial_timeout=4.0, max_timeout=60.0)  # heard at 100
    t.expire(104.0)
    assert t.cap(104.0, 104.0 + t.current()) == 110.0  # 8 s of backoff cut to the give-up time
    assert t.cap(104.0, 106.0) == 106.0  # ends sooner anyway
    early = timer(retries=3, give_up=10.0)
    early.expire(101.0)
    assert early.cap(101.0, 150.0) == 150.0  # retries not yet spent: nothing cut
    late = timer(retries=1, give_up=10.0)
    late.expire(111.0)
    assert late.cap(111.0, 113.0) == 113.0  # give-up time already past: the wait stands


def test_timing_refuses_nonsense():
    for bad in ({"rollover": 2}, {"retries": -1}, {"initial_timeout": 0}, {"min_timeout": 0}, {"give_up": -1}):
        with pytest.raises(ValueError):
            Timing(**bad)  # type: ignore[arg-type]
