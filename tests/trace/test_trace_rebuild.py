"""tftpdiag.trace.rebuild: captured datagrams -> the events of a live client.

Ground truth comes from tests/support/simnet.py: a simulated transfer gives every datagram each side sent
and received, so a "capture" taken at the client (what the client sent and received) must rebuild
to the same per-transfer figures as the client's own events, and one taken on the wire (everything
sent, including what the network then lost) must agree on the outcome and the bytes. Hand-built
exchanges cover what the simulator does not make: single-port and multi-homed servers, strays,
unrelated traffic, a capture that starts mid-transfer.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from rich.text import Text

from tests.support.simnet import CLIENT, SERVER, Impairment, SimResult, run_transfer
from tftpdiag.protocol.events import (
    Address,
    Completed,
    Event,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    PeerLocked,
    Progress,
    Reason,
    Retransmit,
    Role,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import (
    Data,
    Error,
    OAck,
    Opcode,
    Request,
    encode,
    encode_ack,
    encode_data,
)
from tftpdiag.protocol.timer import Timing
from tftpdiag.report import options_lines, session_summary
from tftpdiag.sessions import SessionTable
from tftpdiag.trace.jsonl import JsonlWriter, read_events
from tftpdiag.trace.pcap import Datagram
from tftpdiag.trace.rebuild import Rebuilder, rebuild
from tftpdiag.tui.widgets.session_panel import options_table

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def dgram(time: float, src: Address, dst: Address, raw: bytes, orig_len: int | None = None) -> Datagram:
    return Datagram(time, src, dst, raw, len(raw) if orig_len is None else orig_len)


def client_view(res: SimResult, session: int = 1) -> list[Datagram]:
    """What a capture on the client's host holds: what the client sent and what reached it."""
    out = []
    for e in res.events:
        if e.session != session:
            continue
        if isinstance(e, PacketSent):
            out.append(dgram(e.time, e.local, e.peer, e.raw))
        elif isinstance(e, PacketReceived):
            out.append(dgram(e.time, e.peer, e.local, e.raw))
    return out


def wire_view(res: SimResult) -> list[Datagram]:
    """What a capture on the path holds: everything either side sent, also what was then lost."""
    return [dgram(e.time, e.local, e.peer, e.raw) for e in res.events if isinstance(e, PacketSent)]


def summaries(events: Iterable[Event], only: Callable[[Event], bool] = lambda e: True) -> list[dict[str, Any]]:
    table = SessionTable()
    table.apply(e for e in events if only(e))
    return [session_summary(r) for r in table]


def live_summary(res: SimResult) -> dict[str, Any]:
    return summaries(res.events, lambda e: e.session == 1)[0]


SAME = ("ok", "role", "direction", "file", "mode", "local", "peer", "replied_from", "bytes", "total", "options",
        "packets", "error")


def assert_same(live: dict[str, Any], rebuilt: dict[str, Any], keys: Iterable[str] = SAME,
                duration: bool = True) -> None:
    diff = {k: (live[k], rebuilt[k]) for k in keys if live[k] != rebuilt[k]}
    assert not diff, diff
    if duration:
        assert rebuilt["duration_s"] == pytest.approx(live["duration_s"], abs=1e-6)


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def check_invariants(events: list[Event]) -> None:
    """What every consumer may rely on, whatever the capture held."""
    times = [e.time for e in events]
    assert times == sorted(times)
    by_session: dict[int, list[Event]] = {}
    for e in events:
        by_session.setdefault(e.session, []).append(e)
    assert sorted(by_session) == list(range(1, len(by_session) + 1))
    for evs in by_session.values():
        assert isinstance(evs[0], TransferStarted)
        start = evs[0]
        assert start.role.is_client
        assert len([e for e in evs if isinstance(e, (Completed, Failed))]) == 1
        for e in evs:
            if isinstance(e, (PacketSent, PacketReceived)):
                assert e.local == start.local
        ends = [i for i, e in enumerate(evs) if isinstance(e, (Completed, Failed))]
        assert isinstance(evs[ends[0] - 1], Progress)


DATA = bytes(range(256)) * 400  # 102400 bytes


# --------------------------------------------------------------------------------------------------
# ground truth from the simulator
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize(
    "options",
    [RequestedOptions(), RequestedOptions(blksize=1468, tsize=True),
     RequestedOptions(blksize=700, windowsize=8, tsize=True)],
    ids=["rfc1350", "blksize-tsize", "window8"],
)
def test_clean_transfers_match_the_live_client(direction: str, options: RequestedOptions) -> None:
    res = run_transfer(direction, DATA, options=options)
    live = live_summary(res)
    for view in (client_view(res), wire_view(res)):
        events = rebuild(view)
        check_invariants(events)
        (rebuilt,) = summaries(events)
        # On the wire each datagram is stamped when sent, so only the duration moves.
        assert_same(live, rebuilt, [k for k in SAME if not (k == "total" and direction == "write")],
                    duration=view == client_view(res))
        assert rebuilt["retransmits"] == rebuilt["duplicates"] == rebuilt["timeouts"] == 0


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize("windowsize", [None, 4])
def test_lossy_transfers_match_the_live_client(seed: int, direction: str, windowsize: int | None) -> None:
    """Loss, duplication and reordering: retransmitted requests, window gaps, second server sessions."""
    options = RequestedOptions(blksize=700, windowsize=windowsize, tsize=True)
    res = run_transfer(direction, DATA, options=options,
                       impairment=Impairment(loss=0.08, dup=0.03, reorder=0.05, seed=seed))
    live = live_summary(res)
    client = rebuild(client_view(res))
    check_invariants(client)
    (rebuilt,) = summaries(client)
    assert_same(live, rebuilt, [k for k in SAME if not (k == "total" and direction == "write")])
    # On the wire the capture also sees what was lost on the way: same outcome and bytes.
    wire = rebuild(wire_view(res))
    check_invariants(wire)
    (seen,) = summaries(wire)
    assert (seen["ok"], seen["bytes"], seen["replied_from"]) == (live["ok"], live["bytes"], live["replied_from"])
    # Retransmit events account for every packet noted as sent again.
    for events in (client, wire):
        notes = sum(1 for e in events if isinstance(e, (PacketSent, PacketReceived)) and e.note is Note.RETRANSMIT)
        ended = next(e for e in events if isinstance(e, (Completed, Failed)))
        assert ended.stats.retransmits == sum(r.count for r in of(events, Retransmit) if r.time <= ended.time)
        assert notes >= ended.stats.retransmits


def test_lossy_counts_describe_what_was_seen() -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(windowsize=8),
                       impairment=Impairment(loss=0.1, seed=3))
    events = rebuild(wire_view(res))
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == len(DATA)
    # Every DATA block the server sent more than once is noted as a retransmit, whoever saw it; the
    # figure in the summary is the one at completion (the server may repeat its last block after).
    sent = Counter(e.packet.block for e in res.events
                   if isinstance(e, PacketSent) and e.session != 1 and isinstance(e.packet, Data))
    noted = [e for e in events if isinstance(e, PacketReceived) and e.note is Note.RETRANSMIT]
    assert len(noted) == sum(n - 1 for n in sent.values())
    done = of(events, Completed)[0].time
    # The client's own ACKs sent again after a silence are retransmits too, as the live client counts them.
    resent = [e for e in events if isinstance(e, PacketSent) and e.note is Note.RETRANSMIT and e.time <= done]
    assert s["retransmits"] == sum(1 for e in noted if e.time <= done) + len(resent)
    assert noted and s["duplicates"] == 0
    assert of(events, Retransmit) and all(r.reason in ("timeout", "window-gap") for r in of(events, Retransmit))
    # The client's own repeats of an ACK after a silence are its timeouts.
    assert s["timeouts"] == len(of(events, TimedOut)) > 0


@pytest.mark.parametrize("rollover", [0, 1])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_block_number_rollover(rollover: int, direction: str) -> None:
    """70000 blocks of 8 bytes: the block number passes 65535 to 0 (or to 1, as some senders do)."""
    data = bytes(range(256)) * (8 * 70_000 // 256) + b"tail"
    timing = Timing(rollover=rollover)
    res = run_transfer(direction, data, options=RequestedOptions(blksize=8),
                       server_timing=timing if direction == "read" else Timing(),
                       client_timing=timing if direction == "write" else Timing())
    live = live_summary(res)
    assert live["ok"] and live["bytes"] == len(data)
    (rebuilt,) = summaries(rebuild(client_view(res)))
    assert_same(live, rebuilt, [k for k in SAME if k != "total"])


@pytest.mark.parametrize("windowsize", [1, 16])
def test_rollover_with_window_gaps(windowsize: int) -> None:
    data = bytes(range(256)) * (8 * 66_000 // 256)
    res = run_transfer("read", data, options=RequestedOptions(blksize=8, windowsize=windowsize),
                       impairment=Impairment(loss=0.005, seed=7))
    live = live_summary(res)
    (rebuilt,) = summaries(rebuild(client_view(res)))
    assert_same(live, rebuilt)
    (seen,) = summaries(rebuild(wire_view(res)))
    assert seen["ok"] and seen["bytes"] == len(data)


@pytest.mark.parametrize("size", [0, 512, 1024, 1000])
def test_final_block_sizes_including_an_empty_one(size: int) -> None:
    for direction in ("read", "write"):
        res = run_transfer(direction, b"\xaa" * size)
        live = live_summary(res)
        (rebuilt,) = summaries(rebuild(client_view(res)))
        assert_same(live, rebuilt, [k for k in SAME if k != "total"])
        assert rebuilt["ok"] and rebuilt["bytes"] == size


def test_netascii_counts_bytes_on_the_wire() -> None:
    text = b"line\nbare cr\r end\n" * 200
    for direction in ("read", "write"):
        res = run_transfer(direction, text, mode="netascii")
        live = live_summary(res)
        (rebuilt,) = summaries(rebuild(client_view(res)))
        assert_same(live, rebuilt, [k for k in SAME if k != "total"])
        assert rebuilt["mode"] == "netascii" and rebuilt["bytes"] > len(text)


def test_file_not_found_and_refused_options() -> None:
    res = run_transfer("read", DATA, server_files={})
    live = live_summary(res)
    events = rebuild(client_view(res))
    (rebuilt,) = summaries(events)
    assert_same(live, rebuilt)
    assert rebuilt["error"] == {"code": 1, "message": "file not found", "raised_by": "peer", "sent_by": "server",
                                "reason": "peer-error"}
    failed = of(events, Failed)[0]
    assert (failed.reason, failed.raised_by) == (Reason.PEER_ERROR, Side.PEER)
    # A server that leaves an option out of its OACK: verdicts as the live client gives them.
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=1024, windowsize=4, tsize=True),
                       policy=ServerPolicy(refuse=frozenset({"windowsize"})))
    assert_same(live_summary(res), summaries(rebuild(client_view(res)))[0])


def test_no_reply_at_all() -> None:
    res = run_transfer("read", DATA, impairment=Impairment(drop=lambda raw, src, dst: dst == SERVER))
    assert not live_summary(res)["ok"]
    events = rebuild(client_view(res))
    check_invariants(events)
    (s,) = summaries(events)
    assert not s["ok"] and s["replied_from"] is None and s["bytes"] == 0
    assert s["error"]["reason"] == "timeout" and s["error"]["raised_by"] == "local"
    assert s["error"]["message"].startswith("no reply from 10.0.0.2:69 to the RRQ (sent 6 times")
    requests = [e for e in events if isinstance(e, PacketSent)]
    assert [e.note for e in requests] == [Note.NONE] + [Note.RETRANSMIT] * 5
    assert s["timeouts"] == len(of(events, TimedOut)) == 5 and s["retransmits"] == 5
    assert [t.waiting_for for t in of(events, TimedOut)] == ["reply to RRQ"] * 5


def test_capture_starting_mid_transfer() -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(blksize=1024))
    view = client_view(res)
    assert view[40].src == CLIENT and view[40].payload == encode_ack(19)
    rebuilder = Rebuilder()
    rebuilder.feed(view[40:])  # from the ACK of block 19 on: no request, no OACK
    events = rebuilder.finish()
    check_invariants(events)
    assert rebuilder.midstream == 1
    (s,) = summaries(events)
    assert s["ok"] and s["file"] == "" and s["role"] == "client-read"
    # No option was seen, but the block size the DATA show is the one the transfer ran with.
    assert s["options"]["granted"] is None and s["options"]["outcomes"] == []
    assert s["options"]["effective"]["blksize"] == 1024
    table = SessionTable()
    table.apply(events)
    (record,) = table
    assert options_lines(record) == ["request and options not captured: 1024-byte blocks, as its DATA show"]
    panel = options_table(record)
    assert isinstance(panel, Text)
    assert panel.plain == "Request and options not captured: 1024-byte blocks, as its DATA show."
    assert s["local"] == {"address": CLIENT[0], "port": CLIENT[1]}
    assert s["bytes"] == len(DATA) - 19 * 1024
    # From a DATA block on: the block size comes from the largest block seen.
    rebuilder = Rebuilder()
    rebuilder.feed(view[41:])
    (s,) = summaries(rebuilder.finish())
    assert s["ok"] and s["bytes"] == len(DATA) - 19 * 1024 and s["options"]["effective"]["blksize"] == 1024


def test_session_ids_follow_first_requests_and_events_stay_in_time_order() -> None:
    """Three transfers from three clients, interleaved in one capture."""
    views = []
    for i, (direction, data) in enumerate([("read", DATA), ("write", DATA[:5000]), ("read", b"")]):
        res = run_transfer(direction, data, filename=f"f{i}", impairment=Impairment(delay=0.001 * (i + 1)))
        shift = (f"10.0.1.{i + 1}", 40000)
        views.append([dgram(d.time + 0.0003 * i, shift if d.src == CLIENT else d.src,
                            shift if d.dst == CLIENT else d.dst, d.payload) for d in client_view(res)])
    merged = sorted((d for v in views for d in v), key=lambda d: d.time)
    events = rebuild(merged)
    check_invariants(events)
    s = summaries(events)
    assert [x["file"] for x in s] == ["f0", "f1", "f2"]
    assert [x["bytes"] for x in s] == [len(DATA), 5000, 0] and all(x["ok"] for x in s)


# --------------------------------------------------------------------------------------------------
# hand-built exchanges
# --------------------------------------------------------------------------------------------------

C: Address = ("192.0.2.10", 40123)
S: Address = ("192.0.2.1", 69)
TID: Address = ("192.0.2.1", 51000)


def rrq(name: str = "boot.img", *options: tuple[str, str]) -> bytes:
    return encode(Request(Opcode.RRQ, name, "octet", tuple(options)))


def download(server: Address, reply_from: Address, blocks: list[bytes], t0: float = 0.0,
             client: Address = C) -> list[Datagram]:
    out = [dgram(t0, client, server, rrq())]
    t = t0
    for n, payload in enumerate(blocks, 1):
        t += 0.001
        out.append(dgram(t, reply_from, client, encode_data(n, payload)))
        out.append(dgram(t + 0.0005, client, reply_from, encode_ack(n)))
    return out


def test_single_port_server() -> None:
    events = rebuild(download(S, S, [b"a" * 512, b"b" * 100]))
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 612 and s["replied_from"] == s["peer"]
    assert of(events, PeerLocked)[0].peer == S


def test_multi_homed_server_answers_from_another_address() -> None:
    other = ("198.51.100.7", 52000)
    events = rebuild(download(S, other, [b"a" * 512, b"b" * 3]))
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 515
    assert s["peer"] == {"address": S[0], "port": 69} and s["replied_from"] == {"address": other[0], "port": 52000}


def test_repeated_request_is_the_same_transfer_and_a_second_answer_is_stray() -> None:
    second = ("192.0.2.1", 51001)
    raw = rrq()
    capture = [dgram(0.0, C, S, raw), dgram(1.0, C, S, raw)]
    capture += download(S, TID, [b"x" * 512, b"y"], t0=1.0)[1:]
    # The second server session (for the repeated request) answers too; the client tells it off.
    capture.insert(3, dgram(1.0012, second, C, encode_data(1, b"x" * 512)))
    capture.insert(4, dgram(1.0013, C, second, encode(Error(5, "unknown transfer ID"))))
    capture.sort(key=lambda d: d.time)
    events = rebuild(capture)
    check_invariants(events)
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 513 and s["replied_from"]["port"] == TID[1]
    notes = [(type(e).__name__, e.note) for e in events if isinstance(e, (PacketSent, PacketReceived))]
    assert notes[1] == ("PacketSent", Note.RETRANSMIT)
    assert ("PacketReceived", Note.STRAY) in notes
    assert of(events, Retransmit)[0].first_block is None
    final = of(events, Completed)[0].stats
    assert final.stray == 1 and final.retransmits == 1 and final.timeouts == 1


def test_new_request_from_the_same_port() -> None:
    first = download(S, TID, [b"a" * 10])
    again = download(S, ("192.0.2.1", 51002), [b"b" * 20], t0=5.0)
    events = rebuild(first + again)
    assert [(x["ok"], x["bytes"]) for x in summaries(events)] == [(True, 10), (True, 20)]
    # A different request before the first ended: the client gave up on the first.
    abandoned = [dgram(0.0, C, S, rrq("a")), dgram(3.0, C, S, rrq("b"))]
    abandoned += download(S, TID, [b"z"], t0=3.0)[1:]
    a, b = summaries(rebuild(abandoned))
    assert not a["ok"] and "new RRQ from the same port" in a["error"]["message"]
    assert b["ok"] and b["file"] == "b"


def test_unrelated_udp_and_junk_are_ignored() -> None:
    dns = ("192.0.2.53", 53)
    noise = [
        dgram(0.0001, ("192.0.2.10", 5353), dns, b"\x00\x03\x01\x00\x00\x01" + b"q" * 30),  # DNS id 3: "DATA"
        dgram(0.0002, dns, ("192.0.2.10", 5353), b"\x00\x03\x81\x80" + b"r" * 40),
        dgram(0.0003, ("192.0.2.10", 5353), dns, b"\x00\x04\x01\x00"),  # id 4: looks like "ACK 256"
        dgram(0.0004, ("192.0.2.99", 9), ("192.0.2.98", 9), b""),
        dgram(0.0005, ("192.0.2.99", 9), ("192.0.2.98", 9), b"\x00\x01no-mode\x00"),
        dgram(0.0006, ("192.0.2.99", 9), ("192.0.2.98", 9), b"\x00\x05\x00"),
        dgram(0.0007, ("192.0.2.99", 9), ("192.0.2.98", 9), b"\xff" * 1000),
    ]
    capture = sorted(noise + download(S, TID, [b"a" * 512, b""]), key=lambda d: d.time)
    events = rebuild(capture)
    check_invariants(events)
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 512 and s["packets"] == {"sent": 3, "received": 2}


def test_malformed_and_unexpected_packets_are_noted() -> None:
    capture = download(S, TID, [b"a" * 512, b"end"])
    capture.insert(2, dgram(0.0011, TID, C, b"\x00\x09what"))
    capture.insert(3, dgram(0.0012, TID, C, encode_ack(7)))
    events = rebuild(capture)
    received = [e for e in events if isinstance(e, PacketReceived)]
    assert [e.note for e in received][:3] == [Note.NONE, Note.MALFORMED, Note.UNEXPECTED]
    assert received[1].packet is None and "unknown opcode" in received[1].detail
    assert summaries(events)[0]["ok"]


def test_client_refusing_the_oack_with_error_8() -> None:
    capture = [
        dgram(0.0, C, S, rrq("f", ("blksize", "1024"))),
        dgram(0.001, TID, C, encode(OAck((("blksize", "4096"),)))),  # more than asked: refused
        dgram(0.002, C, TID, encode(Error(8, "blksize 4096 exceeds the 1024 asked"))),
    ]
    events = rebuild(capture)
    (s,) = summaries(events)
    assert not s["ok"]
    assert s["error"] == {"code": 8, "message": "blksize 4096 exceeds the 1024 asked", "raised_by": "local",
                          "sent_by": "client", "reason": "protocol"}
    assert [o["verdict"] for o in s["options"]["outcomes"]] == ["refused"]
    assert s["options"]["granted"] == {"blksize": "4096"}


def test_oack_our_client_would_refuse_but_this_client_took() -> None:
    capture = [
        dgram(0.0, C, S, rrq("f", ("windowsize", "4"))),
        dgram(0.001, TID, C, encode(OAck((("blksize", "512"), ("windowsize", "4"))))),  # blksize not asked
        dgram(0.002, C, TID, encode_ack(0)),
    ]
    capture += [d for d in download(S, TID, [b"q" * 512, b"r"], t0=0.002)[1:]]
    events = rebuild(capture)
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 513
    assert s["options"]["effective"]["windowsize"] == 4
    assert len(of(events, OptionsNegotiated)) == 1


def test_server_error_8_on_the_request_refuses_the_options() -> None:
    capture = [dgram(0.0, C, S, rrq("f", ("tsize", "0"))),
               dgram(0.001, TID, C, encode(Error(8, "Unsupported option(s) requested")))]
    (s,) = summaries(rebuild(capture))
    assert s["error"]["raised_by"] == "peer" and s["error"]["code"] == 8
    assert [o["verdict"] for o in s["options"]["outcomes"]] == ["refused"]


def test_transfer_that_just_stops() -> None:
    capture = download(S, TID, [b"a" * 512] * 3)
    capture.append(dgram(30.0, ("192.0.2.77", 1), ("192.0.2.78", 2), b"later traffic"))
    events = rebuild(capture)
    (s,) = summaries(events)
    assert not s["ok"] and s["bytes"] == 1536 and s["error"]["reason"] == "timeout"
    assert "the capture goes on 30.0 s" in s["error"]["message"] or "29.9" in s["error"]["message"]
    (s,) = summaries(rebuild(capture[:-1]))
    assert "the capture ends before the transfer does" in s["error"]["message"]


def test_window_with_a_gap_resent_from_the_gap() -> None:
    """Window of 4: block 2 is lost before the client; the client ACKs 1, the server resends 2-4."""
    oack = encode(OAck((("windowsize", "4"),)))
    blocks = {n: bytes([n]) * 512 for n in range(1, 6)}
    blocks[5] = b"end"
    seq = [(C, S, rrq("w", ("windowsize", "4"))), (TID, C, oack), (C, TID, encode_ack(0))]
    seq += [(TID, C, encode_data(n, blocks[n])) for n in (1, 3, 4)]  # 2 never arrives
    seq += [(C, TID, encode_ack(1))]
    seq += [(TID, C, encode_data(n, blocks[n])) for n in (2, 3, 4, 5)]  # 2-4 again, then 5
    seq += [(C, TID, encode_ack(5))]
    capture = [dgram(i * 0.001, src, dst, raw) for i, (src, dst, raw) in enumerate(seq)]
    events = rebuild(capture)
    check_invariants(events)
    (s,) = summaries(events)
    assert s["ok"] and s["bytes"] == 4 * 512 + 3
    notes = [e.note for e in events if isinstance(e, PacketReceived) and isinstance(e.packet, Data)]
    # Block 2 is a retransmit too: the server had sent blocks up to 4 before it.
    assert notes == [Note.NONE, Note.OUT_OF_ORDER, Note.OUT_OF_ORDER] + [Note.RETRANSMIT] * 3 + [Note.NONE]
    (r,) = of(events, Retransmit)
    assert (r.first_block, r.count, r.reason) == (2, 3, "window-gap")
    stats = of(events, Completed)[0].stats
    assert stats.out_of_order == 2 and stats.retransmits == 3 and stats.blocks == 5


def test_snap_length_cut_counts_wire_lengths() -> None:
    capture = [dgram(d.time, d.src, d.dst, d.payload[:68], len(d.payload))
               for d in download(S, TID, [b"a" * 512] * 3 + [b"b" * 10])]
    rebuilder = Rebuilder()
    rebuilder.feed(capture)
    (s,) = summaries(rebuilder.finish())
    assert s["ok"] and s["bytes"] == 3 * 512 + 10
    assert rebuilder.cut == 3


def test_upload_and_its_final_ack() -> None:
    wrq = encode(Request(Opcode.WRQ, "up.bin", "octet", (("tsize", "600"),)))
    seq = [(C, S, wrq), (TID, C, encode(OAck((("tsize", "600"),)))),
           (C, TID, encode_data(1, b"u" * 512)), (TID, C, encode_ack(1)),
           (C, TID, encode_data(2, b"v" * 88)), (TID, C, encode_ack(2)), (TID, C, encode_ack(2))]
    events = rebuild([dgram(i * 0.01, s, d, r) for i, (s, d, r) in enumerate(seq)])
    (s,) = summaries(events)
    assert s["ok"] and s["direction"] == "upload" and s["role"] == Role.CLIENT_WRITE.value
    assert s["bytes"] == 600 and s["total"] == 600
    # The server's final ACK again 10 ms later, nothing from the client between: no timer resends so soon and
    # nothing asked for it: the capture saw it twice.
    assert [e.note for e in events if isinstance(e, PacketReceived)][-1] is Note.COPY


def test_rebuilt_events_survive_a_jsonl_round_trip() -> None:
    res = run_transfer("read", DATA, options=RequestedOptions(windowsize=4),
                       impairment=Impairment(loss=0.05, seed=2))
    garbled = download(S, TID, [b"a" * 512, b"z"], t0=res.end_time + 1)
    garbled.insert(2, dgram(res.end_time + 1.0012, C, TID, b"\x00\x09garbled"))  # C sends junk
    events = rebuild(wire_view(res) + garbled)
    assert any(isinstance(e, PacketSent) and e.packet is None and e.note is Note.MALFORMED for e in events)
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in events:
        writer.write(e)
    again = list(read_events(io.StringIO(buf.getvalue())))
    assert summaries(again) == summaries(events)


def test_a_jsonl_snap_length_cuts_data_only() -> None:
    """--trace-snaplen keeps a request whole however long its name (a reader needs it), cuts DATA."""
    name = "firmware/" + "x" * 100 + ".bin"
    res = run_transfer("read", DATA, filename=name, server_files={name: DATA})
    buf = io.StringIO()
    writer = JsonlWriter(buf, snaplen=48)
    for e in res.events:
        writer.write(e)
    again = [e for e in read_events(io.StringIO(buf.getvalue())) if isinstance(e, (PacketSent, PacketReceived))]
    requests = [e for e in again if isinstance(e.packet, Request)]
    assert requests and all(e.raw.startswith(b"\x00\x01" + name.encode() + b"\x00") for e in requests)
    data = [e for e in again if len(e.raw) > 4 and e.raw[:2] == b"\x00\x03"]
    assert data and all(len(e.raw) == 48 for e in data)


def test_feeding_can_stop_anywhere() -> None:
    """A damaged capture stops the reader mid-way; what was fed still makes whole transfers."""
    view = client_view(run_transfer("read", DATA, options=RequestedOptions(blksize=1024)))

    def broken() -> Iterable[Datagram]:
        yield from view[:50]
        raise RuntimeError("damaged")

    rebuilder = Rebuilder()
    with pytest.raises(RuntimeError):
        rebuilder.feed(broken())
    events = rebuilder.finish()
    check_invariants(events)
    (s,) = summaries(events)
    assert not s["ok"] and s["bytes"] == 24 * 1024
    assert rebuilder.datagrams == 50


def test_a_large_synthetic_capture_rebuilds_every_session() -> None:
    """Lock-step downloads of 1468-byte blocks, 10 interleaved clients, 400k datagrams plus noise: every
    session whole. (Its speed is measured in benchmarks/trace_open.py, not here: this test asserted
    100,000 datagrams a second, and a slower machine's CI measured 96,924.)"""
    capture: list[Datagram] = []
    payload = b"p" * 1468
    data_raw = [encode_data(n, payload) for n in range(0x10000)]
    ack_raw = [encode_ack(n) for n in range(0x10000)]
    clients = [(f"10.9.0.{i + 1}", 40000 + i) for i in range(10)]
    tids = [("10.9.1.1", 50000 + i) for i in range(10)]
    t = 0.0
    for c in clients:
        capture.append(dgram(t, c, ("10.9.1.1", 69), rrq()))
    for n in range(1, 20_001):
        for c, tid in zip(clients, tids, strict=True):
            t += 1e-5
            capture.append(Datagram(t, tid, c, data_raw[n & 0xFFFF], 1472))
            capture.append(Datagram(t, c, tid, ack_raw[n & 0xFFFF], 4))
        if n % 50 == 0:
            capture.append(Datagram(t, ("10.9.0.200", 5353), ("224.0.0.251", 5353), b"\x12\x34mdns", 6))
    events = rebuild(capture)
    found = summaries(events)
    assert len(found) == 10
    assert all(s["bytes"] == 20_000 * 1468 for s in found)


def coalesce(view: list[Datagram]) -> tuple[list[Datagram], int]:
    """``view`` as a capture on a host with UDP offload holds it: each run of DATA from one source to
    one destination, blocks one apart and all full but the last, as one datagram (its first one's time).
    Returns the capture and how many runs of two or more it merged."""
    groups: list[list[Datagram]] = []
    for d in view:
        group = groups[-1] if groups else None
        if (group is not None and d.payload[:2] == b"\x00\x03" == group[0].payload[:2]
                and (d.src, d.dst) == (group[0].src, group[0].dst)
                and len(group[-1].payload) == len(group[0].payload) >= len(d.payload)
                and int.from_bytes(d.payload[2:4], "big")
                == (int.from_bytes(group[-1].payload[2:4], "big") + 1) & 0xFFFF):
            group.append(d)
        else:
            groups.append([d])
    merged = [dgram(g[0].time, g[0].src, g[0].dst, b"".join(d.payload for d in g)) for g in groups]
    return merged, sum(len(g) > 1 for g in groups)


@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_windows_captured_as_one_datagram_are_taken_apart(direction: str, loss: float) -> None:
    # A capture where the kernel had not cut windows into datagrams yet (UDP GSO on the sender's host,
    # always so on loopback) must rebuild to the same transfer as one that holds each datagram.
    res = run_transfer(direction, DATA, options=RequestedOptions(blksize=700, windowsize=8, tsize=True),
                       impairment=Impairment(loss=loss, seed=3))
    plain = wire_view(res)
    merged, runs = coalesce(plain)
    assert runs > 5 and len(merged) < len(plain)
    rebuilder = Rebuilder()
    rebuilder.feed(merged)
    events = rebuilder.finish()
    check_invariants(events)
    assert rebuilder.coalesced == runs
    (rebuilt,) = summaries(events)
    (expected,) = summaries(rebuild(plain))
    assert_same(expected, rebuilt, [*SAME, "retransmits", "duplicates"], duration=False)
    data = [e.packet.block for e in events if isinstance(e, (PacketSent, PacketReceived))
            and e.raw[:2] == b"\x00\x03"]
    assert data == [int.from_bytes(d.payload[2:4], "big") for d in plain if d.payload[:2] == b"\x00\x03"]


def test_one_oversized_data_is_not_taken_apart() -> None:
    # Larger than the block size but not a run of DATA: a breach the rebuild reports, not a window.
    blocks = [b"a" * 512, b"b" * 600 + b"\x00\x03\x00\x09" + b"c" * 200, b"d" * 10]
    rebuilder = Rebuilder()
    rebuilder.feed(download(S, TID, blocks))
    events = rebuilder.finish()
    assert rebuilder.coalesced == 0
    assert [e.packet.block for e in events if isinstance(e, PacketReceived) and e.raw[:2] == b"\x00\x03"] == [1, 2, 3]


# --------------------------------------------------------------------------------------------------
# a client that asks again without the options the server refused
# --------------------------------------------------------------------------------------------------

FB_CLIENT, FB_SERVER = ("10.0.0.1", 4000), ("10.0.0.2", 69)
TID1, TID2 = ("10.0.0.2", 5001), ("10.0.0.2", 5002)
ASKED = (("blksize", "1468"), ("tsize", "0"))


def _refused_then(*after: Datagram) -> list[Datagram]:
    return [dgram(1.0, FB_CLIENT, FB_SERVER, encode(Request(Opcode.RRQ, "a.txt", "netascii", ASKED))),
            dgram(1.001, TID1, FB_CLIENT, encode(Error(8, "Unsupported option(s) requested"))), *after]


def test_a_request_asked_again_without_the_refused_options_is_the_same_transfer() -> None:
    events = rebuild(_refused_then(
        dgram(1.002, FB_CLIENT, FB_SERVER, encode(Request(Opcode.RRQ, "a.txt", "netascii", ()))),
        dgram(1.003, TID2, FB_CLIENT, encode_data(1, b"hi\r\n")),
        dgram(1.004, FB_CLIENT, TID2, encode_ack(1)),
    ))
    (summary,) = summaries(events)
    assert summary["ok"] and summary["bytes"] == 4 and summary["replied_from"] == {"address": TID2[0], "port": TID2[1]}
    assert summary["retried"] == {"code": 8, "message": "Unsupported option(s) requested",
                                  "asked": dict(ASKED), "requested": {}}
    assert [(o["name"], o["verdict"]) for o in summary["options"]["outcomes"]] == [
        ("blksize", "dropped"), ("tsize", "dropped")]
    # The server named no option: no outcome says which one it refused.
    assert all(o["name"] not in o["meaning"] for o in summary["options"]["outcomes"]), summary["options"]
    assert [e.peer for e in events if isinstance(e, PeerLocked)] == [TID1, TID2]
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in events:
        writer.write(e)
    assert summaries(read_events(io.StringIO(buf.getvalue()))) == summaries(events)


@pytest.mark.parametrize("after", [
    (),  # the capture ends
    (dgram(1.5, FB_CLIENT, FB_SERVER, encode(Request(Opcode.RRQ, "b.txt", "netascii", ()))),),  # another file
    (dgram(40.0, FB_CLIENT, FB_SERVER, encode(Request(Opcode.RRQ, "a.txt", "netascii", ()))),),  # far too late
], ids=["capture-ends", "other-file", "much-later"])
def test_a_refusal_the_client_did_not_fall_back_from_ends_the_transfer_when_it_came(after) -> None:
    events = rebuild(_refused_then(*after))
    first = summaries(events)[0]
    assert not first["ok"] and first["retried"] is None
    assert first["error"] == {"code": 8, "message": "Unsupported option(s) requested", "raised_by": "peer",
                              "sent_by": "server", "reason": "peer-error"}
    assert first["duration_s"] == pytest.approx(0.001)
    assert [(o["name"], o["verdict"]) for o in first["options"]["outcomes"]] == [
        ("blksize", "refused"), ("tsize", "refused")]
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert len(summaries(events)) == 1 + len(after)
