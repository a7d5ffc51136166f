"""The compact form in which a transfer run apart sends its events to the view (engine/apart_wire.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tftpdiag.engine.apart_wire import expand, pack, unpack
from tftpdiag.protocol.events import Event, Note, PacketReceived, PacketSent, Progress, TransferStats
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, encode

LOCAL, PEER = ("127.0.0.1", 40000), ("::1", 69)


def _received(packet: Data | Ack | OAck | Error | None, raw: bytes, note: Note = Note.NONE,
              detail: str = "") -> PacketReceived:
    return PacketReceived(3, 1700000000.25, LOCAL, PEER, raw, packet, note, detail)


def test_every_kind_of_event_comes_back_equal() -> None:
    block = Data(65535, os.urandom(1468))
    last = Data(0, b"")
    events: list[Event] = [
        _received(block, encode(block)),
        _received(last, encode(last), Note.DUPLICATE, "block 0 again"),
        PacketSent(3, 1.5, LOCAL, PEER, encode(Data(7, b"x" * 512)), Data(7, b"x" * 512), Note.RETRANSMIT),
        PacketSent(3, 1.6, LOCAL, PEER, encode(Ack(9)), Ack(9)),
        _received(Ack(65535), encode(Ack(65535)), Note.DUPLICATE, "ACK 65535 again"),
        _received(Ack(4), encode(Ack(4)) + b"\0"),  # a trailing byte travels with the datagram
        _received(Ack(6), encode(Ack(5))),  # a packet the datagram does not give back: kept whole
        PacketSent(3, 1.7, LOCAL, PEER, encode(Ack(0)), Ack(0), Note.REACK),
        _received(OAck((("blksize", "1468"),)), encode(OAck((("blksize", "1468"),)))),
        _received(Error(1, "no such file"), encode(Error(1, "no such file"))),
        _received(None, b"\x00\x03\x00", Note.MALFORMED, "DATA packet truncated"),
        # A block the fault injector changed after it was decoded: its packet is not the datagram's.
        _received(Data(5, b"abc"), encode(Data(5, b"abd"))),
        Progress(3, 2.0, 4096, None, TransferStats(4096, 0.5, 8, 9, 9, 1, 0, 0, 0, 0)),
    ]
    assert list(expand(unpack(pack(events)))) == events
    assert list(expand(unpack(memoryview(b"E" + pack(events))[1:]))) == events


def test_a_data_block_crosses_once_not_twice() -> None:
    # Pickled as objects, a block's bytes travelled in the datagram and again in the decoded payload.
    blocks = [Data(n, os.urandom(1468)) for n in range(100)]
    batch: list[Event] = [_received(block, encode(block)) for block in blocks]
    assert len(pack(batch)) < 100 * (1472 + 120)


def test_acks_and_blocks_cross_as_tuples_not_objects() -> None:
    # A lock-step transfer sends or receives an ACK every block; pickled as an event object one cost
    # 29 us of the transfer's process (copyreg), more than the block's own work.
    batch: list[Event] = []
    for n in range(50):
        batch.append(_received(Data(n, b"x" * 512), encode(Data(n, b"x" * 512))))
        batch.append(PacketSent(3, 1.0 + n, LOCAL, PEER, encode(Ack(n)), Ack(n)))
        batch.append(_received(Ack(n), encode(Ack(n))))
    blob = pack(batch)
    assert b"PacketSent" not in blob and b"PacketReceived" not in blob and b"Ack" not in blob
    assert list(expand(unpack(blob))) == batch


def _routine(n: int) -> list[Event]:
    out: list[Event] = []
    for block in range(1, n + 1):
        data = Data(block, os.urandom(512))
        out.append(_received(data, encode(data)))
        out.append(PacketSent(3, 1700000000.5 + block, LOCAL, PEER, encode(Ack(block)), Ack(block)))
    return out


def test_runs_arrive_in_columns_and_build_their_events_only_when_asked() -> None:
    from array import array

    from tftpdiag.protocol.events import PacketRun

    events = _routine(40)
    (run,) = unpack(pack(events))
    assert type(run) is PacketRun and len(run) == 80 and run.session == 3 and run.time == events[0].time
    assert run._events is None  # nothing built yet
    assert list(run) == events and run[1] == events[1] and run[-2:] == events[-2:]
    # The spool keeps runs as they came: packed again, they cross the same.
    assert unpack(pack([run])) == [run]
    # Columns that disagree are refused (a damaged spool), whatever they hold.
    for bad in ((run.tags[:-1], run.times, run.blocks, run.sizes, run.joined),
                (run.tags, run.times, run.blocks, run.sizes, run.joined[:-1]),
                (run.tags, run.times, array("I", run.blocks), run.sizes, run.joined),
                (bytes([255]) + run.tags[1:], run.times, run.blocks, run.sizes, run.joined),
                (b"", array("d"), array("H"), array("H"), b"")):
        try:
            PacketRun(3, LOCAL, PEER, *bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad[0][:4]!r}")


def test_a_trace_recorded_from_the_view_holds_the_events_of_its_runs(tmp_path: Path) -> None:
    """A --trace of a probe in the view records the bus the runs arrive on: the file holds events."""
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.trace.jsonl import read_events
    from tftpdiag.trace.recorder import TraceRecorder

    events = _routine(30)
    bus = EventBus()
    recorder = TraceRecorder.open(tmp_path / "t.jsonl", bus)
    bus.publish(unpack(pack(events)))
    recorder.close()
    with open(tmp_path / "t.jsonl", encoding="utf-8") as f:
        assert list(read_events(f)) == events
    assert recorder.events_written == len(events)


def test_with_a_store_the_datagrams_stay_in_a_file_and_are_read_back_when_asked(tmp_path: Path) -> None:
    from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams

    events = _routine(40)
    store = DatagramStore(str(tmp_path / "d.bin"))
    blob = pack(events, store)
    assert len(blob) < 2_000  # 40 blocks of 512 bytes did not cross
    (run,) = unpack(blob)
    assert isinstance(run.joined, StoredDatagrams) and run.joined.length == sum(run.sizes)
    assert list(run) == events
    more = _routine(3)
    (second,) = unpack(pack(more, store))  # appended after the first
    assert isinstance(second.joined, StoredDatagrams) and second.joined.offset == run.joined.length
    assert list(second) == more and list(expand(unpack(pack([run, second])))) == events + more
    # A store that cannot take more turns itself off: the datagrams cross, nothing is lost.
    store.close()
    (inline,) = unpack(pack(events, store))
    assert isinstance(inline.joined, bytes) and list(inline) == events
    # Datagrams that are gone are said to be, not made up.
    (tmp_path / "d.bin").write_bytes(b"")
    from tftpdiag.engine import apart_wire
    apart_wire._READERS.pop(str(tmp_path / "d.bin"), None)
    (lost,) = unpack(pack([run]))
    try:
        list(lost)
    except ValueError as exc:
        assert "not all there" in str(exc)
    else:
        raise AssertionError("datagrams read from an empty store")


def test_a_store_takes_runs_longer_than_one_writev(tmp_path: Path) -> None:
    from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams

    events = _routine(1500)  # 3,000 datagrams: more than IOV_MAX buffers
    store = DatagramStore(str(tmp_path / "d.bin"))
    (run,) = unpack(pack(events, store))
    assert isinstance(run.joined, StoredDatagrams) and list(run) == events


def test_a_store_made_ready_takes_its_runs_over_its_zeros_and_cuts_off_the_rest(tmp_path: Path,
                                                                               monkeypatch) -> None:
    """make_ready writes zeros before the transfer (appending made the kernel find a page for every 4 KiB,
    on the transfer's CPU); the runs then overwrite them from the start, append past them, and what
    they left is cut off when the transfer ends."""
    from tftpdiag.engine import apart_wire
    from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams

    monkeypatch.setattr(apart_wire, "READY_CHUNK", 4096)
    path = tmp_path / "d.bin"
    store = DatagramStore(str(path))
    store.make_ready(3 * 4096 + 1)  # the budget and no more (it is a quarter of the free space at most)
    assert path.stat().st_size == 3 * 4096 + 1 and path.read_bytes() == bytes(3 * 4096 + 1)
    store.started()
    first = _routine(4)  # 4 blocks of 512 bytes and their ACKs: 2,080 bytes
    (run,) = unpack(pack(first, store))
    assert isinstance(run.joined, StoredDatagrams) and run.joined.offset == 0
    assert path.stat().st_size == 3 * 4096 + 1  # over the zeros, not appended
    more = _routine(40)  # 20,800 bytes: past the zeros, from where the first run ended
    (second,) = unpack(pack(more, store))
    assert isinstance(second.joined, StoredDatagrams) and second.joined.offset == run.joined.length
    assert list(run) == first and list(second) == more
    store.finish()
    assert path.stat().st_size == run.joined.length + second.joined.length
    # A transfer that ends (or is cancelled) before its first run leaves nothing behind.
    other = DatagramStore(str(tmp_path / "e.bin"))
    other.make_ready(8192)
    other.started()
    other.make_ready(8192)  # (a thread that only begins now writes nothing)
    other.finish()
    assert (tmp_path / "e.bin").stat().st_size == 0
    # A write that falls short (a disk full): it stops there, and the runs take only what is written.
    real = apart_wire.os.pwrite
    monkeypatch.setattr(apart_wire.os, "pwrite", lambda fd, data, at: real(fd, data[:1000], at))
    short = DatagramStore(str(tmp_path / "f.bin"))
    short.make_ready(3 * 4096)
    monkeypatch.setattr(apart_wire.os, "pwrite", real)
    assert (tmp_path / "f.bin").stat().st_size == 1000
    (run,) = unpack(pack(first, short))
    assert run.joined.offset == 0 and list(run) == first
    short.finish()
    assert (tmp_path / "f.bin").stat().st_size == run.joined.length


def test_runs_go_past_the_zeros_make_ready_may_still_be_writing(tmp_path: Path, monkeypatch) -> None:
    """The transfer's first run can come while make_ready's thread (at the lowest priority) is inside a
    write of zeros: the runs go over the zeros it has written, then after the chunk it is writing, which
    would otherwise land on them."""
    import threading

    from tftpdiag.engine import apart_wire
    from tftpdiag.engine.apart_wire import DatagramStore

    monkeypatch.setattr(apart_wire, "READY_CHUNK", 4096)
    inside, release = threading.Event(), threading.Event()
    real = apart_wire.os.pwrite

    def slow_third(fd: int, data: bytes, at: int) -> int:
        if at == 2 * 4096 and not bytes(data).strip(b"\0"):  # make_ready's third chunk waits
            inside.set()
            assert release.wait(10)
        return real(fd, data, at)

    monkeypatch.setattr(apart_wire.os, "pwrite", slow_third)
    path = tmp_path / "d.bin"
    store = DatagramStore(str(path))
    ready = threading.Thread(target=store.make_ready, args=(10 * 4096,))
    ready.start()
    assert inside.wait(10)
    first, events = _routine(2), _routine(20)  # then 10,400 bytes: more than the two chunks made
    (run,) = unpack(pack(first, store))  # the first run: make_ready stops
    (later,) = unpack(pack(events, store))
    release.set()
    ready.join(10)
    assert run.joined.offset == 0 and later.joined.offset == 3 * 4096  # after the chunk being written
    assert list(run) == first and list(later) == events  # none of them overwritten by zeros
    store.finish()
    assert path.stat().st_size == 3 * 4096 + later.joined.length


def test_a_batch_of_many_runs_goes_to_the_store_in_one_write(tmp_path: Path, monkeypatch) -> None:
    # A lock-step transfer's machine closes a run every 32 packets; a write a run took 1,400 system
    # calls a 32 MiB transfer, on the CPU the view shares with it. And the runs cross with where their
    # datagrams are as plain tuples (pickling the named tuple ran Python code for each run).
    import pickle

    from tftpdiag.engine import apart_wire
    from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams
    from tftpdiag.protocol.events import PacketRun

    runs = [next(iter(unpack(pack(_routine(16))))) for _ in range(30)]  # machine-made runs: joined bytes
    assert all(type(run.joined) is bytes for run in runs)
    events = [Progress(3, 1.0, 10, None, TransferStats(10, 0.5, 1, 1, 1, 0, 0, 0, 0, 0)), *runs[:15], *_routine(5),
              *runs[15:]]
    writes = []
    real = apart_wire.os.pwritev
    monkeypatch.setattr(apart_wire.os, "pwritev",
                        lambda fd, buffers, at: writes.append(len(buffers)) or real(fd, buffers, at))
    store = DatagramStore(str(tmp_path / "d.bin"))
    blob = pack(events, store)
    assert len(writes) == 1, writes
    assert b"StoredDatagrams" not in blob and b"apart_wire" not in blob
    back = unpack(blob)
    # The machine's runs on each side of the 5 blocks joined into one; the 5 blocks a run of their own.
    assert [type(event) for event in back] == [Progress] + [PacketRun] * 3
    assert [len(run) for run in back[1:]] == [15 * 32, 10, 15 * 32]
    assert all(type(event.joined) is StoredDatagrams for event in back[1:])
    assert list(expand(back)) == list(expand(events))  # each run's datagrams read back from its place
    assert pickle.loads(blob)[1][7] == tuple(back[1].joined)


def test_a_windowed_machines_runs_of_one_session_cross_joined(tmp_path: Path, monkeypatch) -> None:
    """A windowed transfer's machine closes a run at every window (17 packets); crossed one by one, each
    cost the packing a list and three pickled arrays, and the view a run to fold. Consecutive runs of
    one session between the same addresses cross as one, up to MERGED packets; the runs themselves are
    left as they were (the machine's, not the packer's to extend)."""
    from tftpdiag.engine import apart_wire
    from tftpdiag.engine.apart_wire import DatagramStore, StoredDatagrams
    from tftpdiag.protocol.events import PacketRun

    windows = [next(iter(unpack(pack(_routine(8))))) for _ in range(40)]  # machine-made: joined bytes
    assert all(type(run.joined) is bytes and len(run) == 16 for run in windows)
    w = windows[0]
    other_session = PacketRun(4, LOCAL, PEER, w.tags, w.times, w.blocks, w.sizes, w.joined)
    other_peer = PacketRun(3, LOCAL, ("::1", 70), w.tags, w.times, w.blocks, w.sizes, w.joined)
    progress = Progress(3, 1.0, 10, None, TransferStats(10, 0.5, 1, 1, 1, 0, 0, 0, 0, 0))
    batch: list[Event] = [*windows[:10], other_session, *windows[10:13], other_peer, *windows[13:20], progress,
                          *windows[20:]]
    before = [(bytes(r.tags), r.times.tobytes(), r.blocks.tobytes(), r.sizes.tobytes(), r.joined) for r in windows]
    back = unpack(pack(batch))
    assert [len(e) if type(e) is PacketRun else type(e) for e in back] == [160, 16, 48, 16, 112, Progress, 320]
    assert list(expand(back)) == list(expand(batch))
    # Bounded: a run of 64 packets takes no more.
    monkeypatch.setattr(apart_wire, "MERGED", 64)
    assert [len(e) for e in unpack(pack(windows[:10]))] == [64, 64, 32]
    # With a store: the joined runs' datagrams in the one write, read back from their place.
    store = DatagramStore(str(tmp_path / "d.bin"))
    stored = unpack(pack(batch, store))
    assert all(type(e.joined) is StoredDatagrams for e in stored if type(e) is PacketRun)
    assert list(expand(stored)) == list(expand(batch))
    after = [(bytes(r.tags), r.times.tobytes(), r.blocks.tobytes(), r.sizes.tobytes(), r.joined) for r in windows]
    assert after == before


def test_the_spool_saves_stored_runs_and_says_when_their_datagrams_are_gone(tmp_path: Path) -> None:
    from tftpdiag.engine.apart_wire import DatagramStore
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.trace.jsonl import read_events
    from tftpdiag.trace.spool import Spool

    events = _routine(50)
    store = DatagramStore(str(tmp_path / "d.bin"))
    bus = EventBus()
    spool = Spool(bus)
    try:
        bus.publish(unpack(pack(events, store)))
        message = spool.save(tmp_path / "saved.jsonl")
        assert message == f"saved {len(events):,} events to {tmp_path / 'saved.jsonl'}"
        with open(tmp_path / "saved.jsonl", encoding="utf-8") as f:
            assert list(read_events(f)) == events
        (tmp_path / "d.bin").write_bytes(b"")  # the datagrams gone (nothing does this but a test)
        from tftpdiag.engine import apart_wire
        apart_wire._READERS.pop(str(tmp_path / "d.bin"), None)
        message = spool.save(tmp_path / "again.jsonl")
        assert "could not be read" in message and "not all there" in message, message
    finally:
        spool.close()
