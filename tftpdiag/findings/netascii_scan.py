"""netascii content check, folded block by block: what text never holds (a NUL not after CR, a CR
followed by neither LF nor NUL, bytes above 127), counted on the session's state."""

from __future__ import annotations

from tftpdiag.findings.session_state import SessionState

__all__ = ["scan"]


def scan(s: SessionState, payload: bytes, block: int) -> None:
    """netascii only: count what text never holds (a NUL not after CR, a CR followed by neither LF nor
    NUL, bytes above 127), carrying a CR at the end of a block over to the next one."""
    n = len(payload)
    if not n:
        return
    nul = payload.count(b"\0")
    bare = 0
    if s.cr_pending:
        first = payload[0]
        if first == 0:
            nul -= 1
        elif first != 0x0A:
            bare += 1
    cr = payload.count(b"\r")
    if cr:
        crnul = payload.count(b"\r\0")
        nul -= crnul
        bare += cr - payload.count(b"\r\n") - crnul
        if payload[-1] == 0x0D:
            bare -= 1
            s.cr_pending = True
        else:
            s.cr_pending = False
    else:
        s.cr_pending = False
    if not payload.isascii():
        s.high += n - len(payload.decode("ascii", "ignore"))
    if nul > 0 or bare > 0:
        s.bare_nul += max(nul, 0)
        s.bare_cr += max(bare, 0)
        if s.binary_block is None:
            s.binary_block = block
    s.scanned += n
