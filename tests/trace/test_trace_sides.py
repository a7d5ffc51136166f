"""A capture's transfers have two ends that are neither of them tftpdiag: the client and the server, by
address. The rebuilt events read as the client's (its ERROR is "local"), so whatever speaks of tftpdiag
or of our side must speak of the client instead: the failure line, the findings, the view's header."""

from __future__ import annotations

import io

from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Address, TransferStarted
from tftpdiag.protocol.packets import Error, Opcode, Request, encode, encode_ack, encode_data
from tftpdiag.report import explain_failure
from tftpdiag.sessions import SessionTable
from tftpdiag.trace.jsonl import JsonlWriter, read_events
from tftpdiag.trace.pcap import Datagram
from tftpdiag.trace.rebuild import rebuild

C: Address = ("192.0.2.10", 40123)
S: Address = ("192.0.2.1", 69)
TID: Address = ("192.0.2.1", 51000)


def dgram(time: float, src: Address, dst: Address, raw: bytes) -> Datagram:
    return Datagram(time, src, dst, raw, len(raw))


def client_aborts() -> list[Datagram]:
    """Two blocks of a download, then the client's ERROR 0 (its user cancelled)."""
    return [
        dgram(0.0, C, S, encode(Request(Opcode.RRQ, "big.bin", "octet", ()))),
        dgram(0.001, TID, C, encode_data(1, b"a" * 512)),
        dgram(0.0015, C, TID, encode_ack(1)),
        dgram(0.002, TID, C, encode_data(2, b"b" * 512)),
        dgram(0.0025, C, TID, encode(Error(0, "user abort"))),
    ]


def test_the_clients_error_in_a_capture_is_the_clients() -> None:
    events = rebuild(client_aborts())
    table = SessionTable()
    table.apply(events)
    (record,) = table
    assert record.observed
    assert explain_failure(record) == "the client 192.0.2.10:40123 sent ERROR 0 (not defined): user abort"
    findings = analyze(events)
    assert [f.id for f in findings] == ["client-aborted"], [(f.id, f.summary) for f in findings]
    assert "Client 192.0.2.10:40123 ended the transfer with ERROR 0" in findings[0].summary
    assert all("tftpdiag" not in f.summary and "local disk" not in f.suggestion for f in findings)


def test_a_capture_saved_as_jsonl_still_knows_it_was_observed() -> None:
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in rebuild(client_aborts()):
        writer.write(e)
    again = list(read_events(io.StringIO(buf.getvalue())))
    (started,) = [e for e in again if isinstance(e, TransferStarted)]
    assert started.observed
    assert [f.id for f in analyze(again)] == ["client-aborted"]


def test_our_own_error_is_still_ours() -> None:
    """A live client's ERROR is tftpdiag's own: the same events without the capture's mark."""
    events = [TransferStarted(e.session, e.time, e.role, e.filename, e.mode, e.local, e.peer, e.requested)
              if isinstance(e, TransferStarted) else e for e in rebuild(client_aborts())]
    table = SessionTable()
    table.apply(events)
    (record,) = table
    assert explain_failure(record).startswith("tftpdiag sent ERROR 0")
