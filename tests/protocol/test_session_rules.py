"""Each protocol rule, exactly, on one machine driven by hand: feed packets, read what it sends."""

from __future__ import annotations

import io
import itertools

import pytest

from tftpdiag.protocol.events import (
    Completed,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    PeerLocked,
    Progress,
    Reason,
    RequestRefused,
    Retransmit,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy, Verdict
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    Request,
    decode,
    encode,
)
from tftpdiag.protocol.server import ServerRead, refuse
from tftpdiag.protocol.session import State, StorageError
from tftpdiag.protocol.timer import Timing
from tftpdiag.protocol.receiver import MemorySink

from .helpers import (
    CLIENT,
    SERVER,
    STRAY,
    TID,
    ack,
    client_read,
    client_write,
    data,
    oack,
    of,
    pump,
    sent,
    sent_packets,
    server_read,
    server_write,
)

BLOCK = bytes(range(256)) * 2  # one full 512-byte block


def only_result(events):
    results = [e for e in events if isinstance(e, (Completed, Failed))]
    assert len(results) == 1, results
    return results[0]


def notes_sent(events):
    return [(e.packet, e.note) for e in of(events, PacketSent)]


def notes_received(events):
    return [(e.packet, e.note) for e in of(events, PacketReceived)]


def locked_client_read(options=RequestedOptions(), timing=Timing(), **oack_options):
    """A ClientRead that has had the server's first DATA 1 (no options) or OACK, and answered."""
    m, sink = client_read(options=options, timing=timing)
    m.datagrams_to_send(), m.events()
    if oack_options:
        m.receive(oack(*oack_options.items()), TID, 0.01)
    else:
        m.receive(data(1, BLOCK), TID, 0.01)
    m.datagrams_to_send(), m.events()
    return m, sink


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


# == timeouts =======================================================================================

def drive_timeouts(m, expect_packet):
    """Fire every timeout until the machine gives up; return the gaps between deadlines."""
    gaps = []
    last = 0.0
    while m.next_timeout() is not None:
        deadline = m.next_timeout()
        gaps.append(round(deadline - last, 9))
        m.handle_timeout(deadline - 1e-6)  # early: nothing happens
        assert m.datagrams_to_send() == [] and m.next_timeout() == deadline
        m.handle_timeout(deadline)
        out = sent(m)
        if not m.finished:
            assert [p for p, _ in out] == [expect_packet]
        else:
            assert out == []
        last = deadline
    return gaps


def test_request_backoff_doubles_up_to_max_then_fails():
    timing = Timing(initial_timeout=1.0, max_timeout=8.0, retries=6)
    m, _ = client_read(timing=timing)
    rrq = sent_packets(m)[0]
    m.events()
    gaps = drive_timeouts(m, rrq)
    assert gaps == [1, 2, 4, 8, 8, 8, 8]
    events = m.events()
    timed_out = of(events, TimedOut)
    assert [t.attempt for t in timed_out] == [1, 2, 3, 4, 5, 6, 7]
    assert [t.waited for t in timed_out] == [1, 2, 4, 8, 8, 8, 8]
    assert {t.waiting_for for t in timed_out} == {"reply to RRQ"}
    retransmits = of(events, Retransmit)
    assert [(r.reason, r.first_block, r.count, r.attempt) for r in retransmits] == [
        ("timeout", None, 1, i) for i in range(1, 7)]
    assert [n for _, n in notes_sent(events)] == [Note.RETRANSMIT] * 6
    failed = only_result(events)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.TIMEOUT, Side.LOCAL, None)
    assert "7 attempts" in failed.message
    assert m.retransmits == 6 and m.timeouts == 7


def test_data_resent_only_on_timeout_with_backoff():
    timing = Timing(initial_timeout=0.5, max_timeout=3.0, retries=4, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    first = sent_packets(m)
    assert first == [Data(1, BLOCK)]
    m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == [0.5, 1.0, 2.0, 3.0, 3.0]
    events = m.events()
    assert [t.waiting_for for t in of(events, TimedOut)] == ["ACK 1"] * 5
    assert [(r.first_block, r.count) for r in of(events, Retransmit)] == [(1, 1)] * 4
    assert only_result(events).reason is Reason.TIMEOUT


def test_give_up_waits_for_time_not_only_a_count():
    """On a fast link the adaptive timeout sits at its floor: five retries end after 0.1+0.2+...+3.2 =
    6.3 s, long before a client's own patience (tftp-hpa 25 s). With give_up the session retransmits,
    backing off to max_timeout, until nothing has been heard for give_up seconds, and ends exactly then."""
    timing = Timing(initial_timeout=0.1, max_timeout=8.0, retries=5, give_up=30.0, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    assert sent_packets(m) == [Data(1, BLOCK)]
    m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0, 1.3])
    assert sum(gaps) == pytest.approx(30.0)
    events = m.events()
    failed = only_result(events)
    assert failed.reason is Reason.TIMEOUT and failed.time == pytest.approx(30.0)
    assert "10 attempts in 30.0 s" in failed.message
    assert m.retransmits == 9


def test_give_up_counts_from_the_last_progress():
    timing = Timing(initial_timeout=1.0, max_timeout=4.0, retries=1, give_up=10.0, adaptive=False)
    m = server_read(BLOCK * 3, timing=timing)
    m.datagrams_to_send()
    m.handle_timeout(1.0)
    m.handle_timeout(3.0)  # two timeouts: more than retries, but only 3 s of silence
    assert not m.finished
    m.receive(ack(1), CLIENT, 5.0)  # progress: the silence starts again from here
    assert sent_packets(m)[-1] == Data(2, BLOCK)
    while m.next_timeout() is not None:
        m.handle_timeout(m.next_timeout())
    failed = only_result(m.events())
    assert failed.time == pytest.approx(15.0)


def test_give_up_still_needs_the_retries():
    """A long first wait (a negotiated timeout) does not end the session before its retries are spent."""
    timing = Timing(initial_timeout=20.0, max_timeout=20.0, retries=2, give_up=5.0, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    m.datagrams_to_send(), m.events()
    gaps = drive_timeouts(m, Data(1, BLOCK))
    assert gaps == [20.0, 20.0, 20.0]
    assert only_result(m.events()).reason is Reason.TIMEOUT


def test_give_up_zero_keeps_the_count_rule():
    timing = Timing(initial_timeout=0.1, max_timeout=8.0, retries=5, adaptive=False)
    m = server_read(BLOCK * 2, timing=timing)
    m.datagrams_to_send(), m.events()
    assert sum(drive_timeouts(m, Data(1, BLOCK))) == pytest.approx(6.3)


def test_give_up_counts_from_in_order_data_on_the_fast_path():
    """A receiver taking DATA in order (its fast path) counts that as heard, like the general path."""
    timing = Timing(initial_timeout=1.0, max_timeout=2.0, retries=0, give_up=4.0, adaptive=False)
    m, _ = client_read(timing=timing)
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.5)
    m.receive(data(2, BLOCK), TID, 3.0)
    while m.next_timeout() is not None:
        m.handle_timeout(m.next_timeout())
    assert only_result(m.events()).time == pytest.approx(7.0)


def test_abandon_ends_without_a_word_to_the_peer():
    """A server making room drops a half-open session silently: its peer may be a forged address."""
    m = server_read(BLOCK * 2)
    m.datagrams_to_send(), m.events()
    m.abandon(0.5, "dropped to admit a new request")
    assert m.datagrams_to_send() == [] and m.closed and m.next_timeout() is None
    failed = only_result(m.events())
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.TIMEOUT, Side.LOCAL, None)


def test_give_up_must_not_be_negative():
    with pytest.raises(ValueError):
        Timing(give_up=-1.0)


def test_progress_resets_backoff_and_karn_skips_ambiguous_samples():
    m = server_read(BLOCK * 3, timing=Timing(initial_timeout=1.0))
    m.datagrams_to_send()
    m.handle_timeout(1.0)  # DATA 1 resent; next wait 2 s
    assert m.next_timeout() == pytest.approx(3.0)
    m.datagrams_to_send()
    m.receive(ack(1), CLIENT, 1.01)  # ambiguous RTT: not sampled (Karn), backoff ends
    assert sent_packets(m) == [Data(2, BLOCK)]
    assert m.next_timeout() == pytest.approx(2.01)


def test_receiver_does_not_sample_rtt_across_its_own_retransmission():
    """Karn's rule on the receiving side: after our ACK was repeated, the next DATA could answer either
    copy, so its delay says nothing about the round trip."""
    m, _ = client_read(timing=Timing(initial_timeout=1.0, min_timeout=0.1))
    m.datagrams_to_send()
    m.receive(data(1, BLOCK), TID, 0.01)  # RTT 0.01: the timeout drops to the 0.1 floor
    assert m.next_timeout() == pytest.approx(0.11)
    m.handle_timeout(0.11)  # ACK 1 repeated, wait doubled
    assert sent_packets(m) == [Ack(1), Ack(1)]
    assert m.next_timeout() == pytest.approx(0.31)
    m.receive(data(2, BLOCK), TID, 0.2)  # 0.19 after the first ACK 1: not a measurement
    assert m.next_timeout() == pytest.approx(0.3)


def test_adaptive_timeout_shrinks_towards_rtt():
    rtt = 0.01
    for floor in (0.001, 0.1):
        m = server_read(BLOCK * 40, timing=Timing(initial_timeout=1.0, min_timeout=floor))
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(1.0)
        now, waits = 0.0, []
        for block in range(1, 40):
            now += rtt
            m.receive(ack(block), CLIENT, now)
            assert len(m.datagrams_to_send()) == 1
            waits.append(m.next_timeout() - now)
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(waits)), waits
        assert min(waits) >= floor - 1e-9
        if floor < rtt:
            assert rtt <= waits[-1] < 2 * rtt
        else:
            assert waits[-1] == pytest.approx(floor)


def test_adaptive_off_keeps_initial_timeout():
    m = server_read(BLOCK * 5, timing=Timing(initial_timeout=0.7, adaptive=False))
    m.datagrams_to_send()
    for block in range(1, 4):
        m.receive(ack(block), CLIENT, block * 0.01)
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(block * 0.01 + 0.7)


def test_negotiated_timeout_fixes_base_timeout_client():
    m, _ = client_read(options=RequestedOptions(timeout=3))
    m.datagrams_to_send()
    m.receive(oack(("timeout", "3")), TID, 0.01)
    assert m.next_timeout() == pytest.approx(3.01)
    for block in range(1, 6):
        now = 0.01 + block * 0.001
        m.receive(data(block, BLOCK), TID, now)
        assert m.next_timeout() == pytest.approx(now + 3.0)


def test_negotiated_timeout_fixes_base_timeout_server():
    m = server_read(BLOCK * 10, ("timeout", "2"))
    assert sent_packets(m) == [OAck((("timeout", "2"),))]
    assert m.next_timeout() == pytest.approx(2.0)
    m.receive(ack(0), CLIENT, 0.002)
    m.datagrams_to_send()
    for block in range(1, 6):
        now = 0.002 + block * 0.001
        m.receive(ack(block), CLIENT, now)
        m.datagrams_to_send()
        assert m.next_timeout() == pytest.approx(now + 2.0)


def test_receiver_repeats_its_last_ack_on_timeout():
    m, _ = locked_client_read(timing=Timing(initial_timeout=1.0, adaptive=False))
    deadline = m.next_timeout()
    m.handle_timeout(deadline)
    assert sent(m) == [(Ack(1), TID)]
    events = m.events()
    assert [(r.first_block, r.count) for r in of(events, Retransmit)] == [(1, 1)]
    assert of(events, TimedOut)[0].waiting_for == "DATA 2"


# == windowsize =====================================================================================

def windowed_server(blocks: int, window: int = 4, tail: bytes = b"end") -> ServerRead:
    m = server_read(BLOCK * blocks + tail, ("windowsize", str(window)))
    assert sent_packets(m) == [OAck((("windowsize", str(window)),))]
    m.receive(ack(0), CLIENT, 0.01)
    return m


def blocks_of(packets):
    return [p.block for p in packets]


def test_sender_sends_exactly_windowsize_blocks_then_waits():
    m = windowed_server(10)
    assert blocks_of(sent_packets(m)) == [1, 2, 3, 4]
    m.receive(ack(4), CLIENT, 0.02)
    assert blocks_of(sent_packets(m)) == [5, 6, 7, 8]
    m.receive(ack(8), CLIENT, 0.03)
    last = sent_packets(m)
    assert blocks_of(last) == [9, 10, 11]  # stops at the final, short block
    assert last[-1] == Data(11, b"end")
    m.events()
    m.receive(ack(11), CLIENT, 0.04)
    assert m.datagrams_to_send() == []
    assert isinstance(only_result(m.events()), Completed)


def test_sender_slides_on_partial_ack():
    m = windowed_server(10)
    sent_packets(m), m.events()
    # An ACK in the middle of the window that the sender has not finished: blocks after it were sent
    # already, so this shows a gap and the sender resumes right after the ACKed block.
    m.receive(ack(1), CLIENT, 0.02)
    out = sent(m)
    assert blocks_of(p for p, _ in out) == [2, 3, 4, 5]
    events = m.events()
    assert [n for _, n in notes_sent(events)] == [Note.RETRANSMIT] * 3 + [Note.NONE]
    (retransmit,) = of(events, Retransmit)
    assert (retransmit.reason, retransmit.first_block, retransmit.count) == ("window-gap", 2, 3)


def test_duplicate_ack_at_window_start_rewinds_once():
    m = windowed_server(20)
    sent_packets(m)
    m.receive(ack(4), CLIENT, 0.02)
    assert blocks_of(sent_packets(m)) == [5, 6, 7, 8]
    m.events()
    m.receive(ack(4), CLIENT, 0.03)  # block 5 was lost: the receiver ACKs 4 again
    assert blocks_of(sent_packets(m)) == [5, 6, 7, 8]
    (retransmit,) = of(m.events(), Retransmit)
    assert (retransmit.reason, retransmit.first_block, retransmit.count) == ("window-gap", 5, 4)
    for i in range(3):
        m.receive(ack(4), CLIENT, 0.04 + i / 100)
        assert m.datagrams_to_send() == []
    m.receive(ack(8), CLIENT, 0.1)
    assert blocks_of(sent_packets(m)) == [9, 10, 11, 12]
    m.receive(ack(8), CLIENT, 0.11)  # a new ack value may rewind once again
    assert blocks_of(sent_packets(m)) == [9, 10, 11, 12]


def test_gap_ack_and_its_duplicate_rewind_only_once():
    m = windowed_server(20)
    sent_packets(m)
    m.receive(ack(2), CLIENT, 0.02)  # gap after 2
    assert blocks_of(sent_packets(m)) == [3, 4, 5, 6]
    m.receive(ack(2), CLIENT, 0.021)  # a network copy of that ACK
    assert m.datagrams_to_send() == []
    assert m.retransmits == 2


def test_receiver_acks_only_the_last_block_of_each_window():
    m, sink = locked_client_read(options=RequestedOptions(windowsize=4), windowsize="4")
    for block in range(1, 4):
        m.receive(data(block, BLOCK), TID, 0.01 * block)
        assert m.datagrams_to_send() == []
    m.receive(data(4, BLOCK), TID, 0.05)
    assert m.datagrams_to_send() == [(ack(4), TID)]
    for block in range(5, 8):
        m.receive(data(block, BLOCK), TID, 0.05 + 0.01 * block)
    assert m.datagrams_to_send() == []
    m.receive(data(8, b"short"), TID, 0.2)  # the final block ends the window early
    assert m.datagrams_to_send() == [(ack(8), TID)]
    assert sink.getvalue() == BLOCK * 7 + b"short"


def test_receiver_acks_a_gap_once_and_sender_resumes_after_it():
    client, sink = locked_client_read(options=RequestedOptions(windowsize=4), windowsize="4")
    server = windowed_server(12)
    window = sent_packets(server)
    assert blocks_of(window) == [1, 2, 3, 4]
    # Block 2 is lost.
    for packet in (window[0], window[2], window[3]):
        client.receive(encode(packet), TID, 0.02)
    gap_acks = sent_packets(client)
    assert gap_acks == [Ack(1)]
    events = client.events()
    assert [n for _, n in notes_received(events)] == [Note.NONE, Note.OUT_OF_ORDER, Note.OUT_OF_ORDER]
    assert client.out_of_order == 2
    server.receive(encode(gap_acks[0]), CLIENT, 0.03)
    resent = sent_packets(server)
    assert blocks_of(resent) == [2, 3, 4, 5]
    for packet in resent:
        client.receive(encode(packet), TID, 0.04)
    assert sent_packets(client) == [Ack(5)]
    assert sink.getvalue() == BLOCK * 5


def test_windowed_receiver_does_not_answer_repeated_blocks():
    """A copy of a block (a network duplicate, or a rewind made on a duplicated ACK) is not re-ACKed in a
    window: that ACK would look like a gap and rewind the next window too (windowed Sorcerer's Apprentice).
    The receiver's own timer repeats the ACK when the sender really missed it."""
    m, _ = locked_client_read(options=RequestedOptions(windowsize=4), timing=Timing(adaptive=False),
                              windowsize="4")
    for block in (1, 1, 2, 3, 2, 3, 4):
        m.receive(data(block, BLOCK), TID, 0.01)
    assert sent_packets(m) == [Ack(4)]
    for block in (1, 2, 3, 4):
        m.receive(data(block, BLOCK), TID, 0.02)
    assert m.datagrams_to_send() == []
    m.handle_timeout(m.next_timeout())
    assert sent_packets(m) == [Ack(4)]


# == block-number rollover ==========================================================================

ROLL_BLOCKS = 65_540


def rollover_pair(timing: Timing, *, direction: str, window: int = 1):
    content = bytes((i * 7) & 0xFF for i in range(ROLL_BLOCKS * 8 + 3))
    options = RequestedOptions(blksize=8, windowsize=window if window > 1 else None)
    if direction == "read":
        client, sink = client_read(options=options)
        req = client.request
        server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                            source=io.BytesIO(content), now=0.0, file_size=len(content), timing=timing)
        receiver_sink = sink
    else:
        client = client_write(content, options=options, timing=timing)
        server, receiver_sink = server_write(*client.request.options)
    return content, client, server, receiver_sink


@pytest.mark.parametrize(("rollover", "direction"), [(0, "read"), (1, "write")])
def test_rollover(rollover, direction):
    content, client, server, sink = rollover_pair(Timing(rollover=rollover), direction=direction)
    seen: list[int] = []

    def watch(raw, src, dst):
        if raw[:2] == b"\x00\x03":
            seen.append(int.from_bytes(raw[2:4], "big"))
        return False

    pump(client, server, on_datagram=watch)
    total = ROLL_BLOCKS + 1
    if rollover == 0:
        expected = [n % 65536 for n in range(1, total + 1)]
    else:
        expected = [n if n <= 65535 else (n - 1) % 65535 + 1 for n in range(1, total + 1)]
    assert seen == expected
    assert seen[65533:] == ([65534, 65535, 0, 1, 2, 3, 4, 5] if rollover == 0 else [65534, 65535, 1, 2, 3, 4, 5, 6])
    assert sink.getvalue() == content
    assert isinstance(client.result, Completed) and isinstance(server.result, Completed)
    assert client.result.stats.blocks == server.result.stats.blocks == ROLL_BLOCKS + 1


# == read-ahead =====================================================================================

@pytest.mark.parametrize("window", [1, 4])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_prefetch_never_changes_what_is_sent(direction, mode, window):
    content = (b"line\r\nwith\rbare\nends " * 200)[:4093]  # ends mid-block
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None)

    def run(prefetch: bool):
        if direction == "read":
            client, sink = client_read(options=options, mode=mode)
            req = client.request
            server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                                source=io.BytesIO(content), now=0.0, file_size=len(content))
            sender = server
        else:
            client = client_write(content, options=options, mode=mode)
            server, sink = server_write(*client.request.options, mode=mode)
            sender = client
        wire: list[tuple[bytes, tuple, tuple]] = []

        def log(raw, src, dst):
            wire.append((raw, src, dst))
            return False

        pump(client, server, on_datagram=log, after_step=sender.prefetch if prefetch else None)
        assert isinstance(client.result, Completed) and isinstance(server.result, Completed)
        return wire, sink.getvalue()

    plain, plain_bytes = run(False)
    ahead, ahead_bytes = run(True)
    assert ahead == plain
    assert ahead_bytes == plain_bytes == content


@pytest.mark.parametrize("window", [1, 4])
def test_prefetch_never_changes_the_events(window):
    # A prepared block's PacketSent is made while the sender waits; it must still say when it was sent.
    content = bytes(range(256)) * 20 + b"tail"
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None)

    def run(prefetch: bool) -> list:
        client, _ = client_read(options=options)
        req = client.request
        server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                            source=io.BytesIO(content), now=0.0, file_size=len(content))
        seen: list = []
        take = server.events
        server.events = lambda: seen.extend(take()) or []  # type: ignore[method-assign]
        pump(client, server, after_step=server.prefetch if prefetch else None)
        assert isinstance(server.result, Completed)
        return seen

    plain, ahead = run(False), run(True)
    assert ahead == plain
    assert len({e.time for e in ahead if isinstance(e, PacketSent)}) > 1


class FlakySource:
    """Short reads (like a pipe), and one I/O error right after a short read."""

    def __init__(self, content: bytes, fail_on_call: int) -> None:
        self.buf, self.calls, self.fail_on_call = io.BytesIO(content), 0, fail_on_call

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise StorageError(ErrorCode.NOT_DEFINED, "local I/O error: Input/output error")
        return self.buf.read(min(size, 300))


@pytest.mark.parametrize("prefetch", [False, True])
def test_read_error_ends_the_transfer_and_never_shifts_bytes(prefetch):
    content = bytes(range(256)) * 8
    client, sink = client_read()
    req = client.request
    server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                        source=FlakySource(content, fail_on_call=4), now=0.0)
    pump(client, server, after_step=server.prefetch if prefetch else None)
    assert isinstance(server.result, Failed)
    assert (server.result.reason, server.result.code) == (Reason.LOCAL, 0)
    assert "Input/output error" in server.result.message
    assert isinstance(client.result, Failed) and client.result.raised_by is Side.PEER
    received = sink.getvalue()
    assert content.startswith(received) and len(received) < len(content)


def test_prefetch_before_negotiation_reads_nothing():
    source = io.BytesIO(bytes(5000))
    req = Request(Opcode.RRQ, "f", "octet", (("blksize", "1024"),))
    m = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, source=source, now=0.0,
                   file_size=5000)
    m.prefetch()
    assert source.tell() == 0  # the block size is not settled until the client answers the OACK
    m.receive(ack(0), CLIENT, 0.01)
    assert sent_packets(m)[-1] == Data(1, bytes(1024))


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



def test_server_marks_options_refused_when_the_client_refuses_its_oack() -> None:
    """The UEFI size probe: RRQ with tsize, our OACK, then ERROR 8 from the client."""
    import io

    from tftpdiag.protocol.events import OptionsNegotiated
    from tftpdiag.protocol.options import Verdict
    from tftpdiag.protocol.packets import Error, Opcode, Request, encode
    from tftpdiag.protocol.server import ServerRead

    request = Request(Opcode.RRQ, "bootx64.efi", "octet", (("tsize", "0"), ("blksize", "1468")))
    raw = encode(request)
    client, local = ("10.0.0.9", 1024), ("10.0.0.1", 50000)
    machine = ServerRead(7, request=request, raw=raw, client=client, local=local, source=io.BytesIO(b"x" * 5000),
                         file_size=5000, now=0.0)
    machine.events()
    machine.receive(encode(Error(8, "tsize only")), client, 0.01)
    negotiated = [e for e in machine.events() if isinstance(e, OptionsNegotiated)]
    assert negotiated and {o.verdict for o in negotiated[-1].outcomes} == {Verdict.REFUSED}
    assert machine.result is not None and machine.result.code == 8


def test_request_is_resent_to_the_port_it_first_went_to() -> None:
    """A stray first reply (DATA 2) fixes the transfer ID, yet the request goes again to port 69."""
    import io

    from tftpdiag.protocol.client import ClientRead
    from tftpdiag.protocol.packets import Data, Request, decode, encode
    from tftpdiag.protocol.timer import Timing

    server, tid = ("10.0.0.2", 69), ("10.0.0.2", 50001)
    machine = ClientRead(1, filename="f", server=server, local=("10.0.0.1", 4000), sink=MemorySink(), now=0.0,
                         timing=Timing(initial_timeout=1.0))
    machine.datagrams_to_send()
    machine.receive(encode(Data(2, b"y" * 512)), tid, 0.1)
    machine.datagrams_to_send()
    machine.handle_timeout(machine.next_timeout() or 2.0)
    resent = machine.datagrams_to_send()
    assert [(type(decode(raw)), dest) for raw, dest in resent] == [(Request, server)]
