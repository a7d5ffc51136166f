"""The server machines' rules, exactly: answering a read or a write, refusing requests."""

from __future__ import annotations

import pytest

from tests.support.machines import (
    BLOCK,
    CLIENT,
    SERVER,
    ack,
    data,
    notes_received,
    notes_sent,
    of,
    only_result,
    sent,
    sent_packets,
    server_read,
    server_write,
)
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    Reason,
    RequestRefused,
    Retransmit,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.options import ServerPolicy
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    OAck,
    Opcode,
    Request,
    decode,
    encode,
)
from tftpdiag.protocol.server import refuse
from tftpdiag.protocol.session import State

# == server read / write ============================================================================

def test_server_read_oack_then_data_after_ack_0():
    content = bytes(range(256)) * 10
    m = server_read(content, ("blksize", "1024"), ("tsize", "0"))
    assert sent(m) == [(OAck((("blksize", "1024"), ("tsize", "2560"))), CLIENT)]
    events = m.events()
    assert [type(e) for e in events][:3] == [TransferStarted, PacketReceived, OptionsNegotiated]
    assert m.state is State.NEGOTIATING and m.total == 2560
    m.receive(ack(1), CLIENT, 0.01)  # not an answer to the OACK
    assert m.datagrams_to_send() == []
    assert notes_received(m.events()) == [(Ack(1), Note.UNEXPECTED)]
    m.receive(ack(0), CLIENT, 0.02)
    assert sent_packets(m) == [Data(1, content[:1024])]
    assert m.state is State.TRANSFERRING


def test_server_read_without_options_starts_with_data_1():
    m = server_read(b"tiny")
    assert sent(m) == [(Data(1, b"tiny"), CLIENT)]
    m.receive(ack(1), CLIENT, 0.01)
    assert isinstance(only_result(m.events()), Completed)
    assert m.closed


def test_server_read_netascii_sends_converted_text_and_no_tsize():
    m = server_read(b"a\nb\r", ("tsize", "0"), mode="netascii")
    assert sent_packets(m) == [Data(1, b"a\r\nb\r\x00")]
    assert m.total is None


def test_server_oack_retransmitted_on_timeout():
    m = server_read(BLOCK, ("blksize", "1024"))
    raw_oack = m.datagrams_to_send()[0][0]
    m.events()
    deadline = m.next_timeout()
    m.handle_timeout(deadline)
    assert m.datagrams_to_send() == [(raw_oack, CLIENT)]
    events = m.events()
    assert notes_sent(events) == [(decode(raw_oack), Note.RETRANSMIT)]
    assert [(r.first_block, r.count) for r in of(events, Retransmit)] == [(None, 1)]
    assert of(events, TimedOut)[0].waiting_for == "ACK 0 (answer to OACK)"


def test_server_write_oack_retransmitted_on_timeout():
    m, _ = server_write(("blksize", "1024"))
    raw_oack = m.datagrams_to_send()[0][0]
    assert decode(raw_oack) == OAck((("blksize", "1024"),))
    m.handle_timeout(m.next_timeout())
    assert m.datagrams_to_send() == [(raw_oack, CLIENT)]


def test_client_refusing_oack_ends_server_session():
    """UEFI size probe: RRQ with tsize, OACK, then ERROR 8 from the client."""
    m = server_read(BLOCK * 100, ("tsize", "0"))
    m.datagrams_to_send(), m.events()
    m.receive(encode(Error(8, "tsize probe")), CLIENT, 0.01)
    assert m.datagrams_to_send() == []
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PEER_ERROR, Side.PEER, 8)
    assert m.closed and m.next_timeout() is None


@pytest.mark.parametrize("is_read", [True, False])
def test_mail_mode_refused_with_error_4(is_read):
    if is_read:
        m = server_read(b"x", mode="mail")
    else:
        m, _ = server_write(mode="mail")
    out = sent(m)
    assert len(out) == 1 and out[0][1] == CLIENT
    assert isinstance(out[0][0], Error) and out[0][0].code == 4 and "mail" in out[0][0].message
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PROTOCOL, Side.LOCAL, 4)
    assert m.closed


def test_upload_over_limit_by_tsize():
    m, sink = server_write(("tsize", "5000"), policy=ServerPolicy(max_upload=4000))
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3
    failed = only_result(m.events())
    assert (failed.raised_by, failed.code) == (Side.LOCAL, 3)
    assert m.closed and sink.getvalue() == b""


def test_upload_over_limit_by_bytes_received():
    m, sink = server_write(policy=ServerPolicy(max_upload=1000))
    assert sent(m) == [(Ack(0), CLIENT)]
    m.receive(data(1, BLOCK), CLIENT, 0.01)
    assert sent_packets(m) == [Ack(1)]
    m.events()
    m.receive(data(2, BLOCK), CLIENT, 0.02)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.LOCAL, Side.LOCAL, 3)
    assert len(sink.getvalue()) <= 1000


def test_upload_exactly_at_limit_is_fine():
    m, sink = server_write(("tsize", "1000"), policy=ServerPolicy(max_upload=1000))
    assert sent_packets(m) == [OAck((("tsize", "1000"),))]
    m.receive(data(1, BLOCK), CLIENT, 0.01)
    m.receive(data(2, BLOCK[:488]), CLIENT, 0.02)
    assert sent_packets(m) == [Ack(1), Ack(2)]
    assert isinstance(only_result(m.events()), Completed)
    assert sink.getvalue() == BLOCK + BLOCK[:488]


def test_upload_ending_short_of_its_tsize_fails_instead_of_the_final_ack():
    """The client said 1 MiB and sent 100 bytes: the ERROR replaces the last ACK, nothing is stored."""
    m, _ = server_write(("tsize", "1048576"), ("blksize", "512"))
    assert sent_packets(m) == [OAck((("tsize", "1048576"), ("blksize", "512")))]
    m.receive(data(1, b"x" * 100), CLIENT, 0.01)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error), out
    assert "short of the announced tsize of 1048576 bytes" in out[0].message
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by) == (Reason.PROTOCOL, Side.LOCAL)
    assert m.state is State.FAILED and not m.storing


def test_upload_running_past_its_tsize_fails_at_the_first_block_over_it():
    m, _ = server_write(("tsize", "100"))
    assert sent_packets(m) == [OAck((("tsize", "100"),))]
    m.receive(data(1, BLOCK), CLIENT, 0.01)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3, out
    failed = only_result(m.events())
    assert (failed.raised_by, failed.code) == (Side.LOCAL, 3)
    assert "announced tsize of 100 bytes" in failed.message


@pytest.mark.parametrize("tsize", ["0", None])
def test_upload_without_a_known_size_is_not_held_to_one(tsize):
    """No tsize, or tftpy's tsize 0 in a WRQ: the size is unknown, whatever arrives is the file."""
    m, sink = server_write(*([("tsize", tsize)] if tsize else []))
    m.receive(data(1, BLOCK), CLIENT, 0.01)
    m.receive(data(2, b"end"), CLIENT, 0.02)
    assert isinstance(only_result(m.events()), Completed)
    assert sink.getvalue() == BLOCK + b"end"


def test_netascii_upload_is_not_held_to_its_tsize():
    m, sink = server_write(("tsize", "2"), mode="netascii")
    m.receive(data(1, b"a\r\nb\r\n"), CLIENT, 0.01)
    assert isinstance(only_result(m.events()), Completed)

def test_server_write_plain_ack_0_then_data():
    m, sink = server_write()
    assert sent(m) == [(Ack(0), CLIENT)]
    assert m.state is State.NEGOTIATING
    m.receive(data(1, b"all"), CLIENT, 0.01)
    assert sent_packets(m) == [Ack(1)]
    assert sink.getvalue() == b"all"
    assert m.state is State.DALLYING


@pytest.mark.parametrize("is_read", [True, False])
def test_repeated_request_is_noted_and_ignored(is_read):
    if is_read:
        m = server_read(BLOCK * 3, ("blksize", "512"))
    else:
        m, _ = server_write(("blksize", "512"))
    m.datagrams_to_send(), m.events()
    req = Request(Opcode.RRQ if is_read else Opcode.WRQ, "boot.img", "octet", (("blksize", "512"),))
    m.receive(encode(req), CLIENT, 0.5)
    assert m.datagrams_to_send() == []
    events = m.events()
    assert [(type(e.packet), e.note, e.detail) for e in of(events, PacketReceived)] == [
        (Request, Note.DUPLICATE, "request repeated")]
    assert not of(events, Failed) and m.duplicates == 1


def test_server_session_turns_away_other_ports():
    m = server_read(BLOCK * 3)
    m.datagrams_to_send()
    m.receive(ack(1), ("10.0.0.1", 40001), 0.01)
    assert [(p.code, d) for p, d in sent(m)] == [(5, ("10.0.0.1", 40001))]
    assert not m.finished


def test_refuse_answers_a_request():
    req = Request(Opcode.RRQ, "missing.bin", "octet")
    out, events = refuse(7, raw=encode(req), packet=req, client=CLIENT, local=SERVER, now=3.0,
                         code=1, message="file not found", why="not-found")
    assert out == [(encode(Error(1, "file not found")), CLIENT)]
    assert [type(e) for e in events] == [PacketReceived, PacketSent, RequestRefused]
    refused = events[-1]
    assert (refused.session, refused.time, refused.peer, refused.filename, refused.is_read, refused.code,
            refused.why) == (7, 3.0, CLIENT, "missing.bin", True, 1, "not-found")
    write = Request(Opcode.WRQ, "ro.bin", "octet")
    _, events = refuse(8, raw=encode(write), packet=write, client=CLIENT, local=SERVER, now=3.0,
                       code=2, message="read-only", why="read-only")
    assert events[-1].is_read is False


def test_refuse_does_not_answer_an_error():
    err = Error(5, "unknown transfer ID")
    out, events = refuse(7, raw=encode(err), packet=err, client=CLIENT, local=SERVER, now=1.0,
                         code=4, message="not a request", why="not-request")
    assert out == []
    assert [type(e) for e in events] == [PacketReceived, RequestRefused]


def test_refuse_malformed():
    out, events = refuse(7, raw=b"\x00", packet=None, client=CLIENT, local=SERVER, now=1.0,
                         code=4, message="too short", why="malformed")
    assert out == [(encode(Error(4, "too short")), CLIENT)]
    received = events[0]
    assert received.packet is None and received.note is Note.MALFORMED and received.detail == "too short"


def test_abort_sends_error_and_fails_once():
    m = server_read(BLOCK * 3)
    m.datagrams_to_send(), m.events()
    m.abort(0.5, "stopped by user")
    assert sent(m) == [(Error(0, "stopped by user"), CLIENT)]
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by) == (Reason.CANCELLED, Side.LOCAL)
    m.abort(0.6)
    assert m.datagrams_to_send() == [] and m.events() == []


def test_broken_tells_the_peer_its_own_words_and_keeps_the_whole_reason():
    m = server_read(BLOCK * 3)
    m.datagrams_to_send(), m.events()
    m.broken(0.5, "tftpdiag failed inside (KeyError at server.py:1)", "the server stopped on an error of its own")
    assert sent(m) == [(Error(0, "the server stopped on an error of its own"), CLIENT)]
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.INTERNAL, Side.LOCAL, 0)
    assert failed.message == "tftpdiag failed inside (KeyError at server.py:1)"
    m.broken(0.6, "again", "again")
    assert m.datagrams_to_send() == [] and m.events() == []
    local = server_read(BLOCK * 3)
    local.broken(0.5, "a local error stopped the transfer: Input/output error", "told", Reason.LOCAL)
    assert only_result(local.events()).reason is Reason.LOCAL



def test_server_marks_options_refused_when_the_client_refuses_its_oack() -> None:
    """The UEFI size probe: RRQ with tsize, our OACK, then ERROR 8 from the client."""

    from tftpdiag.protocol.events import OptionsNegotiated
    from tftpdiag.protocol.options import Verdict
    from tftpdiag.protocol.packets import Error, Opcode, Request, encode
    from tftpdiag.protocol.server import ServerRead

    request = Request(Opcode.RRQ, "bootx64.efi", "octet", (("tsize", "0"), ("blksize", "1468")))
    raw = encode(request)
    client, local = ("10.0.0.9", 1024), ("10.0.0.1", 50000)
    machine = ServerRead(7, request=request, raw=raw, client=client, local=local, file_size=5000, now=0.0)
    machine.feed(b"x" * 5000, 0.0, eof=True)
    machine.events()
    machine.receive(encode(Error(8, "tsize only")), client, 0.01)
    negotiated = [e for e in machine.events() if isinstance(e, OptionsNegotiated)]
    assert negotiated and {o.verdict for o in negotiated[-1].outcomes} == {Verdict.REFUSED}
    assert machine.result is not None and machine.result.code == 8


def test_request_is_resent_to_the_port_it_first_went_to() -> None:
    """A stray first reply (DATA 2) fixes the transfer ID, yet the request goes again to port 69."""

    from tftpdiag.protocol.client import ClientRead
    from tftpdiag.protocol.packets import Data, Request, decode, encode
    from tftpdiag.protocol.timer import Timing

    server, tid = ("10.0.0.2", 69), ("10.0.0.2", 50001)
    machine = ClientRead(1, filename="f", server=server, local=("10.0.0.1", 4000), now=0.0,
                         timing=Timing(initial_timeout=1.0))
    machine.datagrams_to_send()
    machine.receive(encode(Data(2, b"y" * 512)), tid, 0.1)
    machine.datagrams_to_send()
    machine.handle_timeout(machine.next_timeout() or 2.0)
    resent = machine.datagrams_to_send()
    assert [(type(decode(raw)), dest) for raw, dest in resent] == [(Request, server)]


# == options the server cannot read ================================================================

ODD_REQUEST_OPTIONS = b"x-odd\0\xff\0bl\xffk\x004\0timeout\0\xfe\0blksize\x001024\0"


@pytest.mark.parametrize("is_read", [True, False])
def test_an_option_the_server_cannot_read_is_left_out_of_the_oack_and_the_transfer_runs(is_read):
    """RFC 2347: a server leaves out what it does not recognise. A name that is not ASCII is no option any
    server knows, a known option whose value is not ASCII one it cannot grant: the request is served."""
    from tftpdiag.protocol.options import Verdict
    from tftpdiag.protocol.server import ServerRead, ServerWrite

    raw = bytes([0, 1 if is_read else 2]) + b"t.txt\0octet\0" + ODD_REQUEST_OPTIONS
    request = decode(raw)
    assert isinstance(request, Request)
    if is_read:
        m = ServerRead(2, request=request, raw=raw, client=CLIENT, local=SERVER, file_size=2000, now=0.0)
        m.feed(bytes(2000), 0.0, eof=True)
    else:
        m = ServerWrite(2, request=request, raw=raw, client=CLIENT, local=SERVER, now=0.0)
    assert sent(m) == [(OAck((("blksize", "1024"),)), CLIENT)]
    events = m.events()
    (started,) = of(events, TransferStarted)
    assert started.requested == (("x-odd", "\udcff"), ("bl\udcffk", "4"), ("timeout", "\udcfe"), ("blksize", "1024"))
    (negotiated,) = of(events, OptionsNegotiated)
    outcomes = {o.name: (o.asked, o.verdict, o.meaning) for o in negotiated.outcomes}
    assert outcomes == {
        "x-odd": ("\udcff", Verdict.IGNORED, "x-odd ignored (the value asked is not ASCII)"),
        "bl\udcffk": ("4", Verdict.IGNORED, "bl\udcffk ignored: a name that is not ASCII is no option a server knows"),
        "timeout": ("\udcfe", Verdict.IGNORED,
                    "timeout ignored, so each side uses its own retransmit timer (the value asked is no number)"),
        "blksize": ("1024", Verdict.ACCEPTED, "1024-byte blocks"),
    }
    assert m.negotiated.blksize == 1024 and not m.finished


def test_refusing_a_still_malformed_request_keeps_what_can_be_read_of_it():
    """An option without a value is still malformed (ERROR 8), but the refusal is of a request for a
    file in a mode, not of "undecodable bytes"."""
    raw = b"\0\2boot\xff.cfg\0NETASCII\0tsize\x00100\0blksize\0"
    out, events = refuse(7, raw=raw, packet=None, client=CLIENT, local=SERVER, now=1.0,
                         code=8, message="WRQ: option b'blksize' has no value", why="malformed")
    assert [p for p, _ in out] == [encode(Error(8, "WRQ: option b'blksize' has no value"))]
    refused = events[-1]
    assert isinstance(refused, RequestRefused)
    assert (refused.filename, refused.is_read, refused.mode, refused.requested, refused.received) == \
        ("boot\udcff.cfg", False, "netascii", (("tsize", "100"), ("blksize", "")), "")
    assert events[0].packet is None and events[0].note is Note.MALFORMED  # the datagram itself did not decode
