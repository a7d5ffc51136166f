"""BusyPoll: a loop spins for the next datagram only while the peer answers faster than the budget."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tftpdiag.engine import cpu_wait
from tftpdiag.engine import spin as spinning
from tftpdiag.engine.spin import BusyPoll


class Reads:
    """A non-blocking read that has nothing for the first ``empty`` calls."""

    def __init__(self, empty: int, value: object = b"datagram") -> None:
        self.empty = empty
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.empty:
            raise BlockingIOError
        return self.value


def test_returns_what_arrives_while_spinning_and_keeps_spinning() -> None:
    read = Reads(empty=5)
    poll = BusyPoll(read, budget=1.0)
    assert poll(10.0) == b"datagram"
    assert read.calls == 6
    read.calls, read.empty = 0, 0
    assert poll(10.0) == b"datagram"


def test_an_empty_result_counts_as_nothing_yet() -> None:
    results = iter([[], [], ["ready"]])
    assert BusyPoll(lambda: next(results), budget=1.0)(10.0) == ["ready"]


def test_gives_up_after_the_budget_and_then_stops_spinning() -> None:
    read = Reads(empty=10**9)
    poll = BusyPoll(read, budget=0.0005)
    assert poll(10.0) is None
    assert read.calls > 1
    calls = read.calls
    assert poll(10.0) is None  # off: the caller blocks straight away
    assert read.calls == calls


def test_a_short_blocking_wait_turns_spinning_back_on_and_a_long_one_does_not() -> None:
    read = Reads(empty=10**9)
    poll = BusyPoll(read, budget=0.0005)
    poll(10.0)
    poll.waited(0.002)  # the reply took longer than the budget: spinning would not have caught it
    before = read.calls
    poll(10.0)
    assert read.calls == before
    poll.waited(0.0001)
    read.empty = 0
    assert poll(10.0) == b"datagram"


def test_never_spins_longer_than_the_caller_can_wait() -> None:
    read = Reads(empty=10**9)
    poll = BusyPoll(read, budget=60.0)
    assert poll(0.0005) is None  # returns (a timer is due) although the budget is a minute


def test_a_zero_budget_never_reads() -> None:
    read = Reads(empty=0)
    poll = BusyPoll(read, budget=0.0)
    assert poll(10.0) is None
    poll.waited(0.0)
    assert poll(10.0) is None
    assert read.calls == 0


def test_socket_errors_reach_the_caller() -> None:
    def read() -> object:
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        BusyPoll(read, budget=1.0)(10.0)


def test_spins_on_a_real_socket() -> None:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with a, b:
        a.bind(("127.0.0.1", 0))
        poll = BusyPoll(lambda: a.recvfrom(100, socket.MSG_DONTWAIT), budget=0.001)
        assert poll(1.0) is None
        poll.waited(0.0)
        b.sendto(b"x", a.getsockname())
        data, _ = poll(1.0) or (None, None)
        assert data == b"x"


def test_only_one_loop_in_a_process_spins() -> None:
    # Threads share the interpreter lock: a second spinning loop would make the first wait for it.
    first, second = Reads(empty=0), Reads(empty=0)
    with BusyPoll(first, budget=1.0, delay_source=no_delay) as one:
        assert one(10.0) == b"datagram"
        with BusyPoll(second, budget=1.0, delay_source=no_delay) as two:
            assert one(10.0) is None and two(10.0) is None
        assert one(10.0) == b"datagram"
    assert second.calls == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """A read whose datagram comes within the spin, or, while ``starved``, not before the budget ends
    (each empty read moves the fake clock on)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.starved = False
        self.reads = 0

    def __call__(self) -> object:
        self.reads += 1
        if self.starved:
            self.clock.now += 0.0005
            raise BlockingIOError
        return b"datagram"


def no_delay() -> None:
    """No measure of the thread's wait for a CPU: the misses alone decide."""
    return None


def never() -> bool:
    """The machine is never crowded (the real count would read this machine's /proc)."""
    return False


class Crowded:
    """Whether the machine is crowded, as a test says, and how often it was asked."""

    def __init__(self, crowded: bool) -> None:
        self.crowded = crowded
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.crowded


class Delay:
    """The loop thread's total wait for a CPU, growing by ``share`` of the fake clock's time."""

    def __init__(self, clock: Clock, share: float) -> None:
        self.clock, self.share = clock, share
        self.total, self.last = 0.0, clock.now
        self.closed = False

    def __call__(self) -> float:
        self.total += (self.clock.now - self.last) * self.share
        self.last = self.clock.now
        return self.total

    def close(self) -> None:
        self.closed = True


def started(clock: Clock, delay: Delay | None = None) -> None:
    """Move the clock past a fresh loop's first spin (spinning._FIRST_SPIN), which it judges by its
    wait for a CPU until then, and bring ``delay``'s total up to then (at its share so far)."""
    clock.now += spinning._FIRST_SPIN
    if delay is not None:
        delay()


def spin(poll: BusyPoll, peer: Peer, times: int) -> list[object]:
    got = []
    for _ in range(times):
        got.append(poll(1.0))
        poll.waited(0.0001)  # each wait short: as on a fast link, spinning stays on
    return got


def test_spins_that_keep_missing_pause_spinning_and_it_comes_back() -> None:
    """A peer short of CPU (a CPU-bound program beside it) answers late while we spin: a quarter of 64
    spins missed, the loop stops spinning for a while, twice as long if it is seen again, and spins
    again once the peer keeps up."""
    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=never)
    with poll:
        assert spin(poll, peer, spinning._CHECK_EVERY) == [b"datagram"] * spinning._CHECK_EVERY and poll.pauses == 0
        peer.starved = True
        spin(poll, peer, spinning._CHECK_EVERY)
        assert poll.pauses == 1
        reads = peer.reads
        assert spin(poll, peer, 10) == [None] * 10 and peer.reads == reads  # paused: not even a look
        clock.now += spinning._PAUSE_MIN
        spin(poll, peer, spinning._CHECK_EVERY)  # still starved: paused again, for twice as long
        assert poll.pauses == 2
        clock.now += spinning._PAUSE_MIN
        reads = peer.reads
        spin(poll, peer, 5)
        assert peer.reads == reads, "the second pause is twice as long"
        clock.now += spinning._PAUSE_MIN
        peer.starved = False
        assert spin(poll, peer, 3 * spinning._CHECK_EVERY) == [b"datagram"] * (3 * spinning._CHECK_EVERY)
        assert poll.pauses == 2


def test_contention_seen_once_pauses_briefly_and_lasting_contention_soon_pauses_long() -> None:
    """A fresh process's first blocks often find the scheduler holding both ends on one CPU for a
    moment (the spins miss, the thread waits for a CPU): a pause of a quarter of a second there cost a
    third of quiet 32 MiB downloads 0.2 s. Seen once, a pause ends within 50 ms; while contention lasts
    (a CPU-bound program beside it), the pauses double to the longest within eight."""
    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=never)
    with poll:
        peer.starved = True
        spin(poll, peer, spinning._MISSED)
        assert poll.pauses == 1
        clock.now += 0.05
        peer.starved = False
        reads = peer.reads
        assert spin(poll, peer, spinning._CHECK_EVERY) == [b"datagram"] * spinning._CHECK_EVERY
        assert peer.reads > reads and poll.pauses == 1  # spinning again, 50 ms on
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=Crowded(True))
    with poll:
        peer.starved = True
        spin(poll, peer, spinning._MISSED)
        for _ in range(7):  # each pause ends on a crowded machine: renewed, twice as long
            clock.now += spinning._PAUSE_MAX
            spin(poll, peer, 1)
        assert poll.pauses == 8
        clock.now += spinning._PAUSE_MAX - 0.001
        reads = peer.reads
        spin(poll, peer, 1)
        assert peer.reads == reads  # the eighth pause is the longest


def test_just_after_a_pause_contention_is_judged_sooner() -> None:
    """Each resumption beside a CPU-bound program spun 64 times before it was judged, most of them
    missed at the full budget: after a pause the next look comes after _CHECK_SOON spins, by the same
    share of misses; then every _CHECK_EVERY again. And a look comes as soon as a quarter of the spins
    it would count have missed (it can only pause): beside a CPU-bound program each end's first 64
    spins missed 58-63 times."""
    assert spinning._CHECK_SOON < spinning._CHECK_EVERY
    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=never)
    with poll:
        peer.starved = True
        spin(poll, peer, spinning._MISSED - 1)
        assert poll.pauses == 0  # not judged yet: fewer than a quarter of a window's spins missed
        spin(poll, peer, 1)
        assert poll.pauses == 1  # the 16th miss, not the 64th spin
        reads = peer.reads
        spin(poll, peer, spinning._CHECK_EVERY)
        assert peer.reads == reads  # paused from then on
        clock.now += spinning._PAUSE_MIN
        spin(poll, peer, spinning._CHECK_SOON * spinning._MISSED // spinning._CHECK_EVERY)  # starved: 1/4 of 16
        assert poll.pauses == 2
        clock.now += 2 * spinning._PAUSE_MIN
        peer.starved = False
        assert spin(poll, peer, spinning._CHECK_SOON) == [b"datagram"] * spinning._CHECK_SOON and poll.pauses == 2
        # Judged well: looks are _CHECK_EVERY apart again, and a quarter of 16 spins missing (4, then
        # answers) is not a quarter of the 64 a look then counts.
        peer.starved = True
        spin(poll, peer, spinning._CHECK_SOON // 4)
        peer.starved = False
        spin(poll, peer, spinning._CHECK_EVERY)
        assert poll.pauses == 2


def test_may_spin_says_no_while_off_paused_or_another_loop_spins() -> None:
    clock = Clock()
    peer = Peer(clock)
    assert not BusyPoll(peer, budget=0.0).may_spin(clock.now)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=never)
    with poll:
        assert poll.may_spin(clock.now)
        peer.starved = True
        spin(poll, peer, spinning._MISSED)
        assert poll.pauses == 1 and not poll.may_spin(clock.now)
        assert poll.may_spin(clock.now + spinning._PAUSE_MIN)
        with BusyPoll(peer, budget=0.0002, delay_source=no_delay, crowded=never):
            assert not poll.may_spin(clock.now + spinning._PAUSE_MIN)


class CountedPoll(BusyPoll):
    """A BusyPoll that counts the times it is asked."""

    asked = 0

    def __call__(self, wait: float) -> object:
        self.asked += 1
        return super().__call__(wait)


@pytest.mark.parametrize("paused", [False, True])
def test_a_run_of_steady_turns_asks_a_paused_spin_nothing(paused: bool) -> None:
    """engine/turns.py decides once per run whether it spins: a paused BusyPoll is not asked each turn
    (a call and a look at the clock a block, at both ends, for the whole pause)."""
    from tftpdiag.engine.turns import take_turns
    from tftpdiag.protocol.steady import SteadyReceive

    server = ("127.0.0.1", 69)
    waiting = [b"\x00\x03" + struct.pack(">H", n) + bytes(8) for n in range(1, 5)]
    turns = len(waiting)

    def read(flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return waiting.pop(0), server

    sent: list[bytes] = []
    poll = CountedPoll(read, budget=0.0002, delay_source=no_delay, crowded=never)
    with poll:
        if paused:
            poll._pause_for(time.time())
        steady = SteadyReceive(server, 1, 8, turns, time.time(), 60.0)
        _, ended = take_turns(steady, read, lambda raw, to: sent.append(raw), poll, 1.0, True)
    assert ended is None and len(sent) == turns and not waiting
    assert poll.asked == (0 if paused else turns)


@pytest.mark.parametrize("crowded", [False, True])
def test_a_miss_now_and_then_stops_spinning_only_on_a_crowded_machine(crowded: bool) -> None:
    """One spin in eight missing is below the quarter that alone means contention. Beside a CPU-bound
    program on 2 cores only 5-12 of 64 spins missed, and each resumption spun on for the 50 ms the
    thread's wait needs to show it: a few misses pause spinning when no CPU is left idle for the peer
    (others_runnable). Quiet, a busy spell of the host made 5-8 of 64 miss too: there they do not."""
    clock = Clock()
    peer = Peer(clock)
    asked = Crowded(crowded)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=asked)
    with poll:
        for i in range(10 * spinning._CHECK_EVERY):
            peer.starved = i % 8 == 0
            poll(1.0)
            poll.waited(0.0001)
            if crowded and poll.pauses:
                break
    assert poll.pauses == (1 if crowded else 0)
    assert asked.asked == (1 if crowded else 10)  # once a look, and only at a look with misses


def test_no_miss_no_question() -> None:
    """The count reads /proc (tens of microseconds): a look whose spins all found the datagram asks
    nothing."""
    clock = Clock()
    asked = Crowded(True)
    poll = BusyPoll(Peer(clock), budget=0.0002, clock=clock, delay_source=no_delay, crowded=asked)
    with poll:
        assert spin(poll, Peer(clock), 10 * spinning._CHECK_EVERY) == [b"datagram"] * (10 * spinning._CHECK_EVERY)
    assert poll.pauses == 0 and asked.asked == 0


@pytest.mark.parametrize("sign", ["crowded", "waited"])
def test_a_pause_lasts_while_contention_shows_at_its_end(sign: str) -> None:
    """When a pause ends on a machine still crowded, or through which the thread waited for a CPU
    (paused, a loop blocks on every read, and beside a CPU-bound program it wakes to find a CPU busy:
    25-29% of a pause waiting, against 3-7% quiet), spinning stays paused, twice as long, without a
    single spin to judge it by (each resumption beside a CPU-bound program spun until a look judged
    it); once the sign has gone, spinning resumes."""
    clock = Clock()
    peer = Peer(clock)
    asked = Crowded(False)
    delay = Delay(clock, share=0.0)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=lambda: delay, crowded=asked)
    with poll:
        started(clock, delay)
        asked.crowded, delay.share = sign == "crowded", 0.3 if sign == "waited" else 0.0
        peer.starved = True
        spin(poll, peer, spinning._CHECK_EVERY)
        assert poll.pauses == 1
        peer.starved = False
        clock.now += spinning._PAUSE_MIN
        reads, questions = peer.reads, asked.asked
        assert spin(poll, peer, 3) == [None] * 3 and peer.reads == reads and poll.pauses == 2
        # The thread's own wait (one read of a file it holds open) is looked at first: beside a
        # CPU-bound program it shows at every pause's end, and the machine's load (a file per
        # thread, tens of microseconds) is then not read at all.
        assert asked.asked == questions + (sign == "crowded")
        clock.now += spinning._PAUSE_MIN
        assert spin(poll, peer, 3) == [None] * 3 and peer.reads == reads, "the second pause is twice as long"
        clock.now += spinning._PAUSE_MIN
        asked.crowded, delay.share = False, spinning._DELAYED_PAUSED / 2
        assert spin(poll, peer, 3) == [b"datagram"] * 3 and poll.pauses == 2


def test_others_runnable_leaves_this_process_s_threads_out(tmp_path) -> None:
    """/proc/loadavg's runnable count includes the reader's own threads; each thread's stat says
    whether it is one (its name, in parentheses, may hold a parenthesis or a space)."""
    from tftpdiag.engine.cpu_wait import others_runnable

    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.52 0.58 0.59 5/187 4242\n")
    tasks = tmp_path / "task"
    for tid, name, state in [(10, "python", "R"), (11, "a) R (b", "S"), (12, "tftp-client-1", "R")]:
        (tasks / str(tid)).mkdir(parents=True)
        (tasks / str(tid) / "stat").write_text(f"{tid} ({name}) {state} 1 10 10 0 -1 4194560\n")
    assert others_runnable(str(loadavg), str(tasks)) == 3
    (tasks / "13").mkdir()  # a thread that ended between the listing and the read
    assert others_runnable(str(loadavg), str(tasks)) == 3
    assert others_runnable(str(tmp_path / "none"), str(tasks)) is None  # not Linux: not known
    loadavg.write_text("garbage\n")
    assert others_runnable(str(loadavg), str(tasks)) is None


def answered(poll: BusyPoll, clock: Clock, blocks: int, block: float = 0.0001) -> int:
    """Spin for ``blocks`` replies that all come within the spin, ``block`` seconds apart; how many of
    the spins were made (the rest were skipped: spinning was paused)."""
    spun = 0
    for _ in range(blocks):
        clock.now += block
        spun += poll(1.0) is not None
        poll.waited(0.00005)
    return spun


def test_a_loop_that_waits_for_a_cpu_stops_spinning_though_every_spin_is_answered() -> None:
    """A long-running server paused its spinning, and a client spun alone: the server, woken on the other
    CPU, answered within every spin, yet the pair ran 30% slower than with neither spinning. What shows
    it is the spinning thread's own wait for a CPU (a fifth of the time or more): that pauses spinning
    too, and spinning comes back once the wait is gone."""
    clock = Clock()
    delay = Delay(clock, share=0.0)
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=lambda: delay, crowded=never)
    with poll:
        started(clock, delay)
        delay.share = 0.35  # as measured beside a CPU-bound program: 29-47%
        blocks = int(2 * spinning._DELAY_SPAN / 0.0001)
        taken = 0
        while not poll.pauses and taken < blocks:
            answered(poll, clock, 1)
            taken += 1
        assert poll.pauses == 1  # within two spans
        assert answered(poll, clock, 10) == 0  # paused
        clock.now += spinning._PAUSE_MIN
        delay.share = 0.02  # the neighbour has gone (quiet: 0-5%)
        assert answered(poll, clock, 10 * blocks) == 10 * blocks and poll.pauses == 1
    assert delay.closed


def test_the_wait_is_judged_over_a_longer_span_where_the_view_shares_the_cpu() -> None:
    """Sharing its CPU with the view, a loop's wait is judged over 50 ms, not 5 (see
    spinning._DELAY_SPAN_SHARED): the same waiting pauses spinning within two short spans headless, and not
    before the long one in the view."""
    import os

    assert spinning._DELAY_SPAN < spinning._DELAY_SPAN_SHARED
    try:
        plain = cpu_wait.ThreadDelay()
    except OSError:
        pytest.skip("no /proc/thread-self/schedstat here")
    cpu_wait.share_cpu_with(os.getpid())
    try:
        shared = cpu_wait.ThreadDelay()
    finally:
        cpu_wait.share_cpu_with(None)
    assert (plain.shared, shared.shared) == (False, True)
    plain.close()
    shared.close()
    for span in (spinning._DELAY_SPAN, spinning._DELAY_SPAN_SHARED):
        clock = Clock()
        delay = Delay(clock, share=0.0)
        delay.shared = span == spinning._DELAY_SPAN_SHARED  # type: ignore[attr-defined]
        poll = BusyPoll(Peer(clock), budget=0.0002, clock=clock, delay_source=lambda d=delay: d, crowded=never)
        with poll:
            if span == spinning._DELAY_SPAN:  # (in the view a loop spins from the start: see _FIRST_SPIN)
                started(clock, delay)
            delay.share = 0.35
            start, blocks = clock.now, 0
            while not poll.pauses and blocks < 10**5:
                answered(poll, clock, 1)
                blocks += 1
            assert poll.pauses == 1 and span <= clock.now - start < 2 * span + 0.005, (span, clock.now - start)


def test_a_little_waiting_for_a_cpu_does_not_stop_spinning() -> None:
    clock = Clock()
    delay = Delay(clock, share=spinning._DELAYED / 2)
    poll = BusyPoll(Peer(clock), budget=0.0002, clock=clock, delay_source=lambda: delay, crowded=never)
    with poll:
        started(clock)
        blocks = int(20 * spinning._DELAY_SPAN / 0.0001)
        assert answered(poll, clock, blocks) == blocks and poll.pauses == 0


def test_the_wait_is_read_on_the_loop_s_own_thread() -> None:
    """/proc/thread-self is the thread that opens it: the reader is made as the loop starts, and the
    thread's total only grows."""
    import threading

    from tftpdiag.engine.cpu_wait import ThreadDelay

    try:
        ThreadDelay().close()
    except OSError:
        pytest.skip("no /proc/thread-self/schedstat here")
    made_on: list[int] = []

    def source() -> ThreadDelay:
        made_on.append(threading.get_ident())
        return ThreadDelay()

    clock = Clock()
    poll = BusyPoll(Reads(empty=0), budget=0.0002, clock=clock, delay_source=source, crowded=never)
    assert made_on == []  # not where the loop is built
    done = threading.Event()

    def loop() -> None:
        with poll:
            first = poll._delay() if poll._delay else -1.0
            clock.now += 1000  # past the first spin, by far more than the thread can have waited
            assert poll(1.0) == b"datagram"
            assert poll._delay is not None and poll._delay() >= first >= 0.0
        done.set()

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join(10)
    assert done.is_set() and made_on == [thread.ident]


def _burn_until(condition: object, limit: float = 5.0) -> None:
    """Use CPU on this thread until ``condition()`` holds (bounded by ``limit`` seconds of it)."""
    import time

    start = time.thread_time()
    while not condition():  # type: ignore[operator]
        sum(range(10_000))
        assert time.thread_time() - start < limit, "the condition never held"


def test_process_cpu_counts_what_a_process_uses_from_now_on() -> None:
    import os
    import threading

    from tftpdiag.engine.cpu_wait import ProcessCpu

    used = ProcessCpu(os.getpid())
    assert used() < 0.05  # what the process used before it was made is not counted
    _burn_until(lambda: used() >= 0.05)
    # A thread that ends keeps what it used.
    done = threading.Event()
    thread = threading.Thread(target=lambda: _burn_until(lambda: used() >= 0.1) or done.set())
    thread.start()
    thread.join()
    assert done.is_set() and used() >= 0.1
    assert ProcessCpu(2 ** 22 + 7)() == 0.0  # no such process: nothing, no error


def test_a_shared_cpu_s_process_is_not_counted_as_waiting() -> None:
    """The view's CPU, which shares the transfer's on purpose, is taken out of the transfer's wait."""
    import os

    cpu_wait.share_cpu_with(os.getpid())  # this very process stands in for the view here
    try:
        delay = cpu_wait.ThreadDelay()
        before = delay()
        # Burning CPU here is the "view" working: the delay read falls by what it used.
        _burn_until(lambda: delay() < before - 0.05)
        delay.close()
    finally:
        cpu_wait.share_cpu_with(None)
    plain = cpu_wait.ThreadDelay()
    assert plain() >= 0.0  # (nothing taken out once it is no longer shared)
    plain.close()


class Slow:
    """A read with nothing, ever; each look moves the fake clock on by ``step``."""

    def __init__(self, clock: Clock, step: float = 0.00001) -> None:
        self.clock, self.step = clock, step

    def __call__(self) -> object:
        self.clock.now += self.step
        raise BlockingIOError


def test_a_spin_goes_on_for_its_limit_not_the_whole_budget() -> None:
    """A peer on this machine is spun for at most LOCAL_SPIN (see engine/spin.py): beside a CPU-bound program
    every spin that ran the whole budget kept busy the CPU the peer needed."""
    for limit, spun in ((None, 0.0002), (0.0001, 0.0001), (0.0005, 0.0002)):  # never beyond the budget
        clock = Clock()
        poll = BusyPoll(Slow(clock), budget=0.0002, clock=clock, delay_source=no_delay, crowded=never,
                        limit=limit)
        start = clock.now
        assert poll(1.0) is None
        assert spun <= clock.now - start < spun + 0.00003, (limit, clock.now - start)
        poll.waited(0.00015)  # a wait within the budget (not the limit): spinning stays on
        assert poll.on


def test_the_local_limit_is_for_a_peer_on_this_machine_and_the_default_budget_only() -> None:
    from tftpdiag.engine.spin import BUSY_POLL, LOCAL_SPIN, on_this_machine, spin_limit

    if BUSY_POLL <= LOCAL_SPIN:
        pytest.skip("one CPU: this machine never spins")
    assert on_this_machine(("127.0.0.1", 69)) and on_this_machine(("127.0.0.9", 0))
    assert spin_limit(BUSY_POLL, ("127.0.0.1", 69)) == LOCAL_SPIN
    assert spin_limit(0.0005, ("127.0.0.1", 69)) is None  # --busy-poll: the user's own choice
    # A host's own non-loopback address counts too (the kernel answers a connect from that address).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.7", 9))  # (TEST-NET-3: nothing is sent; a route, if there is one)
            own = probe.getsockname()[0]
        except OSError:
            own = None
    if own is not None and own != "0.0.0.0":
        assert spin_limit(BUSY_POLL, (own, 69)) == LOCAL_SPIN
    assert not on_this_machine(("203.0.113.7", 69)) and spin_limit(BUSY_POLL, ("203.0.113.7", 69)) is None


@pytest.mark.parametrize(("busy_poll", "limit"), [(None, "local"), (0.0005, 0.0005)])
def test_a_client_of_a_server_on_this_machine_spins_at_most_the_local_limit(tmp_path, monkeypatch,
                                                                            busy_poll, limit) -> None:
    import os

    from tftpdiag.engine import client_loop
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.engine.client import ClientRequest, ClientTransfer
    from tftpdiag.engine.server import ServerConfig, TftpServer
    from tftpdiag.engine.spin import BUSY_POLL, LOCAL_SPIN

    if BUSY_POLL <= LOCAL_SPIN:
        pytest.skip("one CPU: this machine never spins")
    made: list[BusyPoll] = []

    class Recorded(BusyPoll):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(client_loop, "BusyPoll", Recorded)
    (tmp_path / "a.bin").write_bytes(os.urandom(5000))
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        extra = {} if busy_poll is None else {"busy_poll": busy_poll}
        request = ClientRequest("127.0.0.1", "a.bin", port=server.addresses[0][1], **extra)
        assert ClientTransfer(request, EventBus()).run().ok
    assert [poll.limit for poll in made] == [LOCAL_SPIN if limit == "local" else limit]


def test_the_time_a_wait_may_spin_again() -> None:
    """resume_at: what the loops compare their clock with before asking a BusyPoll anything."""
    import math

    assert BusyPoll(Reads(empty=0), budget=0.0).resume_at == math.inf  # off: never
    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay, crowded=never)
    with poll:
        assert poll.resume_at <= clock.now
        peer.starved = True
        spin(poll, peer, spinning._MISSED)
        assert poll.pauses == 1 and poll.resume_at > clock.now
        clock.now = poll.resume_at
        peer.starved = False
        assert poll(1.0) == b"datagram" and poll.resume_at <= clock.now


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_paused_spin_costs_the_loops_waits_nothing(tmp_path, monkeypatch, side: str) -> None:
    """Paused (or off), a BusyPoll is neither asked nor told of a wait: windowed, 32 MiB beside a
    CPU-bound program, a call and a report a wait on each end, paused, measured 1.4% of the transfer
    (see engine/spin.py's resume_at)."""
    import math
    import os

    from tftpdiag.engine import client_loop, server
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.engine.client import ClientRequest, ClientTransfer
    from tftpdiag.engine.server import ServerConfig, TftpServer
    from tftpdiag.protocol.options import RequestedOptions

    counted: list[Counted] = []

    class Counted(BusyPoll):
        """Paused for good as its loop starts; counts what the loop asks and tells it."""

        asked = told = 0

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            counted.append(self)

        def __enter__(self) -> Counted:
            super().__enter__()
            self.resume_at = math.inf
            return self

        def __call__(self, wait: float) -> object:
            self.asked += 1
            return super().__call__(wait)

        def waited(self, seconds: float) -> None:
            self.told += 1
            super().waited(seconds)

    monkeypatch.setattr(client_loop if side == "client" else server, "BusyPoll", Counted)
    data = os.urandom(512 * 200)
    (tmp_path / "a.bin").write_bytes(data)
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0, busy_poll=0.0002), EventBus()) as srv:
        request = ClientRequest("127.0.0.1", "a.bin", port=srv.addresses[0][1], busy_poll=0.0002,
                                options=RequestedOptions(windowsize=4), output=tmp_path / "out.bin")
        assert ClientTransfer(request, EventBus()).run().ok
    assert (tmp_path / "out.bin").read_bytes() == data
    assert len(counted) == 1 and (counted[0].asked, counted[0].told) == (0, 0)


@pytest.mark.parametrize("case", ["quiet", "waited", "crowded", "unread", "view"])
def test_a_fresh_loop_spins_once_its_first_moments_show_no_contention(case: str) -> None:
    """Beside a CPU-bound program a fresh client's first spins all missed: 1.6 ms of a CPU its server
    needed, some 2% of a windowed 32 MiB transfer. A loop does not spin for its first _FIRST_SPIN,
    and then only if it did not wait for a CPU through it and the machine is not crowded; else it is
    paused as any pause is. Where its wait cannot be read, or is judged over the view's longer span,
    it spins from the start."""
    clock = Clock()
    peer = Peer(clock)
    delay = Delay(clock, share=0.3 if case == "waited" else 0.03)  # (measured: 25-29% loaded, 3-7% quiet)
    delay.shared = case == "view"  # type: ignore[attr-defined]
    asked = Crowded(case == "crowded")
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=no_delay if case == "unread" else lambda: delay,
                    crowded=asked)
    with poll:
        if case in ("unread", "view"):
            assert spin(poll, peer, 3) == [b"datagram"] * 3 and poll.pauses == 0
            return
        assert poll.resume_at == clock.now + spinning._FIRST_SPIN and not poll.may_spin(clock.now)
        clock.now += spinning._FIRST_SPIN - 0.0001
        assert spin(poll, peer, 3) == [None] * 3 and peer.reads == 0 and asked.asked == 0  # not even a look
        clock.now += 0.0001
        got = spin(poll, peer, 3)
        if case == "quiet":
            assert got == [b"datagram"] * 3 and poll.pauses == 0 and poll.may_spin(clock.now)
        else:
            assert got == [None] * 3 and peer.reads == 0 and poll.pauses == 1
            assert poll.resume_at == clock.now + spinning._PAUSE_MIN


@pytest.mark.parametrize("last", ["contention", "none"])
def test_a_loop_woken_after_contention_judges_its_first_moments_again(last: str) -> None:
    """A server's pause that ends between sessions is judged by a span in which its thread slept (no
    wait for a CPU, busy machine or not): beside a CPU-bound program each session began spinning. Woken
    with contention its last sign, a loop starts over (no spin for _FIRST_SPIN, then judged); with a
    look that found none last, it spins at once."""
    clock = Clock()
    peer = Peer(clock)
    delay = Delay(clock, share=0.0)
    poll = BusyPoll(peer, budget=0.0002, clock=clock, delay_source=lambda: delay, crowded=never)
    with poll:
        started(clock, delay)
        if last == "contention":
            peer.starved = True
            spin(poll, peer, spinning._CHECK_EVERY)
            assert poll.pauses == 1
            peer.starved = False
        else:
            spin(poll, peer, spinning._CHECK_EVERY)
        clock.now += 5.0  # idle, long past the pause
        delay()
        delay.share = 0.3  # the new session's first moments: a CPU-bound program beside it
        poll.woken()
        reads = peer.reads
        got = spin(poll, peer, 3)
        if last == "none":
            assert got == [b"datagram"] * 3 and poll.pauses == 0
            return
        assert got == [None] * 3 and peer.reads == reads and poll.resume_at == clock.now + spinning._FIRST_SPIN
        clock.now += spinning._FIRST_SPIN
        assert spin(poll, peer, 3) == [None] * 3 and peer.reads == reads and poll.pauses == 2  # judged: paused


def test_a_server_wakes_its_spin_as_a_session_begins_on_it_idle(tmp_path, monkeypatch) -> None:
    """One call per session begun on an idle server (see BusyPoll.woken)."""
    import os

    from tests.support.peers import wait_until
    from tftpdiag.engine import server
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.engine.client import ClientRequest, ClientTransfer
    from tftpdiag.engine.server import ServerConfig, TftpServer

    woken: list[int] = []

    class Counted(BusyPoll):
        def woken(self) -> None:
            woken.append(1)
            super().woken()

    monkeypatch.setattr(server, "BusyPoll", Counted)
    (tmp_path / "a.bin").write_bytes(os.urandom(3000))
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as srv:
        for _ in range(2):
            request = ClientRequest("127.0.0.1", "a.bin", port=srv.addresses[0][1])
            assert ClientTransfer(request, EventBus()).run().ok
            # (the server ends its session just after the client's last ACK: the next begins on it idle)
            wait_until(lambda: not srv._sessions, 10, "the server to end the session")
    assert len(woken) == 2
