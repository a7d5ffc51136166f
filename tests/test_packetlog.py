"""The packet log every view reads (tftpdiag/packetlog.py): runs in columns fold as their packets one by one."""

from __future__ import annotations

from tftpdiag.engine.apart_wire import pack, unpack
from tftpdiag.packetlog import PacketLog
from tftpdiag.protocol.events import Event, PacketReceived, PacketRun, PacketSent
from tftpdiag.protocol.packets import Ack, Data, encode

LOCAL, PEER = ("127.0.0.1", 40000), ("127.0.0.1", 69)


def _window(first: int, count: int, t: float) -> list[Event]:
    """A window of DATA received (wire numbers from ``first``, wrapping at 65,536) and our ACK of its last."""
    out: list[Event] = []
    for i in range(count):
        block = Data((first + i) & 0xFFFF, bytes([i]) * 8)
        out.append(PacketReceived(1, t, LOCAL, PEER, encode(block), block))
    last = Ack((first + count - 1) & 0xFFFF)
    out.append(PacketSent(1, t, LOCAL, PEER, encode(last), last))
    return out


def _columns(log: PacketLog) -> dict[str, object]:
    return {name: getattr(log, name) for name in PacketLog.__slots__}


def test_a_run_across_the_rollover_stays_in_columns_and_folds_as_one_by_one() -> None:
    # The ACK 0 that answers the OACK, then windows of 16 up to the wrap of the block numbers and past it.
    events: list[Event] = [PacketSent(1, 0.5, LOCAL, PEER, encode(Ack(0)), Ack(0))]
    first = 1
    for n in range(4200):  # 67,200 blocks: one wrap, and a window that straddles it
        events += _window(first, 16, 1.0 + n / 1000)
        first += 16
    # Crossed as a transfer run apart sends them: batches of up to 1,024 packets, each a run in columns.
    runs = [item for i in range(0, len(events), 1000) for item in unpack(pack(events[i:i + 1000]))
            if type(item) is PacketRun]
    assert sum(map(len, runs)) == len(events)
    by_runs, one_by_one = PacketLog(), PacketLog()
    for run in runs:
        by_runs.add_run(run)
    for event in events:
        one_by_one.add(event)
    assert _columns(by_runs) == _columns(one_by_one)
    assert by_runs.wraps == 1 and by_runs.blocks[-1] == 4200 * 16
    # Only the run holding the negotiation's ACK 0 was built into events; those holding block 0 after the
    # wrap (a window straddles it) were read in columns.
    built = [run for run in runs if run._events is not None]
    wrapped = [run for run in runs if 0 in run.blocks and run is not runs[0]]
    assert wrapped and built == [runs[0]]


def test_a_run_holding_ack_0_goes_one_by_one_from_where_the_log_stood() -> None:
    # ACK 0 and then a block more than half the number space away (a stray or hostile peer's): numbered
    # as one by one would, from the log's state before the run, not after a first pass over it.
    events: list[Event] = [PacketSent(1, 0.5, LOCAL, PEER, encode(Ack(0)), Ack(0))]
    far = Data(40000, b"x")
    events.append(PacketReceived(1, 0.6, LOCAL, PEER, encode(far), far))
    events += _window(40001, 3, 0.7)
    (run,) = unpack(pack(events))
    assert type(run) is PacketRun
    by_run, one_by_one = PacketLog(), PacketLog()
    by_run.add_run(run)
    for event in events:
        one_by_one.add(event)
    assert _columns(by_run) == _columns(one_by_one) and by_run.wraps == 0
