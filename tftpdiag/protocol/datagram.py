"""A UDP datagram as a capture saw it: when, between which addresses, the payload as captured and its
length on the wire. The trace readers make these and the observer reads them; it lives in the sans-IO
core so the observer needs nothing from ``trace``."""

from __future__ import annotations

from typing import TypeAlias

from tftpdiag.records import record

__all__ = ["Address", "Datagram"]

Address: TypeAlias = tuple[str, int]
"""(IP address string, port); IPv6 addresses in the compressed form ``inet_ntop`` gives, e.g. "::1"."""


@record
class Datagram:
    """One captured UDP datagram, as the observer replays it."""

    time: float  # epoch seconds
    src: Address
    dst: Address
    payload: bytes  # UDP payload as captured: shorter than orig_len if the capture cut it
    orig_len: int  # UDP payload length on the wire
