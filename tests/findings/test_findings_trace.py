"""The same findings from a capture as from the live run: tcpdump records our client and server on
loopback (faults injected on the server's side, so the wire shows them), the trace is rebuilt into
events, and the analyzer names the same causes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.findings_kit import (
    FAST,
    SERVER_FAST,
    client_run,
    our_server,
    server_findings,
)
from tftpdiag.engine.impair import parse_impair
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import TransferStarted
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing
from tftpdiag.trace.load import load_trace

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

LOSSY = Timing(initial_timeout=0.1, min_timeout=0.05, retries=8, dally=0.05)
# Loopback is shared with whatever else runs: our servers live on an address of their own, and the
# capture keeps only what goes to or from it.
HOST = "127.0.0.77"


def test_findings_from_a_capture_match_the_live_ones(tmp_path: Path) -> None:
    peers.require("tcpdump")
    (tmp_path / "small.bin").write_bytes(random.Random(41).randbytes(30_000))
    pcap = tmp_path / "cap.pcap"
    live: dict[str, list[str]] = {}
    ports: dict[int, str] = {}
    with peers.tcpdump_capture(pcap, filter=f"udp and host {HOST}"):
        with our_server(tmp_path, HOST, impair=parse_impair("mtu=1400"), timing=SERVER_FAST) as (_, log, port):
            ports[port] = "mtu"
            live["large"] = client_run(port, "small.bin", host=HOST, options=RequestedOptions(blksize=1468),
                                       timing=FAST).ids
            live["clean"] = client_run(port, "small.bin", host=HOST, options=RequestedOptions(blksize=1024)).ids
            live["missing"] = client_run(port, "Missing.bin", host=HOST).ids
            server_findings(log, sessions=3)  # the server gives up on the large blocks on its own, not at stop()
        with our_server(tmp_path, HOST, impair=parse_impair("loss=10%,seed=3"), timing=LOSSY) as (_, _, port):
            ports[port] = "lossy"
            live["lossy"] = client_run(port, "small.bin", host=HOST, timing=LOSSY).ids
    assert live["large"] == {"large-block-loss"} and live["clean"] == set() and live["missing"] == {"file-not-found"}
    assert "packet-loss" in live["lossy"] and live["lossy"] <= {"packet-loss", "duplicates"}
    trace = load_trace(pcap)
    # The transfers to our two servers, in the order they were made.
    ours = [e.session for e in trace.events if isinstance(e, TransferStarted) and e.peer[1] in ports]
    findings = analyze(trace.events)
    by_session = [{f.id for f in findings if f.session == sid} for sid in ours]
    # Less "duplicates": what our client received twice a capture counts as the server's retransmits (it
    # cannot tell a copy from a resend), and packet-loss tells them; and what the capture saw the client send
    # twice within 20 ms, asked for by nothing (its timer's resend as it re-acked), a few of its packets, it
    # counts as duplicates (protocol/doubled.py), where the live client counts its own resend.
    lossy = by_session.pop()
    assert by_session == [live["large"], live["clean"], live["missing"]], \
        [(f.session, f.id, f.summary) for f in findings if f.session in ours]
    assert lossy - {"duplicates"} == live["lossy"] - {"duplicates"}, lossy
