"""latency-bound: the cap a lock-step transfer's round trip puts on its rate, beside the rate measured.
Ground truth from a synthetic capture whose round trips are set block by block."""

from __future__ import annotations

import re

from tests.trace.test_trace_rebuild import dgram
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.packets import Ack, Data, Request, encode
from tftpdiag.trace.rebuild import rebuild

C: Address = ("10.0.0.1", 40000)
S: Address = ("10.0.0.2", 69)
T: Address = ("10.0.0.2", 50000)
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2}


def _rate(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit.removesuffix("/s")]


def test_the_cap_is_never_below_the_rate_measured() -> None:
    """A download whose round trip grows from 4 to 6 ms for its last blocks: the smoothed round trip
    leans to those, and a cap taken from it read below the rate measured over the whole transfer."""
    rtts = [0.004] * 40 + [0.006] * 8
    wire = [dgram(0.0, C, S, encode(Request(1, "f.bin", "octet", ())))]
    t = 0.004
    for k in range(1, len(rtts) + 2):
        last = k > len(rtts)
        wire.append(dgram(t, T, C, encode(Data(k, bytes(7 if last else 512)))))
        wire.append(dgram(t + 0.0001, C, T, encode(Ack(k))))  # the client's ACK, 0.1 ms after the DATA
        t += 0.0001 + (0.0 if last else rtts[k - 1])
    (found,) = [f for f in analyze(rebuild(wire)) if f.id == "latency-bound"]
    match = re.search(r"caps the rate at ([\d.]+ \S+/s); measured ([\d.]+ \S+/s)", found.summary)
    assert match, found.summary
    cap, measured = _rate(match.group(1)), _rate(match.group(2))
    assert measured <= cap
    assert abs(cap - 512 / 0.004) < 100 and "the fastest 4.0 ms" in found.summary  # a block a fastest trip


def test_a_capture_joined_mid_transfer_judges_the_block_size_its_data_show() -> None:
    """A lock-step download of 1468-byte blocks whose capture began after its request and OACK: the cap
    is one 1468-byte block per round trip, as the DATA show, not the RFC 1350 default of 512 bytes."""
    wire = []
    t = 0.0
    for k in range(100, 160):
        last = k == 159
        wire.append(dgram(t, T, C, encode(Data(k, bytes(100 if last else 1468)))))
        wire.append(dgram(t + 0.0001, C, T, encode(Ack(k))))
        t += 0.0201
    (found,) = [f for f in analyze(rebuild(wire)) if f.id == "latency-bound"]
    match = re.search(r"one (\d+)-byte block per round trip caps the rate at ([\d.]+ \S+/s); measured ([\d.]+ \S+/s)",
                      found.summary)
    assert match, found.summary
    assert match.group(1) == "1468"
    cap, measured = _rate(match.group(2)), _rate(match.group(3))
    # The round trip is the client's ACK to the next DATA (20 ms); a block every 20.1 ms is what moved.
    assert abs(cap - 1468 / 0.020) < 100 and abs(measured - 1468 / 0.0201) < 100
    assert "blksize 1468 alone" not in (found.suggestion or "")
    assert "16 x 1468 B" in (found.suggestion or "")
