"""Whole transfers between our client and our server machines over tests/support/simnet.py's virtual network."""

from __future__ import annotations

import random

import pytest

from tests.support.simnet import CLIENT, Impairment, SimResult, run_transfer
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    PacketReceived,
    PacketSent,
    Reason,
    Side,
)
from tftpdiag.protocol.netascii import encode as netascii_encode
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data, Error
from tftpdiag.protocol.timer import Timing

LOSSY_SEEDS = (1, 2, 3)
# Generous retries and a long dally so that 20% loss cannot make a run fail by bad luck: the sender
# repeats its final DATA at most every max_timeout, many times within the receiver's dally.
TOUGH = Timing(retries=15, max_timeout=1.0, dally=10.0)


def octet_payload(blksize: int) -> bytes:
    rng = random.Random(blksize)
    return rng.randbytes(blksize * 23 + 77)


def text_payload(blksize: int) -> bytes:
    """Local text whose netascii form puts CR LF and CR NUL pairs across block boundaries."""
    parts: list[bytes] = []
    wire = 0
    boundary_ends = [b"\n", b"\r", b"\r\n", b"\n", b"\r"]
    for k, end in enumerate(boundary_ends, start=1):
        # Fill so that the first wire byte of ``end`` is the last byte of block k.
        filler = b"line with CRLF\r\nand LF\nand bare CR\rok " * (blksize // 40)
        filler = filler[: max(0, k * blksize - 1 - wire - 200)]
        parts.append(filler)
        wire += len(netascii_encode(filler))
        pad = k * blksize - 1 - wire
        assert pad >= 0
        parts.append(b"x" * pad + end)
        wire += pad + len(netascii_encode(end))
    parts.append(b"more text\r\nwith\rmixed\nline ends " * (blksize // 2))  # ~15 more blocks
    parts.append(b"tail\n\r")  # ends with a bare CR
    text = b"".join(parts)
    encoded = netascii_encode(text)
    for k in range(1, 6):
        assert encoded[k * blksize - 1: k * blksize] == b"\r"  # a pair straddles each boundary
    return text


def impairment(seed: int | None) -> Impairment:
    if seed is None:
        return Impairment()
    return Impairment(loss=0.2, dup=0.1, reorder=0.1, jitter=0.002, seed=seed)


def sessions(result: SimResult):
    """The server session the client locked onto, and the other ones (from repeated requests)."""
    main = [s for s in result.servers if s.local == result.client.peer]
    assert len(main) == 1, result.servers
    others = [s for s in result.servers if s is not main[0]]
    return main[0], others


def delivered(result: SimResult, direction: str, payload: bytes) -> bytes:
    if direction == "read":
        return result.received
    server, _ = sessions(result)
    return result.stored[str(server.session_id)]


def data_sent(result: SimResult, session: int) -> list[Data]:
    return [e.packet for e in result.of(PacketSent) if e.session == session and isinstance(e.packet, Data)]


def acks_counted(result: SimResult, sender: int, receiver: int) -> tuple[int, int]:
    """ACKs the receiver sent, and ACKs the sender received (more when the network duplicated some)."""
    sent = sum(1 for e in result.of(PacketSent) if e.session == receiver and isinstance(e.packet, Ack))
    got = sum(1 for e in result.of(PacketReceived) if e.session == sender and isinstance(e.packet, Ack))
    return sent, got


@pytest.mark.parametrize("seed", [None, *LOSSY_SEEDS], ids=["clean", *(f"lossy{s}" for s in LOSSY_SEEDS)])
@pytest.mark.parametrize("blksize", [512, 1468])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("window", [1, 4, 16])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_transfer(direction, window, mode, blksize, seed):
    payload = octet_payload(blksize) if mode == "octet" else text_payload(blksize)
    options = RequestedOptions(blksize=blksize, windowsize=window if window > 1 else None, tsize=True)
    result = run_transfer(direction, payload, options=options, mode=mode, impairment=impairment(seed),
                          client_timing=TOUGH, server_timing=TOUGH)
    server, others = sessions(result)
    client = result.client
    assert isinstance(client.result, Completed), client.result
    assert isinstance(server.result, Completed), server.result
    assert client.closed and server.closed
    assert delivered(result, direction, payload) == payload
    # Sessions made by a repeated request were turned away, never completed.
    for other in others:
        assert isinstance(other.result, Failed)
    assert (client.blksize, client.windowsize) == (blksize, window)

    sender, receiver = (server, client) if direction == "read" else (client, server)
    wire_size = len(payload) if mode == "octet" else len(netascii_encode(payload))
    blocks = wire_size // blksize + 1
    assert sender.result.stats.blocks == receiver.result.stats.blocks == blocks
    assert sender.result.stats.bytes == receiver.result.stats.bytes == wire_size
    sent = data_sent(result, sender.session_id)
    assert {d.block for d in sent} == set(range(1, blocks + 1))
    if seed is None:
        # A clean network: every block exactly once, no retransmission, one ACK per window.
        assert len(sent) == blocks
        assert sender.retransmits == receiver.retransmits == sender.timeouts == 0
        acks, _ = acks_counted(result, sender.session_id, receiver.session_id)
        ack_0 = 1 if direction == "read" else 0  # a reading client accepts the OACK with ACK 0
        assert acks == -(-blocks // window) + ack_0
    else:
        # Go-back-N resends at most one window per failed round. With 20% loss a round (DATA then ACK)
        # fails with q = 1 - 0.8**2 = 0.36, so on average blocks * (1 + window * q / (1 - q)), about
        # blocks * (1 + 0.56 * window) DATA are sent. Over 4,800 seeded runs of these transfers the
        # worst was blocks * (1 + window); twice that leaves room for bad luck, while traffic that
        # feeds on itself (a Sorcerer's Apprentice) grows with every delay and blows through it.
        assert len(sent) < 2 * blocks * (1 + window)
        assert sender.timeouts <= 3 * blocks
        if window == 1:
            # Lock-step resends only on a timeout, one packet per timeout: never on a duplicate ACK.
            assert sender.retransmits <= sender.timeouts


@pytest.mark.parametrize("seed", [4, 5, 6])
@pytest.mark.parametrize("window", [1, 4, 16])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_duplication_alone_causes_no_data_storm(direction, window, seed):
    """Duplicated datagrams, none lost or reordered, delays far below the timeouts: no timeout fires,
    so the only thing that may resend DATA is a duplicate ACK. In lock-step it must never do so
    (RFC 1123); with a window, a duplicated ACK may rewind one window, at most once per copy the
    network made, and the copies of DATA that rewind brings must not be answered with more ACKs
    that rewind the next window again (a windowed Sorcerer's Apprentice)."""
    payload = octet_payload(512) * 3
    options = RequestedOptions(windowsize=window if window > 1 else None)
    result = run_transfer(direction, payload, options=options, impairment=Impairment(dup=0.3, seed=seed))
    server, _ = sessions(result)
    sender, receiver = (server, result.client) if direction == "read" else (result.client, server)
    assert isinstance(sender.result, Completed) and isinstance(receiver.result, Completed)
    assert delivered(result, direction, payload) == payload
    assert sender.timeouts == receiver.timeouts == 0
    acks_sent, acks_got = acks_counted(result, sender.session_id, receiver.session_id)
    network_copies = acks_got - acks_sent
    if window == 1:
        assert sender.retransmits == 0
        assert len(data_sent(result, sender.session_id)) == sender.result.stats.blocks
    else:
        assert sender.retransmits <= window * network_copies
        # and, in practice, far below one resend per block
        assert sender.retransmits < sender.result.stats.blocks


@pytest.mark.parametrize("seed", [7, 8, 9])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_lock_step_duplication_and_reordering_never_resend(direction, seed):
    result = run_transfer(direction, octet_payload(512) * 2,
                          impairment=Impairment(dup=0.4, reorder=0.4, jitter=0.003, seed=seed))
    server, _ = sessions(result)
    sender = server if direction == "read" else result.client
    assert isinstance(sender.result, Completed)
    assert sender.retransmits == 0 and sender.timeouts == 0
    assert len(data_sent(result, sender.session_id)) == sender.result.stats.blocks


def test_exact_multiple_and_empty_files():
    for payload in (b"", bytes(512 * 4)):
        for direction in ("read", "write"):
            result = run_transfer(direction, payload)
            assert delivered(result, direction, payload) == payload
            assert isinstance(result.client.result, Completed)
            server, _ = sessions(result)
            assert server.result.stats.blocks == len(payload) // 512 + 1


# -- rollover ---------------------------------------------------------------------------------------

ROLL = bytes((i * 13) & 0xFF for i in range(65_540 * 8 + 5))


def test_rollover_windowed_with_block_0_lost_at_the_wrap():
    """With a window, block 0 (= 65536) lost and block 1 arriving first must be a gap, not a sign that
    the peer wraps to 1: taking it for one would silently put block 65537 in place of 65536."""
    dropped: list[bytes] = []

    def drop_first_block_0(raw: bytes, src, dst) -> bool:
        if raw[:4] == b"\x00\x03\x00\x00" and not dropped:
            dropped.append(raw)
            return True
        return False

    result = run_transfer("read", ROLL, options=RequestedOptions(blksize=8, windowsize=5),
                          impairment=Impairment(drop=drop_first_block_0))
    assert dropped
    assert result.received == ROLL
    assert isinstance(result.client.result, Completed) and isinstance(result.servers[0].result, Completed)
    assert result.client.out_of_order >= 1


def test_rollover_to_one_windowed_with_block_1_lost_at_the_wrap():
    """A sender that wraps 65535 -> 1, with a window: our receiver follows it once the block numbered
    ``windowsize`` shows the wrap (a sender wrapping to 0 cannot be that far ahead), even when the
    first block after the wrap is lost."""
    wrapped: list[bool] = []
    dropped: list[bytes] = []

    def drop_first_block_1_after_wrap(raw: bytes, src, dst) -> bool:
        if raw[:4] == b"\x00\x03\xff\xff":
            wrapped.append(True)
        if wrapped and raw[:4] == b"\x00\x03\x00\x01" and not dropped:
            dropped.append(raw)
            return True
        return False

    result = run_transfer("read", ROLL, options=RequestedOptions(blksize=8, windowsize=4),
                          impairment=Impairment(drop=drop_first_block_1_after_wrap),
                          server_timing=Timing(rollover=1))
    assert dropped
    assert result.received == ROLL
    server, _ = sessions(result)
    assert isinstance(result.client.result, Completed) and isinstance(server.result, Completed)
    wire_blocks = {e.packet.block for e in result.of(PacketSent)
                   if e.session == server.session_id and isinstance(e.packet, Data)}
    assert 0 not in wire_blocks


# -- repeated request -------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["read", "write"])
def test_repeated_request_second_session_turned_away(direction):
    """The first reply is slower than the client's first timeout, so the client repeats its request and
    the listener starts a second session; the client answers that one with ERROR 5."""
    payload = octet_payload(512)
    result = run_transfer(direction, payload, options=RequestedOptions(blksize=1024),
                          impairment=Impairment(delay=0.01),
                          client_timing=Timing(initial_timeout=0.015), dedupe_requests=False)
    assert len(result.servers) == 2
    first, second = result.servers
    assert result.client.peer == first.local
    assert delivered(result, direction, payload) == payload
    assert isinstance(result.client.result, Completed) and isinstance(first.result, Completed)
    assert isinstance(second.result, Failed)
    assert (second.result.reason, second.result.raised_by, second.result.code) == (Reason.PEER_ERROR, Side.PEER, 5)
    turned_away = [e for e in result.of(PacketSent)
                   if e.session == result.client.session_id and isinstance(e.packet, Error)]
    assert turned_away and all(e.peer == second.local and e.packet.code == 5 for e in turned_away)
    assert result.client.stray >= 1


def test_repeated_request_deduplicated_by_listener():
    result = run_transfer("read", b"abc" * 300, impairment=Impairment(delay=0.01),
                          client_timing=Timing(initial_timeout=0.015), dedupe_requests=True)
    assert len(result.servers) == 1
    assert result.received == b"abc" * 300


def test_missing_file_refused_and_client_fails():
    result = run_transfer("read", b"", filename="nope.bin", server_files={})
    failed = result.client.result
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PEER_ERROR, Side.PEER, 1)
    assert result.servers == []
    assert result.client.peer[0] == "10.0.0.2" and result.client.local == CLIENT
