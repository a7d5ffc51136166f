"""A failure exactly at the block-number wrap is named rollover-stall however it shows: silence, an
ICMP port unreachable, or an ERROR at block 65535 or 0. Our protocol machines against tiny fake peers
that cannot wrap, 8-byte blocks (65,536 of them make 512 KiB), live and as a capture of the same."""

from __future__ import annotations

import copy
import errno
import random
from collections.abc import Callable

import pytest

from tests.support.interop import client_capture
from tests.support.machines import StoringClientRead, fed
from tftpdiag.findings import Finding, analyze
from tftpdiag.protocol.client import ClientWrite
from tftpdiag.protocol.events import Event, SocketError
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Data, Error, OAck, decode, encode, encode_ack, encode_data
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.timer import Timing
from tftpdiag.trace.rebuild import rebuild

pytestmark = pytest.mark.timeout(60)

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 69)
TID = ("10.0.0.2", 50001)
BIG = random.Random(11).randbytes(8 * 65_600 + 3)  # 65,601 blocks of 8 bytes
TIMING = Timing(initial_timeout=0.5, retries=2, dally=0.1)
ICMP = "port unreachable (nothing listens there)"


def _run_out(machine: Session, events: list[Event], now: float) -> None:
    """Let the machine's timers run until it closes (nobody answers any more)."""
    while not machine.closed:
        deadline = machine.next_timeout()
        assert deadline is not None
        now = max(now, deadline)
        machine.handle_timeout(now)
        machine.datagrams_to_send()
        events += machine.events()


def _end(machine: Session, events: list[Event], now: float, shape: str, error: tuple[int, str]) -> None:
    """How the peer that cannot go on shows it: silence, its port closed (ICMP), or an ERROR."""
    now += 0.01
    if shape == "icmp":
        events.append(SocketError(1, now, TID, errno.ECONNREFUSED, ICMP))  # as the engine publishes it
        machine.unreachable(now, f"10.0.0.2:50001: {ICMP}")
    elif shape == "error":
        machine.receive(encode(Error(*error)), TID, now)
    machine.datagrams_to_send()
    events += machine.events()
    _run_out(machine, events, now)


# The first ~64,000 blocks are the same in every run of a kind: made once, copied for each.
_PREFIX: dict[tuple, tuple[Session, list[Event], float, int]] = {}


def _start(key: tuple, make: Callable[[], tuple[Session, list[Event], float]], advance: Callable, upto: int
           ) -> tuple[Session, list[Event], float]:
    base = upto // 1000 * 1000 - 1000
    cached = _PREFIX.get((*key, base))
    if cached is None:
        machine, events, now = make()
        now = advance(machine, events, now, 0, base)
        cached = _PREFIX[(*key, base)] = (machine, events, now, base)
    machine, events, now, done = cached
    machine, events = copy.deepcopy(machine), list(events)
    return machine, events, advance(machine, events, now, done, upto)


def download(last: int, shape: str, *, windowsize: int = 1, wrap_to: int = 0,
             error: tuple[int, str] = (0, "block number overflow")) -> list[Event]:
    """Our client reads from a sender that sends blocks 1..last (numbered past 65535 as 0 or 1 on), then
    fails in the given shape."""

    def make() -> tuple[Session, list[Event], float]:
        asked = RequestedOptions(blksize=8, tsize=True, windowsize=windowsize if windowsize > 1 else None)
        client = StoringClientRead(1, filename="big.bin", server=SERVER, local=CLIENT, now=0.0,
                                   options=asked, timing=TIMING)
        events = client.events()
        client.datagrams_to_send()
        oack = (("blksize", "8"), ("tsize", str(len(BIG))))
        if windowsize > 1:
            oack += (("windowsize", str(windowsize)),)
        client.receive(encode(OAck(oack)), TID, 0.001)
        return client, events, 0.001

    def advance(client: Session, events: list[Event], now: float, done: int, upto: int) -> float:
        for n in range(done + 1, upto + 1):
            now += 0.0001
            wire = n if n <= 65535 else ((n - 1) % 65535 + 1 if wrap_to == 1 else n & 0xFFFF)
            client.receive(encode_data(wire, BIG[(n - 1) * 8:n * 8]), TID, now)
            client.datagrams_to_send()
            events += client.events()
        return now

    client, events, now = _start(("read", windowsize, wrap_to), make, advance, last)
    _end(client, events, now, shape, error)
    return events


def upload(last_ack: int, shape: str, error: tuple[int, str] = (4, "Illegal TFTP operation")) -> list[Event]:
    """Our client writes to a receiver that acknowledges blocks up to ``last_ack`` and no further."""

    def make() -> tuple[Session, list[Event], float]:
        client = fed(ClientWrite(1, filename="big.bin", server=SERVER, local=CLIENT, size=len(BIG), now=0.0,
                                 options=RequestedOptions(blksize=8), timing=TIMING), BIG)
        events = client.events()
        client.datagrams_to_send()
        client.receive(encode(OAck((("blksize", "8"),))), TID, 0.001)
        return client, events, 0.001

    def advance(client: Session, events: list[Event], now: float, done: int, upto: int) -> float:
        for _ in range(done, upto):
            out = client.datagrams_to_send()
            events += client.events()
            packet = decode(out[-1][0])
            assert isinstance(packet, Data)
            now += 0.0001
            client.receive(encode_ack(packet.block), TID, now)
        return now  # the DATA this ACK draws is still to send: _end sends it

    client, events, now = _start(("write",), make, advance, last_ack)
    _end(client, events, now, shape, error)
    return events


def captured(events: list[Event]) -> list[Event]:
    """The same transfer as a capture on the client's host shows it (no ICMP), rebuilt."""
    return rebuild(client_capture(events))


def stall(events: list[Event]) -> Finding:
    findings = analyze(events)
    ids = {f.id: f for f in findings}
    # The stop is named for what it is; the silence, ICMP or ERROR is its evidence, not another cause.
    assert "rollover-stall" in ids and set(ids) <= {"rollover-stall", "rollover-risk"}, \
        [(f.id, f.summary) for f in findings]
    f = ids["rollover-stall"]
    assert f.severity == "error" and "past 65535" in f.summary
    return f


@pytest.mark.parametrize("view", ["live", "trace"])
@pytest.mark.parametrize("shape,last,how", [
    ("silence", 65535, "nothing came after it"),
    ("icmp", 65535, "ICMP unreachable"),
    ("error", 65535, "ERROR 0 (not defined) 'block number overflow'"),
    ("icmp", 65536, "ICMP unreachable"),  # it sent block 0, then crashed
    ("error", 65536, "ERROR 0 (not defined) 'block number overflow'"),
])
def test_download_stopped_at_the_wrap(view: str, shape: str, last: int, how: str) -> None:
    events = download(last, shape)
    f = stall(events if view == "live" else captured(events))
    block = last & 0xFFFF
    assert f"stopped at block {block} after {last:,} blocks" in f.summary, f.summary
    if view == "live":
        assert how in f.summary, f.summary
        if shape == "icmp":
            assert any("ICMP from 10.0.0.2:50001: port unreachable" in line for line in f.evidence), f.evidence
    elif shape == "error":
        assert how in f.summary, f.summary  # a capture holds the ERROR; it does not hold the ICMP


def test_download_from_a_sender_that_wraps_to_1_then_stops() -> None:
    f = stall(download(65536, "silence", wrap_to=1))
    assert "stopped at block 1 after 65,536 blocks" in f.summary


def test_windowed_sender_that_cannot_number_the_next_window() -> None:
    """It sends no block of the window that would cross the wrap: the last to move is 65520, not 65535."""
    for shape in ("icmp", "silence"):
        events = download(65520, shape, windowsize=16)
        for f in (stall(events), stall(captured(events))):
            assert ("stopped at block 65520 after 65,520 blocks (511.9 KiB), the end of the last window "
                    "(windowsize 16) before the wrap: the next window had to take the block number past 65535"
                    ) in f.summary, f.summary


@pytest.mark.parametrize("view", ["live", "trace"])
@pytest.mark.parametrize("shape", ["silence", "icmp", "error"])
def test_upload_to_a_receiver_that_does_not_wrap(view: str, shape: str) -> None:
    events = upload(65535, shape)
    f = stall(events if view == "live" else captured(events))
    assert "stopped at block 65535 after 65,535 blocks" in f.summary and "the server does not do it" in f.summary
    if view == "live" and shape == "error":
        assert "ERROR 4 (illegal TFTP operation) 'Illegal TFTP operation'" in f.summary


def test_the_same_failures_away_from_the_wrap_are_not_rollover() -> None:
    ids = {f.id for f in analyze(download(40_000, "icmp"))}
    assert "port-unreachable" in ids and "rollover-stall" not in ids
    ids = {f.id for f in analyze(download(40_000, "error"))}
    assert "server-error" in ids and "rollover-stall" not in ids
    # A real cause at the wrap keeps its own finding: the disk filled exactly there.
    ids = {f.id for f in analyze(upload(65535, "error", error=(3, "Disk full or allocation exceeded")))}
    assert {"server-error", "rollover-stall"} <= ids
