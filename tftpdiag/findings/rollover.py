"""Block-number rollover: predicted from the size and the block size, and seen as a stall at 65535."""

from __future__ import annotations

from tftpdiag.findings.model import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    evidence,
    fmt_addr,
    fmt_bytes,
)
from tftpdiag.findings.predicates import MAX_BLOCKS, at_wrap, blocks_done, wrap_block
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.events import Completed, Failed, Reason, Side
from tftpdiag.protocol.options import option_number
from tftpdiag.protocol.packets import error_code_name


def _size(s: SessionState) -> int | None:
    if s.tsize is not None:
        return s.tsize
    value = option_number(s.req.get("tsize"))
    if s.role is not None and not s.role.is_download and value:
        return value  # an upload offers its size even when the server ignores tsize
    return None


def _min_blksize(size: int) -> int:
    return size // MAX_BLOCKS + 1


@rule("rollover-risk")
def rollover_risk(s: SessionState, ctx: Context) -> Finding | None:
    size = _size(s)
    if size is None or s.mode != "octet":
        return None
    blocks = size // s.blksize + 1
    if blocks <= MAX_BLOCKS:
        return None
    need = _min_blksize(size)
    if need > 65464:
        fix = "The file is too large to send without rollover at any block size: both sides must wrap"
    else:
        fix = (f"Use blksize {need} or more (1468 gives {size // 1468 + 1:,} blocks) so it fits without rollover, "
               f"or make sure both sides wrap the block number (tftpd-hpa, dnsmasq, atftpd and U-Boot wrap "
               f"65535 to 0{s.ours_only('; tftpdiag follows 0 or 1')})")
    ev = [f"{s.t(s.neg_time or s.last_time)}: size {size:,} B, blksize {s.blksize}"]
    if isinstance(s.result, Completed) and blocks_done(s) > MAX_BLOCKS:
        return Finding("rollover-risk", INFO,
                       f"{fmt_bytes(size)} at {s.blksize}-byte blocks took {blocks:,} blocks: the block number "
                       f"wrapped past 65535 and both sides handled it", evidence(ev), fix + ".", s.session)
    summary = (f"{fmt_bytes(size)} at {s.blksize}-byte blocks needs {blocks:,} blocks, more than 65,535: the block "
               f"number must wrap around, which some TFTP implementations do not do (the transfer then stops at "
               f"block 65535)")
    return Finding("rollover-risk", WARNING, summary, evidence(ev), fix + ".", s.session)


def _client_stopped(s: SessionState) -> bool:
    """In a capture, whether the client is the side that stopped at the wrap, from what the session shows:
    its own ERROR, or the next packet being its to send (DATA it holds and has not acknowledged, or no DATA
    of its past the server's last ACK). Live the client is tftpdiag, which wraps either way (to 0 or 1):
    there the peer is the one that stopped."""
    if not s.observed:
        return False
    if s.err_rx is not None and s.last_move is not None and s.err_rx[0] >= s.last_move:
        return False  # the server's ERROR ended it
    res = s.result
    if isinstance(res, Failed) and res.reason is Reason.PROTOCOL and res.raised_by is Side.LOCAL:
        return True  # the client's ERROR ended it
    if s.receiver:
        return s.ack_tx != s.pos
    return s.data_tx_block is None or s.data_tx_block == s.pos


def _how(s: SessionState, client_stopped: bool) -> str:
    res = s.result
    if isinstance(res, Failed) and res.reason is Reason.UNREACHABLE:
        return "its port then answered with ICMP unreachable (it crashed or dropped the session)"
    if s.err_rx is not None and s.last_move is not None and s.err_rx[0] >= s.last_move:
        _, code, message = s.err_rx
        return f"it then sent ERROR {code} ({error_code_name(code)}) {quote(message)}"
    if isinstance(res, Failed) and res.reason is Reason.PROTOCOL:
        if client_stopped and res.code is not None:
            return f"it then sent ERROR {res.code} ({error_code_name(res.code)}) {quote(res.message)}"
        return f"{s.us} then ended it: {clean(res.message)}"
    if client_stopped:
        return f"it never acknowledged DATA {s.pos}" if s.receiver else f"it sent no DATA after ACK {s.pos}"
    return "nothing came after it"


@rule("rollover-stall", transient=True)
def rollover_stall(s: SessionState, ctx: Context) -> Finding | None:
    if s.role is None or not at_wrap(s, ctx):
        return None
    res = s.result
    done = blocks_done(s)
    window = wrap_block(s)
    there = "the next window had to take the block number past 65535" if window else \
        "the block number had to wrap past 65535 there"
    client_stopped = _client_stopped(s)
    who = s.us if client_stopped else s.other
    summary = (f"The transfer stopped at block {s.pos} after {done:,} blocks ({fmt_bytes(s.bytes)}){window}: {there}, "
               f"and {who} does not do it (or does it differently); {_how(s, client_stopped)}")
    ev = [f"{s.t(s.last_move or s.last_time)}: {'DATA' if s.receiver else 'ACK'} {s.pos}, the last to move"]
    ev += [f"{s.t(e.time)}: nothing after {e.waited:.2f} s waiting for {e.waiting_for}"
           for e in s.timeouts if s.last_move is None or e.time > s.last_move][:3]
    ev += [f"{s.t(e.time)}: ICMP from {fmt_addr(e.peer or s.locked or s.peer)}: {e.message}" for e in s.sock_errors[:2]]
    if s.err_rx is not None:
        ev.append(f"{s.t(s.err_rx[0])}: ERROR {s.err_rx[1]} {quote(s.err_rx[2])} from {s.other}")
    if client_stopped and isinstance(res, Failed) and res.reason is Reason.PROTOCOL:
        ev.append(f"{s.t(res.time)}: ERROR {res.code} {quote(res.message)} from {s.us}")
    elif isinstance(res, Failed):
        ev.append(f"{s.t(res.time)}: {clean(res.message)}")
    size = _size(s)
    if size is not None and _min_blksize(size) <= 65464:
        fix = f"Use blksize {_min_blksize(size)} or more so the {fmt_bytes(size)} fit in 65535 blocks"
    else:
        fix = "Use a larger blksize (at 1468, 65535 blocks carry 91.7 MiB)"
    if client_stopped:
        fix += "; or update the client (its firmware or TFTP program) to one that wraps the block number."
    else:
        fix += "; or use a peer that wraps the block number (tftpd-hpa, dnsmasq, atftpd; tftpy did not, tftpy#15)."
    return Finding("rollover-stall", ERROR if res is not None else WARNING, summary, evidence(ev), fix, s.session)


RULES = (rollover_risk, rollover_stall)
