"""A machine that keeps its DATA and ACK in columns (Session.record_runs, protocol/runs.py) gives, once
its runs are expanded, exactly the events it gives one by one: every path a packet takes, over a
network that loses, duplicates and reorders, windowed, in netascii, across a rollover."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from tests.support.machines import CLIENT, ack, client_read, data, server_read
from tests.support.simnet import Impairment, run_transfer
from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams, expand, pack, unpack
from tftpdiag.protocol.events import Completed, Event, PacketReceived, PacketRun, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.runs import HOLD
from tftpdiag.protocol.timer import Timing

TOUGH = Timing(retries=15, max_timeout=1.0, dally=10.0)


def by_session(events: list[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = defaultdict(list)
    for event in expand(events):
        out[getattr(event, "session", -1)].append(event)
    return dict(out)


def both_ways(direction: str, payload: bytes, **kw: object) -> tuple[list[Event], list[Event]]:
    plain = run_transfer(direction, payload, **kw)  # type: ignore[arg-type]
    runs = run_transfer(direction, payload, runs=True, **kw)  # type: ignore[arg-type]
    assert isinstance(runs.client.result, Completed), runs.client.result
    return plain.events, runs.events


@pytest.mark.parametrize("seed", [None, 1, 2])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("window", [1, 8])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_runs_expand_to_the_events_one_by_one(direction, window, mode, seed):
    rng = random.Random(window * 7 + (seed or 0))
    payload = bytes(rng.randrange(256) for _ in range(512 * 150 + 33))
    if mode == "netascii":
        payload = payload.replace(b"\x00", b"\r").replace(b"\x01", b"\n")  # CR NUL, CR LF, bare LF on the wire
    impair = Impairment(loss=0.2, dup=0.1, reorder=0.1, jitter=0.002, seed=seed) if seed else Impairment()
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None, tsize=True)
    plain, runs = both_ways(direction, payload, options=options, mode=mode, impairment=impair,
                            client_timing=TOUGH, server_timing=TOUGH)
    assert by_session(runs) == by_session(plain)
    packed = [e for e in runs if type(e) is PacketRun]
    # Most packets went in runs, and runs of many packets: not a run a turn.
    in_runs = sum(map(len, packed))
    one_by_one = sum(1 for e in runs if type(e) in (PacketSent, PacketReceived))
    assert in_runs > 10 * one_by_one
    if seed is None:  # (on a lossy network, retransmits and timeouts cut the runs short)
        assert max(map(len, packed)) >= HOLD


def test_runs_across_a_rollover_windowed():
    payload = bytes((i * 13) & 0xFF for i in range(65_540 * 8 + 5))
    options = RequestedOptions(blksize=8, windowsize=16)
    plain, runs = both_ways("read", payload, options=options)
    assert by_session(runs) == by_session(plain)
    assert any(0 in e.blocks for e in runs if type(e) is PacketRun)  # the wrap is inside the runs


def test_a_run_held_back_until_it_is_long_enough_or_everything_is_asked_for():
    content = bytes(512 * (2 * HOLD + 10))
    server = server_read(content)
    server.record_runs()
    server.settled_events()  # what came before: the request's, DATA 1
    for block in range(1, HOLD // 2):  # an ACK in, a DATA out: fewer than HOLD packets
        server.receive(ack(block), CLIENT, block / 1000)
        assert server.settled_events() == []
    held = server.events()  # everything: the run closed as it stood
    assert [type(e) for e in held] == [PacketRun] and len(held[0]) == HOLD - 2
    for block in range(HOLD // 2, HOLD):
        server.receive(ack(block), CLIENT, block / 1000)
    settled = server.settled_events()
    assert [type(e) for e in settled] == [PacketRun] and len(settled[0]) == HOLD
    assert server.settled_events() == []


def test_a_receiver_s_runs_carry_its_datagrams_times_and_notes():
    server = ("127.0.0.1", 6000)
    got = []
    for runs in (False, True):
        client, _ = client_read()
        if runs:
            client.record_runs()
        client.receive(data(1, b"a" * 512), server, 1.0)
        client.receive(data(1, b"a" * 512), server, 1.5)  # a duplicate: noted, and ACKed again
        client.receive(data(2, b"b" * 100), server, 2.0)
        got.append(client.events())
    plain, runs = got
    assert list(expand(runs)) == plain
    packed = [e for e in runs if type(e) is PacketRun]
    assert [list(e.blocks) for e in packed] == [[1], [1, 1, 1, 2], [2]]
    assert [e.time for e in packed] == [1.0, 1.0, 2.0]
    assert packed[1].joined == b"\x00\x04\x00\x01" + data(1, b"a" * 512) + b"\x00\x04\x00\x01" + data(2, b"b" * 100)


def test_a_machine_s_run_goes_to_the_store_not_through_the_pipe(tmp_path):
    store = DatagramStore(str(tmp_path / "store"))
    content = bytes(range(256)) * 20
    server = server_read(content)
    server.record_runs()
    for block in range(1, 11):
        server.receive(ack(block), CLIENT, block / 100)
    events = server.events()
    blob = pack(events, store)
    assert len(blob) < len(content) // 2  # the datagrams went to the file
    back = unpack(blob)
    assert any(type(e) is PacketRun and type(e.joined) is StoredDatagrams for e in back)
    assert list(expand(back)) == list(expand(events))
