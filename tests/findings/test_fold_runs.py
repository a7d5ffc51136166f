"""The folds take a batch by runs of one session's packet events (tftpdiag/packetruns.py); fed one event
at a time they take each event on its own. Both ways must leave the same state to the last bit: every
counter and time of the findings' SessionState, the smoothed round trip, every finding, and every field
of the session record with every packet in its log."""

from __future__ import annotations

import functools
import random

import pytest

from tests.support.simnet import Impairment, run_transfer
from tftpdiag.findings import Analyzer
from tftpdiag.findings import fold as fd
from tftpdiag.findings.session_state import SessionState
from tftpdiag.packetlog import PacketLog
from tftpdiag.packetruns import packet_runs
from tftpdiag.protocol.events import Event, Note, PacketReceived, PacketSent, Progress, TransferStats
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data
from tftpdiag.sessions import SessionRecord, SessionTable

pytestmark = pytest.mark.timeout(120)

DATA = random.Random(5).randbytes(300_000)
TEXT = (b"line one\r\nbare cr\r\0and\nlf only\n" * 4000)[:100_000]

SCENARIOS = {
    # Jitter: round trips that vary, some far above the smallest (left out of the smoothed estimate).
    "download": dict(direction="read", data=DATA, impairment=Impairment(delay=0.001, jitter=0.01, seed=1)),
    "upload": dict(direction="write", data=DATA, impairment=Impairment(delay=0.002, jitter=0.003, seed=2)),
    "lossy windowed": dict(direction="read", data=DATA, options=RequestedOptions(windowsize=8),
                           impairment=Impairment(loss=0.02, dup=0.01, reorder=0.01, jitter=0.002, seed=3)),
    "lossy upload": dict(direction="write", data=DATA, options=RequestedOptions(blksize=1024),
                         impairment=Impairment(loss=0.03, dup=0.02, seed=4)),
    "netascii": dict(direction="read", data=TEXT, mode="netascii"),
    "rollover": dict(direction="read", data=random.Random(6).randbytes(8 * 66_000),
                     options=RequestedOptions(blksize=8)),
}


@functools.cache
def _simulated(name: str) -> tuple[Event, ...]:
    """The scenario's transfer, simulated once for both tests (the rollover's takes seconds)."""
    return tuple(run_transfer(**SCENARIOS[name]).events)  # type: ignore[arg-type]


def _events(name: str) -> list[Event]:
    events = list(_simulated(name))
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
    # Across a rollover, what matters is a session's runs reaching the wrap and going on past it: its
    # events in a row give the long runs (both ends on one stream, every other scenario has: 66,000
    # blocks of them doubled the suite's longest test).
    return apart if name == "rollover" else events + apart


def _batches(events: list[Event], seed: int) -> list[list[Event]]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(events):
        n = rng.choice((2, 3, 32, 33, 64, 500))
        out.append(events[i:i + n])
        i += n
    return out


def _state(s: SessionState) -> dict[str, object]:
    """Every slot; the round trip as read (the samples waiting to be smoothed in are taken in)."""
    out = {name: getattr(s, name) for name in ("rtt", "rtt_min", "rtt_n")}
    out.update((name, getattr(s, name)) for name in SessionState.__slots__ if "rtt" not in name)
    return out


def _record(r: SessionRecord, *, whole: bool = False) -> dict[str, object]:
    """The record's fields; its packet log by length, or (``whole``) column by column. Its progress
    samples (which only grow) by their count and the newest, or (``whole``) all of them: compared
    whole after every batch, 2,600 of them, they took the rollover's longest part."""
    out = {name: getattr(r, name) for name in SessionRecord.__dataclass_fields__ if name != "packets"}
    log = r.packets
    if log is not None:
        out["packets"] = {name: getattr(log, name) for name in PacketLog.__slots__} if whole else len(log.times)
    if not whole:
        out["samples"] = (len(r.samples), r.samples[-1:])
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
    for batch in _batches(events, seed=len(name)):
        # The same events one at a time into the others, and the states compared after every batch.
        assert batched.feed(batch) == [f for e in batch for f in one.feed([e])]
        ended = [r.session for r in table_batched.apply(batch)]
        assert ended == [r.session for e in batch for r in table_one.apply([e])]
        for sid in {e.session for e in batch}:
            a, b = one.state(sid), batched.state(sid)
            assert a is not None and b is not None
            assert _state(b) == _state(a)
            assert _record(table_batched.sessions[sid]) == _record(table_one.sessions[sid])
    assert [_record(r, whole=True) for r in table_batched] == [_record(r, whole=True) for r in table_one]
    assert batched.finish() == one.finish()
    assert batched.findings() == one.findings()
    # The runs did the work, not a fallback to one event at a time all along (with loss, most runs hold a
    # noted packet and go one by one).
    assert sum(folded) > (0 if "lossy" in name else len(events) / 4)
    assert all(state.rtt_n for state in one._states.values())


def test_packet_runs_split_where_the_session_or_the_kind_changes() -> None:
    def rx(session: int) -> PacketReceived:
        return PacketReceived(session, 0.0, ("a", 1), ("b", 2), b"", None)

    def tx(session: int) -> PacketSent:
        return PacketSent(session, 0.0, ("a", 1), ("b", 2), b"", None)

    stats = TransferStats(0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0)
    progress = Progress(1, 0.0, 0, None, stats)
    one: list[Event] = [rx(1), tx(1), rx(1)]
    assert packet_runs(one) == [one]
    mixed: list[Event] = [rx(1), tx(1), progress, rx(1), rx(2), tx(2), tx(1), progress, progress]
    assert packet_runs(mixed) == [mixed[0:2], [progress], [mixed[3]], mixed[4:6], [mixed[6]], [progress], [progress]]
    assert packet_runs(iter(mixed)) == packet_runs(mixed)
    assert packet_runs([]) == [] and packet_runs([progress]) == [[progress]]


def _smoothed_one_by_one(samples: list[float]) -> tuple[float | None, float | None, int]:
    """The round-trip estimate as written before runs: one sample at a time (the reference)."""
    rtt: float | None = None
    low: float | None = None
    n = 0
    for sample in samples:
        if low is None or sample < low:
            low = sample
            if rtt is not None and rtt > 4 * low + 0.001:
                rtt = None
        if sample <= 4 * low + 0.001:
            rtt = sample if rtt is None else rtt + (sample - rtt) * 0.125
            n += 1
    return rtt, low, n


def test_round_trips_smoothed_by_batches_as_one_by_one() -> None:
    rng = random.Random(9)
    # Round trips that wander, now and then far above the smallest (waited for a retransmission) or
    # below it (a new smallest, which can disqualify the estimate so far).
    samples = [rng.uniform(0.002, 0.004) * (rng.choice((1, 1, 1, 6, 0.3)) if i % 7 == 0 else 1)
               for i in range(3000)]
    s = SessionState(1, 0.0)
    i = 0
    while i < len(samples):
        n = rng.choice((1, 2, 16, 40))
        s.rtt_samples += samples[i:i + n]
        i += n
        assert (s.rtt, s.rtt_min, s.rtt_n) == _smoothed_one_by_one(samples[:i])
    assert 0 < s.rtt_n < len(samples)  # some were left out


def test_record_counts_received_duplicates_and_strays_and_sees_data() -> None:
    def rx(t: float, packet: object, note: Note = Note.NONE) -> PacketReceived:
        return PacketReceived(1, t, ("a", 1), ("b", 2), b"", packet, note)  # type: ignore[arg-type]

    def tx(t: float, packet: object, note: Note = Note.NONE) -> PacketSent:
        return PacketSent(1, t, ("a", 1), ("b", 2), b"", packet, note)  # type: ignore[arg-type]

    table = SessionTable()
    table.apply([tx(0.0, Ack(0)), rx(0.1, Ack(0), Note.DUPLICATE)])
    record = table.sessions[1]
    assert not record.data_seen and record.duplicates == 1 and record.started == 0.0 and record.last == 0.1
    table.apply([rx(0.2, Data(1, b"x")), tx(0.3, Ack(1)), rx(0.4, Data(1, b"x"), Note.DUPLICATE),
                 tx(0.5, Ack(1), Note.RETRANSMIT), rx(0.6, Ack(7), Note.STRAY), tx(0.7, Data(1, b"x"), Note.DUPLICATE)])
    assert record.data_seen and record.duplicates == 2 and record.stray == 1
    assert (record.packets_received, record.packets_sent, record.started, record.last) == (4, 4, 0.0, 0.7)


@pytest.mark.parametrize("name", SCENARIOS)
def test_runs_in_columns_fold_as_single_events(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transfer run apart sends its packets to the view in columns (PacketRun, engine/apart_wire.py);
    the folds read the columns, and must leave the same state as the events one at a time."""
    from tftpdiag.engine.apart_wire import pack, unpack
    from tftpdiag.protocol.events import PacketRun
    from tftpdiag.tui.model import LiveModel

    events = _events(name)
    runs: list[PacketRun] = []
    one, batched = Analyzer(), Analyzer()
    table_one = SessionTable(keep_packets=True)
    model = LiveModel()  # the view's fold: its table is the batched one
    for batch in _batches(events, seed=len(name)):
        crossed = unpack(pack(batch))
        runs += [item for item in crossed if type(item) is PacketRun]
        assert batched.feed(crossed) == [f for e in batch for f in one.feed([e])]
        changes = model.apply(crossed)
        assert changes.ended == [r.session for e in batch for r in table_one.apply([e])]
        for sid in {e.session for e in batch}:
            a, b = one.state(sid), batched.state(sid)
            assert a is not None and b is not None
            assert _state(b) == _state(a)
            assert _record(model.table.sessions[sid]) == _record(table_one.sessions[sid])
    assert [_record(r, whole=True) for r in model.table] == [_record(r, whole=True) for r in table_one]
    assert batched.finish() == one.finish()
    assert batched.findings() == one.findings()
    assert model.folded == len(events)
    assert model.kept_packets == sum(len(r.packets) for r in table_one if r.packets is not None)
    # The columns did the work: most runs were never turned into events by any fold (with loss, most
    # hold a noted packet and go one by one; netascii's scan reads payloads).
    unbuilt = sum(len(run) for run in runs if run._events is None)
    assert sum(map(len, runs)) > len(events) / 3
    if name != "netascii":
        assert unbuilt > (0 if "lossy" in name else len(events) / 4)
