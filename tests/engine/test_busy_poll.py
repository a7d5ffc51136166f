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
    from tftpdiag.engine import net

    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock)
    with poll:
        assert spin(poll, peer, net._CHECK_EVERY) == [b"datagram"] * net._CHECK_EVERY and poll.pauses == 0
        peer.starved = True
        spin(poll, peer, net._CHECK_EVERY)
        assert poll.pauses == 1
        reads = peer.reads
        assert spin(poll, peer, 10) == [None] * 10 and peer.reads == reads  # paused: not even a look
        clock.now += net._PAUSE_MIN
        spin(poll, peer, net._CHECK_EVERY)  # still starved: paused again, for twice as long
        assert poll.pauses == 2
        clock.now += net._PAUSE_MIN
        reads = peer.reads
        spin(poll, peer, 5)
        assert peer.reads == reads, "the second pause is twice as long"
        clock.now += net._PAUSE_MIN
        peer.starved = False
        assert spin(poll, peer, 3 * net._CHECK_EVERY) == [b"datagram"] * (3 * net._CHECK_EVERY)
        assert poll.pauses == 2


def test_a_miss_now_and_then_does_not_stop_spinning() -> None:
    from tftpdiag.engine import net

    clock = Clock()
    peer = Peer(clock)
    poll = BusyPoll(peer, budget=0.0002, clock=clock)
    with poll:
        for i in range(10 * net._CHECK_EVERY):
            peer.starved = i % 8 == 0  # one in eight spins misses: below the quarter that means contention
            poll(1.0)
            poll.waited(0.0001)
    assert poll.pauses == 0
