"""When to send again and when to give up: the transfer's timing settings and its retransmit timer.

The timer is RFC 6298's smoothed round-trip estimate with Karn's rule (only packets sent once are
timed) and exponential backoff; a transfer gives up after ``retries`` timeouts in a row and, when
``give_up`` is set, only once the peer has also been silent that long.
"""

from __future__ import annotations

from collections.abc import Sequence

from tftpdiag.records import record

__all__ = ["Timing", "RetransmitTimer"]

_NEVER = 1 << 62  # answers to pass over: more than any transfer has


@record
class Timing:
    """Retransmission and ending rules. Times in seconds."""

    initial_timeout: float = 1.0
    min_timeout: float = 0.1  # floor of the adaptive timeout (RFC 1123 asks for adaptive timeouts)
    max_timeout: float = 8.0  # cap of the exponential backoff
    retries: int = 5  # consecutive timeouts before giving up (at least this many, when give_up is set)
    # Seconds with no progress from the peer before giving up, as well as `retries` timeouts: a count
    # alone ends far sooner on a fast link, whose adaptive timeout is short, than the peer's own
    # patience (tftp-hpa waits 25 s, U-Boot 10 x 5 s). 0: the count alone decides.
    give_up: float = 0.0
    # How long the side that sent the final ACK stays to re-ACK a repeated final DATA. It must outlast
    # the peer's retransmissions of that DATA, which back off: a few seconds costs only a socket.
    dally: float = 3.0
    progress_interval: float = 0.1
    rollover: int = 0  # the block number that follows 65535 when we send (0, or 1 as some peers do)
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.rollover not in (0, 1):
            raise ValueError("rollover must be 0 or 1")
        if self.retries < 0 or self.initial_timeout <= 0 or self.min_timeout <= 0 or self.give_up < 0:
            raise ValueError("timeouts must be positive and retries and give_up not negative")


class RetransmitTimer:
    """The wait before the next retransmission, and the count of timeouts since the peer was last heard.

    Once settled, one sample in SAMPLE_EVERY is used: in lock-step every block is a round trip, and
    the estimate needs only a few a second, not tens of thousands.
    """

    SAMPLE_EVERY = 8
    __slots__ = ("timing", "srtt", "rttvar", "base", "attempt", "fixed", "samples", "skip", "mark", "heard_at")

    def __init__(self, timing: Timing, now: float) -> None:
        self.timing = timing
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.base = timing.initial_timeout
        self.attempt = 0  # timeouts in a row; each doubles the wait (the backoff)
        self.fixed = False
        self.samples = 0  # the samples used so far
        # Answers left to pass over before the next sample is used: end_sample's one test for all
        # but the samples it uses (every one until settled, then one in SAMPLE_EVERY; none when the
        # timeout is fixed or not adaptive).
        self.skip = 0 if timing.adaptive else _NEVER
        self.mark: float | None = None  # when the packet being timed was sent (Karn: first sends only)
        self.heard_at = now  # the last progress from the peer (or the start): when give_up counts from

    def fix(self, seconds: float) -> None:
        """A negotiated timeout option (RFC 2349) replaces the estimate."""
        self.fixed = True
        self.base = seconds
        self.skip = _NEVER

    def start_sample(self, now: float) -> None:
        """A packet sent for the first time at ``now``: its answer measures the round trip."""
        self.mark = now

    def end_sample(self, now: float) -> None:
        """The answer to the packet being timed arrived at ``now`` (nothing if none is being timed)."""
        mark = self.mark
        if mark is None:
            return
        self.mark = None
        if self.skip:
            self.skip -= 1
            return
        self.samples += 1
        if self.samples >= self.SAMPLE_EVERY:
            self.skip = self.SAMPLE_EVERY - 1
        rtt = now - mark
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.base = min(max(self.srtt + 4 * self.rttvar, self.timing.min_timeout), self.timing.max_timeout)

    def turns(self, times: Sequence[float]) -> None:
        """Lock-step turns taken at ``times`` (protocol/steady.py): at each, an answer arrived and the
        next packet went at once, i.e. end_sample(t) then start_sample(t) for each t, with the same
        result; the answers passed over are counted off in one step, not one call each."""
        i, count = 0, len(times)
        while i < count:
            skip = self.skip
            if self.mark is not None and skip:
                passed = min(skip, count - i)  # answers that only count down: no sample is used
                self.skip = skip - passed
                i += passed
            else:
                self.end_sample(times[i])
                i += 1
            self.mark = times[i - 1]

    def current(self) -> float:
        """The wait before the next retransmission: the estimate, doubled for each timeout in a row."""
        if not self.attempt:
            return self.base
        return min(self.base * (1 << self.attempt), max(self.timing.max_timeout, self.base))

    def soonest(self) -> float:
        """The shortest wait :meth:`current` can give once the peer is heard again, whatever round trips
        are sampled meanwhile: samples may bring the base down, but never below min_timeout (or
        max_timeout, if lower); a base already lower (a fixed timeout) stays as it is."""
        timing = self.timing
        return min(self.base, timing.min_timeout, timing.max_timeout)

    def heard(self, now: float) -> None:
        """The peer made progress: the backoff ends and give_up counts from now."""
        self.heard_at = now
        self.attempt = 0

    def restart(self) -> None:
        """A new exchange begins (a request asked again): no backoff, nothing being timed."""
        self.attempt = 0
        self.mark = None

    def expire(self, now: float) -> tuple[float, bool]:
        """A timeout at ``now``: the wait that ran out, and whether to give up rather than resend.

        Each timeout backs the next wait off; a packet resent is not timed (Karn)."""
        waited = self.current()
        self.attempt += 1
        timing = self.timing
        if self.attempt > timing.retries and now - self.heard_at >= timing.give_up:
            return waited, True
        self.mark = None
        return waited, False

    def cap(self, now: float, deadline: float) -> float:
        """``deadline`` (the wait armed after a timeout at ``now``), ended early when it is the last
        before giving up: the transfer lets go of its peer after give_up seconds, not up to
        max_timeout more."""
        timing = self.timing
        if timing.give_up and self.attempt >= timing.retries:
            last = self.heard_at + timing.give_up
            if now < last < deadline:
                return last
        return deadline
