"""Transfers stopped for their size: a sender that ran past the size it announced (tsize) or ended
short of it, and a download past the limit tftpdiag was given (probe --max-size)."""

from __future__ import annotations

import re

from tftpdiag.findings.model import (
    ERROR,
    Finding,
    escape_name,
    evidence,
    fmt_addr,
    fmt_bytes,
)
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean
from tftpdiag.protocol.events import Failed, Side
from tftpdiag.protocol.packets import error_code_name
from tftpdiag.protocol.said import TSIZE_SHORT

# How the client machine words the stop (tftpdiag.protocol.client, .session): the limit is in no other
# event, and a capture carries only this message in our ERROR.
_LIMIT = re.compile(r"exceeds the limit of (\d+) bytes")


def _stopped_by_us(s: SessionState) -> Failed | None:
    res = s.result
    if isinstance(res, Failed) and res.raised_by is Side.LOCAL and s.receiver:
        return res
    return None


def _told(s: SessionState, res: Failed) -> str:
    return f"; {s.other} was sent ERROR {res.code} ({error_code_name(res.code)})" if res.code is not None else ""


@rule("tsize-overrun")
def tsize_overrun(s: SessionState, ctx: Context) -> Finding | None:
    res = _stopped_by_us(s)
    if res is None or s.tsize is None or s.mode != "octet":
        return None  # a netascii size is not exact (atftpd even announces 0): the rule is not applied
    got = res.stats.bytes
    if got <= s.tsize:
        return None
    who = fmt_addr(s.locked or s.peer) if s.client_side else f"Client {fmt_addr(s.peer)}"
    what = "download" if s.client_side else "upload"
    summary = (f"{who} announced tsize {s.tsize:,} bytes, then sent more: the {what} was stopped at "
               f"{got:,} bytes{_told(s, res)}")
    ev = [f"{s.t(s.neg_time or s.t0)}: tsize {s.tsize:,} announced",
          f"{s.t(res.time)}: {clean(res.message)}"]
    # Who can leave the tsize out, and which limit still bounds the transfer then, depends on the side:
    # our probe asks for it; an uploading client announces it to our server on its own.
    if s.observed:  # the client is a device, not tftpdiag: what it keeps and which flags it has are its own
        without = "the client can ask without it (leave tsize out of its request)"
    elif s.client_side:
        without = "ask without it (probe --no-tsize): --max-size still bounds the download"
    else:
        without = ("the client can upload without it (leave out its tsize option); serve --max-upload SIZE "
                   "bounds uploads then")
    suggestion = (s.ours_only("Nothing was kept. ") + "The file changed while it was sent, or the sender is broken "
                  f"or hostile (a sender that never stops can fill a disk). If only its tsize is wrong, {without}.")
    return Finding("tsize-overrun", ERROR, summary, evidence(ev), suggestion, s.session)


@rule("tsize-short")
def tsize_short(s: SessionState, ctx: Context) -> Finding | None:
    """A transfer that ended short of the size its sender announced (tsize): tftpdiag failed it, a
    download as an upload, and kept nothing."""
    res = _stopped_by_us(s)
    if res is None or s.tsize is None or s.mode != "octet":
        return None
    got = res.stats.bytes
    if got >= s.tsize or TSIZE_SHORT not in res.message:
        return None  # stopped for another reason on the way (a disk, a limit): said elsewhere
    who = fmt_addr(s.locked or s.peer) if s.client_side else f"Client {fmt_addr(s.peer)}"
    what = "download" if s.client_side else "upload"
    summary = (f"{who} announced tsize {s.tsize:,} bytes, then ended the {what} at {got:,} bytes: it was "
               f"not kept{_told(s, res)}")
    ev = [f"{s.t(s.neg_time or s.t0)}: tsize {s.tsize:,} announced", f"{s.t(res.time)}: {clean(res.message)}"]
    sender = "server's" if s.client_side else "client's"
    suggestion = (f"Nothing was kept; a file already there stays as it was. The {sender} file changed while it "
                  f"was sent, or the {sender[:-2]} is broken (its last block came too early): "
                  f"{'download' if s.client_side else 'upload'} it again.")
    return Finding("tsize-short", ERROR, summary, evidence(ev), suggestion, s.session)


@rule("size-limit")
def size_limit(s: SessionState, ctx: Context) -> Finding | None:
    res = _stopped_by_us(s)
    if res is None or not s.client_side or res.code != 3:
        return None
    match = _LIMIT.search(res.message)
    if match is None:
        return None
    limit = int(match.group(1))
    shown = fmt_bytes(limit) + (f" ({limit:,} bytes)" if limit >= 1024 else "")
    what = f"The download of {escape_name(s.filename)} from {fmt_addr(s.locked or s.peer)}"
    if res.stats.bytes > limit:
        summary = f"{what} went over the size limit of {shown} and was stopped after {res.stats.bytes:,} bytes"
    elif s.tsize is not None:
        summary = (f"{what} was refused before any data: the server announced {s.tsize:,} bytes (tsize), more "
                   f"than the size limit of {shown}")
    else:
        summary = f"{what} was refused before any data: it would go over the size limit of {shown}"
    summary += _told(s, res)
    ev = [f"{s.t(res.time)}: {clean(res.message)}"]
    suggestion = ("Nothing was kept. If the file is meant to be this large, raise the limit with --max-size "
                  "(0 for none); otherwise the server sends another file than expected, or never stops.")
    return Finding("size-limit", ERROR, summary, evidence(ev), suggestion, s.session)


RULES = (tsize_overrun, tsize_short, size_limit)
