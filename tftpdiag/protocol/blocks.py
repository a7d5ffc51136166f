"""Block numbers: the 16-bit number on the wire and the absolute block it stands for.

The one home of the rollover rule. A transfer of more than 65535 blocks wraps the wire number: most
senders go 65535 -> 0 (tftpd-hpa, dnsmasq, atftpd, U-Boot), a few 65535 -> 1 (block 0 is then never
DATA again). Absolute block n (1-based, as counted from the first DATA) maps to the wire and back by
these functions only; the machines, the trace observer, the findings and the views all call them.
"""

from __future__ import annotations

from collections.abc import Sequence

WIRE_MAX = 0xFFFF  # the largest block number a packet can carry
WRAPS = (0, 1)  # what follows 65535: 0 (the usual) or 1


def wire(n: int, rollover: int = 0) -> int:
    """The wire number of absolute block ``n`` (n >= 0) for a sender that wraps to ``rollover``."""
    if rollover == 0 or n <= WIRE_MAX:
        return n & WIRE_MAX
    return (n - 1) % WIRE_MAX + 1


def wires(first: int, count: int, rollover: int = 0) -> Sequence[int]:
    """The wire numbers of ``count`` consecutive absolute blocks from ``first``, as :func:`wire` gives
    each: a sender numbers a read's worth of blocks at once. Before the first wrap a block's wire
    number is its own, so most transfers never call :func:`wire` per block."""
    end = first + count
    if end - 1 <= WIRE_MAX:
        return range(first, end)
    return [wire(n, rollover) for n in range(first, end)]


def absolute(wire_block: int, ref: int, rollover: int = 0) -> int:
    """The absolute block nearest to ``ref`` (a block already seen) whose wire number is ``wire_block``.

    Nearest means within half the number space either side, as a signed 16-bit distance: a retransmit
    of a block just behind ``ref`` and a fresh block just ahead both map where they belong across a wrap.
    With rollover 1 the wire numbers past the first wrap cycle through 1..65535 (65535 values), and wire
    0 can only be the ACK of the request (block 0).
    """
    if rollover == 0:
        return ref + ((wire_block - ref + 0x8000) & WIRE_MAX) - 0x8000
    if wire_block == 0:
        return 0
    delta = (wire_block - wire(ref, 1)) % WIRE_MAX
    return ref + (delta - WIRE_MAX if delta >= 0x7FFF else delta)


def at_or_after(wire_block: int, ref: int, rollover: int = 0) -> int | None:
    """The first absolute block at or after ``ref`` whose wire number is ``wire_block``, or None when
    there is none (wire 0 past block 0, for a sender that wraps to 1).

    A sender maps its peer's ACKs with this: an ACK can only acknowledge a block it was sent, so the
    distance counts forward from the last acknowledged block, up to a whole number space (a window may
    be as large as 65535 blocks, beyond the reach of the signed distance of :func:`absolute`)."""
    if rollover == 0:
        return ref + ((wire_block - ref) & WIRE_MAX)
    if ref == 0:
        return wire_block
    if wire_block == 0:
        return None
    return ref + (wire_block - wire(ref, 1)) % WIRE_MAX


def shows_wrap_to_one(wire_block: int, expected: int, windowsize: int) -> bool:
    """Whether DATA ``wire_block``, arriving when absolute block ``expected`` is due, shows that the
    sender wrapped 65535 -> 1 rather than 65535 -> 0, for a receiver that assumed 0.

    Only at the wrap, and only block number ``windowsize`` proves it: a sender wrapping to 0 is at most
    windowsize - 1 blocks ahead of the receiver, so in a window a lost block 0 followed by block 1 is
    a gap, not a wrap to 1 (in lock-step, block 1 is the proof)."""
    return expected > WIRE_MAX and expected & WIRE_MAX == 0 and wire_block == min(windowsize, WIRE_MAX)


def ahead(wire_block: int, base: int) -> int:
    """How far wire number ``wire_block`` is ahead of wire number ``base`` (0..65535), wrapping to 0."""
    return (wire_block - base) & WIRE_MAX


def next_wire(wire_block: int) -> int:
    """The wire number after ``wire_block`` for a sender that wraps to 0."""
    return (wire_block + 1) & WIRE_MAX


def rollovers(n: int, rollover: int = 0) -> int:
    """How many times the wire number has wrapped by absolute block ``n`` (for showing "N↻k")."""
    if n <= WIRE_MAX:
        return 0
    return (n - rollover) // (WIRE_MAX + 1 - rollover)


def rollover_of(first_past_max: int) -> int:
    """A sender's rollover, told by the wire number it gave the first block past 65535 (absolute 65536):
    1 when it numbered that block 1, else 0 (the usual, and what a bogus number is taken for)."""
    return 1 if first_past_max == 1 else 0
