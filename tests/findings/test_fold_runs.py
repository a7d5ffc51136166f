"""The folds take a batch by runs of one session's packet events (tftpdiag/packetruns.py); fed one event
at a time they take each event on its own. Both ways must leave the same state to the last bit: every
counter and time of the findings' SessionState, the smoothed round trip, every finding, and every field
of the session record with every packet in its log."""

from __future__ import annotations

import random

import pytest

from tests.support.simnet import Impairment, run_transfer
from tftpdiag.findings import Analyzer
from tftpdiag.findings import fold as fd
from tftpdiag.findings.session_state import SessionState
from tftpdiag.packetlog import PacketLog
from tftpdiag.packetruns import packet_runs
from tftpdiag.protocol.events import Event, PacketReceived, PacketSent, Progress, TransferStats
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.sessions import SessionRecord, SessionTable

pytestmark = pytest.mark.timeout(120)

DATA = random.Random(5).randbytes(300_000)
TEXT = (b"line one\r\nbare cr\r\0and\nlf only\n" * 4000)[:100_000]

SCENARIOS = {
    "download": dict(direction="read", data=DATA, impairment=Impairment(delay=0.001, jitter=0.004, seed=1)),
    "upload": dict(direction="write", data=DATA, impairment=Impairment(delay=0.002, jitter=0.003, seed=2)),
    "lossy windowed": dict(direction="read", data=DATA, options=RequestedOptions(windowsize=8),
                           impairment=Impairment(loss=0.02, dup=0.01, reorder=0.01, jitter=0.002, seed=3)),
    "lossy upload": dict(direction="write", data=DATA, options=RequestedOptions(blksize=1024),
                         impairment=Impairment(loss=0.03, dup=0.02, seed=4)),
    "netascii": dict(direction="read", data=TEXT, mode="netascii"),
    "rollover": dict(direction="read", data=random.Random(6).randbytes(8 * 66_000), options=RequestedOptions(blksize=8)),
}


def _events(name: str) -> list[Event]:
    events = run_transfer(**SCENARIOS[name]).events  # type: ignore[arg-type]
    # The simulator publishes both ends on one stream; a live fold mostly sees one session at a time.
    # Put each session's events in a row too, and a progress snapshot in the middle of its packets.
    by_session: dict[int, list[Event]] = {}
    for event in events:
        by_session.setdefault(event.session, []).append(event)
    apart = [e for evs in by_session.values() for e in evs]
    packets = [i for i, e in enumerate(apart) if isinstance(e, (PacketReceived, PacketSent))]
    middle = packets[len(packets) // 2]
    stats = TransferStats(0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0)
    apart.insert(middle, Progress(apart[middle].session, apart[middle].time, 0, None, stats))
    return events + apart


def _batches(events: list[Event], seed: int) -> list[list[Event]]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(events):
        n = rng.choice((2, 3, 32, 33, 64, 500))
        out.append(events[i:i + n])
        i += n
    return out


def _state(s: SessionState) -> dict[str, object]:
    return {name: getattr(s, name) for name in SessionState.__slots__}


def _record(r: SessionRecord) -> dict[str, object]:
    out = {name: getattr(r, name) for name in SessionRecord.__dataclass_fields__ if name != "packets"}
    log = r.packets
    if log is not None:
        out["packets"] = {name: getattr(log, name) for name in PacketLog.__slots__}
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_runs_fold_as_single_events(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    events = _events(name)
    folded = []  # the length of each run folded whole
    fold_run = fd.on_run

    def on_run(s: SessionState, run: list[Event]) -> bool:
        whole = fold_run(s, run)
        if whole:
            folded.append(len(run))
        return whole

    monkeypatch.setattr(fd, "on_run", on_run)
    one, batched = Analyzer(), Analyzer()
    table_one, table_batched = SessionTable(keep_packets=True), SessionTable(keep_packets=True)
    new_one = [f for e in events for f in one.feed([e])]
    ended_one = [r.session for e in events for r in table_one.apply([e])]
    new_batched, ended_batched = [], []
    for batch in _batches(events, seed=len(name)):
        new_batched += batched.feed(batch)
        ended_batched += [r.session for r in table_batched.apply(batch)]
    one.finish()
    batched.finish()
    assert new_batched == new_one
    assert batched.findings() == one.findings()
    sessions = sorted({e.session for e in events})
    for sid in sessions:
        a, b = one.state(sid), batched.state(sid)
        assert a is not None and b is not None
        assert _state(b) == _state(a)
    assert ended_batched == ended_one
    assert [_record(r) for r in table_batched] == [_record(r) for r in table_one]
    # The runs did the work, not a fallback to one event at a time all along (with loss, most runs hold a
    # noted packet and go one by one).
    assert sum(folded) > (0 if "lossy" in name else len(events) / 4)
    assert all(one.state(sid).rtt_n for sid in sessions)  # type: ignore[union-attr]


def test_packet_runs_split_where_the_session_or_the_kind_changes() -> None:
    def rx(session: int) -> PacketReceived:
        return PacketReceived(session, 0.0, ("a", 1), ("b", 2), b"", None)

    def tx(session: int) -> PacketSent:
        return PacketSent(session, 0.0, ("a", 1), ("b", 2), b"", None)

    stats = TransferStats(0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0)
    progress = Progress(1, 0.0, 0, None, stats)
    one = [rx(1), tx(1), rx(1)]
    assert packet_runs(one) == [one]
    mixed = [rx(1), tx(1), progress, rx(1), rx(2), tx(2), tx(1), progress, progress]
    assert packet_runs(mixed) == [mixed[0:2], [progress], [mixed[3]], mixed[4:6], [mixed[6]], [progress], [progress]]
    assert packet_runs(iter(mixed)) == packet_runs(mixed)
    assert packet_runs([]) == [] and packet_runs([progress]) == [[progress]]
