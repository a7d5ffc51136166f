"""BusyPoll: a loop spins for the next datagram only while the peer answers faster than the budget."""

from __future__ import annotations

import socket

import pytest

from tftpdiag.engine.net import BusyPoll


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
    with BusyPoll(first, budget=1.0) as one:
        assert one(10.0) == b"datagram"
        with BusyPoll(second, budget=1.0) as two:
            assert one(10.0) is None and two(10.0) is None
        assert one(10.0) == b"datagram"
    assert second.calls == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_thread_preempted_while_it_spins_stops_spinning_for_a_while() -> None:
    """Another program wants this CPU (the thread was preempted twice in 64 spins): spinning would
    starve the peer, so it pauses, twice as long each time contention is seen again, and comes back."""
    from tftpdiag.engine import net

    clock, preempted = Clock(), [0]
    read = Reads(empty=0)
    poll = BusyPoll(read, budget=0.001, preempted=lambda: preempted[0], clock=clock)
    with poll:
        for _ in range(net._CHECK_EVERY - 1):
            assert poll(1.0) == b"datagram"
        preempted[0] += net._PREEMPTED
        reads = read.calls
        assert poll(1.0) is None and read.calls == reads and poll.pauses == 1  # the 64th spin: contended
        clock.now += net._PAUSE_MIN - 0.01
        assert poll(1.0) is None and read.calls == reads  # still paused
        clock.now += 0.02
        assert poll(1.0) == b"datagram"  # back, and looking again
        for _ in range(net._CHECK_EVERY - 2):
            poll(1.0)
        preempted[0] += net._PREEMPTED
        assert poll(1.0) is None and poll.pauses == 2
        clock.now += net._PAUSE_MIN + 0.01
        assert poll(1.0) is None, "the second pause is twice as long"
        clock.now += net._PAUSE_MIN
        for _ in range(net._CHECK_EVERY):  # a quiet spell: no preemption, spinning goes on
            assert poll(1.0) == b"datagram"
        assert poll.pauses == 2


def test_a_preemption_now_and_then_does_not_stop_spinning() -> None:
    from tftpdiag.engine import net

    preempted = [0]
    poll = BusyPoll(Reads(empty=0), budget=0.001, preempted=lambda: preempted[0], clock=Clock())
    with poll:
        for i in range(10 * net._CHECK_EVERY):
            if i % net._CHECK_EVERY == 7:
                preempted[0] += 1
            assert poll(1.0) == b"datagram"
    assert poll.pauses == 0


def test_the_thread_counts_its_own_preemptions() -> None:
    from tftpdiag.engine.net import preemptions

    first = preemptions()
    assert isinstance(first, int) and preemptions() >= first
