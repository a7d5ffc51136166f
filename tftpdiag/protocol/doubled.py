"""Whose copies a capture's copies are: the capture point's, or duplicates that reached the receiver.

A datagram seen again within COPY_WITHIN, asked for by nothing (observer_copies), may be a copy the capture
point made (it sees the link twice: a mirror port, a bridge and its member, a loop) or one the network made
(or a sender that sent twice), which the receiver got twice. One datagram cannot tell; the share can, at
the end of the transfer: the one rule that the observer's figures, the findings and the trace's warning go by.
"""

from __future__ import annotations

__all__ = ["DOUBLED_MIN", "DOUBLED_SHARE", "capture_doubled"]

# A side's copies are the capture point's when at least half of its packets came again: a capture point that
# sees a link twice copies nearly every packet crossing it (all but what it dropped, or what its start or end
# cut off), while a network that duplicates now and then doubles a few in a hundred.
DOUBLED_SHARE = 0.5
DOUBLED_MIN = 3


def capture_doubled(copies: int, packets: int) -> bool:
    """Whether ``copies`` of one side's ``packets`` (what that side sent, not counting the copies) are the
    capture point's own copies (True) or duplicates that reached the receiver (False): the one rule that
    the observer's figures, the findings and the trace's warning go by.

    ``packets`` may also be a figure that counts the copies in when they are not the capture point's (a
    transfer's packets as its stats say them): ``copies`` short of half of what was sent is short of half
    of that and the copies too, so the answer is the same."""
    return copies >= DOUBLED_MIN and copies >= DOUBLED_SHARE * packets
