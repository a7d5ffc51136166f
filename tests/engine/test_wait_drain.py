"""A subscription drained by an engine's waits and a reader's tick (engine/wait_drain.py): the rule the
headless summary's fold and the packing of a transfer run apart share."""

from __future__ import annotations

import threading
from array import array

import pytest

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.wait_drain import BEHIND, ENOUGH, WaitDrain
from tftpdiag.protocol.events import RUN_ACK, RUN_RECEIVED, Event, PacketReceived, PacketRun
from tftpdiag.protocol.packets import Ack


def packets(first: int, count: int) -> list[Event]:
    return [PacketReceived(1, float(n), ("127.0.0.1", 1), ("127.0.0.1", 2), b"\x00\x04\x00\x01", Ack(n % 65536))
            for n in range(first, first + count)]


class Taker:
    """What a drain's work saw, batch by batch, and in which thread."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.threads: list[str] = []

    def __call__(self, events: list[Event]) -> None:
        self.batches.append(events)
        self.threads.append(threading.current_thread().name)

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]


def test_a_wait_takes_nothing_until_enough_wait_then_everything() -> None:
    bus = EventBus()
    taker = Taker()
    WaitDrain(bus, bus.subscribe(), taker)
    few = packets(0, ENOUGH - 1)
    bus.publish(few)
    bus.idle()  # too few to be worth the work's fixed cost
    assert taker.batches == []
    # However many wait: waits grown rare (a CPU-bound neighbour) must not leave a backlog behind them.
    more = packets(ENOUGH - 1, 3 * BEHIND)
    bus.publish(more)
    bus.idle()
    assert taker.batches == [few + more]


def test_the_reader_leaves_the_few_to_the_waits_while_they_take_turns() -> None:
    bus = EventBus()
    taker = Taker()
    drain = WaitDrain(bus, bus.subscribe(), taker)
    bus.publish(packets(0, ENOUGH))
    bus.idle()
    bus.publish(packets(ENOUGH, 1))
    with drain.lock:
        drain.catch_up()  # a wait took a turn since: the one left is the next wait's
    assert len(taker.events) == ENOUGH
    with drain.lock:
        drain.catch_up()  # no wait since its last turn: the engine waits no more, the reader takes it
    assert taker.events == packets(0, ENOUGH + 1)


def test_the_reader_takes_a_backlog_the_waits_left_and_everything_when_asked_or_closed() -> None:
    bus = EventBus()
    taker = Taker()
    drain = WaitDrain(bus, bus.subscribe(), taker)
    sent = packets(0, ENOUGH)
    bus.publish(sent)
    bus.idle()
    behind = packets(ENOUGH, BEHIND)
    bus.publish(behind)  # the engine read that much without a wait
    with drain.lock:
        drain.catch_up()
    assert taker.events == sent + behind
    bus.publish(packets(0, ENOUGH))
    bus.idle()
    bus.publish(packets(1, 1))
    with drain.lock:
        drain.catch_up(everything=True)
    assert bus.idle_tasks and taker.batches[-1] == packets(1, 1)
    drain.close()
    assert bus.idle_tasks == ()
    bus.publish(packets(2, 1))
    bus.idle()
    with drain.lock:
        drain.catch_up()  # closed: the waits take no turns, the reader takes it all at every turn
    assert taker.batches[-1] == packets(2, 1)


def test_the_engine_never_waits_for_the_readers_lock() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    taker = Taker()
    drain = WaitDrain(bus, sub, taker)
    bus.publish(packets(0, ENOUGH + 10))
    with drain.lock:  # the reader is taking (or printing)
        engine = threading.Thread(target=bus.idle, name="engine")
        engine.start()
        engine.join(5)
        assert not engine.is_alive()  # it did not wait: it skipped its turn
        assert sub.pending() == ENOUGH + 10
    bus.idle()
    assert sub.pending() == 0 and taker.events == packets(0, ENOUGH + 10)


def test_work_that_fails_in_the_engine_is_raised_in_the_reader_and_the_waits_stop_helping() -> None:
    bus = EventBus()

    def broken(events: list[Event]) -> None:
        raise ValueError("cannot take these")

    drain = WaitDrain(bus, bus.subscribe(), broken)
    bus.publish(packets(0, ENOUGH))
    bus.idle()  # never raises into the engine: the transfer goes on
    assert bus.idle_tasks == ()
    with drain.lock, pytest.raises(ValueError, match="cannot take these"):
        drain.catch_up()


def _run(count: int) -> PacketRun:
    """A run of ``count`` ACKs received, in columns (what steady lock-step turns publish)."""
    raw = b"\x00\x04\x00\x01"
    return PacketRun(1, ("127.0.0.1", 1), ("127.0.0.1", 2), bytes([RUN_RECEIVED | RUN_ACK]) * count,
                     array("d", [1.0] * count), array("H", [1] * count), array("H", [4] * count), raw * count)


def test_a_run_of_enough_packets_is_taken_at_once_and_a_window_s_waits() -> None:
    bus = EventBus()
    taker = Taker()
    drain = WaitDrain(bus, bus.subscribe(), taker)
    window = _run(17)  # a window of 16 and its ACK: one item, too few packets to be worth a turn
    bus.publish([window])
    bus.idle()
    assert taker.batches == []
    steady = _run(2 * ENOUGH)  # one item, but as many packets as ENOUGH events
    bus.publish([steady])
    bus.idle()
    assert taker.batches == [[window, steady]]
    with drain.lock:
        assert drain.catch_up() is False  # the wait did the work: nothing for the reader's thread
    bus.publish([_run(3)])
    with drain.lock:
        assert drain.catch_up() is True  # no wait took a turn since: the reader takes what waits
