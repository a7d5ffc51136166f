"""protocol/observer.py: one transfer seen from outside, fed datagram by datagram in both directions.

Each test builds the datagrams a capture beside the client would hold and checks the events the
observer makes from them: the same types a live client publishes, with the notes, counters and
endings a capture can tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.events import (
    CaptureGap,
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
    RequestRetried,
    Retransmit,
    Role,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.observer import ASK_AGAIN_WITHIN, MAX_HELD, Observer
from tftpdiag.protocol.observer_copies import COPY_LOOKBACK
from tftpdiag.protocol.observer_state import MAX_PENDING_BLOCKS
from tftpdiag.protocol.options import Verdict
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    OAck,
    Opcode,
    Options,
    Packet,
    Request,
    decode,
    encode,
)

C: Address = ("10.0.0.1", 40000)  # the client
S: Address = ("10.0.0.2", 69)  # where it sends its request
T: Address = ("10.0.0.2", 50001)  # the server's transfer ID
T2: Address = ("10.0.0.2", 50002)  # the server's transfer ID for a request asked again
STRAY: Address = ("10.0.0.2", 50003)


class Wire:
    """A capture beside the client: datagrams one after another, 1 ms apart unless told."""

    def __init__(self) -> None:
        self.time = 100.0
        self.datagrams: list[Datagram] = []

    def __call__(self, src: Address, dst: Address, packet: Packet | bytes, *, gap: float = 0.001,
                 orig_len: int | None = None) -> Datagram:
        raw = packet if isinstance(packet, bytes) else encode(packet)
        self.time += gap
        d = Datagram(self.time, src, dst, raw, len(raw) if orig_len is None else orig_len)
        self.datagrams.append(d)
        return d


def rrq(*options: tuple[str, str], name: str = "boot.img") -> Request:
    return Request(Opcode.RRQ, name, "octet", tuple(options))


def wrq(*options: tuple[str, str]) -> Request:
    return Request(Opcode.WRQ, "up.bin", "octet", tuple(options))


def observe(datagrams: Sequence[Datagram], end: float | None = None) -> tuple[Observer, list[Event]]:
    """The first datagram is the request; feed the rest and finish at ``end`` (the last one's time)."""
    first = datagrams[0]
    request = decode(first.payload)
    assert isinstance(request, Request)
    obs = Observer.request(1, first, request)
    for d in datagrams[1:]:
        assert obs.feed(d) is None
    obs.finish(datagrams[-1].time if end is None else end)
    return obs, obs.take()


def of(events: Iterable[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def ending(events: Sequence[Event]) -> Completed | Failed:
    (end,) = [e for e in events if isinstance(e, (Completed, Failed))]
    return end


def notes(events: Iterable[Event]) -> list[tuple[str, str, Note]]:
    """(direction, packet, note) of each packet event, e.g. ("<", "DATA 2", Note.RETRANSMIT)."""
    out = []
    for e in events:
        if isinstance(e, (PacketSent, PacketReceived)):
            p = e.packet
            what = f"{type(p).__name__.upper()} {p.block}" if isinstance(p, (Data, Ack)) else type(p).__name__.upper()
            out.append((">" if isinstance(e, PacketSent) else "<", what, e.note))
    return out


def download(wire: Wire, blocks: int, blksize: int = 512, last: int = 100, src: Address = T) -> None:
    """Lock-step blocks 1..blocks from ``src`` (the last one ``last`` bytes), each ACKed by the client."""
    for n in range(1, blocks + 1):
        wire(src, C, Data(n & 0xFFFF, bytes(last if n == blocks else blksize)))
        wire(C, src, Ack(n & 0xFFFF))


# -- lock-step and windowed, both directions ----------------------------------------------------------


def test_lock_step_download_fed_both_ways() -> None:
    wire = Wire()
    wire(C, S, rrq())
    download(wire, 3)
    obs, events = observe(wire.datagrams)
    assert isinstance(events[0], TransferStarted) and events[0].role is Role.CLIENT_READ
    assert events[0].filename == "boot.img" and events[0].peer == S
    (locked,) = of(events, PeerLocked)
    assert (locked.peer, locked.requested) == (T, S)
    (negotiated,) = of(events, OptionsNegotiated)
    assert negotiated.negotiated.oack is None and negotiated.negotiated.blksize == 512
    assert notes(events) == [(">", "REQUEST", Note.NONE)] + [
        (d, f"{k} {n}", Note.NONE) for n in (1, 2, 3) for d, k in (("<", "DATA"), (">", "ACK"))]
    end = ending(events)
    assert isinstance(end, Completed) and end.time == wire.datagrams[-1].time  # the client's final ACK
    assert (end.stats.bytes, end.stats.blocks) == (1124, 3)
    assert (end.stats.packets_sent, end.stats.packets_received) == (4, 3)
    assert (end.stats.retransmits, end.stats.duplicates, end.stats.timeouts) == (0, 0, 0)
    assert obs.done


def test_lock_step_upload_fed_both_ways() -> None:
    wire = Wire()
    wire(C, S, wrq(("tsize", "1100")))
    wire(T, C, OAck((("tsize", "1100"),)))
    wire(C, T, Data(1, bytes(512)))
    wire(T, C, Ack(1))
    wire(C, T, Data(2, bytes(512)))
    wire(T, C, Ack(2))
    wire(C, T, Data(3, bytes(76)))
    wire(T, C, Ack(3))
    _, events = observe(wire.datagrams)
    assert events[0].role is Role.CLIENT_WRITE
    (negotiated,) = of(events, OptionsNegotiated)
    assert [o.verdict for o in negotiated.outcomes] == [Verdict.ACCEPTED]
    end = ending(events)
    assert isinstance(end, Completed) and (end.stats.bytes, end.stats.blocks) == (1100, 3)
    assert of(events, Progress)[-1].total == 1100
    assert [type(e) for e in events if isinstance(e, (PacketSent, PacketReceived))][1::2] == [PacketReceived] * 4


def test_windowed_download_with_oack() -> None:
    wire = Wire()
    wire(C, S, rrq(("blksize", "1024"), ("windowsize", "4"), ("tsize", "0")))
    wire(T, C, OAck((("blksize", "1024"), ("windowsize", "4"), ("tsize", "6000"))))
    wire(C, T, Ack(0))
    for n in range(1, 5):
        wire(T, C, Data(n, bytes(1024)))
    wire(C, T, Ack(4))
    wire(T, C, Data(5, bytes(1024)))
    wire(T, C, Data(6, bytes(880)))
    wire(C, T, Ack(6))
    _, events = observe(wire.datagrams)
    (negotiated,) = of(events, OptionsNegotiated)
    assert (negotiated.negotiated.blksize, negotiated.negotiated.windowsize) == (1024, 4)
    assert all(n is Note.NONE for _, _, n in notes(events))
    end = ending(events)
    assert isinstance(end, Completed) and (end.stats.bytes, end.stats.blocks) == (6000, 6)
    assert of(events, Progress)[-1].total == 6000
    assert not of(events, CaptureGap)


# -- rollover -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rollover", [0, 1])
def test_rollover_at_zero_and_at_one(rollover: int) -> None:
    """70,000 blocks of 8 bytes: past 65535 the sender goes on at 0 or at 1; the observer follows
    either, counts every block once and numbers a resend after the wrap as the sender did."""
    wire = Wire()
    wire(C, S, rrq(("blksize", "8")))
    wire(T, C, OAck((("blksize", "8"),)))
    wire(C, T, Ack(0))
    total = 70_000
    block = bytes(8)

    def wire_of(n: int) -> int:
        return n & 0xFFFF if rollover == 0 or n <= 0xFFFF else (n - 1) % 0xFFFF + 1

    for n in range(1, total + 1):
        wire(T, C, Data(wire_of(n), block if n < total else b"end"), gap=1e-5)
        if n == 65_540:  # the ACK is lost: the server resends the block on its timer, the client ACKs it again
            wire(T, C, Data(wire_of(n), block), gap=1.0)
        wire(C, T, Ack(wire_of(n)), gap=1e-5)
    _, events = observe(wire.datagrams)
    end = ending(events)
    assert isinstance(end, Completed)
    assert (end.stats.bytes, end.stats.blocks) == ((total - 1) * 8 + 3, total)
    assert (end.stats.retransmits, end.stats.out_of_order) == (1, 0)
    (resend,) = of(events, Retransmit)
    assert resend.first_block == wire_of(65_540) == (4 if rollover == 0 else 5)
    assert end.stats.duplicates == 0  # the ACK of the resend is the one the server had lost


# -- ERROR 8 and asking again ------------------------------------------------------------------------


def refused_then(asked_again: bool) -> Wire:
    wire = Wire()
    wire(C, S, rrq(("tsize", "0"), ("blksize", "1468")))
    wire(T, C, Error(ErrorCode.OPTION_REFUSED, "options not supported"))
    if asked_again:
        wire(C, S, rrq(), gap=0.2)
        wire(T2, C, Data(1, bytes(512)))
        wire(C, T2, Ack(1))
        wire(T2, C, Data(2, b"x"))
        wire(C, T2, Ack(2))
    return wire


def test_error_8_then_asked_again_without_options_goes_on() -> None:
    _, events = observe(refused_then(asked_again=True).datagrams)
    (retried,) = of(events, RequestRetried)
    assert retried.code == ErrorCode.OPTION_REFUSED and retried.requested == ()
    assert [e.peer for e in of(events, PeerLocked)] == [T, T2]
    (negotiated,) = of(events, OptionsNegotiated)
    assert {o.name: o.verdict for o in negotiated.outcomes} == {"tsize": Verdict.DROPPED, "blksize": Verdict.DROPPED}
    end = ending(events)
    assert isinstance(end, Completed) and end.stats.bytes == 513
    assert len(of(events, TransferStarted)) == 1


def test_error_8_not_asked_again_ends_at_the_error() -> None:
    wire = refused_then(asked_again=False)
    error_time = wire.datagrams[1].time
    _, events = observe(wire.datagrams, end=error_time + 60)
    end = ending(events)
    assert isinstance(end, Failed)
    assert (end.reason, end.raised_by, end.code, end.time) == (Reason.PEER_ERROR, Side.PEER, 8, error_time)
    (negotiated,) = of(events, OptionsNegotiated)
    assert all(o.verdict is Verdict.REFUSED for o in negotiated.outcomes)


def test_a_live_tick_settles_a_refusal_the_client_did_not_follow() -> None:
    wire = refused_then(asked_again=False)
    request = decode(wire.datagrams[0].payload)
    assert isinstance(request, Request)
    obs = Observer.request(1, wire.datagrams[0], request)
    obs.feed(wire.datagrams[1])
    error_time = wire.datagrams[1].time
    obs.tick(error_time + ASK_AGAIN_WITHIN / 2)
    assert not obs.done  # the client may still ask again
    obs.tick(error_time + ASK_AGAIN_WITHIN + 1)
    assert obs.done
    assert isinstance(ending(obs.take()), Failed)


def test_a_refusal_not_yet_judged_ends_once() -> None:
    """The client answers the server's ERROR 8 with an ERROR of its own instead of asking again: that
    ends the transfer, and the refusal waiting for the client's next request must not end it again."""
    wire = refused_then(asked_again=False)
    wire(C, T, Error(ErrorCode.UNKNOWN_TID, "go away"))
    obs, events = observe(wire.datagrams, end=wire.time + 60)
    assert len(of(events, Failed)) == 1 and obs.done


def test_client_refuses_the_oack_with_error_8_as_a_uefi_size_probe() -> None:
    wire = Wire()
    wire(C, S, rrq(("tsize", "0"), ("blksize", "1468")))
    wire(T, C, OAck((("tsize", "3000000"), ("blksize", "1468"))))
    wire(C, T, Error(ErrorCode.OPTION_REFUSED, "size probe done"))
    _, events = observe(wire.datagrams)
    end = ending(events)
    assert isinstance(end, Failed) and (end.reason, end.raised_by, end.code) == (Reason.PROTOCOL, Side.LOCAL, 8)
    accepted, negotiated = of(events, OptionsNegotiated)  # the OACK as it came, then the client's refusal
    assert all(o.verdict is Verdict.ACCEPTED for o in accepted.outcomes)
    assert negotiated.negotiated.tsize == 3_000_000  # the size the probe read stays known
    assert all(o.verdict is Verdict.REFUSED for o in negotiated.outcomes)


# -- lost, duplicated and reordered datagrams --------------------------------------------------------


def windowed(wire: Wire) -> None:
    wire(C, S, rrq(("windowsize", "4")))
    wire(T, C, OAck((("windowsize", "4"),)))
    wire(C, T, Ack(0))


def test_a_lost_block_is_resent_after_the_clients_ack_shows_the_gap() -> None:
    """DATA 2 is lost before the client (so before the capture): the client ACKs 1, the server resends
    2..4, one window-gap run (the first of which the capture never saw before, yet it is behind 4)."""
    wire = Wire()
    windowed(wire)
    wire(T, C, Data(1, bytes(512)))
    wire(T, C, Data(3, bytes(512)))
    wire(T, C, Data(4, bytes(512)))
    wire(C, T, Ack(1))
    for n in (2, 3, 4):
        wire(T, C, Data(n, bytes(512)))
    wire(C, T, Ack(4))
    wire(T, C, Data(5, b""))
    wire(C, T, Ack(5))
    _, events = observe(wire.datagrams)
    assert notes(events)[3:10] == [
        ("<", "DATA 1", Note.NONE), ("<", "DATA 3", Note.OUT_OF_ORDER), ("<", "DATA 4", Note.OUT_OF_ORDER),
        (">", "ACK 1", Note.NONE), ("<", "DATA 2", Note.RETRANSMIT), ("<", "DATA 3", Note.RETRANSMIT),
        ("<", "DATA 4", Note.RETRANSMIT)]
    (run,) = of(events, Retransmit)
    assert (run.reason, run.first_block, run.count) == ("window-gap", 2, 3)
    end = ending(events)
    assert isinstance(end, Completed)
    assert (end.stats.bytes, end.stats.blocks, end.stats.retransmits, end.stats.out_of_order) == (2048, 5, 3, 2)
    assert not of(events, CaptureGap)  # the client's ACK 1 shows it lacked DATA 2 too


def test_duplicated_data_and_ack() -> None:
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(T, C, Data(1, bytes(512)), gap=1.0)  # nothing from the client in between: the server timed out
    wire(C, T, Ack(1))
    wire(C, T, Ack(1), gap=1.0)  # nothing from the server in between: the client timed out
    wire(T, C, Data(2, b"z"))
    wire(C, T, Ack(2))
    _, events = observe(wire.datagrams)
    # The client's ACK again after a silence is its timeout's retransmit, as a live client notes it.
    assert notes(events)[1:5] == [("<", "DATA 1", Note.NONE), ("<", "DATA 1", Note.RETRANSMIT),
                                  (">", "ACK 1", Note.NONE), (">", "ACK 1", Note.RETRANSMIT)]
    assert [(r.reason, r.first_block) for r in of(events, Retransmit)] == [("timeout", 1), ("timeout", 1)]
    (timeout,) = of(events, TimedOut)  # the client's own repeat; the server's timeout is not the client's
    assert timeout.waiting_for == "DATA 2" and timeout.waited == pytest.approx(1.0)
    end = ending(events)
    assert isinstance(end, Completed)
    assert (end.stats.bytes, end.stats.retransmits, end.stats.duplicates, end.stats.timeouts) == (513, 2, 0, 1)


def test_an_ack_answering_a_repeated_block_is_a_reack() -> None:
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(C, T, Ack(1))
    wire(T, C, Data(1, bytes(512)), gap=1.0)  # the server timed out: our ACK 1 was lost
    wire(C, T, Ack(1))  # the client answers it, as a live client does (lock-step)
    wire(T, C, Data(2, b"z"))
    wire(C, T, Ack(2))
    _, events = observe(wire.datagrams)
    assert notes(events)[4] == (">", "ACK 1", Note.REACK)
    assert not of(events, TimedOut)
    end = ending(events)
    assert isinstance(end, Completed)
    assert (end.stats.retransmits, end.stats.duplicates, end.stats.timeouts) == (1, 0, 0)


def test_a_lockstep_resend_after_the_ack_is_the_senders_timeout() -> None:
    """The server resends after the capture saw the client's ACK (lost beyond the capture point): in
    lock-step a sender resends only on its timer, so no window gap (the live sender says "timeout")."""
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(C, T, Ack(1))
    wire(T, C, Data(1, bytes(512)), gap=1.0)
    wire(C, T, Ack(1))
    wire(T, C, Data(2, b""))
    wire(C, T, Ack(2))
    _, events = observe(wire.datagrams)
    (run,) = of(events, Retransmit)
    assert (run.reason, run.first_block, run.count) == ("timeout", 1, 1)
    assert not of(events, TimedOut)  # the client answered each DATA once


def test_an_oack_sent_again_is_the_servers_timeout() -> None:
    """The client's ACK 0 went by the capture and was lost after it: the server's OACK again is its
    timer's, as the live server says, never a window gap (the summary counted one in lock-step)."""
    wire = Wire()
    wire(C, S, rrq(("blksize", "1024")))
    wire(T, C, OAck((("blksize", "1024"),)))
    wire(C, T, Ack(0))
    wire(T, C, OAck((("blksize", "1024"),)), gap=1.0)
    wire(C, T, Ack(0))
    wire(T, C, Data(1, b"z"))
    wire(C, T, Ack(1))
    _, events = observe(wire.datagrams)
    (run,) = of(events, Retransmit)
    assert (run.reason, run.first_block) == ("timeout", None)
    assert isinstance(ending(events), Completed)


def test_client_timeout_shows_in_its_own_repeat() -> None:
    wire = Wire()
    wire(C, S, rrq())
    wire(C, S, rrq(), gap=2.0)  # no reply: the client sends the request again
    wire(T, C, Data(1, b"a"))
    wire(C, T, Ack(1))
    _, events = observe(wire.datagrams)
    (timeout,) = of(events, TimedOut)
    assert timeout.waiting_for == "reply to RRQ" and timeout.waited == pytest.approx(2.0)
    assert ending(events).stats.timeouts == 1


def test_a_transfer_cut_after_one_block_says_one_block() -> None:
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(C, T, Ack(1))
    _, events = observe(wire.datagrams, end=wire.time + 10.0)
    assert ending(events).message.startswith("the transfer stopped after 512 bytes in 1 block; the capture goes on")


def test_reordered_block_counts_once_in_order() -> None:
    """Windowed: DATA 3 overtakes DATA 2. The receiver drops 3 (RFC 7440) and ACKs 2; the server
    resends 3."""
    wire = Wire()
    windowed(wire)
    wire(T, C, Data(1, bytes(512)))
    wire(T, C, Data(3, bytes(512)))
    wire(T, C, Data(2, bytes(512)))
    wire(C, T, Ack(2))
    wire(T, C, Data(3, bytes(512)))
    wire(T, C, Data(4, b"q"))
    wire(C, T, Ack(4))
    _, events = observe(wire.datagrams)
    # From outside, a block behind the highest one sent is a resend: DATA 2 is noted so, though it counts
    # (it is the block the client needs next).
    assert [n for _, w, n in notes(events) if w.startswith("DATA")] == [
        Note.NONE, Note.OUT_OF_ORDER, Note.RETRANSMIT, Note.RETRANSMIT, Note.NONE]
    end = ending(events)
    assert isinstance(end, Completed) and (end.stats.bytes, end.stats.blocks) == (1537, 4)
    assert (end.stats.out_of_order, end.stats.retransmits) == (1, 2)


def test_a_stray_reply_is_noted_and_not_counted() -> None:
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(STRAY, C, Data(1, bytes(512)))  # a second server session answered a repeated request
    wire(C, STRAY, Error(ErrorCode.UNKNOWN_TID, "unknown transfer ID"))
    wire(C, T, Ack(1))
    wire(T, C, Data(2, b""))
    wire(C, T, Ack(2))
    _, events = observe(wire.datagrams)
    stray = [e for e in of(events, PacketReceived) if e.note is Note.STRAY]
    assert [e.peer for e in stray] == [STRAY]
    end = ending(events)
    assert isinstance(end, Completed) and (end.stats.stray, end.stats.packets_received) == (1, 2)


# A server's reply no client can decode: an OACK whose option name is not ASCII (what a fake server sent).
BAD_OACK = b"\x00\x06tsize\x003\x00x\xffy\x001\x00"
OTHER_HOST: Address = ("10.0.0.9", 50001)


def test_a_malformed_reply_from_the_server_is_its_answer_and_the_clients_error_ends_it() -> None:
    """The server answered from its transfer port with a datagram the client could not take, and the
    client refused it with ERROR 8 (as a live client locks on it and refuses it): the transfer failed by
    the client's ERROR, not for want of a reply."""
    wire = Wire()
    wire(C, S, rrq(("tsize", "0"), ("blksize", "1468")))
    wire(T, C, BAD_OACK)
    wire(C, T, Error(ErrorCode.OPTION_REFUSED, "OACK: option name is not ASCII"))
    _, events = observe(wire.datagrams, end=wire.time + 30)
    assert [e.peer for e in of(events, PeerLocked)] == [T]
    (malformed,) = [e for e in of(events, PacketReceived) if e.note is Note.MALFORMED]
    assert malformed.packet is None and malformed.peer == T and "not ASCII" in malformed.detail
    end = ending(events)
    assert isinstance(end, Failed)
    assert (end.reason, end.raised_by, end.code, end.message) == (
        Reason.PROTOCOL, Side.LOCAL, 8, "OACK: option name is not ASCII")
    assert (end.stats.packets_sent, end.stats.packets_received) == (2, 0)  # as live: what did not decode


def test_a_malformed_datagram_from_a_stranger_is_no_answer() -> None:
    """From another host before the answer, or from another port after it: not the server's answer, so
    the transfer ID stays the one that did answer."""
    wire = Wire()
    wire(C, S, rrq())
    wire(OTHER_HOST, C, BAD_OACK)
    wire(T, C, Data(1, bytes(512)))
    wire(STRAY, C, BAD_OACK)
    wire(C, T, Ack(1))
    wire(T, C, Data(2, b"end"))
    wire(C, T, Ack(2))
    _, events = observe(wire.datagrams)
    assert [e.peer for e in of(events, PeerLocked)] == [T]
    assert not [e for e in of(events, PacketReceived) if e.note is Note.MALFORMED]
    end = ending(events)
    assert isinstance(end, Completed) and end.stats.bytes == 515


def test_the_client_going_on_with_another_port_after_a_malformed_answer_wins() -> None:
    """A malformed first answer the client let pass, then a good one from another port, which the client
    takes: the client's choice is the transfer ID (as for a stray it carries on with)."""
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, BAD_OACK)
    wire(T2, C, Data(1, bytes(512)))
    wire(C, T2, Ack(1))
    wire(T2, C, Data(2, b"end"))
    wire(C, T2, Ack(2))
    _, events = observe(wire.datagrams)
    assert [e.peer for e in of(events, PeerLocked)] == [T, T2]
    end = ending(events)
    assert isinstance(end, Completed) and end.stats.bytes == 515


def test_a_malformed_answer_to_a_request_asked_again_is_that_requests_answer() -> None:
    """The server refused the options (ERROR 8), the client asked again without them (UEFI), and the new
    session answered with what the client cannot decode: the client's ERROR ends the same transfer."""
    wire = refused_then(asked_again=False)
    wire(C, S, rrq(), gap=0.2)
    wire(T2, C, BAD_OACK)
    wire(C, T2, Error(ErrorCode.OPTION_REFUSED, "bad OACK"))
    _, events = observe(wire.datagrams, end=wire.time + 30)
    assert len(of(events, RequestRetried)) == 1
    assert [e.peer for e in of(events, PeerLocked)] == [T, T2]
    end = ending(events)
    assert isinstance(end, Failed) and (end.reason, end.raised_by, end.code) == (Reason.PROTOCOL, Side.LOCAL, 8)


# -- capture gaps ---------------------------------------------------------------------------------------


def test_capture_gap_data_the_ack_shows_was_delivered() -> None:
    """The capture dropped DATA 2 and 3, yet the client ACKs 3: they were delivered."""
    wire = Wire()
    windowed(wire)
    wire(T, C, Data(1, bytes(512)))
    wire(T, C, Data(4, bytes(512)))  # past a gap in the capture: out of order until the ACK shows otherwise
    wire(C, T, Ack(4))
    wire(T, C, Data(5, b"."))
    wire(C, T, Ack(5))
    obs, events = observe(wire.datagrams)
    (gap,) = of(events, CaptureGap)
    assert (gap.missing, gap.count) == ("DATA", 2) and "DATA blocks from 2" in gap.detail
    assert obs.capture_gaps == 2
    assert all(n is not Note.OUT_OF_ORDER for _, _, n in notes(events))  # the note was taken back
    end = ending(events)
    assert isinstance(end, Completed) and (end.stats.bytes, end.stats.out_of_order) == (4 * 512 + 1, 0)


def test_capture_gap_ack_the_sender_must_have_had() -> None:
    """Lock-step: DATA 3 is sent although the capture holds no ACK 2, and ACK 3 shows the transfer went on."""
    wire = Wire()
    wire(C, S, rrq())
    wire(T, C, Data(1, bytes(512)))
    wire(C, T, Ack(1))
    wire(T, C, Data(2, bytes(512)))
    wire(T, C, Data(3, b"!"))  # the capture lacks the client's ACK 2
    wire(C, T, Ack(3))
    _, events = observe(wire.datagrams)
    (gap,) = of(events, CaptureGap)
    assert (gap.missing, gap.count) == ("ACK", 1)
    assert isinstance(ending(events), Completed)


# -- feeding live: incrementally, with events taken as they settle -----------------------------------


def feed_live(datagrams: Sequence[Datagram], take_every: int = 1) -> tuple[list[Event], int]:
    """Feed one datagram at a time, taking the settled events as a live watcher would; also the most
    events the observer ever held between takes."""
    first = datagrams[0]
    request = decode(first.payload)
    assert isinstance(request, Request)
    obs = Observer.request(1, first, request)
    out: list[Event] = []
    held = 0
    for i, d in enumerate(datagrams[1:]):
        obs.feed(d)
        if i % take_every == 0:
            out += obs.take()
            held = max(held, len(obs.events))
    obs.finish(datagrams[-1].time)
    return out + obs.take(), held


def test_events_taken_as_they_settle_equal_the_whole_run() -> None:
    """A resend run and out-of-order notes change events after they were made: take() holds those back
    until they settle, so what a live watcher gets equals what a whole capture gives."""
    wire = Wire()
    windowed(wire)
    wire(T, C, Data(1, bytes(512)))
    wire(T, C, Data(4, bytes(512)))
    wire(C, T, Ack(4))  # takes back DATA 4's note (a capture gap)
    wire(T, C, Data(5, bytes(512)))
    wire(T, C, Data(7, bytes(512)))
    wire(C, T, Ack(5))
    for n in (6, 7):
        wire(T, C, Data(n, bytes(512)))  # a run of two resends (7 is one), extended after it was made
    wire(T, C, Data(8, b""))
    wire(C, T, Ack(8))
    _, whole = observe(wire.datagrams)
    live, _ = feed_live(wire.datagrams)
    assert live == whole
    assert any(isinstance(e, CaptureGap) for e in live) and any(isinstance(e, Retransmit) for e in live)


def test_take_is_only_for_an_observer_with_its_own_list() -> None:
    wire = Wire()
    wire(C, S, rrq())
    shared: list[Event] = []
    request = decode(wire.datagrams[0].payload)
    assert isinstance(request, Request)
    obs = Observer.request(1, wire.datagrams[0], request, shared)
    assert shared and obs.events is shared
    with pytest.raises(ValueError):
        obs.take()


# -- hostile bytes and random orders --------------------------------------------------------------------

_PEERS = (S, T, T2, STRAY, ("10.0.0.9", 69))


def _head(op: int, number: int, rest: bytes) -> bytes:
    return bytes((0, op, number >> 8 & 0xFF, number & 0xFF)) + rest


payloads = st.one_of(
    st.binary(max_size=24),
    st.builds(_head, st.integers(0, 8), st.integers(0, 0xFFFF), st.binary(max_size=40)),
    st.builds(lambda n: encode(Ack(n)), st.integers(0, 0xFFFF)),
    st.builds(lambda n, size: encode(Data(n, bytes(size))), st.integers(0, 0xFFFF), st.integers(0, 600)),
    st.sampled_from([encode(rrq(("blksize", "16"), ("windowsize", "8"))), encode(rrq()), encode(wrq()),
                     encode(OAck((("blksize", "16"), ("windowsize", "8")))), encode(OAck((("blksize", "99999"),))),
                     encode(Error(8, "no options")), encode(Error(1, "not found")), encode(Error(5, ""))]),
)
hostile = st.lists(
    st.tuples(st.floats(0, 40, allow_nan=False), st.booleans(), st.sampled_from(_PEERS), payloads,
              st.integers(0, 3000)),
    max_size=80,
)


def _fresh(options: Options, is_read: bool, sink: list[Event] | None = None) -> Observer:
    request = Request(Opcode.RRQ if is_read else Opcode.WRQ, "f", "octet", options)
    raw = encode(request)
    return Observer.request(1, Datagram(0.0, C, S, raw, len(raw)), request, sink)


def _check_bounded(obs: Observer) -> None:
    assert len(obs.ahead) <= MAX_PENDING_BLOCKS and len(obs.ahead_at) <= MAX_PENDING_BLOCKS
    assert len(obs.sizes) <= MAX_PENDING_BLOCKS
    assert obs.strays is None or len(obs.strays) <= 64
    assert len(obs.events) <= MAX_HELD + 64  # after a take(): what is held back, and what one datagram made
    # The datagrams kept for the capture's copies, and what they answer: a window's worth, not the transfer.
    assert len(obs.seen_c) <= 2 * COPY_LOOKBACK and len(obs.seen_s) <= 2 * COPY_LOOKBACK
    for newest in (obs.newest_c, obs.newest_s):
        linked = 0
        while newest is not None:
            linked += 1
            newest = newest[1]  # the other side's entry it answers
        assert linked <= 4 * COPY_LOOKBACK + 1, linked


def test_a_long_transfer_keeps_a_bounded_few_datagrams_for_its_copies() -> None:
    """Each datagram kept for the copies links to the one it answers; the links of those let go must not
    hold every datagram of the transfer (as they did: 2,000 blocks kept 4,000 datagrams alive)."""
    wire = Wire()
    wire(C, S, rrq())
    for n in range(1, 2001):
        wire(T, C, Data(n & 0xFFFF, bytes(512) if n < 2000 else b"end"))
        wire(C, T, Ack(n & 0xFFFF))
    obs = _fresh((), True)
    for d in wire.datagrams[1:]:
        obs.feed(d)
        obs.take()
    _check_bounded(obs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=hostile, is_read=st.booleans(), windowed_=st.booleans())
def test_hostile_datagrams_never_raise_and_state_stays_bounded(
        steps: list[tuple[float, bool, Address, bytes, int]], is_read: bool, windowed_: bool) -> None:
    options: Options = (("blksize", "16"), ("windowsize", "8")) if windowed_ else ()
    obs = _fresh(options, is_read)
    taken = obs.take()
    sessions = 1
    now = 0.0
    for dt, from_client, peer, raw, extra in steps:
        now += dt
        d = Datagram(now, C, peer, raw, len(raw) + extra) if from_client else Datagram(now, peer, C, raw,
                                                                                        len(raw) + extra)
        if obs.feed(d) is not None:
            assert obs.done  # handed back: the caller starts the next transfer
            taken += obs.take()
            request = decode(raw)
            assert isinstance(request, Request)
            sessions += 1
            obs = Observer.request(sessions, d, request)
        obs.tick(now)
        taken += obs.take()
        _check_bounded(obs)
    obs.finish(now + 1)
    taken += obs.take()
    assert obs.done and not obs.events
    endings = [e for e in taken if isinstance(e, (Completed, Failed))]
    assert sorted(e.session for e in endings) == list(range(1, sessions + 1))  # one ending each
    for e in endings:
        s = e.stats
        assert min(s.bytes, s.blocks, s.packets_sent, s.packets_received, s.retransmits, s.duplicates,
                   s.timeouts, s.out_of_order, s.stray) >= 0


def _lossy_window() -> list[Datagram]:
    """A windowed download with a loss and a resend, as the capture beside the client holds it."""
    wire = Wire()
    windowed(wire)
    for n in (1, 2, 4):
        wire(T, C, Data(n, bytes(512)))
    wire(C, T, Ack(2))
    for n in (3, 4, 5, 6):
        wire(T, C, Data(n, bytes(512)))
    wire(C, T, Ack(6))
    wire(T, C, Data(7, b"tail"))
    wire(C, T, Ack(7))
    return wire.datagrams


@settings(max_examples=200, deadline=None)
@given(order=st.permutations(range(1, len(_lossy_window()))), take_every=st.integers(1, 5))
def test_any_order_of_a_transfer_ends_once_and_live_equals_whole(order: list[int], take_every: int) -> None:
    """The datagrams after the request in any order (a capture merged badly, or a hostile one): no
    exception, exactly one ending, and the events taken live equal the events of the whole run."""
    base = _lossy_window()
    shuffled = [base[0]] + [Datagram(base[i].time, base[i].src, base[i].dst, base[i].payload, base[i].orig_len)
                            for i in order]
    _, whole = observe(shuffled)
    live, held = feed_live(shuffled, take_every)
    assert live == whole
    assert len([e for e in whole if isinstance(e, (Completed, Failed))]) == 1
    assert held <= len(whole)


@pytest.mark.parametrize("is_read", [True, False])
def test_blocks_waiting_for_an_ack_are_bounded(is_read: bool) -> None:
    """A sender that never sends the block the receiver needs (download) or a receiver that never ACKs
    (upload): every fresh block would be kept for the ACK to come; no more than a window's worth is."""
    obs = _fresh((("blksize", "8"), ("windowsize", "65535")), is_read)
    sender, receiver = (T, C) if is_read else (C, T)
    obs.feed(Datagram(0.1, T, C, encode(OAck((("blksize", "8"), ("windowsize", "65535")))), 0))
    if is_read:
        obs.feed(Datagram(0.1, C, T, encode(Ack(0)), 4))
    else:
        obs.feed(Datagram(0.1, C, T, encode(Data(1, bytes(8))), 12))
    wire = 3 if is_read else 2
    for i in range(MAX_PENDING_BLOCKS + 5000):
        raw = encode(Data(wire, bytes(8)))
        obs.feed(Datagram(0.2 + i * 1e-6, sender, receiver, raw, len(raw)))
        wire = (wire + 1) & 0xFFFF
    held = obs.ahead if is_read else obs.sizes
    assert len(held) == MAX_PENDING_BLOCKS
    assert obs.stats(1.0).out_of_order == (MAX_PENDING_BLOCKS + 5000 if is_read else 0)


def test_events_held_for_a_change_are_bounded() -> None:
    """A resend run that goes on and on would hold every event after its first for the count to grow:
    past MAX_HELD the run is closed and the events go out."""
    wire = Wire()
    wire(C, S, rrq(("windowsize", "65535")))
    wire(T, C, OAck((("windowsize", "65535"),)))
    wire(C, T, Ack(0))
    for n in range(1, 6001):
        wire(T, C, Data(n, bytes(512)), gap=1e-5)
    wire(C, T, Ack(6000))
    for n in range(1, 6001):  # all of them again: one run of 6000 resends
        wire(T, C, Data(n, bytes(512)), gap=1e-5)
    live, held = feed_live(wire.datagrams)
    assert held <= MAX_HELD + 1
    runs = of(live, Retransmit)
    assert len(runs) == 2 and runs[0].count == MAX_HELD and sum(r.count for r in runs) == 6000
    _, whole = observe(wire.datagrams)
    (run,) = of(whole, Retransmit)  # fed whole, nothing is taken early: one run
    assert run.count == 6000


def test_a_window_in_one_datagram_cut_by_the_snap_length() -> None:
    """A window captured as one datagram (UDP offload) whose capture stops inside its third block: the
    blocks past the cut are taken on trust (once raised IndexError on the empty remainder)."""
    wire = Wire()
    windowed(wire)
    window = encode(Data(1, bytes(512))) + encode(Data(2, bytes(512))) + encode(Data(3, bytes(512)))
    wire(T, C, window[:1033], orig_len=len(window))
    wire(C, T, Ack(3))
    obs, events = observe(wire.datagrams)
    assert [e.packet.block for e in of(events, PacketReceived) if isinstance(e.packet, Data)] == [1, 2, 3]
    assert (obs.coalesced, obs.cut) == (1, 1)  # only the third block lost bytes to the cut
    assert ending(events).stats.bytes == 3 * 512


def test_digest_of_a_download_seen_whole_and_none_when_a_byte_was_not_seen() -> None:
    """watch's ContentDigest: the SHA-256 of the bytes the capture saw reach the client, only when it saw
    every one (not when the snap length cut a block, nor when an ACK covers DATA the capture lacks)."""
    import hashlib

    from tftpdiag.protocol.datagram import Datagram
    from tftpdiag.protocol.events import ContentDigest
    from tftpdiag.trace.rebuild import Rebuilder

    client, server, tid = ("10.0.0.9", 40000), ("10.0.0.1", 69), ("10.0.0.1", 50000)
    data = bytes(range(256)) * 9  # 2304 bytes: four full 512-byte blocks and a short one
    blocks = [data[i:i + 512] for i in range(0, len(data) + 1, 512)]

    def run(cut: int | None = None, lose: int | None = None, digest: bool = True) -> list:
        r = Rebuilder(digest=digest)
        t = 1.0
        feed = [Datagram(t, client, server, b"\0\1image\0octet\0", 14)]
        for n, chunk in enumerate(blocks, 1):
            raw = b"\0\3" + n.to_bytes(2, "big") + chunk
            shown = raw[:cut] if cut is not None and n == 2 else raw
            if n != lose:
                feed.append(Datagram(t + n * 0.01, tid, client, shown, len(raw)))
            feed.append(Datagram(t + n * 0.01 + 0.001, client, tid, b"\0\4" + n.to_bytes(2, "big"), 4))
        r.feed(feed)
        return r.finish()

    (digest,) = [e for e in run() if isinstance(e, ContentDigest)]
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.bytes == len(data)
    assert not [e for e in run(cut=100) if isinstance(e, ContentDigest)]
    assert not [e for e in run(lose=3) if isinstance(e, ContentDigest)]
    assert not [e for e in run(digest=False) if isinstance(e, ContentDigest)]  # trace opens stay fast
