"""Judgments more than one rule makes about a session, in one place: has it timed out or is it stuck,
did a large block never get through, did it stop where the block number wraps, how did it end.

Each is a function of the session's state and, where time matters, the rule's context (its ``now`` and
``stall_after``); none looks at findings, so any rule may use any of them whatever order rules run in.
"""

from __future__ import annotations

import errno
from typing import Literal

from tftpdiag.findings.rules import Context
from tftpdiag.findings.session_state import SessionState
from tftpdiag.protocol.events import Failed, Reason, Side

__all__ = [
    "LARGE",
    "MAX_BLOCKS",
    "UNREACHABLE_HOST",
    "Stuck",
    "at_wrap",
    "blocks_done",
    "large_block_case",
    "peer_error",
    "stopped_cause_elsewhere",
    "timed_out",
    "timed_out_or_stuck",
    "went_quiet",
    "wrap_block",
]

# A block this large no longer fits a 1280-byte path (IPv6's minimum MTU) with its headers; below it a
# negotiated transfer that never moves has other causes.
LARGE = 1232
MAX_BLOCKS = 65535  # block numbers a transfer has before the number must wrap
UNREACHABLE_HOST = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)

# 'failed': the session ended on a timeout; 'live': it is still waiting after timeouts.
Stuck = Literal["failed", "live"]


def timed_out(s: SessionState) -> bool:
    """The session ended because the peer went silent (our retries ran out)."""
    res = s.result
    return isinstance(res, Failed) and res.reason is Reason.TIMEOUT


def peer_error(s: SessionState) -> Failed | None:
    """The end, when it was an ERROR from the peer."""
    res = s.result
    if isinstance(res, Failed) and res.reason is Reason.PEER_ERROR and res.raised_by is Side.PEER:
        return res
    return None


def blocks_done(s: SessionState) -> int:
    """Blocks moved: what the fold counted, or the transfer's own figure if it is larger."""
    stats = s.stats
    return max(s.moved, stats.blocks if stats is not None else 0)


def timed_out_or_stuck(s: SessionState, ctx: Context) -> Stuck | None:
    """'failed' when the session ended on a timeout; 'live' when it is still waiting after timeouts and
    has been quiet for the context's stall_after; else None."""
    res = s.result
    if isinstance(res, Failed):
        # A timeout that no TimedOut since the last progress led to is a capture that ended mid-transfer
        # (a rebuilt trace), not a peer that went quiet.
        waited = s.last_timeout is not None and s.last_timeout.time >= (s.last_move if s.last_move is not None
                                                                        else s.t0)
        return "failed" if res.reason is Reason.TIMEOUT and waited else None
    if res is None and s.last_timeout is not None and s.last_timeout.attempt >= 2 and \
            (s.last_move is None or s.last_timeout.time > s.last_move) and \
            ctx.now - (s.last_move if s.last_move is not None else s.t0) >= ctx.stall_after:
        return "live"
    return None


def went_quiet(s: SessionState, ctx: Context) -> Stuck | None:
    """A capture's client that stopped answering, as timed_out_or_stuck tells it of a live server's peer:
    the server sent again twice or more and the client answered none of it (one resend may answer the
    client's last packet; a second, with nothing from the client between, is the server's timer).
    'failed' when the transfer then ended on a timeout (the server gave up, or the capture ended); 'live'
    when nothing moved for the context's stall_after."""
    if not s.observed or s.peer_resends < 2:
        return None
    res = s.result
    if isinstance(res, Failed):
        return "failed" if res.reason is Reason.TIMEOUT else None
    if res is None and ctx.now - (s.last_move if s.last_move is not None else s.t0) >= ctx.stall_after:
        return "live"
    return None


def large_block_case(s: SessionState, ctx: Context) -> Stuck | None:
    """'failed' or 'live' when a successful negotiation of a large block was followed by no movement."""
    n = s.negotiated
    if s.blksize <= LARGE or n is None or n.oack is None or s.role is None:
        return None
    state = timed_out_or_stuck(s, ctx)
    if state is None:
        return None
    if s.receiver:
        if s.client_side and s.ack0_t is not None and s.data_rx == 0 and s.dup_data == 0:
            return state
        return None
    if (s.ack0_t is not None or s.client_side) and s.acks_rx == 0 and (s.first_data_len or 0) > LARGE:
        return state
    return None


def wrap_block(s: SessionState) -> str | None:
    """Where the last block to move stands against the wrap, in words, if it explains a stop there: 65535
    itself, the last window that did not cross it (a sender that cannot number the next one sends none of
    it), or the first block after it (0, or 1 from a sender that wraps 65535 -> 1)."""
    pos, done = s.pos, blocks_done(s)
    ws = max(s.windowsize, 1)
    if pos is None or done < MAX_BLOCKS - ws + 1:
        return None
    if pos == 65535 or pos == 0 or (pos == 1 and done > MAX_BLOCKS and (done - 1) % MAX_BLOCKS == 0):
        return ""
    # A window that ends here and whose successor would cross the wrap; windows beyond 1024 blocks make
    # "near the wrap" too wide to mean anything.
    if 65535 - pos < ws <= 1024 and (not s.receiver or s.ack_tx == pos):
        return f", the end of the last window (windowsize {ws}) before the wrap"
    return None


def at_wrap(s: SessionState, ctx: Context) -> bool:
    """Stuck at the block where the number wraps, however it shows: silence, an ICMP error (the peer's
    port closed: it crashed or dropped the session) or an ERROR."""
    if wrap_block(s) is None:
        return False
    res = s.result
    if isinstance(res, Failed):
        return res.reason in (Reason.TIMEOUT, Reason.PEER_ERROR, Reason.PROTOCOL, Reason.UNREACHABLE)
    return timed_out_or_stuck(s, ctx) == "live"


def stopped_cause_elsewhere(s: SessionState, ctx: Context) -> bool:
    """A stop that a more specific cause explains (a large block lost on the path, the block-number wrap),
    so the findings about a peer that went quiet leave it to that one."""
    return large_block_case(s, ctx) is not None or at_wrap(s, ctx)
