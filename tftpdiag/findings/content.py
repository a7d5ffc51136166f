"""What the data itself says: a size that does not match tsize, binary content sent as netascii."""

from __future__ import annotations

from tftpdiag.findings.model import WARNING, Finding, evidence, fmt_addr
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.protocol.events import Completed


@rule("tsize-mismatch", after=("client-ignored-oack",))
def tsize_mismatch(s: SessionState, ctx: Context) -> Finding | None:
    res = s.result
    if not isinstance(res, Completed) or s.mode != "octet" or not s.receiver or s.tsize is None:
        return None
    if ctx.found("client-ignored-oack") is not None:
        return None  # the size is off because the client ran without the OACK: that finding says so
    got = res.stats.bytes
    announced = s.tsize
    if got == announced:
        return None
    if s.client_side:
        summary = (f"{fmt_addr(s.locked or s.peer)} announced tsize {announced:,} bytes but sent {got:,} "
                   f"({got - announced:+,}); in octet mode they should match")
    else:
        summary = (f"Client {fmt_addr(s.peer)} announced {announced:,} bytes (tsize) but sent {got:,} "
                   f"({got - announced:+,})")
    ev = [f"{s.t(s.neg_time or s.last_time)}: tsize {announced:,}", f"{s.t(res.time)}: completed with {got:,} bytes"]
    return Finding("tsize-mismatch", WARNING, summary, evidence(ev),
                   "The file changed while it was sent, or the sender reports another size (some report the netascii "
                   "size, or another file's); compare checksums before trusting the copy.", s.session)


@rule("netascii-binary")
def netascii_binary(s: SessionState, ctx: Context) -> Finding | None:
    if s.mode != "netascii" or not s.scanned:
        return None
    high_share = s.high / s.scanned
    if s.bare_nul == 0 and s.bare_cr < 4 and high_share < 0.3:
        return None
    parts = []
    if s.bare_nul:
        parts.append(f"{s.bare_nul:,} NUL byte{'s' if s.bare_nul != 1 else ''}")
    if s.bare_cr:
        parts.append(f"{s.bare_cr:,} CR byte{'s' if s.bare_cr != 1 else ''} followed by neither LF nor NUL")
    if s.high:
        parts.append(f"{100 * high_share:.0f}% bytes above 127")
    where = f" (first in block {s.binary_block})" if s.binary_block is not None else ""
    summary = (f"netascii transfer of binary content: the data holds {', '.join(parts)}{where}; netascii rewrites "
               f"line ends, so a binary file arrives corrupted")
    ev = [f"{s.scanned:,} bytes of DATA looked at"]
    if s.binary_block is not None:
        ev.append(f"DATA {s.binary_block}: first bytes text never holds")
    if s.client_side and not s.observed:
        who = "Use"
    else:  # the client chose netascii: the fix is on it
        client = s.us if s.observed else "the client"
        who = f"{client[:1].upper()}{client[1:]} asked for netascii: it should use"
    return Finding("netascii-binary", WARNING, summary, evidence(ev),
                   f"{who} octet (binary) mode: tftp-hpa's client defaults to netascii (-m binary, or its `binary` "
                   f"command){s.ours_only('; tftpdiag uses octet unless told --mode netascii')}.", s.session)


RULES = (tsize_mismatch, netascii_binary)
