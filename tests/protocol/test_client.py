"""The client machines' rules, exactly: requests, replies, negotiation, refusals, reading and writing."""

from __future__ import annotations

import pytest

from tests.support.machines import (
    BLOCK,
    CLIENT,
    SERVER,
    STRAY,
    TID,
    ack,
    client_read,
    client_write,
    data,
    locked_client_read,
    notes_received,
    notes_sent,
    oack,
    of,
    only_result,
    sent,
    sent_packets,
    server_read,
)
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    Note,
    OptionsNegotiated,
    PacketSent,
    PeerLocked,
    Progress,
    Reason,
    Retransmit,
    Side,
    TransferStarted,
)
from tftpdiag.protocol.options import RequestedOptions, Verdict
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    encode,
)
from tftpdiag.protocol.session import State
from tftpdiag.protocol.timer import Timing

# == client read ====================================================================================

def test_rrq_bytes_and_first_timer():
    m, _ = client_read(10.0, options=RequestedOptions(blksize=1468, tsize=True))
    assert m.datagrams_to_send() == [(b"\x00\x01boot.img\x00octet\x00blksize\x001468\x00tsize\x000\x00", SERVER)]
    events = m.events()
    assert [type(e) for e in events] == [TransferStarted, PacketSent]
    assert events[0].requested == (("blksize", "1468"), ("tsize", "0"))
    assert events[0].peer == SERVER and events[0].filename == "boot.img" and events[0].mode == "octet"
    assert m.state is State.REQUESTING
    assert m.next_timeout() == pytest.approx(11.0)


def test_rrq_without_options_and_in_netascii():
    m, _ = client_read(mode="NetASCII")
    assert m.datagrams_to_send() == [(b"\x00\x01boot.img\x00netascii\x00", SERVER)]


def test_client_rejects_bad_arguments():
    with pytest.raises(ValueError):
        client_read(mode="mail")
    with pytest.raises(ValueError):
        client_read(filename="")
    with pytest.raises(ValueError):
        client_read(filename="x" * 600)


def test_oack_accepted_sends_ack_0():
    m, _ = client_read(options=RequestedOptions(blksize=1468, tsize=True, windowsize=4))
    m.datagrams_to_send(), m.events()
    m.receive(oack(("blksize", "1468"), ("tsize", "4000"), ("windowsize", "4")), TID, 0.05)
    assert m.datagrams_to_send() == [(ack(0), TID)]
    events = m.events()
    assert of(events, PeerLocked) == [PeerLocked(1, 0.05, TID, SERVER)]
    (negotiated,) = of(events, OptionsNegotiated)
    assert [(o.name, o.verdict) for o in negotiated.outcomes] == [
        ("blksize", Verdict.ACCEPTED), ("tsize", Verdict.ACCEPTED), ("windowsize", Verdict.ACCEPTED)]
    assert (m.blksize, m.windowsize, m.total) == (1468, 4, 4000)
    assert m.state is State.NEGOTIATING
    assert not m.finished
    # The first DATA is the larger block size the OACK granted.
    m.receive(data(1, bytes(1468)), TID, 0.06)
    assert m.datagrams_to_send() == []  # window of 4: no ACK yet
    assert m.state is State.TRANSFERRING


def test_data_1_without_oack_means_options_ignored():
    m, sink = client_read(options=RequestedOptions(blksize=1468, windowsize=8, tsize=True))
    m.datagrams_to_send(), m.events()
    m.receive(data(1, BLOCK), TID, 0.02)
    assert m.datagrams_to_send() == [(ack(1), TID)]
    events = m.events()
    (negotiated,) = of(events, OptionsNegotiated)
    assert [o.verdict for o in negotiated.outcomes] == [Verdict.IGNORED] * 3
    assert negotiated.negotiated.oack is None
    assert (m.blksize, m.windowsize, m.total) == (512, 1, None)
    m.receive(data(2, b"tail"), TID, 0.03)
    assert m.datagrams_to_send() == [(ack(2), TID)]
    assert isinstance(only_result(m.events()), Completed)
    assert sink.getvalue() == BLOCK + b"tail"


@pytest.mark.parametrize("bad", [
    (("blksize", "1468"), ("windowsize", "4")),  # windowsize never asked
    (("blksize", "1469"),),  # larger than asked
    (("blksize", "1468"), ("tsize", "abc")),
])
def test_bad_oack_gets_error_8_and_fails(bad):
    m, _ = client_read(options=RequestedOptions(blksize=1468, tsize=True))
    m.datagrams_to_send(), m.events()
    m.receive(oack(*bad), TID, 0.05)
    out = sent(m)
    assert len(out) == 1
    packet, dest = out[0]
    assert dest == TID and isinstance(packet, Error) and packet.code == 8 and packet.message
    events = m.events()
    failed = only_result(events)
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PROTOCOL, Side.LOCAL, 8)
    (negotiated,) = of(events, OptionsNegotiated)
    assert {o.verdict for o in negotiated.outcomes} == {Verdict.REFUSED}
    assert m.closed and m.next_timeout() is None
    # Whatever comes next is late and unanswered.
    m.receive(data(1, BLOCK), TID, 0.06)
    assert m.datagrams_to_send() == []
    assert notes_received(m.events()) == [(Data(1, BLOCK), Note.LATE)]


def test_zero_length_final_data_for_exact_multiple_of_block_size():
    m, sink = client_read()
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.1)
    m.receive(data(2, BLOCK), TID, 0.2)
    assert sent_packets(m) == [Ack(1), Ack(2)]
    assert not m.finished
    m.events()
    m.receive(data(3, b""), TID, 0.3)
    assert sent_packets(m) == [Ack(3)]
    done = only_result(m.events())
    assert isinstance(done, Completed)
    assert (done.stats.bytes, done.stats.blocks) == (1024, 3)
    assert sink.getvalue() == BLOCK * 2


def test_empty_file():
    m, sink = client_read()
    m.datagrams_to_send(), m.events()
    m.receive(data(1, b""), TID, 0.1)
    assert m.datagrams_to_send() == [(ack(1), TID)]
    events = m.events()
    assert isinstance(only_result(events), Completed)
    assert of(events, Progress)[-1].bytes == 0
    assert sink.getvalue() == b""


def test_tsize_from_oack_sets_total_and_progress():
    m, _ = client_read(options=RequestedOptions(tsize=True), timing=Timing(progress_interval=0.0))
    m.datagrams_to_send()
    m.receive(oack(("tsize", "700")), TID, 0.1)
    assert m.total == 700
    m.events()
    m.receive(data(1, BLOCK), TID, 0.2)
    progress = of(m.events(), Progress)
    assert progress and progress[-1].total == 700 and progress[-1].bytes == 512


def test_download_ending_short_of_the_servers_tsize_fails_and_keeps_nothing():
    """The server said 1500 bytes and ended at 612: an ERROR replaces the last ACK, nothing is stored
    (a damaged copy never lands where -o expects a good one), as an upload on our server."""
    m, sink = client_read(options=RequestedOptions(tsize=True))
    m.datagrams_to_send()
    m.receive(oack(("tsize", "1500")), TID, 0.1)
    assert sent_packets(m) == [Ack(0)]
    m.receive(data(1, BLOCK), TID, 0.2)
    m.receive(data(2, b"x" * 100), TID, 0.3)
    out = sent_packets(m)
    assert out[:1] == [Ack(1)] and len(out) == 2 and isinstance(out[1], Error), out
    assert "short of the announced tsize of 1500 bytes" in out[1].message
    failed = only_result(m.events())
    assert isinstance(failed, Failed) and (failed.reason, failed.raised_by) == (Reason.PROTOCOL, Side.LOCAL)
    assert m.state is State.FAILED and not m.storing


def test_a_netascii_download_is_not_held_to_its_tsize() -> None:
    """A netascii size (the wire's or the file's, whichever the server chose) binds nothing."""
    m, sink = client_read(options=RequestedOptions(tsize=True), mode="netascii")
    m.datagrams_to_send()
    m.receive(oack(("tsize", "700")), TID, 0.1)
    m.receive(data(1, b"end\r\n"), TID, 0.2)
    assert isinstance(only_result(m.events()), Completed)


def test_duplicate_data_gets_reack():
    m, sink = locked_client_read()
    m.receive(data(1, BLOCK), TID, 0.02)
    assert m.datagrams_to_send() == [(ack(1), TID)]
    events = m.events()
    assert notes_received(events) == [(Data(1, BLOCK), Note.DUPLICATE)]
    assert notes_sent(events) == [(Ack(1), Note.REACK)]
    assert m.duplicates == 1
    # An older copy (not the newest block) is noted but not answered.
    m.receive(data(2, BLOCK), TID, 0.03)
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.04)
    assert m.datagrams_to_send() == []
    assert sink.getvalue() == BLOCK * 2


@pytest.mark.parametrize("who", ["server-read", "client-write"])
def test_duplicate_ack_never_resends_data_in_lock_step(who):
    """RFC 1123 4.2.3.1: the Sorcerer's Apprentice fix."""
    content = BLOCK * 3 + b"end"
    if who == "server-read":
        m = server_read(content)
        assert sent_packets(m) == [Data(1, BLOCK)]
        peer = CLIENT
    else:
        m = client_write(content)
        m.datagrams_to_send()
        m.receive(ack(0), TID, 0.01)
        assert sent_packets(m) == [Data(1, BLOCK)]
        peer = TID
    m.events()
    m.receive(ack(1), peer, 0.02)
    assert sent_packets(m) == [Data(2, BLOCK)]
    m.events()
    deadline = m.next_timeout()
    for i in range(5):
        m.receive(ack(1), peer, 0.03 + i / 100)
        assert m.datagrams_to_send() == []
    assert m.next_timeout() == deadline  # the timer is not restarted either
    events = m.events()
    assert not of(events, PacketSent) and not of(events, Retransmit)
    assert [n for _, n in notes_received(events)] == [Note.DUPLICATE] * 5
    assert m.duplicates == 5 and m.retransmits == 0
    m.receive(ack(0), peer, 0.1)  # even older
    assert m.datagrams_to_send() == []
    m.receive(ack(2), peer, 0.11)
    assert sent_packets(m) == [Data(3, BLOCK)]


def test_final_ack_then_dally_then_close():
    timing = Timing(dally=2.5)
    m, sink = locked_client_read(timing=timing)
    m.receive(data(2, b"last"), TID, 1.0)
    assert m.datagrams_to_send() == [(ack(2), TID)]
    assert isinstance(only_result(m.events()), Completed)
    assert m.state is State.DALLYING and m.finished and not m.closed
    assert m.next_timeout() == pytest.approx(3.5)
    # The server did not hear the final ACK and repeats its last DATA.
    m.receive(data(2, b"last"), TID, 2.0)
    assert m.datagrams_to_send() == [(ack(2), TID)]
    events = m.events()
    assert notes_sent(events) == [(Ack(2), Note.REACK)]
    assert not of(events, Completed) and not of(events, Failed)
    # Anything else while dallying is noted, not answered, and ends nothing.
    m.receive(data(1, BLOCK), TID, 2.1)
    m.receive(b"\x00\x09junk", TID, 2.2)
    m.receive(encode(Error(0, "bye")), TID, 2.3)
    assert m.datagrams_to_send() == []
    assert not of(m.events(), Failed)
    m.handle_timeout(3.4)
    assert m.state is State.DALLYING
    m.handle_timeout(3.5)
    assert m.closed and m.next_timeout() is None
    assert m.result is not None and isinstance(m.result, Completed)
    m.receive(data(2, b"last"), TID, 4.0)
    assert m.datagrams_to_send() == []
    assert sink.getvalue() == BLOCK + b"last"


def test_no_dally_when_dally_is_zero():
    m, _ = locked_client_read(timing=Timing(dally=0))
    m.receive(data(2, b""), TID, 1.0)
    assert m.closed and m.next_timeout() is None


def test_packet_from_another_port_gets_error_5_and_transfer_continues():
    m, sink = locked_client_read()
    m.receive(data(2, BLOCK), STRAY, 0.02)
    out = sent(m)
    assert len(out) == 1
    packet, dest = out[0]
    assert dest == STRAY and isinstance(packet, Error) and packet.code == 5
    events = m.events()
    assert notes_received(events) == [(Data(2, BLOCK), Note.STRAY)]
    assert not of(events, Failed) and m.stray == 1
    assert m.peer == TID
    m.receive(data(2, b"ok"), TID, 0.03)
    assert m.datagrams_to_send() == [(ack(2), TID)]
    assert isinstance(only_result(m.events()), Completed)
    assert sink.getvalue() == BLOCK + b"ok"


def test_error_from_stray_source_is_not_answered():
    m, _ = locked_client_read()
    m.receive(encode(Error(5, "unknown transfer ID")), STRAY, 0.02)
    assert m.datagrams_to_send() == []
    events = m.events()
    assert notes_received(events) == [(Error(5, "unknown transfer ID"), Note.STRAY)]
    assert not of(events, Failed) and not m.finished


def test_malformed_from_stray_source_gets_error_5_only():
    m, _ = locked_client_read()
    m.receive(b"\x00", STRAY, 0.02)
    assert [(p.code, d) for p, d in sent(m)] == [(5, STRAY)]
    assert not m.finished


@pytest.mark.parametrize("when", ["requesting", "negotiating", "transferring"])
def test_error_from_peer_ends_without_reply(when):
    m, _ = client_read(options=RequestedOptions(blksize=1024))
    m.datagrams_to_send()
    if when == "negotiating":
        m.receive(oack(("blksize", "1024")), TID, 0.01)
    elif when == "transferring":
        m.receive(data(1, BLOCK), TID, 0.01)
    m.datagrams_to_send(), m.events()
    m.receive(encode(Error(2, "access violation")), TID, 0.05)
    assert m.datagrams_to_send() == []
    failed = only_result(m.events())
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.raised_by, failed.code, failed.message) == (
        Reason.PEER_ERROR, Side.PEER, 2, "access violation")
    assert m.closed and m.next_timeout() is None
    # Never ACK or retransmit after an ERROR, whatever comes or whenever.
    m.handle_timeout(100.0)
    m.receive(data(1, BLOCK), TID, 101.0)
    m.receive(encode(Error(2, "again")), TID, 102.0)
    assert m.datagrams_to_send() == []
    assert not of(m.events(), Failed)


def test_error_without_message_gets_the_code_name():
    m, _ = client_read()
    m.datagrams_to_send()
    m.receive(b"\x00\x05\x00\x01\x00", TID, 0.1)
    assert only_result(m.events()).message == "file not found"


def test_error_8_to_a_request_asked_again_marks_what_it_kept_refused():
    """The client falls back once (tests/protocol/test_fallback.py); a second ERROR 8 ends it, and the
    options are marked: those the first refusal named as dropped, the rest as refused."""
    m, _ = client_read(options=RequestedOptions(blksize=1024, tsize=True))
    m.datagrams_to_send(), m.events()
    m.receive(encode(Error(8, "tsize not supported")), TID, 0.1)
    assert [p.options for p in sent_packets(m)] == [(("blksize", "1024"),)]
    m.events()
    m.receive(encode(Error(8, "no options")), STRAY, 0.2)
    events = m.events()
    (negotiated,) = of(events, OptionsNegotiated)
    assert [(o.name, o.verdict) for o in negotiated.outcomes] == [
        ("tsize", Verdict.DROPPED), ("blksize", Verdict.REFUSED)]
    assert only_result(events).code == 8
    assert m.datagrams_to_send() == []


@pytest.mark.parametrize(("raw", "code"), [
    (b"\x00\x03\x00", 4), (b"\x00", 4), (b"\x00\x07", 4), (b"\x00\x06blksize\x00", 8)])
def test_malformed_from_peer_gets_error_and_fails(raw, code):
    m, _ = locked_client_read()
    m.receive(raw, TID, 0.05)
    out = sent(m)
    assert len(out) == 1 and out[0][1] == TID
    assert isinstance(out[0][0], Error) and out[0][0].code == code
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PROTOCOL, Side.LOCAL, code)
    assert failed.message and m.closed


def test_malformed_first_reply_locks_and_fails():
    m, _ = client_read()
    m.datagrams_to_send(), m.events()
    m.receive(b"\x00\x03\x00", TID, 0.05)
    assert [(p.code, d) for p, d in sent(m)] == [(4, TID)]
    assert isinstance(only_result(m.events()), Failed)


def test_unexpected_first_reply_gets_error_4():
    m, _ = client_read()
    m.datagrams_to_send()
    m.receive(ack(0), TID, 0.05)
    assert [(type(p), p.code) for p, _ in sent(m)] == [(Error, 4)]
    assert m.closed


def test_peer_locked_reports_reply_from_another_ip():
    other = ("192.0.2.77", 61000)
    m, _ = client_read()
    m.datagrams_to_send(), m.events()
    m.receive(data(1, BLOCK), other, 0.05)
    assert m.datagrams_to_send() == [(ack(1), other)]
    (locked,) = of(m.events(), PeerLocked)
    assert locked.peer == other and locked.requested == SERVER
    assert m.peer == other and m.requested_peer == SERVER
    # The original server address is now a stray.
    m.receive(data(2, BLOCK), SERVER, 0.06)
    assert [(p.code, d) for p, d in sent(m)] == [(5, SERVER)]


def test_oack_repeated_while_negotiating_is_reacked():
    m, _ = client_read(options=RequestedOptions(blksize=1024))
    m.datagrams_to_send()
    m.receive(oack(("blksize", "1024")), TID, 0.1)
    m.datagrams_to_send(), m.events()
    m.receive(oack(("blksize", "1024")), TID, 1.1)
    assert m.datagrams_to_send() == [(ack(0), TID)]
    assert notes_sent(m.events()) == [(Ack(0), Note.REACK)]
    # After the transfer began, an OACK is unexpected and unanswered.
    m.receive(data(1, bytes(1024)), TID, 1.2)
    m.datagrams_to_send()
    m.receive(oack(("blksize", "1024")), TID, 1.3)
    assert m.datagrams_to_send() == []
    assert notes_received(m.events())[-1][1] is Note.UNEXPECTED


def test_data_larger_than_block_size_is_illegal():
    m, _ = locked_client_read()
    m.receive(data(2, bytes(513)), TID, 0.1)
    assert [p.code for p in sent_packets(m)] == [4]
    assert only_result(m.events()).reason is Reason.PROTOCOL


# == client write ===================================================================================

def test_wrq_then_ack_0_then_data():
    m = client_write(BLOCK + b"x", size=513, options=RequestedOptions(tsize=True))
    assert m.datagrams_to_send() == [(b"\x00\x02up.bin\x00octet\x00tsize\x00513\x00", SERVER)]
    assert m.total == 513
    m.receive(ack(0), TID, 0.1)
    assert m.datagrams_to_send() == [(data(1, BLOCK), TID)]
    (negotiated,) = of(m.events(), OptionsNegotiated)
    assert negotiated.outcomes[0].verdict is Verdict.IGNORED
    m.receive(ack(1), TID, 0.2)
    assert sent_packets(m) == [Data(2, b"x")]
    m.receive(ack(2), TID, 0.3)
    done = only_result(m.events())
    assert isinstance(done, Completed) and done.stats.bytes == 513
    assert m.closed and m.next_timeout() is None  # the sender does not dally


def test_wrq_oack_then_data_1():
    m = client_write(bytes(3000), options=RequestedOptions(blksize=1024, windowsize=2))
    m.datagrams_to_send()
    m.receive(oack(("blksize", "1024"), ("windowsize", "2")), TID, 0.1)
    assert sent_packets(m) == [Data(1, bytes(1024)), Data(2, bytes(1024))]
    # A repeated OACK (our DATA 1 was slow) is not answered: the timer resends.
    m.receive(oack(("blksize", "1024"), ("windowsize", "2")), TID, 0.2)
    assert m.datagrams_to_send() == []


def test_wrq_refused_by_error():
    m = client_write(b"abc")
    m.datagrams_to_send(), m.events()
    m.receive(encode(Error(6, "file exists")), TID, 0.1)
    assert m.datagrams_to_send() == []
    failed = only_result(m.events())
    assert (failed.raised_by, failed.code, failed.reason) == (Side.PEER, 6, Reason.PEER_ERROR)
