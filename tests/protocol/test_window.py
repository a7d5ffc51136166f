"""Windowed transfers (RFC 7440): the sender's window and rewinds, the receiver's ACKs and gaps."""

from __future__ import annotations

from tests.support.machines import (
    BLOCK,
    CLIENT,
    TID,
    ack,
    data,
    locked_client_read,
    notes_received,
    notes_sent,
    of,
    only_result,
    sent,
    sent_packets,
    server_read,
)
from tftpdiag.protocol.events import (
    Completed,
    Note,
    Retransmit,
)
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    OAck,
    encode,
)
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.timer import Timing

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
