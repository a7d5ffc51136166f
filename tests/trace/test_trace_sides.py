"""A capture's transfers have two ends that are neither of them tftpdiag: the client and the server, by
address. The rebuilt events read as the client's (its ERROR is "local"), so whatever speaks of tftpdiag
or of our side must speak of the client instead: the failure line, the findings, the view's header."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pytest

from tftpdiag.findings import Finding, analyze
from tftpdiag.protocol.events import Address, Event, Note, PacketReceived, TransferStarted
from tftpdiag.protocol.packets import Error, OAck, Opcode, Options, Request, encode, encode_ack, encode_data
from tftpdiag.report import explain_failure, session_summary
from tftpdiag.sessions import SessionTable
from tftpdiag.trace.jsonl import JsonlWriter, read_events
from tftpdiag.trace.pcap import Datagram
from tftpdiag.trace.rebuild import rebuild

C: Address = ("192.0.2.10", 40123)
S: Address = ("192.0.2.1", 69)
TID: Address = ("192.0.2.1", 51000)
TID2: Address = ("192.0.2.1", 51001)  # a second session of the same server


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


def test_a_failure_line_whose_start_was_cut_off_names_no_side() -> None:
    """A capture's trace saved as JSON lines and cut before its TransferStarted (head, tail, a window): the
    record knows neither its role nor that it was a capture, so the failure line names no sender, as the
    JSON error's sent_by does not, rather than call the client's ERROR tftpdiag's."""
    buf = io.StringIO()
    writer = JsonlWriter(buf)
    for e in rebuild(client_aborts()):
        if not isinstance(e, TransferStarted):
            writer.write(e)
    table = SessionTable()
    table.apply(read_events(io.StringIO(buf.getvalue())))
    (record,) = table
    assert record.role is None and record.error_sender is None
    assert explain_failure(record) == "ERROR 0 (not defined): user abort"


def as_live(events: list[Event]) -> list[Event]:
    """The same events without the capture's mark: as tftpdiag's own client would have published them (a
    datagram that reached it twice, which a capture notes as its copy, is a duplicate to it)."""
    return [TransferStarted(e.session, e.time, e.role, e.filename, e.mode, e.local, e.peer, e.requested)
            if isinstance(e, TransferStarted) else
            PacketReceived(e.session, e.time, e.local, e.peer, e.raw, e.packet, Note.DUPLICATE, e.detail)
            if isinstance(e, PacketReceived) and e.note is Note.COPY else e for e in events]


def test_our_own_error_is_still_ours() -> None:
    """A live client's ERROR is tftpdiag's own: the same events without the capture's mark."""
    events = as_live(rebuild(client_aborts()))
    table = SessionTable()
    table.apply(events)
    (record,) = table
    assert explain_failure(record).startswith("tftpdiag sent ERROR 0")


# -- every finding that speaks of this end, on a capture -------------------------------------------------
# Captures between a device (C) and a server that make each such finding; the finding must name the
# client there, and say nothing of tftpdiag, our side or us: neither end is tftpdiag.

def rrq(name: str = "boot.bin", options: Options = (), mode: str = "octet") -> bytes:
    return encode(Request(Opcode.RRQ, name, mode, options))


def oack(*options: tuple[str, str]) -> bytes:
    return encode(OAck(options))


def large_block_lost() -> list[Datagram]:
    """blksize 1468 granted, ACK 0 sent and sent again: DATA 1 never comes."""
    return [dgram(0.0, C, S, rrq(options=(("blksize", "1468"),))),
            dgram(0.001, TID, C, oack(("blksize", "1468"))),
            *(dgram(0.002 + t, C, TID, encode_ack(0)) for t in (0.0, 1.0, 2.0, 3.0))]


def client_resends() -> list[Datagram]:
    """DATA 2 is late: the client sends ACK 1 again, then the transfer completes."""
    return [dgram(0.0, C, S, rrq()),
            dgram(0.001, TID, C, encode_data(1, b"a" * 512)),
            dgram(0.0015, C, TID, encode_ack(1)),
            dgram(1.0015, C, TID, encode_ack(1)),
            dgram(1.002, TID, C, encode_data(2, b"b" * 100)),
            dgram(1.0025, C, TID, encode_ack(2))]


def sorcerers_apprentice() -> list[Datagram]:
    """After one repeated ACK, the server sends every block twice, once for each copy of the ACK before."""
    out = [dgram(0.0, C, S, rrq()),
           dgram(0.001, TID, C, encode_data(1, b"a" * 512)),
           dgram(0.0015, C, TID, encode_ack(1)),
           dgram(1.0015, C, TID, encode_ack(1))]
    t = 1.002
    for block in range(2, 14):
        for _ in range(2):
            out.append(dgram(t, TID, C, encode_data(block, b"b" * (512 if block < 13 else 10))))
            out.append(dgram(t + 0.0005, C, TID, encode_ack(block)))
            t += 0.001
    return out


def window_overrun() -> list[Datagram]:
    """windowsize 2: after ACK 2 the server sends DATA 5, past what that ACK allowed."""
    return [dgram(0.0, C, S, rrq(options=(("windowsize", "2"),))),
            dgram(0.001, TID, C, oack(("windowsize", "2"))),
            dgram(0.0015, C, TID, encode_ack(0)),
            dgram(0.002, TID, C, encode_data(1, b"a" * 512)),
            dgram(0.0021, TID, C, encode_data(2, b"a" * 512)),
            dgram(0.0025, C, TID, encode_ack(2)),
            dgram(0.003, TID, C, encode_data(4, b"a" * 512)),
            dgram(0.0031, TID, C, encode_data(5, b"a" * 512))]


def second_session() -> list[Datagram]:
    """The client repeats its request; the server answers both; the client turns the second away."""
    return [dgram(0.0, C, S, rrq()),
            dgram(1.0, C, S, rrq()),
            dgram(1.001, TID, C, encode_data(1, b"a" * 512)),
            dgram(1.002, TID2, C, encode_data(1, b"a" * 512)),
            dgram(1.003, C, TID2, encode(Error(5, "Unknown transfer ID"))),
            dgram(1.0035, C, TID, encode_ack(1)),
            dgram(1.004, TID, C, encode_data(2, b"b" * 10)),
            dgram(1.0045, C, TID, encode_ack(2))]


def bad_oack_refused() -> list[Datagram]:
    """blksize 2048 granted where 1024 was asked: the client refuses the OACK with ERROR 8."""
    return [dgram(0.0, C, S, rrq(options=(("blksize", "1024"),))),
            dgram(0.001, TID, C, oack(("blksize", "2048"))),
            dgram(0.002, C, TID, encode(Error(8, "bad blksize")))]


def server_silent_after_oack() -> list[Datagram]:
    """The server's OACK, the client's ACK 0 (and its repeats), then nothing."""
    return [dgram(0.0, C, S, rrq(options=(("blksize", "1024"),))),
            dgram(0.001, TID, C, oack(("blksize", "1024"))),
            *(dgram(0.002 + t, C, TID, encode_ack(0)) for t in (0.0, 1.0, 2.0, 3.0))]


def error_answered() -> list[Datagram]:
    """The client's ERROR, answered by an ERROR from the server (tftpy#106)."""
    return [*client_aborts(), dgram(0.003, TID, C, encode(Error(5, "Unknown transfer ID")))]


def needs_rollover() -> list[Datagram]:
    """40 MB at 512-byte blocks announced: more blocks than the block number counts."""
    return [dgram(0.0, C, S, rrq(options=(("tsize", "0"),))),
            dgram(0.001, TID, C, oack(("tsize", "40000000"))),
            dgram(0.0015, C, TID, encode_ack(0)),
            dgram(0.002, TID, C, encode_data(1, b"a" * 512)),
            dgram(0.0025, C, TID, encode_ack(1))]


def client_ends_at_the_wrap() -> list[Datagram]:
    """8-byte blocks up to 65535, then the client ends the transfer with an ERROR of its own."""
    out = [dgram(0.0, C, S, rrq(options=(("blksize", "8"),))),
           dgram(0.001, TID, C, oack(("blksize", "8"))),
           dgram(0.0015, C, TID, encode_ack(0))]
    t = 0.002
    for block in range(1, 65536):
        out.append(dgram(t, TID, C, encode_data(block, b"abcdefgh")))
        out.append(dgram(t + 0.00001, C, TID, encode_ack(block)))
        t += 0.00002
    out.append(dgram(t, C, TID, encode(Error(4, "block number overflow"))))
    return out


def netascii_binary() -> list[Datagram]:
    return [dgram(0.0, C, S, rrq(mode="netascii")),
            dgram(0.001, TID, C, encode_data(1, bytes(range(256)) * 2)),
            dgram(0.0015, C, TID, encode_ack(1)),
            dgram(0.002, TID, C, encode_data(2, b"\0\0\0\0")),
            dgram(0.0025, C, TID, encode_ack(2))]


def options_refused() -> list[Datagram]:
    """The server refuses the request's options, and the client does not ask again without them."""
    return [dgram(0.0, C, S, rrq(options=(("blksize", "1468"),))),
            dgram(0.001, TID, C, encode(Error(8, "Option negotiation failed")))]


def sent_past_tsize() -> list[Datagram]:
    """tsize 600 announced, 1024 bytes sent: the client stops it with ERROR 3."""
    return [dgram(0.0, C, S, rrq(options=(("tsize", "0"),))),
            dgram(0.001, TID, C, oack(("tsize", "600"))),
            dgram(0.0015, C, TID, encode_ack(0)),
            dgram(0.002, TID, C, encode_data(1, b"a" * 512)),
            dgram(0.0025, C, TID, encode_ack(1)),
            dgram(0.003, TID, C, encode_data(2, b"b" * 512)),
            dgram(0.0035, C, TID, encode(Error(3, "more than the announced size")))]


def lock_step_over_a_slow_path() -> list[Datagram]:
    """48 blocks in lock-step, each answered 4 ms after the client's ACK of the one before."""
    out = [dgram(0.0, C, S, rrq())]
    t = 0.004
    for block in range(1, 50):
        out.append(dgram(t, TID, C, encode_data(block, b"a" * (512 if block < 49 else 7))))
        out.append(dgram(t + 0.0001, C, TID, encode_ack(block)))
        t += 0.0041
    return out


CLIENT = "the client 192.0.2.10:40123"
# (finding, capture, words in the capture's finding, words in the same finding of tftpdiag's own client)
WORDS = [
    pytest.param("large-block-loss", large_block_lost, "and the client's ACK 0 got through",
                 "and our ACK 0 got through", id="large-block-loss"),
    pytest.param("packet-loss", client_resends, "packets resent in the capture in", "packets resent by tftpdiag in",
                 id="packet-loss"),
    pytest.param("sorcerers-apprentice", sorcerers_apprentice, "each right after one of the client's repeated ACKs",
                 "each right after one of our repeated ACKs", id="sorcerers-apprentice"),
    pytest.param("window-overrun", window_overrun, "when the client's last ACK (2) allowed",
                 "when our last ACK (2) allowed", id="window-overrun"),
    pytest.param("stray-packets", second_session, f"{CLIENT} answered with ERROR 5 and went on",
                 "tftpdiag answered with ERROR 5 and went on", id="stray-packets"),
    pytest.param("bad-oack", bad_oack_refused, f"{CLIENT} refused it with ERROR 8", "tftpdiag refused it with ERROR 8",
                 id="bad-oack"),
    pytest.param("server-stopped", server_silent_after_oack, "may not take the client's answer to its OACK",
                 "may not take our answer to its OACK", id="server-stopped"),
    pytest.param("protocol-breach", error_answered, "answering the client's ERROR (tftpy#106)",
                 "look for a firmware update; tftpdiag survives them.", id="protocol-breach"),
    pytest.param("rollover-risk", needs_rollover, "wrap 65535 to 0).", "65535 to 0; tftpdiag follows 0 or 1).",
                 id="rollover-risk"),
    pytest.param("rollover-stall", client_ends_at_the_wrap, f"and {CLIENT} does not do it (or does it differently); it "
                 "then sent ERROR 4 (illegal TFTP operation) 'block number overflow'", "; tftpdiag then ended it:",
                 id="rollover-stall"),
    pytest.param("netascii-binary", netascii_binary, f"{CLIENT[0].upper()}{CLIENT[1:]} asked for netascii: it should "
                 "use octet", "Use octet (binary) mode", id="netascii-binary"),
    pytest.param("option-refused", options_refused, "The client did not fall back to a request without them",
                 "(tftpdiag probe --sweep)", id="option-refused"),
    pytest.param("latency-bound", lock_step_over_a_slow_path, f"{CLIENT[0].upper()}{CLIENT[1:]} sets the pace: its "
                 "request should ask for windowsize (RFC 7440), e.g. 16", "Ask for windowsize (RFC 7440), e.g. 16",
                 id="latency-bound"),
    pytest.param("tsize-overrun", sent_past_tsize, "the client can ask without it",
                 "Nothing was kept. The file changed", id="tsize-overrun"),
]
# What a capture's finding must never say: that tftpdiag, or "we", took part.
OURS = re.compile(r"\b(tftpdiag|our|ours|we|us)\b|local disk", re.IGNORECASE)


def words(f: Finding) -> str:
    return "\n".join((f.summary, *f.evidence, f.suggestion))


def one(findings: list[Finding], finding_id: str) -> Finding:
    found = [f for f in findings if f.id == finding_id]
    assert len(found) == 1, [(f.id, f.summary) for f in findings]
    return found[0]


@pytest.mark.parametrize("finding_id,capture,observed,live", WORDS)
def test_a_captures_findings_name_the_client_not_tftpdiag(finding_id: str, capture: Callable[[], list[Datagram]],
                                                         observed: str, live: str) -> None:
    events = rebuild(capture())
    findings = analyze(events)
    assert observed in words(one(findings, finding_id)), words(one(findings, finding_id))
    for f in findings:
        assert OURS.search(words(f)) is None, (f.id, words(f))
    # The same transfer made by tftpdiag's own client reads as it always did.
    mine = one(analyze(as_live(events)), finding_id)
    assert live in words(mine), words(mine)


def test_a_client_that_does_not_answer_the_second_session_is_not_said_to() -> None:
    """tftpdiag answers a stray with ERROR 5; a device in a capture may not: the finding says what the
    capture shows."""
    unanswered = [d for d in second_session() if d.dst != TID2]
    f = one(analyze(rebuild(unanswered)), "stray-packets")
    assert f"{CLIENT} did not answer and went on" in f.summary, words(f)
    assert "from 192.0.2.1:51001, not answered" in f.evidence[0], f.evidence
    assert "ERROR 5" not in words(f), words(f)


# -- rollover-stall: who stopped at the wrap is what the capture shows ------------------------------------

def download_to_the_wrap() -> list[Datagram]:
    """8-byte blocks 1..65535 of a download, each acknowledged."""
    return client_ends_at_the_wrap()[:-1]


def upload_to_the_wrap() -> list[Datagram]:
    """8-byte blocks 1..65535 of an upload, each acknowledged."""
    out = [dgram(0.0, C, S, encode(Request(Opcode.WRQ, "big.bin", "octet", (("blksize", "8"),)))),
           dgram(0.001, TID, C, oack(("blksize", "8")))]
    t = 0.002
    for block in range(1, 65536):
        out.append(dgram(t, C, TID, encode_data(block, b"abcdefgh")))
        out.append(dgram(t + 0.00001, TID, C, encode_ack(block)))
        t += 0.00002
    return out


def server_silent_at_the_wrap() -> list[Datagram]:
    """The client acknowledged 65535 and sends that ACK again on its timer: DATA 0 never comes."""
    return [*download_to_the_wrap(), *(dgram(2.0 + t, C, TID, encode_ack(65535)) for t in (0.0, 1.0, 2.0))]


def server_does_not_ack_block_0() -> list[Datagram]:
    """The client sent DATA 0 after the ACK of 65535, and again on its timer: no ACK comes."""
    return [*upload_to_the_wrap(), *(dgram(2.0 + t, C, TID, encode_data(0, b"abcdefgh")) for t in (0.0, 1.0, 2.0))]


def client_silent_after_block_0() -> list[Datagram]:
    """The server rolled over to DATA 0 and sends it again on its timer: the client never answers."""
    return [*download_to_the_wrap(), *(dgram(2.0 + t, TID, C, encode_data(0, b"abcdefgh")) for t in (0.0, 1.0, 2.0))]


def client_refuses_block_0() -> list[Datagram]:
    """The server rolled over to DATA 0; the client answers it with an ERROR."""
    return [*download_to_the_wrap(), dgram(2.0, TID, C, encode_data(0, b"abcdefgh")),
            dgram(2.001, C, TID, encode(Error(4, "block number overflow")))]


def client_sends_no_block_0() -> list[Datagram]:
    """The server acknowledged 65535, and again on its timer: the client sends no DATA 0."""
    return [*upload_to_the_wrap(), *(dgram(2.0 + t, TID, C, encode_ack(65535)) for t in (0.0, 1.0, 2.0))]


@pytest.mark.parametrize("capture,words", [
    pytest.param(server_silent_at_the_wrap, "and the server does not do it (or does it differently); nothing came "
                 "after it", id="server-silent"),
    pytest.param(server_does_not_ack_block_0, "and the server does not do it (or does it differently); nothing came "
                 "after it", id="server-no-ack-0"),
    pytest.param(client_silent_after_block_0, f"and {CLIENT} does not do it (or does it differently); it never "
                 "acknowledged DATA 0", id="client-silent"),
    pytest.param(client_refuses_block_0, f"and {CLIENT} does not do it (or does it differently); it then sent ERROR 4 "
                 "(illegal TFTP operation) 'block number overflow'", id="client-error"),
    pytest.param(client_ends_at_the_wrap, f"and {CLIENT} does not do it (or does it differently); it then sent ERROR "
                 "4 (illegal TFTP operation) 'block number overflow'", id="client-error-before-0"),
    pytest.param(client_sends_no_block_0, f"and {CLIENT} does not do it (or does it differently); it sent no DATA "
                 "after ACK 65535", id="client-no-data-0"),
])
def test_a_rollover_stall_in_a_capture_names_the_side_that_stopped(capture: Callable[[], list[Datagram]],
                                                                   words: str) -> None:
    f = one(analyze(rebuild(capture())), "rollover-stall")
    assert words in f.summary, f.summary
    if "the server does not" in words:
        assert "use a peer that wraps" in f.suggestion, f.suggestion
    else:
        assert "update the client" in f.suggestion and "tftpd-hpa" not in f.suggestion, f.suggestion


# -- duplicates: a capture counts none, and its findings speak of none -----------------------------------

def server_resends() -> list[Datagram]:
    """Four DATA sent again after a pause (the client's ACK lost past the capture point)."""
    out = [dgram(0.0, C, S, rrq())]
    t = 0.001
    for block in range(1, 21):
        data = encode_data(block, b"a" * (512 if block < 20 else 10))
        out += [dgram(t, TID, C, data), dgram(t + 0.0005, C, TID, encode_ack(block))]
        if block in (5, 9, 13, 17):
            t += 1.0
            out += [dgram(t, TID, C, data), dgram(t + 0.0005, C, TID, encode_ack(block))]
        t += 0.001
    return out


def every_data_seen_twice() -> list[Datagram]:
    """Each DATA twice, 0.1 ms apart, nothing from the client between: the capture's copies (a mirror port
    that sees the server's packets twice), no resends (tests/trace/test_trace_doubled.py)."""
    out = [dgram(0.0, C, S, rrq())]
    t = 0.001
    for block in range(1, 21):
        data = encode_data(block, b"a" * (512 if block < 20 else 10))
        out += [dgram(t, TID, C, data), dgram(t + 0.0001, TID, C, data), dgram(t + 0.0005, C, TID, encode_ack(block))]
        t += 0.001
    return out


DUPLICATE_WORDS = re.compile(r"duplicat|came twice", re.IGNORECASE)


@pytest.mark.parametrize("capture", [server_resends, sorcerers_apprentice, client_resends])
def test_a_captures_findings_speak_of_no_duplicates_where_its_counts_say_none(
        capture: Callable[[], list[Datagram]]) -> None:
    events = rebuild(capture())
    table = SessionTable()
    table.apply(events)
    (record,) = table
    summary = session_summary(record)
    assert summary["duplicates"] == 0 and summary["retransmits"] > 0, summary
    findings = analyze(events)
    assert "duplicates" not in {f.id for f in findings}, [(f.id, f.summary) for f in findings]
    for f in findings:
        assert DUPLICATE_WORDS.search(words(f)) is None, (f.id, words(f))


def test_the_same_repeats_live_are_duplicates() -> None:
    """The same repeats without the capture's mark, as tftpdiag's own client's: the findings read as before."""
    f = one(analyze(as_live(rebuild(every_data_seen_twice()))), "duplicates")
    assert "20 packets from the server came twice (20 DATA): 20 within 20 ms" in f.summary, f.summary
    sas = one(analyze(as_live(rebuild(sorcerers_apprentice()))), "sorcerers-apprentice")
    assert "for every duplicate ACK" in sas.summary and "blocks came twice" in sas.summary, sas.summary
