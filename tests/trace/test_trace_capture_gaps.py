"""A capture that missed packets is told from a network that lost them: what the receiver's ACKs (or
the sender's next DATA) show was delivered, but the capture lacks, is a capture gap (its own event and
finding), never packet loss or a window bug; loss the peers reacted to is still packet loss.

Ground truth from tests/support/simnet.py: a capture on the client's host holds every datagram the client sent
and received; taking some out of it is what tcpdump's "packets dropped by kernel" does."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.simnet import Impairment, SimResult, run_transfer
from tests.trace.test_trace_rebuild import CLIENT, DATA, SERVER, client_view, dgram, live_summary, rrq, summaries
from tftpdiag.findings import Finding, analyze
from tftpdiag.protocol.events import CaptureGap, Event, Note, PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data, decode, encode_ack, encode_data
from tftpdiag.trace.jsonl import JsonlWriter, read_events
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import Datagram, PcapWriter
from tftpdiag.trace.rebuild import Rebuilder, rebuild
from tftpdiag.trace.summary import print_trace

pytestmark = pytest.mark.timeout(60)

TID = (SERVER[0], 50001)


def without(view: list[Datagram], drop: Callable[[Datagram, object], bool]) -> tuple[list[Datagram], int]:
    """The capture with the datagrams ``drop`` picks taken out, and how many it took."""
    kept = [d for d in view if not drop(d, decode(d.payload))]
    return kept, len(view) - len(kept)


def gaps(events: list[Event], missing: str) -> int:
    return sum(e.count for e in events if isinstance(e, CaptureGap) and e.missing == missing)


def findings(events: list[Event]) -> dict[str, Finding]:
    return {f.id: f for f in analyze(events) if f.session == 1}


def out_of_order(events: list[Event]) -> set[tuple[float, int]]:
    return {(e.time, e.packet.block) for e in events
            if isinstance(e, PacketReceived) and e.note is Note.OUT_OF_ORDER and isinstance(e.packet, Data)}


def percent(f: Finding) -> float:
    return float(f.summary.split("About ")[1].split("%")[0])


def final_block(res: SimResult) -> int:
    return max(e.packet.block for e in res.events if isinstance(e, PacketSent) and isinstance(e.packet, Data))


@pytest.mark.parametrize("windowsize", [1, 8])
def test_download_with_data_missing_from_the_capture(windowsize: int) -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=windowsize, tsize=True))
    view, dropped = without(client_view(res), lambda d, p: isinstance(p, Data) and p.block in (5, 6, 30, 77))
    assert dropped == 4
    events = rebuild(view)
    (rebuilt,) = summaries(events)
    assert rebuilt["ok"] and rebuilt["bytes"] == len(DATA) == live_summary(res)["bytes"]
    assert gaps(events, "DATA") == 4 and gaps(events, "ACK") == 0
    # Blocks after a block the capture lacks were in order where the client was: no note says otherwise.
    assert not [e for e in events if isinstance(e, PacketReceived) and e.note is Note.OUT_OF_ORDER]
    found = findings(events)
    assert set(found) == {"capture-gaps"}, [(f.id, f.summary) for f in found.values()]
    f = found["capture-gaps"]
    assert f.severity == "info" and "missed 4 packets (4 DATA)" in f.summary and "not affected" in f.summary
    assert any("covers" in line and "which the capture lacks" in line for line in f.evidence), f.evidence


@pytest.mark.parametrize("windowsize", [1, 8])
def test_download_with_acks_missing_from_the_capture(windowsize: int) -> None:
    """The server's next DATA shows it had an ACK the capture lacks."""
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=windowsize, tsize=True))
    last = final_block(res)
    acks = [8, 24, 72] if windowsize == 8 else [3, 9, 50]  # window ends, so each alone allowed what followed
    view, dropped = without(client_view(res), lambda d, p: isinstance(p, Ack) and p.block in acks and p.block < last)
    assert dropped == 3
    events = rebuild(view)
    assert summaries(events)[0]["ok"] and gaps(events, "ACK") == 3 and gaps(events, "DATA") == 0
    found = findings(events)
    assert set(found) == {"capture-gaps"}, [(f.id, f.summary) for f in found.values()]
    assert "at least 3 ACKs" in found["capture-gaps"].summary


@pytest.mark.parametrize("windowsize", [1, 8])
def test_upload_with_packets_missing_from_the_capture(windowsize: int) -> None:
    res = run_transfer("write", DATA, options=RequestedOptions(blksize=700, windowsize=windowsize, tsize=True))
    data_view, dropped = without(client_view(res), lambda d, p: isinstance(p, Data) and p.block in (4, 40, 41))
    events = rebuild(data_view)
    assert dropped == 3 and summaries(events)[0]["bytes"] == len(DATA)
    assert gaps(events, "DATA") == 3 and set(findings(events)) == {"capture-gaps"}
    ack_view, dropped = without(client_view(res), lambda d, p: isinstance(p, Ack) and p.block in (16, 48))
    events = rebuild(ack_view)
    assert dropped == 2 and gaps(events, "ACK") == 2 and set(findings(events)) == {"capture-gaps"}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("windowsize", [None, 8])
def test_real_loss_is_still_packet_loss(seed: int, windowsize: int | None) -> None:
    """Loss the peers reacted to (resends, repeated ACKs), in a capture that lacks nothing."""
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=windowsize, tsize=True),
                       impairment=Impairment(loss=0.08, seed=seed))
    events = rebuild(client_view(res))
    assert not [e for e in events if isinstance(e, CaptureGap)]
    found = findings(events)
    assert "packet-loss" in found and "capture-gaps" not in found


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("windowsize", [None, 8, 16])
def test_real_loss_and_a_capture_that_missed_packets(seed: int, windowsize: int | None) -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=windowsize, tsize=True),
                       impairment=Impairment(loss=0.08, seed=seed))
    view = client_view(res)
    # Blocks that reached the client once and were taken (no copy sent again): one in eight leaves the capture.
    copies = Counter(p.block for d in view if d.dst == CLIENT and isinstance(p := decode(d.payload), Data))
    last = max(copies)
    once = sorted(b for b, n in copies.items() if n == 1 and b != last)[::8]
    kept, dropped = without(view, lambda d, p: d.dst == CLIENT and isinstance(p, Data) and p.block in once)
    assert dropped == len(once) > 3
    events, whole = rebuild(kept), rebuild(view)
    assert summaries(events)[0]["bytes"] == live_summary(res)["bytes"] == len(DATA)
    assert gaps(events, "DATA") == dropped and gaps(events, "ACK") == 0
    found = findings(events)
    assert {"packet-loss", "capture-gaps"} <= set(found), [(f.id, f.summary) for f in found.values()]
    assert f"missed {dropped} packets" in found["capture-gaps"].summary
    # The loss estimate counts what the peers did, never what the capture lacks: no more than from the whole
    # capture (less when a block the capture lacks was all that separated two losses).
    assert percent(found["packet-loss"]) <= percent(findings(whole)["packet-loss"])
    # Nor does a gap hide loss: every block the whole capture shows past a real gap is still noted so.
    dropped_at = {(d.time, p.block) for d in view if d.dst == CLIENT and isinstance(p := decode(d.payload), Data)
                  and p.block in once}
    assert out_of_order(events) >= out_of_order(whole) - dropped_at


def lockstep(*steps: tuple[str, int]) -> list[Datagram]:
    """A download without options, in the order given: ("D", n) the server's DATA n, ("A", n) an ACK."""
    out = [dgram(0.0, CLIENT, SERVER, rrq())]
    for i, (kind, n) in enumerate(steps, 1):
        if kind == "D":
            out.append(dgram(i * 0.001, TID, CLIENT, encode_data(n, b"x" * (512 if n < 3 else 7))))
        else:
            out.append(dgram(i * 0.001, CLIENT, TID, encode_ack(n)))
    return out


def test_a_sender_that_does_not_wait_is_not_a_capture_gap() -> None:
    """DATA 2 before ACK 1, then ACK 1 after it: the ACK was late, not missing from the capture."""
    events = rebuild(lockstep(("D", 1), ("D", 2), ("A", 1), ("D", 3), ("A", 2), ("A", 3)))
    assert not [e for e in events if isinstance(e, CaptureGap)]
    # Without the late ACK 2, the server's DATA 3 shows the server had an ACK 2 the capture lacks.
    events = rebuild(lockstep(("D", 1), ("A", 1), ("D", 2), ("D", 3), ("A", 3)))
    assert gaps(events, "ACK") == 1 and summaries(events)[0]["ok"]


def test_capture_gaps_in_the_trace_note_and_the_jsonl_record(tmp_path: Path) -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=8))
    view, _ = without(client_view(res), lambda d, p: isinstance(p, Data) and p.block in (10, 11))
    rebuilder = Rebuilder()
    rebuilder.feed(view)
    events = rebuilder.finish()
    assert rebuilder.capture_gaps == 2
    # As `tftpdiag trace` reads it from a file: the warning says the capture dropped packets.
    pcap = tmp_path / "gaps.pcap"
    with open(pcap, "wb") as f, PcapWriter(f) as writer:
        for d in view:
            writer.write(d.time, d.src, d.dst, d.payload)
    loaded = load_trace(pcap)
    assert loaded.warning is not None and "the capture lacks 2 packets the transfers show were delivered" in \
        loaded.warning
    out = io.StringIO()
    print_trace(loaded, out)
    assert "capture-gaps" in out.getvalue() and "packet-loss" not in out.getvalue()
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in events:
        writer.write(e)
    again = list(read_events(io.StringIO(buf.getvalue())))
    assert [e for e in again if isinstance(e, CaptureGap)] == [e for e in events if isinstance(e, CaptureGap)]
    assert set(findings(again)) == {"capture-gaps"}


def test_a_window_the_capture_saw_without_its_ack_and_first_block_is_no_window_bug() -> None:
    """Without ACK 8 and DATA 9, DATA 10 looks like a block past the window the last captured ACK (0)
    allowed: the server's window bug (window-overrun), were the gap not the capture's."""
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=700, windowsize=8, tsize=True))
    view, dropped = without(client_view(res), lambda d, p: (isinstance(p, Ack) and p.block in (8, 40))
                            or (isinstance(p, Data) and p.block in (9, 41, 42)))
    assert dropped == 5
    events = rebuild(view)
    assert gaps(events, "DATA") == 3
    found = findings(events)
    assert set(found) == {"capture-gaps"}, [(f.id, f.summary) for f in found.values()]
