"""Findings that need exact timing or 65,536 blocks, reproduced in memory with a virtual clock: our
protocol machines against a tiny fake peer that does not wrap the block number, and against each other
over tests/support/simnet.py."""

from __future__ import annotations

import random

import pytest

from tests.support.machines import StoringClientRead, fed
from tests.support.simnet import Impairment, lost_once_then_resent, run_transfer
from tftpdiag.findings import Analyzer, analyze
from tftpdiag.protocol.events import TimedOut
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import (
    Data,
    OAck,
    Request,
    decode,
    encode,
    encode_ack,
    encode_data,
)
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.timer import Timing

pytestmark = pytest.mark.timeout(60)

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 69)
TID = ("10.0.0.2", 50001)
BIG = random.Random(11).randbytes(8 * 65_600 + 3)  # 65,601 blocks of 8 bytes
TIMING = Timing(initial_timeout=0.5, retries=2, dally=0.1)


def _run_out(machine: Session, events: list, now: float) -> float:
    """Let the machine's timers run until it closes (nobody answers any more)."""
    while not machine.closed:
        deadline = machine.next_timeout()
        assert deadline is not None
        now = max(now, deadline)
        machine.handle_timeout(now)
        machine.datagrams_to_send()
        events += machine.events()
    return now


def test_rollover_stall_against_a_sender_that_does_not_wrap() -> None:
    client = StoringClientRead(1, filename="big.bin", server=SERVER, local=CLIENT, now=0.0,
                               options=RequestedOptions(blksize=8, tsize=True), timing=TIMING)
    events = client.events()
    client.datagrams_to_send()
    now = 0.001
    client.receive(encode(OAck((("blksize", "8"), ("tsize", str(len(BIG)))))), TID, now)
    # The fake sender: blocks 1..65535, then its 16-bit counter has nowhere to go and it falls silent.
    for n in range(1, 65536):
        now += 0.0001
        client.receive(encode_data(n, BIG[(n - 1) * 8:n * 8]), TID, now)
        client.datagrams_to_send()
        events += client.events()
    _run_out(client, events, now)
    findings = analyze(events)
    ids = {f.id: f for f in findings}
    assert set(ids) == {"rollover-stall", "rollover-risk"}, [(f.id, f.summary) for f in findings]
    stall = ids["rollover-stall"]
    assert stall.severity == "error" and "block 65535 after 65,535 blocks" in stall.summary
    assert "blksize 9 or more" in stall.suggestion
    assert ids["rollover-risk"].severity == "warning"


def test_rollover_stall_against_a_receiver_that_does_not_wrap() -> None:
    raw = encode(Request(1, "big.bin", "octet", (("blksize", "8"),)))  # type: ignore[arg-type]
    request = decode(raw)
    server = fed(ServerRead(2, request=request, raw=raw, client=CLIENT, local=TID, file_size=len(BIG), now=0.0,
                            listen=SERVER, timing=TIMING), BIG)
    events = server.events()
    now = 0.0
    out = server.datagrams_to_send()
    last = 0
    while out and not server.closed:
        packet = decode(out[-1][0])
        now += 0.0001
        if isinstance(packet, OAck):
            server.receive(encode_ack(0), CLIENT, now)
        elif isinstance(packet, Data):
            # The fake receiver counts blocks in 16 bits without wrapping: block 0 after 65535 is "old".
            last = max(last, packet.block)
            server.receive(encode_ack(last), CLIENT, now)
            if last == 65535 and packet.block == 0:
                break
        out = server.datagrams_to_send()
        events += server.events()
    events += server.events()
    _run_out(server, events, now)
    findings = analyze(events)
    assert [f.id for f in findings] == ["rollover-stall"], [(f.id, f.summary) for f in findings]
    f = findings[0]
    assert f.severity == "error" and "the client does not do it" in f.summary and "block 65535" in f.summary


def test_rollover_that_both_sides_handle_is_info() -> None:
    result = run_transfer("read", BIG, options=RequestedOptions(blksize=8, windowsize=64, tsize=True))
    assert result.received == BIG
    findings = analyze(result.events)
    assert {(f.session, f.id, f.severity) for f in findings} == {(1, "rollover-risk", "info"),
                                                                 (2, "rollover-risk", "info")}
    assert "wrapped past 65535 and both sides handled it" in findings[0].summary


def test_live_rollover_risk_is_a_warning_until_it_completes() -> None:
    result = run_transfer("read", BIG, options=RequestedOptions(blksize=8, windowsize=64, tsize=True))
    analyzer = Analyzer()
    changes = []
    for i in range(0, len(result.events), 500):
        changes += [(f.session, f.severity) for f in analyzer.feed(result.events[i:i + 500]) if f.id == "rollover-risk"]
    assert changes[:2] == [(2, "warning"), (1, "warning")] and set(changes[2:]) == {(1, "info"), (2, "info")}


def test_lossy_windowed_transfer_estimates_loss() -> None:
    data = random.Random(5).randbytes(512 * 400 + 17)
    result = run_transfer("read", data, options=RequestedOptions(windowsize=8),
                          impairment=Impairment(loss=0.05, seed=3),
                          client_timing=Timing(retries=15), server_timing=Timing(retries=15))
    assert result.received == data
    findings = {(f.session, f.id): f for f in analyze(result.events)}
    loss = findings[(1, "packet-loss")]
    pct = float(loss.summary.split("About ")[1].split("%")[0])
    assert 2.0 <= pct <= 10.0, loss.summary
    assert "out of order" in loss.summary and "smaller window" in loss.suggestion
    assert (2, "packet-loss") in findings


def test_an_icmp_error_in_a_session_that_completed_is_no_finding() -> None:
    """A client that does not dally leaves once its final ACK is sent; a server whose timer fired sends
    the last DATA again and gets port unreachable. The transfer completed: no warning that the client
    "gave up". The same error in a session it ended is the finding, as before."""
    import errno

    from tftpdiag.protocol.events import Completed, Failed, Reason, Side, SocketError

    result = run_transfer("read", random.Random(12).randbytes(5000), options=RequestedOptions(blksize=512))
    server = result.servers[0].session_id
    (done,) = [e for e in result.of(Completed) if e.session == server]
    refused = SocketError(server, done.time, CLIENT, errno.ECONNREFUSED, "port unreachable (nothing listens there)")
    at = result.events.index(done)
    completed = result.events[:at] + [refused] + result.events[at:]
    assert "port-unreachable" not in {f.id for f in analyze(completed)}
    failed = Failed(server, done.time, Reason.UNREACHABLE, Side.PEER, None, "client 10.0.0.1:40000: unreachable",
                    done.stats)
    ended = result.events[:at] + [refused, failed] + [e for e in result.events[at + 1:] if e.session != server]
    assert "port-unreachable" in {f.id for f in analyze(ended)}


def test_a_lost_block_is_one_loss_however_many_timeouts_it_takes() -> None:
    """A server that (rightly) ignores repeated ACKs and waits longer than the client: each lost DATA
    costs the client several timeouts before the server sends it again. Three blocks lost, three
    losses, not one per timeout."""
    lose = {20, 70, 120}
    data = random.Random(6).randbytes(512 * 200 + 9)
    result, dropped = lost_once_then_resent(lose, data)
    assert result.received == data and dropped == lose
    client_timeouts = [e for e in result.of(TimedOut) if e.session == 1]
    assert len(client_timeouts) > 2 * len(lose)  # the case: several timeouts for each lost block
    loss = {(f.session, f.id): f for f in analyze(result.events)}[(1, "packet-loss")]
    assert f"{len(lose)} losses over" in loss.summary, loss.summary
    assert f"{len(client_timeouts)} timeouts" in loss.summary, loss.summary
