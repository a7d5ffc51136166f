"""The Finding type, name escaping and the Analyzer's bookkeeping; plus the ids beyond the issue's list
(client-aborted, protocol-breach), each from a real run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.support.findings_kit import (
    LOOP,
    Ack,
    Data,
    Error,
    FakeServer,
    client_run,
    our_server,
    recv,
    rrq,
    send,
    server_findings,
    show,
    udp,
)
from tests.support.simnet import run_transfer
from tftpdiag.findings import IDS, Analyzer, Finding, analyze, escape_name
from tftpdiag.findings.model import describe
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Opcode, Request

pytestmark = pytest.mark.timeout(30)


def test_finding_to_dict_is_the_json_schema() -> None:
    f = Finding("no-reply", "error", "No reply", ["t+0.000s: RRQ"], "Check the server.", session=3)
    assert f.evidence == ("t+0.000s: RRQ",)  # frozen: kept as a tuple
    assert json.loads(json.dumps(f.to_dict())) == {
        "id": "no-reply", "severity": "error", "summary": "No reply", "evidence": ["t+0.000s: RRQ"],
        "suggestion": "Check the server."}
    with pytest.raises(ValueError):
        Finding("x", "fatal", "")


def test_ids_are_unique_and_cover_the_issue() -> None:
    assert len(IDS) == len(set(IDS))
    required = {
        "no-reply", "port-unreachable", "reply-from-other-address", "file-not-found", "access-violation",
        "server-error", "options-ignored", "option-reduced", "option-refused", "bad-oack", "large-block-loss",
        "packet-loss", "duplicates", "sorcerers-apprentice", "latency-bound", "rollover-risk", "rollover-stall",
        "tsize-mismatch", "netascii-binary", "stray-packets", "stalled", "size-probe", "client-stopped-acking",
        "odd-filename", "client-ignored-oack", "path-escape"}
    assert required <= set(IDS)


@pytest.mark.parametrize("name, shown", [
    ("pxelinux.0", "'pxelinux.0'"),
    ("pxelinux.0\udcff", "'pxelinux.0\\xff'"),  # a byte that is not UTF-8, as the codec keeps it
    ("boot\\x.0", "'boot\\\\x.0'"),
    ("a\x00b\x1b\x7f", "'a\\x00b\\x1b\\x7f'"),
    ("it's", "'it\\'s'"),
    ("café", "'café'"),
    ("zero\u200bwidth", "'zero\\u200bwidth'"),
])
def test_escape_name(name: str, shown: str) -> None:
    assert escape_name(name) == shown


def test_analyzer_orders_and_forgets() -> None:
    # Two complete simulated downloads with findings of different severities in one stream.
    data = random.Random(1).randbytes(8 * 65_600 + 3)
    events = run_transfer("read", data, options=RequestedOptions(blksize=8, windowsize=64, tsize=True)).events
    analyzer = Analyzer(keep_sessions=1)
    analyzer.feed(events)
    # Session 1 (client) ended first and was forgotten when session 2 ended: only one is kept.
    assert [f.session for f in analyzer.findings()] == [2]
    assert analyzer.findings(1) == [] and analyzer.findings(99) == []


def test_client_aborted(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(random.Random(2).randbytes(5000))
    client = udp()
    try:
        with our_server(tmp_path) as (_, log, port):
            send(client, rrq("f.bin"), (LOOP, port))
            data, tid = recv(client)
            assert isinstance(data, Data)
            send(client, Ack(1), tid)
            assert recv(client) is not None
            send(client, Error(0, "user cancelled"), tid)
            findings = server_findings(log)
    finally:
        client.close()
    assert [f.id for f in findings] == ["client-aborted"], show(findings)
    assert findings[0].severity == "info" and "'user cancelled' after 1 block" in findings[0].summary


def test_protocol_breach_data_larger_than_the_block_size() -> None:
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            send(tid, Data(1, b"x" * 600), client)  # 600 bytes where 512 were agreed
            recv(tid, 1.0)
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin")
    assert run.ids == {"protocol-breach"}, run.describe()
    f = run.get("protocol-breach")
    assert f.severity == "warning" and "DATA larger than the block size" in f.summary


def test_malformed_datagram_to_our_server(tmp_path: Path) -> None:
    client = udp()
    try:
        with our_server(tmp_path) as (_, log, port):
            client.sendto(b"\x00", (LOOP, port))  # a 1-byte datagram (it crashed tftpy, tftpy#140)
            findings = server_findings(log)
    finally:
        client.close()
    assert [f.id for f in findings] == ["protocol-breach"], show(findings)
    assert findings[0].severity == "info" and "not a valid request" in findings[0].summary


def test_analyze_is_the_same_live_and_at_once() -> None:
    data = random.Random(3).randbytes(300 * 512)
    from tests.support.simnet import Impairment
    from tftpdiag.protocol.timer import Timing

    events = run_transfer("read", data, impairment=Impairment(loss=0.05, seed=2),
                          client_timing=Timing(retries=15), server_timing=Timing(retries=15)).events
    at_once = analyze(events)
    live = Analyzer()
    for i in range(0, len(events), 7):
        live.feed(events[i:i + 7])
    live.finish()
    assert [(f.session, f.id, f.severity) for f in live.findings()] == \
        [(f.session, f.id, f.severity) for f in at_once]
    assert {f.id for f in at_once} >= {"packet-loss"}


def test_describe_quotes_what_a_packet_carries() -> None:
    """An ERROR's message and a request's mode, as evidence cites the packet: escaped and bounded."""
    message = "no\x1b]0;pwned\x07" + "z" * 60_000
    assert describe(Error(0, message)) == f"ERROR 0 (not defined) {quote(message)}"
    request = Request(Opcode.RRQ, "boot.img", "octet\x1b[2J" + "m" * 500)
    assert describe(request) == f"RRQ 'boot.img' {clean(request.mode)}"
