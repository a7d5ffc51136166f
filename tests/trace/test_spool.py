"""The save key's spool (trace/spool.py): what it saves is what the jsonl spool it replaced saved, byte for
byte, in either format; a spool cut short or damaged saves what is whole and says how many events."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import tui_samples
from tftpdiag.engine.bus import EventBus
from tftpdiag.protocol.events import (
    CaptureGap,
    ContentDigest,
    Event,
    Impaired,
    Note,
    PacketReceived,
    PacketSent,
    PeerLocked,
    RequestRetried,
    Role,
    SocketError,
    TransferStarted,
)
from tftpdiag.protocol.packets import Ack, Data, Opcode, Request, encode
from tftpdiag.trace.jsonl import KIND, read_events
from tftpdiag.trace.recorder import SessionFilter, TraceRecorder, copy_events, copy_trace
from tftpdiag.trace.spool import BATCH, Spool

LOCAL, PEER = ("10.0.0.9", 40000), ("10.0.0.2", 50000)
LOCAL6, PEER6 = ("fe80::9", 40000), ("fe80::1", 69)


def _rare_events() -> list[Event]:
    """The kinds the recorded runs lack, and the odd corners: a fault injector's fates (which a pcap
    carries out), a datagram that does not decode, a file name that is not ASCII, IPv6."""
    t = tui_samples.EPOCH + 100.0
    ack, block = encode(Ack(3)), encode(Data(4, b"x" * 512))
    request = Request(Opcode.RRQ, "boot/ñandú.cfg", "octet", (("blksize", "1468"),))
    return [
        TransferStarted(90, t, Role.CLIENT_READ, "boot/ñandú.cfg", "octet", LOCAL6, PEER6, (("blksize", "1468"),)),
        PacketSent(90, t, LOCAL6, PEER6, encode(request), request),
        RequestRetried(90, t + 0.01, 8, "option refused", (("blksize", "1468"),), ()),
        PeerLocked(90, t + 0.02, PEER, PEER6),
        Impaired(90, t + 0.03, "out", "dropped", PEER, ack, 0.0, "drop=ack:3"),
        PacketSent(90, t + 0.03, LOCAL, PEER, ack, Ack(3)),
        Impaired(90, t + 0.04, "out", "delayed", PEER, ack, 0.25, "delay=250ms"),
        Impaired(90, t + 0.04, "out", "duplicated", PEER, ack, 0.5, "dup=100%"),
        PacketSent(90, t + 0.04, LOCAL, PEER, ack, Ack(3), Note.RETRANSMIT),
        Impaired(90, t + 0.05, "in", "dropped", PEER, block, 0.0, "loss=5%"),
        PacketReceived(90, t + 0.06, LOCAL, PEER, block, Data(4, b"x" * 512), Note.OUT_OF_ORDER, "gap"),
        PacketReceived(90, t + 0.07, LOCAL, PEER, b"\x00\x09\x01", None, Note.MALFORMED, "unknown opcode 9"),
        SocketError(90, t + 0.08, PEER, errno.ECONNREFUSED, "port unreachable"),
        SocketError(90, t + 0.08, None, errno.EHOSTUNREACH, "host unreachable"),
        CaptureGap(90, t + 0.09, "DATA", 2, "ACK 6 follows ACK 3"),
        ContentDigest(90, t + 0.1, "ab" * 32, 2048),
    ]


def _every_kind() -> list[Event]:
    events = (tui_samples.probe_success() + tui_samples.probe_failure() + tui_samples.probe_timeout()
              + tui_samples.serve_sessions() + tui_samples.trace_events() + _rare_events())
    assert {type(e) for e in events} == set(KIND)  # every kind of event a trace can hold
    return events


def _published(bus: EventBus, events: list[Event], step: int = 97) -> None:
    for i in range(0, len(events), step):  # in steps, as an engine publishes
        bus.publish(events[i:i + step])


def _jsonl_spool_saves(events: list[Event], dest: Path, only: SessionFilter | None) -> str:
    """What the save key did before: every event formatted into a jsonl spool, converted when saved."""
    bus = EventBus()
    spool = dest.with_name(dest.name + ".spool.jsonl")
    recorder = TraceRecorder.open(spool, bus, only=only)
    try:
        _published(bus, events)
        recorder.flush()
        return f"saved {copy_trace(spool, dest):,} events to {dest}"
    finally:
        recorder.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".pcap"])
@pytest.mark.parametrize("demo", [False, True])
def test_a_save_writes_what_the_jsonl_spool_wrote(tmp_path: Path, suffix: str, demo: bool) -> None:
    events = _every_kind()
    # The demo's spool keeps its probe's view only.
    only: SessionFilter | None = (lambda session: session in (1, 90)) if demo else None
    before = _jsonl_spool_saves(events, tmp_path / f"before{suffix}", only)
    bus = EventBus()
    spool = Spool(bus, only=only)
    try:
        _published(bus, events)
        now = spool.save(tmp_path / f"after{suffix}")
    finally:
        spool.close()
    kept = sum(1 for e in events if only is None or only(e.session))
    assert before.replace("before", "after") == now == f"saved {kept:,} events to {tmp_path / f'after{suffix}'}"
    assert (tmp_path / f"after{suffix}").read_bytes() == (tmp_path / f"before{suffix}").read_bytes()
    assert (tmp_path / f"after{suffix}").stat().st_size > 100_000


def _spool_of(events: list[Event]) -> Spool:
    bus = EventBus()
    spool = Spool(bus)
    _published(bus, events)
    spool.recorder.flush()
    return spool


def _read(path: Path) -> list[Event]:
    with open(path, encoding="utf-8") as f:
        return list(read_events(f))


def _expected(events: list[Event], dest: Path) -> bytes:
    copy_events(events, dest)
    return dest.read_bytes()


def test_a_spool_cut_short_saves_its_whole_batches_and_says_how_many(tmp_path: Path) -> None:
    events = tui_samples.probe_success() * 3  # 1,179 events: four whole batches and part of a fifth
    assert 4 * BATCH < len(events) < 5 * BATCH
    spool = _spool_of(events)
    try:
        assert spool.save(tmp_path / "whole.jsonl") == f"saved {len(events):,} events to {tmp_path / 'whole.jsonl'}"
        size = spool.path.stat().st_size
        with open(spool.path, "r+b") as f:
            f.truncate(size - 1000)  # the last batch half-written
        for suffix in (".jsonl", ".pcap"):
            dest = tmp_path / f"cut{suffix}"
            message = spool.save(dest)
            assert message.startswith(f"saved {4 * BATCH:,} events to {dest}; "), message
            assert "the middle of a batch" in message
            assert dest.read_bytes() == _expected(events[: 4 * BATCH], tmp_path / f"expected{suffix}")
        with open(spool.path, "r+b") as f:
            f.truncate(2)  # not even one batch's length
        assert spool.save(tmp_path / "none.jsonl").startswith(f"saved 0 events to {tmp_path / 'none.jsonl'}; ")
        assert _read(tmp_path / "none.jsonl") == []
    finally:
        spool.close()


def test_a_damaged_batch_ends_the_save_without_raising(tmp_path: Path) -> None:
    events = tui_samples.probe_success() * 3
    spool = _spool_of(events)
    try:
        with open(spool.path, "r+b") as f:
            # The third batch's bytes begin after two lengths and two batches: make them garbage.
            first = int.from_bytes(f.read(4), "big")
            f.seek(4 + first)
            second = int.from_bytes(f.read(4), "big")
            f.seek(4 + first + 4 + second + 4)
            f.write(b"\xff" * 16)
        message = spool.save(tmp_path / "damaged.jsonl")
        assert message.startswith(f"saved {2 * BATCH:,} events to {tmp_path / 'damaged.jsonl'}; "), message
        assert "damaged" in message
        assert (tmp_path / "damaged.jsonl").read_bytes() == _expected(events[: 2 * BATCH], tmp_path / "exp.jsonl")
        with open(spool.path, "r+b") as f:
            f.write(b"\xff\xff\xff\xff")  # the first length: more than the file holds
        assert spool.save(tmp_path / "hopeless.pcap").startswith("saved 0 events to ")
    finally:
        spool.close()


class _FullDisk:
    """A spool file on a disk that has just filled up."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def test_a_full_disk_stops_the_spool_and_the_save_says_so(tmp_path: Path) -> None:
    events = tui_samples.probe_success()
    bus = EventBus()
    spool = Spool(bus)
    try:
        _published(bus, events)
        spool.recorder.flush()
        spool.writer._file = _FullDisk(spool.writer._file)  # type: ignore[assignment]
        _published(bus, events * 2)
        spool.recorder.flush()  # never raises into the recorder's thread
        message = spool.save(tmp_path / "full.jsonl")
        assert message == (f"saved {len(events):,} events to {tmp_path / 'full.jsonl'}; the spool stopped keeping "
                           f"events after these: {os.strerror(errno.ENOSPC)}")
        assert (tmp_path / "full.jsonl").read_bytes() == _expected(events, tmp_path / "exp.jsonl")
    finally:
        spool.close()


def test_saving_while_events_arrive_saves_whole_batches_in_order(tmp_path: Path) -> None:
    """The jsonl spool was read to its end while its recorder could be writing to it (a line cut in half
    then failed the save); a save now reads only the batches whole on disk when it began."""
    events = tui_samples.probe_success() * 8
    bus = EventBus()
    spool = Spool(bus)
    done = threading.Event()

    def publish() -> None:
        for i in range(0, len(events), 20):
            bus.publish(events[i:i + 20])
            time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        saves = 0
        while not done.is_set() or saves < 2:
            dest = tmp_path / f"during{saves}.jsonl"
            message = spool.save(dest)
            saved = _read(dest)
            assert message == f"saved {len(saved):,} events to {dest}"
            assert saved == events[: len(saved)]
            saves += 1
        thread.join()
        assert spool.save(tmp_path / "all.jsonl") == f"saved {len(events):,} events to {tmp_path / 'all.jsonl'}"
    finally:
        done.wait(30)
        thread.join()
        spool.close()
