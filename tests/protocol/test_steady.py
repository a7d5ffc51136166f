"""Steady lock-step turns (protocol/steady.py): taken without the machine and then settled, they leave
everything as the machine would have: the events (every packet, every Progress where it falls), what was
stored, the counters, the retransmit timer. Over a network that loses, duplicates and reorders, in both
directions, in netascii and across a rollover; and what a steady object turns down, one rule at a time."""

from __future__ import annotations

import random
from array import array

import pytest

from tests.protocol.test_runs import by_session
from tests.support.machines import CLIENT, SERVER, ack, client_read, data, server_read
from tests.support.simnet import Impairment, SimResult, run_transfer
from tftpdiag.protocol.events import Completed, PacketRun, Progress
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.runs import HOLD
from tftpdiag.protocol.steady import BYTES, TURNS, SteadyReceive, SteadySend, room_for
from tftpdiag.protocol.timer import RetransmitTimer, Timing


def _state(result: SimResult) -> list[tuple]:
    """What each machine ends with, besides its events: counters, timer, where it stopped."""
    out = []
    for machine in (result.client, *result.servers):
        timer = machine._timer
        out.append((machine.state, machine.stats(result.end_time), timer.srtt, timer.rttvar, timer.base,
                     timer.samples, timer.skip, timer.attempt, machine.next_timeout()))
    return out


def both(direction: str, payload: bytes, **kw: object) -> tuple[SimResult, SimResult]:
    runs = run_transfer(direction, payload, runs=True, **kw)  # type: ignore[arg-type]
    steady = run_transfer(direction, payload, steady=True, **kw)  # type: ignore[arg-type]
    assert isinstance(steady.client.result, Completed), steady.client.result
    return runs, steady


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_steady_turns_leave_what_the_machine_would_have(direction, mode, seed):
    rng = random.Random(seed or 0)
    payload = bytes(rng.randrange(256) for _ in range(512 * 300 + 77))
    if mode == "netascii":
        payload = payload.replace(b"\x00", b"\r").replace(b"\x01", b"\n")
    impair = Impairment(loss=0.1, dup=0.1, reorder=0.1, jitter=0.002, seed=seed) if seed else Impairment()
    options = RequestedOptions(blksize=512, tsize=True)
    timing = Timing(retries=15, max_timeout=1.0, dally=10.0, progress_interval=0.05)
    runs, steady = both(direction, payload, options=options, mode=mode, impairment=impair,
                        client_timing=timing, server_timing=timing)
    assert by_session(steady.events) == by_session(runs.events)
    assert steady.received == runs.received == (payload if direction == "read" else b"")
    assert steady.stored == runs.stored
    assert _state(steady) == _state(runs)
    assert any(type(e) is Progress for e in steady.events)  # (the turns that report it were the machine's)
    if seed is None:  # on a clean network nearly every turn is steady (a netascii receiver's never are)
        blocks = len(payload) // 512 + 1
        assert steady.steady_turns > (0.45 if mode == "netascii" else 0.9) * blocks


def test_steady_turns_across_a_rollover():
    payload = bytes((i * 13) & 0xFF for i in range(65_540 * 8 + 5))
    options = RequestedOptions(blksize=8)
    runs, steady = both("read", payload, options=options)
    assert by_session(steady.events) == by_session(runs.events)
    assert steady.received == payload
    assert _state(steady) == _state(runs)
    assert steady.steady_turns > 0.9 * (len(payload) // 8)
    assert any(0 in e.blocks for e in steady.events if type(e) is PacketRun)


def test_steady_turns_of_a_server_that_wraps_to_one():
    payload = bytes(8 * 65_540)
    options = RequestedOptions(blksize=8)
    runs, steady = both("read", payload, options=options, server_timing=Timing(rollover=1))
    assert by_session(steady.events) == by_session(runs.events)
    assert steady.received == payload


def test_the_retransmit_timer_counts_turns_as_one_answer_and_one_packet_each():
    times = [i * 0.001 + (i % 7) * 0.0003 for i in range(1, 200)]
    for adaptive in (True, False):
        one, many = (RetransmitTimer(Timing(adaptive=adaptive), 0.0) for _ in range(2))
        for timer in (one, many):
            timer.start_sample(0.0)
        for t in times:
            one.end_sample(t)
            one.start_sample(t)
        many.turns(array("d", times))
        names = RetransmitTimer.__slots__
        assert [getattr(one, n) for n in names] == [getattr(many, n) for n in names]


def _receiver(blksize: int = 512) -> tuple:
    client, _ = client_read(options=RequestedOptions(blksize=blksize))
    client.record_runs()
    client.receive(b"\x00\x06blksize\x00" + str(blksize).encode() + b"\x00", SERVER, 0.0)  # OACK: ACK 0 goes
    client.receive(data(1, bytes(blksize)), SERVER, 0.0)  # the transfer under way: ACK 1 goes
    client.datagrams_to_send()
    return client


def test_a_receiver_s_steady_object_takes_only_the_next_full_block():
    client = _receiver()
    steady = client.steady()
    assert type(steady) is SteadyReceive and steady.peer == SERVER and steady.room == room_for(512) == TURNS
    client.received()
    assert steady.take(data(3, bytes(512)), 0.01) is None  # a block ahead
    assert steady.take(data(2, bytes(511)), 0.01) is None  # short: the last block, the machine's
    assert steady.take(b"\x00\x05\x00\x01oops\x00", 0.01) is None  # an ERROR
    assert steady.take(data(2, b"x" * 512), 0.01) == ack(2)
    assert steady.take(data(2, b"x" * 512), 0.02) is None  # a duplicate
    assert steady.take(data(3, b"y" * 512), 0.02) == ack(3)
    assert len(steady) == 2
    client.settle(steady)
    assert client.blocks == 3 and client.bytes == 1536 and client.received() == [b"x" * 512, b"y" * 512]
    client.handle_timeout(client.next_timeout())  # the ACK a timeout repeats is the last one sent
    assert client.datagrams_to_send() == [(ack(3), SERVER)]


def test_a_steady_object_leaves_the_turn_that_reports_progress_to_the_machine():
    client = _receiver()
    steady = client.steady()
    interval = client.timing.progress_interval
    assert steady.take(data(2, bytes(512)), interval / 2) == ack(2)
    assert steady.take(data(3, bytes(512)), interval) is None


def test_a_receiver_takes_no_steady_turns_near_a_limit_or_the_wrap():
    client = _receiver(blksize=8)
    client._expected = 65_530  # (the wire's 65530: six blocks before the wrap)
    assert client.steady().room == 6
    client._expected = 2
    client._max_bytes = 8 * 6 + 3
    client._bounds_changed()
    assert client.steady().room == 5  # (8 bytes in) a sixth block would cross the limit: the machine checks it
    client.bytes = 8 * 6
    assert client.steady() is None


def test_no_steady_turns_without_runs_in_a_window_or_before_the_transfer():
    client, _ = client_read()
    assert client.steady() is None  # requesting
    client.receive(data(1, bytes(512)), SERVER, 0.0)
    assert client.steady() is None  # not recording runs
    windowed, _ = client_read(options=RequestedOptions(windowsize=4))
    windowed.record_runs()
    windowed.receive(b"\x00\x06windowsize\x004\x00", SERVER, 0.0)
    assert windowed.steady() is None


def test_a_steady_object_s_room_is_bounded_in_turns_and_in_bytes():
    assert room_for(512) == room_for(1468) == TURNS
    assert room_for(8192) == BYTES // 8192 < TURNS  # what a sender prepares ahead stays within BYTES
    assert room_for(65464) == HOLD  # never fewer turns than a run's packets
    client = _receiver(blksize=8192)
    steady = client.steady()
    assert steady is not None and steady.room == room_for(8192)
    content = bytes(8192 * 200)
    server = server_read(content, ("blksize", "8192"))
    server.record_runs()
    server.receive(ack(0), CLIENT, 0.0)  # the OACK acknowledged: DATA 1 goes
    server.datagrams_to_send()
    server.receive(ack(1), CLIENT, 0.001)  # DATA 2 goes
    server.datagrams_to_send()
    server.prefetch()
    steady = server.steady()
    assert type(steady) is SteadySend and steady.room == room_for(8192)


def test_a_sender_s_steady_object_answers_the_ack_of_the_block_in_flight():
    content = bytes(range(256)) * 2 * 100  # 100 blocks of 512
    server = server_read(content)
    server.record_runs()
    server.receive(ack(1), CLIENT, 0.001)  # DATA 2 goes: one block in flight
    server.datagrams_to_send()
    steady = server.steady()
    assert type(steady) is SteadySend and steady.room == 99 < room_for(512)  # DATA 3 to 101 (empty, the last)
    assert steady.take(ack(1), 0.002) is None  # a duplicate of the last one answered
    assert steady.take(ack(3), 0.002) is None  # ahead of what was sent
    assert steady.take(ack(2) + b"\x00", 0.002) is None  # not an ACK as sent
    answer = steady.take(ack(2), 0.002)
    assert answer == data(3, content[1024:1536])
    server.settle(steady)
    assert server.blocks == 2 and server.bytes == 1024
    server.handle_timeout(server.next_timeout())  # a timeout resends the block in flight: DATA 3
    assert [raw for raw, _ in server.datagrams_to_send()] == [data(3, content[1024:1536])]


def test_a_sender_never_answers_the_last_block_s_ack_steadily():
    content = bytes(512 * 3 + 10)  # four blocks, the last short
    server = server_read(content)
    server.record_runs()
    server.receive(ack(1), CLIENT, 0.001)
    server.datagrams_to_send()
    steady = server.steady()
    assert steady.room == 2  # DATA 3 and 4; the ACK of 4 ends the transfer: the machine's
    assert steady.take(ack(2), 0.002) is not None
    assert steady.take(ack(3), 0.003) == data(4, bytes(10))
    assert steady.take(ack(4), 0.004) is None
    server.settle(steady)
    server.receive(ack(4), CLIENT, 0.004)
    assert isinstance(server.result, Completed) and server.bytes == len(content)


@pytest.mark.parametrize("side", ["receiver", "sender"])
def test_no_timeout_falls_due_before_quiet_until(side: str) -> None:
    """Session.quiet_until, asked while a steady object is out: its last turn plus the shortest wait the
    timer can give once the turns are settled (their round trips sampled: here the estimate drops from
    the initial 1 s to min_timeout); the deadline the machine then sets is never sooner. None before
    any turn."""
    timing = Timing(initial_timeout=1.0, min_timeout=0.1)
    if side == "receiver":
        machine, _ = client_read(options=RequestedOptions(blksize=512), timing=timing)
        machine.record_runs()
        machine.receive(b"\x00\x06blksize\x00512\x00", SERVER, 0.0)
        machine.receive(data(1, bytes(512)), SERVER, 0.0)
        turns = [(data(n, bytes(512)), 0.001 * n) for n in range(2, 6)]
    else:
        machine = server_read(bytes(512 * 100), timing=timing)
        machine.record_runs()
        machine.receive(ack(1), CLIENT, 0.001)
        turns = [(ack(n), 0.001 * n) for n in range(2, 6)]
    machine.datagrams_to_send()
    steady = machine.steady()
    assert steady is not None and machine.quiet_until(steady) is None
    for datagram, now in turns:
        assert steady.take(datagram, now) is not None
    quiet = machine.quiet_until(steady)
    assert quiet == turns[-1][1] + 0.1
    machine.settle(steady)
    deadline = machine.next_timeout()
    assert deadline is not None and deadline >= quiet
    assert deadline == pytest.approx(quiet)  # (the bound is the one the settled timer sets here)
