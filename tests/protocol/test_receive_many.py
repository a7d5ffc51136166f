"""receive_many(): a run of datagrams (a window the kernel coalesced, UDP GRO) must leave a receiving
machine exactly as receive() taking them one by one would: same events in the same order, same
datagrams to send, same counters, same bytes stored, whatever the run holds (gaps, repeats, junk,
the last block, a failing store). The caller stores what the machine took after each run either way,
as the engine does after a burst. A run's events are deferred and made by events(); one by one, each
is made at once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.machines import CLIENT, SERVER, STRAY, TID, MemorySink, data, oack
from tftpdiag.engine.files import store_received
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import ErrorCode
from tftpdiag.protocol.session import StorageError
from tftpdiag.protocol.timer import Timing


class FailingSink(MemorySink):
    """A sink whose ``fail_at``-th store fails (a full disk)."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.writes = 0

    def store(self, chunks: list[bytes]) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise StorageError(ErrorCode.DISK_FULL, "disk full: No space left on device")
        super().store(chunks)


def machine(blksize: int, windowsize: int, fail_at: int | None, progress: float) -> tuple[ClientRead, FailingSink]:
    sink = FailingSink(fail_at)
    options = RequestedOptions(blksize=blksize, windowsize=windowsize if windowsize > 1 else None)
    read = ClientRead(1, filename="boot.img", server=SERVER, local=CLIENT, now=0.0, options=options,
                      timing=Timing(dally=0.0, progress_interval=progress))
    read.datagrams_to_send()
    granted = [("blksize", str(blksize))] + ([("windowsize", str(windowsize))] if windowsize > 1 else [])
    read.receive(oack(*granted), TID, 0.001)
    return read, sink


def state(read: ClientRead, sink: FailingSink) -> tuple:
    return (read.state, read.bytes, read.blocks, read.packets_received, read.packets_sent, read.duplicates,
            read.out_of_order, read.stray, read._expected, read._since_ack, read.next_timeout(), sink.getvalue())


@st.composite
def streams(draw: st.DrawFn) -> tuple:
    blksize = draw(st.sampled_from([8, 16, 512]))
    windowsize = draw(st.sampled_from([1, 2, 4, 16]))
    blocks = draw(st.integers(1, 40))
    tail = draw(st.integers(0, blksize - 1))  # the last block's size (0: an empty block ends the file)
    content = draw(st.binary(min_size=(blocks - 1) * blksize + tail, max_size=(blocks - 1) * blksize + tail))
    chunks = [content[i * blksize:(i + 1) * blksize] for i in range(blocks - 1)] + [content[(blocks - 1) * blksize:]]
    wire: list[tuple[bytes, ev.Address]] = []
    ops = draw(st.lists(st.sampled_from(["ok", "ok", "ok", "ok", "dup", "skip", "swap", "junk", "stray"]),
                        min_size=blocks, max_size=blocks))
    n = 0
    while n < blocks:
        op = ops[n]
        this = (data((n + 1) & 0xFFFF, chunks[n]), TID)
        if op == "skip":
            n += 1
            continue
        if op == "swap" and n + 1 < blocks:
            wire += [(data((n + 2) & 0xFFFF, chunks[n + 1]), TID), this]
            n += 2
            continue
        wire.append(this)
        if op == "dup":
            wire.append(this)
        elif op == "junk":
            wire.append((b"\x00\x03\x00", TID))  # too short to be DATA
        elif op == "stray":
            wire.append((data((n + 1) & 0xFFFF, chunks[n]), STRAY))
        n += 1
    # The same stream again after a gap: what a sender resends after a timeout.
    if draw(st.booleans()):
        wire += [(data((i + 1) & 0xFFFF, chunks[i]), TID) for i in range(blocks)]
    # Cut into runs: a run holds datagrams of one source, as the kernel coalesces only one flow.
    runs: list[tuple[list[bytes], ev.Address]] = []
    for raw, addr in wire:
        if runs and runs[-1][1] == addr and not draw(st.booleans()):
            runs[-1][0].append(raw)
        else:
            runs.append(([raw], addr))
    fail_at = draw(st.none() | st.integers(1, blocks + 2))
    progress = draw(st.sampled_from([0.0, 0.00025, 1.0]))
    return blksize, windowsize, runs, fail_at, progress


@settings(max_examples=300, deadline=None)
@given(streams())
def test_a_run_does_what_its_datagrams_one_by_one_do(stream: tuple) -> None:
    blksize, windowsize, runs, fail_at, progress = stream
    compare_runs(machine(blksize, windowsize, fail_at, progress), machine(blksize, windowsize, fail_at, progress),
                 runs)


def compare_runs(one: tuple[ClientRead, FailingSink], many: tuple[ClientRead, FailingSink],
                 runs: list[tuple[list[bytes], ev.Address]]) -> None:
    """Feed ``one`` each datagram by itself and ``many`` each run at once; after every run both must
    have sent, recorded and counted the same."""
    (one_m, one_sink), (many_m, many_sink) = one, many
    for k, (run, addr) in enumerate(runs):
        now = 0.01 + k * 0.0001
        for raw in run:
            one_m.receive(raw, addr, now)
        many_m.receive_many(run, addr, now)
        store_received(one_m, one_sink, now)
        store_received(many_m, many_sink, now)
        assert many_m.datagrams_to_send() == one_m.datagrams_to_send()
        assert many_m.events() == one_m.events()
        assert state(many_m, many_sink) == state(one_m, one_sink)


def test_the_ack_of_a_window_follows_its_data_events() -> None:
    read, sink = machine(8, 4, None, 1.0)
    read.events(), read.datagrams_to_send()
    run = [data(n, bytes([n]) * 8) for n in range(1, 5)]
    read.receive_many(run, TID, 0.5)
    assert [raw for raw, _ in read.datagrams_to_send()] == [b"\x00\x04\x00\x04"]
    store_received(read, sink, 0.5)
    events = read.events()
    assert [type(e) for e in events] == [ev.PacketReceived] * 4 + [ev.PacketSent]
    assert [e.packet.block for e in events[:4]] == [1, 2, 3, 4]
    assert [e.raw for e in events[:4]] == run
    assert all(e.time == 0.5 and e.peer == TID and e.local == CLIENT for e in events[:4])
    assert sink.getvalue() == b"".join(bytes([n]) * 8 for n in range(1, 5))


@pytest.mark.parametrize("rollover", [0, 1])
def test_a_run_across_the_wrap_does_what_its_datagrams_one_by_one_do(rollover):
    # A run's wire numbers are consecutive only up to 65535: the block after it goes the general way.
    blocks = 65_545
    numbers = [n & 0xFFFF if rollover == 0 or n <= 0xFFFF else (n - 1) % 0xFFFF + 1 for n in range(1, blocks + 1)]
    stream = [data(w, bytes([n & 0xFF]) * 8) for n, w in enumerate(numbers, 1)]
    stream.append(data(wire_after(numbers[-1], rollover), b""))
    many = machine(8, 16, None, 1.0)
    runs = [stream[:5]] + [stream[k:k + 16] for k in range(5, len(stream), 16)]  # one run spans 65530..65545
    assert any(run[0][2:4] > run[-1][2:4] for run in runs)
    compare_runs(machine(8, 16, None, 1.0), many, [(run, TID) for run in runs])
    if rollover == 0:  # a sender wrapping to 1 needs its window resent once the receiver follows it
        assert many[0].result is not None and many[0].result.stats.blocks == blocks + 1


def wire_after(number: int, rollover: int) -> int:
    return number + 1 if number < 0xFFFF else rollover
