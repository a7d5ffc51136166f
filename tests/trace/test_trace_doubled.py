"""A capture that sees every datagram twice: a mirror (SPAN) port copying both directions of a link, a capture
on a bridge and one of its members at once (tcpdump -i any), a switching loop. The second sight of each is
the capture's copy (Note.COPY), not a resend by either end: no retransmit, loss or Sorcerer's Apprentice
comes of the copies, and the capture-doubled finding says what they are. Resends the ends really made (a
timer's, a Sorcerer's Apprentice's) still count, doubled or not; a capture seen once reads as it always did.
A few datagrams again (a network that duplicates now and then) are no capture point's doing: duplicates,
counted as a live client counts them (protocol/doubled.py decides by the share, at the end).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support.simnet import run_transfer
from tests.trace.test_trace_rebuild import DATA, client_view
from tests.trace.test_trace_sides import (
    OURS,
    TID,
    C,
    S,
    dgram,
    every_data_seen_twice,
    lock_step_over_a_slow_path,
    oack,
    rrq,
    server_resends,
    server_silent_at_the_wrap,
    sorcerers_apprentice,
    words,
)
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.findings import Finding, analyze
from tftpdiag.protocol.events import Note, PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Data, Error, encode, encode_ack, encode_data
from tftpdiag.report import session_summary
from tftpdiag.sessions import SessionTable
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import Datagram, PcapWriter, read_datagrams
from tftpdiag.trace.rebuild import rebuild
from tftpdiag.trace.summary import trace_json

T0 = 1.7e9  # pcap timestamps are epoch seconds


def doubled(capture: Iterable[Datagram], delay: float = 0.001,
            only: Callable[[Datagram], bool] = lambda d: True) -> list[Datagram]:
    """Every datagram (or those ``only`` takes) seen again ``delay`` seconds later, byte for byte: what a
    capture point that sees each packet twice holds. A copy 1 ms behind comes after the other end's answer
    to its original when that end answers sooner (as on loopback)."""
    out = []
    for d in capture:
        out.append(d)
        if only(d):
            out.append(Datagram(d.time + delay, d.src, d.dst, d.payload, d.orig_len))
    out.sort(key=lambda d: d.time)  # stable: an original before its copy
    return out


def traced(tmp_path: Path, name: str, capture: Iterable[Datagram]) -> dict[str, Any]:
    """``tftpdiag trace FILE.pcap --json``, in-process: the capture written as a pcap and read back."""
    path = tmp_path / f"{name}.pcap"
    with PcapWriter(path) as writer:
        for d in capture:
            writer.write(d.time if d.time > T0 else T0 + d.time, d.src, d.dst, d.payload)
    return trace_json(load_trace(path))


def the_transfer(out: dict[str, Any]) -> dict[str, Any]:
    (transfer,) = out["transfers"]
    return transfer


def ids(transfer: dict[str, Any]) -> set[str]:
    return {f["id"] for f in transfer["findings"]}


def finding(transfer: dict[str, Any], finding_id: str) -> dict[str, Any]:
    (found,) = [f for f in transfer["findings"] if f["id"] == finding_id]
    return found


def windowed_download() -> list[Datagram]:
    """windowsize 4, 40 blocks: each window's blocks 20 us apart, the client's ACK 2 ms after it (a slow
    device), the next window 2 ms later."""
    out = [dgram(0.0, C, S, rrq(options=(("windowsize", "4"),))), dgram(0.002, TID, C, oack(("windowsize", "4"))),
           dgram(0.004, C, TID, encode_ack(0))]
    t = 0.006
    for first in range(1, 41, 4):
        for block in range(first, first + 4):
            out.append(dgram(t, TID, C, encode_data(block, b"w" * (512 if block < 40 else 9))))
            t += 0.00002
        t += 0.002
        out.append(dgram(t, C, TID, encode_ack(first + 3)))
        t += 0.002
    return out


def simulated_download() -> list[Datagram]:
    """A lock-step download by the live client against the live server (tests/support/simnet.py), as a
    capture beside the client holds it: answers come at once, so a copy 1 ms behind its original comes
    after the answer to it, and after the next packet too."""
    return client_view(run_transfer("read", DATA, options=RequestedOptions(blksize=700, tsize=True)))


def simulated_window(direction: str) -> Callable[[], list[Datagram]]:
    """A transfer in windows of 8 blocks by the live client and server (simnet), answered at once: a copy
    of a block 1 ms behind comes after the ACK of its window, and after the next window too."""
    def capture() -> list[Datagram]:
        return client_view(run_transfer(direction, DATA,
                                        options=RequestedOptions(blksize=700, windowsize=8, tsize=True)))
    return capture


CLEAN = {
    "lock-step-slow-path": (lock_step_over_a_slow_path, {"latency-bound"}),
    "lock-step-at-once": (simulated_download, set()),
    "window": (windowed_download, set()),
    "window-at-once-download": (simulated_window("read"), set()),
    "window-at-once-upload": (simulated_window("write"), set()),
}


@pytest.mark.parametrize("delay", [0.001, 0.00001], ids=["1ms", "10us"])
@pytest.mark.parametrize("case", list(CLEAN))
def test_a_clean_capture_seen_twice_is_explained_and_judged_as_seen_once(tmp_path: Path, case: str,
                                                                        delay: float) -> None:
    capture, expected = CLEAN[case]
    once = traced(tmp_path, "once", capture())
    twice = traced(tmp_path, "twice", doubled(capture(), delay))
    seen_once, seen_twice = the_transfer(once), the_transfer(twice)
    # The capture seen once reads as it always did: no copies, nothing new.
    assert ids(seen_once) == expected, seen_once["findings"]
    assert seen_once["retransmits"] == seen_once["timeouts"] == seen_once["duplicates"] == 0
    # Seen twice: the same transfer, the same findings, and the one that says why every packet shows twice.
    assert ids(seen_twice) == expected | {"capture-doubled"}, seen_twice["findings"]
    for key in ("ok", "bytes", "file", "options", "error"):
        assert seen_twice[key] == seen_once[key], key
    assert seen_twice["retransmits"] == seen_twice["timeouts"] == seen_twice["duplicates"] == 0
    assert twice["devices"] == once["devices"]
    assert once["warning"] is None
    assert "TFTP datagrams appear twice, the second a copy the capture point made" in twice["warning"], twice["warning"]
    # What each end sent, the copies left out: the packets of the capture seen once.
    assert seen_twice["packets"] == seen_once["packets"], (seen_twice["packets"], seen_once["packets"])
    f = finding(seen_twice, "capture-doubled")
    assert f["severity"] == "info"
    summary = f["summary"]
    assert summary.startswith("Most packets appear twice in the capture: "), summary
    # Every figure from one count against one denominator: every packet of each side came again.
    sent, received = seen_once["packets"]["sent"], seen_once["packets"]["received"]
    assert (f"{received:,} of the {received:,} packets from the server and {sent:,} of the {sent:,} packets from "
            f"the client ") in summary, summary
    assert f"{sent:,} copies of the {sent:,} packets the client " in " ".join(f["evidence"]), f["evidence"]
    assert "in both directions: these are copies, not resends by either end" in summary, summary
    assert "mirror (SPAN) port" in f["suggestion"] and "tcpdump -i any" in f["suggestion"], f["suggestion"]


def test_the_copies_are_noted_as_such_and_counted_as_nothing_else() -> None:
    events = rebuild(doubled(lock_step_over_a_slow_path()))
    packets = [e for e in events if isinstance(e, (PacketSent, PacketReceived))]
    copies = [e for e in packets if e.note is Note.COPY]
    assert len(copies) == len(packets) // 2  # the request, every DATA and every ACK, each once
    assert {e.note for e in packets} == {Note.NONE, Note.COPY}
    # Each copy is its original's bytes, sent once by its sender.
    assert [e.raw for e in packets if e.note is Note.COPY] == [e.raw for e in packets if e.note is Note.NONE]


def test_one_direction_seen_twice_says_which(tmp_path: Path) -> None:
    """Only the server's DATA seen twice (a mirror port that sees one direction of the path twice)."""
    transfer = the_transfer(traced(tmp_path, "one-way", every_data_seen_twice()))
    assert ids(transfer) == {"capture-doubled"}, transfer["findings"]
    assert transfer["retransmits"] == transfer["duplicates"] == 0
    summary = finding(transfer, "capture-doubled")["summary"]
    assert "20 of the 20 packets from the server came again within 20 ms with identical bytes" in summary, summary
    assert "in one direction only (what the server sent)" in summary, summary


@pytest.mark.parametrize("delay", [0.001, 0.00001], ids=["1ms", "10us"])
def test_resends_after_a_timeout_still_count_in_a_capture_seen_twice(tmp_path: Path, delay: float) -> None:
    """The server sends four DATA again after a second's pause: the same bytes, much later, are resends."""
    once = the_transfer(traced(tmp_path, "once", server_resends()))
    twice = the_transfer(traced(tmp_path, "twice", doubled(server_resends(), delay)))
    assert ids(once) == {"packet-loss"} and ids(twice) == {"packet-loss", "capture-doubled"}, twice["findings"]
    assert twice["retransmits"] == once["retransmits"] == 4
    assert finding(twice, "packet-loss")["summary"] == finding(once, "packet-loss")["summary"]


@pytest.mark.parametrize("delay", [0.001, 0.00001], ids=["1ms", "10us"])
def test_a_sorcerers_apprentice_is_found_seen_once_or_twice(tmp_path: Path, delay: float) -> None:
    """Every DATA sent again right after a repeated ACK: the server's resends, whatever the capture copied."""
    once = the_transfer(traced(tmp_path, "once", sorcerers_apprentice()))
    twice = the_transfer(traced(tmp_path, "twice", doubled(sorcerers_apprentice(), delay)))
    assert "capture-doubled" not in ids(once)
    assert ids(twice) == ids(once) | {"capture-doubled"}, twice["findings"]
    assert finding(twice, "sorcerers-apprentice")["summary"] == finding(once, "sorcerers-apprentice")["summary"]
    assert twice["retransmits"] == once["retransmits"] == 12


def test_the_finding_speaks_of_the_client_not_of_tftpdiag() -> None:
    (f,) = [f for f in analyze(rebuild(doubled(lock_step_over_a_slow_path()))) if f.id == "capture-doubled"]
    assert isinstance(f, Finding)
    assert OURS.search(words(f)) is None, words(f)


def test_a_real_loopback_capture_seen_twice(tmp_path: Path) -> None:
    """A probe's own pcap of a real download over loopback, every datagram copied 1 ms later."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(os.urandom(200_000))
    trace = tmp_path / "probe.pcap"
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0), EventBus()) as server:
        result = subprocess.run(
            [sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", "image.bin", "--port",
             str(server.addresses[0][1]), "--json", "--trace", str(trace)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    once = traced(tmp_path, "once", read_datagrams(trace))
    twice = traced(tmp_path, "twice", doubled(read_datagrams(trace)))
    seen_once, seen_twice = the_transfer(once), the_transfer(twice)
    assert seen_once["ok"] and seen_once["bytes"] == 200_000 and "capture-doubled" not in ids(seen_once)
    assert ids(seen_twice) == ids(seen_once) | {"capture-doubled"}, seen_twice["findings"]
    assert (seen_twice["ok"], seen_twice["bytes"]) == (True, 200_000)
    assert seen_twice["retransmits"] == seen_once["retransmits"]
    assert twice["devices"] == once["devices"]


def asked_four_times() -> list[Datagram]:
    """A client asks for a file that is not there four times from one port, each 1 ms after the ERROR (each
    from a port of its own, as tftpd-hpa answers)."""
    out = []
    t = 0.0
    for port in range(51000, 51004):
        out += [dgram(t, C, S, rrq("missing.bin")),
                dgram(t + 0.0005, (S[0], port), C, encode(Error(1, "File not found")))]
        t += 0.0015
    return out


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_the_same_request_soon_after_the_servers_error_is_asked_anew(twice: bool) -> None:
    """After the ERROR that ended it, the same request again is the client's new transfer, however soon:
    only what nothing came between is a copy (here the capture's copies 10 us behind)."""
    capture = doubled(asked_four_times(), 0.00001) if twice else asked_four_times()
    table = SessionTable()
    table.apply(rebuild(capture))
    transfers = [session_summary(r) for r in table]
    assert [(s["ok"], s["error"]["code"], s["retransmits"]) for s in transfers] == [(False, 1, 0)] * 4, transfers


def test_a_rollover_stall_seen_twice_is_judged_as_seen_once() -> None:
    """65,535 blocks, the client's ACK of the last of them sent again on its timer: copies 1 ms behind (50
    blocks later) past the wrap are no resends, and the stall at the wrap reads as it did."""
    once = analyze(rebuild(server_silent_at_the_wrap()))
    twice = analyze(rebuild(doubled(server_silent_at_the_wrap())))
    assert {f.id for f in twice} == {f.id for f in once} | {"capture-doubled"} == {"rollover-stall",
                                                                                   "capture-doubled"}
    stall = [f.summary for f in once if f.id == "rollover-stall"]
    assert [f.summary for f in twice if f.id == "rollover-stall"] == stall


def one_in(n: int) -> Callable[[Datagram], bool]:
    """The DATA whose block is a multiple of ``n``: those a network that duplicates now and then doubled."""
    return lambda d: d.payload[:2] == b"\x00\x03" and int.from_bytes(d.payload[2:4], "big") % n == 0


def test_a_few_datagrams_the_network_duplicated_are_duplicates(tmp_path: Path) -> None:
    """A capture that saw each packet once, of a transfer whose network duplicated 3 of its 49 DATA 1 ms
    later (as `serve --impair dup=5%`): the capture point made none of them. They are duplicates that
    reached the client, counted as the live client counts them, told by the duplicates finding; the
    warning names no capture point and capture-doubled says nothing."""
    once = traced(tmp_path, "once", lock_step_over_a_slow_path())
    dup = traced(tmp_path, "dup", doubled(lock_step_over_a_slow_path(), only=one_in(16)))
    seen_once, seen_dup = the_transfer(once), the_transfer(dup)
    assert ids(seen_dup) == ids(seen_once) | {"duplicates"}, seen_dup["findings"]
    assert (seen_dup["duplicates"], seen_dup["retransmits"], seen_dup["timeouts"]) == (3, 0, 0)
    assert seen_dup["packets"] == {"sent": seen_once["packets"]["sent"],
                                   "received": seen_once["packets"]["received"] + 3}, seen_dup["packets"]
    warning = dup["warning"]
    assert warning.startswith("3 TFTP datagrams came twice within 20 ms, asked for by nothing"), warning
    assert "capture point" not in warning and "(see duplicates)" in warning and "capture-doubled" not in warning
    f = finding(seen_dup, "duplicates")
    assert f["summary"].startswith("3 packets came twice within 20 ms (3 from the server), asked for by nothing"), f
    assert OURS.search(" ".join([f["summary"], *f["evidence"], f["suggestion"]])) is None, f
    # Each noted as what it is seen to be, whoever made it: the copy of a datagram sent once.
    events = rebuild(doubled(lock_step_over_a_slow_path(), only=one_in(16)))
    copies = [e for e in events if isinstance(e, PacketReceived) and e.note is Note.COPY]
    assert [e.packet.block for e in copies if isinstance(e.packet, Data)] == [16, 32, 48]


def test_one_datagram_again_is_a_duplicate_and_a_side_seen_twice_is_not() -> None:
    """The share decides per side, the same way for the figures and the findings: the server's DATA all
    seen twice (the capture point's), one ACK of the client's twice (a duplicate)."""
    capture = doubled(lock_step_over_a_slow_path(), only=lambda d: d.src != C or d.payload == encode_ack(20))
    table = SessionTable()
    events = rebuild(capture)
    table.apply(events)
    (summary,) = [session_summary(r) for r in table]
    once = SessionTable()
    once.apply(rebuild(lock_step_over_a_slow_path()))
    (plain,) = [session_summary(r) for r in once]
    assert summary["packets"] == {"sent": plain["packets"]["sent"] + 1, "received": plain["packets"]["received"]}
    assert summary["duplicates"] == 1
    found = {f.id: f for f in analyze(events)}
    assert "capture-doubled" in found and "duplicates" not in found  # one duplicate is too few to tell
    assert "packets from the server" in found["capture-doubled"].summary
    assert "from the client" not in found["capture-doubled"].summary
