"""A session as a JSON-ready dict (the schema the README documents) and as plain-text lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tftpdiag.findings import Finding, severity_rank
from tftpdiag.fmt import clean, file_name, own_end, quote
from tftpdiag.protocol.events import Completed, Failed, Reason, RequestRefused
from tftpdiag.protocol.packets import KNOWN_MODES, error_code_name
from tftpdiag.sessions import SessionRecord, fmt_addr, fmt_bytes, fmt_rate

if TYPE_CHECKING:
    from tftpdiag.devices import Device

__all__ = [
    "SCHEMA", "rates", "finding_lines", "by_session", "session_summary", "error_dict", "options_dict",
    "outcome_text", "options_lines", "unseen_options_text", "explain_failure", "file_size_text", "mode_text",
]


# The version of every JSON object tftpdiag prints (probe, put, demo, serve, sweep, trace): a reader
# checks it before relying on a field. 1: the first versioned schema (bytes_per_s, sha256 null for an
# incomplete transfer, impair); objects without it came from tftpdiag 0.1.
SCHEMA = 1


def rates(bytes_per_s: float) -> dict[str, float]:
    """The throughput fields: ``bytes_per_s``, and ``rate_bps``, the same number under its old name, kept
    for schema 1 only (readers take "bps" as bits per second; it goes in the next schema)."""
    value = round(bytes_per_s, 1)
    return {"bytes_per_s": value, "rate_bps": value}


def _addr(addr: tuple[str, int] | None) -> dict[str, Any] | None:
    return None if addr is None else {"address": addr[0], "port": addr[1]}


def error_dict(record: SessionRecord) -> dict[str, Any] | None:
    # sent_by: the side that sent the ERROR by its role, in a capture as live; raised_by stays as schema 1
    # has it (local/peer), though in a capture "local" is the client's side, not tftpdiag.
    if record.refused is not None:
        r = record.refused
        # answered: whether the ERROR went back (a stray ACK or ERROR at the listening port is only logged)
        return {"code": r.code, "message": r.message, "raised_by": "server", "sent_by": record.error_sender,
                "reason": r.why, "answered": r.answered}
    result = record.result
    if not isinstance(result, Failed):
        return None
    return {"code": result.code, "message": result.message, "raised_by": result.raised_by.value,
            "sent_by": record.error_sender, "reason": result.reason.value}


def options_dict(record: SessionRecord) -> dict[str, Any]:
    negotiated = record.negotiated
    granted = None
    if negotiated is not None and negotiated.oack is not None:
        granted = dict(negotiated.oack)
    return {
        "requested": dict(record.requested),
        "granted": granted,
        "outcomes": [
            {"name": o.name, "asked": o.asked, "granted": o.granted, "verdict": o.verdict.value, "meaning": o.meaning}
            for o in (negotiated.outcomes if negotiated else ())
        ],
        "effective": None if negotiated is None else {
            "blksize": negotiated.blksize, "windowsize": negotiated.windowsize,
            "timeout": negotiated.timeout, "tsize": negotiated.tsize,
        },
    }


def _retried(record: SessionRecord) -> dict[str, Any] | None:
    """The refused first request of a transfer that was asked again without the refused options."""
    r = record.retried
    if r is None:
        return None
    return {"code": r.code, "message": r.message, "asked": dict(r.asked), "requested": dict(r.requested)}


def session_summary(record: SessionRecord, **extra: Any) -> dict[str, Any]:
    result = record.result
    stats = result.stats if isinstance(result, (Completed, Failed)) else None
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "ok": isinstance(result, Completed),
        "session": record.session,
        "role": record.role.value if record.role else None,
        "direction": record.direction,
        "file": record.filename,
        "mode": record.mode or None,
        "local": _addr(record.local),
        "peer": _addr(record.peer),
        "replied_from": _addr(record.replied_from),
        "bytes": record.bytes,
        "total": record.total,
        "duration_s": round(record.duration, 6),
        **rates(record.rate),
        "options": options_dict(record),
        "packets": {"sent": record.packets_sent, "received": record.packets_received},
        "retransmits": stats.retransmits if stats else record.retransmits,
        "timeouts": stats.timeouts if stats else record.timeouts,
        "duplicates": stats.duplicates if stats else record.duplicates,
        "error": error_dict(record),
        "retried": _retried(record),
        "findings": [],
    }
    summary.update(extra)
    return summary


_ICON = {"error": "✘", "warning": "⚠", "info": "ℹ"}


def finding_lines(findings: Iterable[Finding], *, least: str = "info") -> list[str]:
    """Findings as plain lines: the summary, then what to try, for those at ``least`` severity."""
    lines = []
    for finding in findings:
        if severity_rank(finding.severity) < severity_rank(least):
            continue
        lines.append(f"{_ICON.get(finding.severity, '-')} {finding.summary}")
        if finding.suggestion:
            lines.append(f"    try: {finding.suggestion}")
    return lines


def by_session(findings: Iterable[Finding]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for finding in findings:
        grouped.setdefault(finding.session, []).append(finding.to_dict())
    return grouped


def explain_failure(record: SessionRecord) -> str:
    """The failure in plain words, naming who said what."""
    if record.refused is not None:
        r = record.refused
        text = f"refused: ERROR {r.code} ({error_code_name(r.code)}): {clean(r.message)}"
        if r.suggestion:
            text += f"; did the client mean {quote(r.suggestion)}?"
        return text
    result = record.result
    if not isinstance(result, Failed):
        return ""
    if result.reason is Reason.INTERNAL:  # the peer was told other words than these (engine/broken.py)
        peer = "the server" if record.role is None or record.role.is_client else "the client"
        told = f" ({peer} was sent ERROR {result.code})" if result.code is not None else ""
        return clean(result.message) + told
    if result.code is not None:
        said = f"ERROR {result.code} ({error_code_name(result.code)}): {clean(result.message)}"
        # Which side sent it is SessionRecord.error_sender's rule alone; a record that does not know
        # (its start cut off a trace) names no side rather than guess.
        sender = record.error_sender
        return said if sender is None else f"{_side_words(record, sender)} sent {said}"
    return clean(result.message)


def _side_words(record: SessionRecord, side: str) -> str:
    """A side of the transfer by its role ("client" or "server") in words: "tftpdiag" where it is
    tftpdiag's own side (live); in a capture neither is, and the client is named by its address."""
    own = "client" if record.observed or (record.role is not None and record.role.is_client) else "server"
    return own_end(record.observed, record.client) if side == own else f"the {side}"


def file_size_text(file_bytes: int | None, wire_bytes: int) -> str:
    """The file's size (as saved or read: what its SHA-256 covers) where it is not the bytes on the wire,
    as in netascii, whose line ends travel as CR LF; empty where they agree (a size alone is then true)."""
    if file_bytes is None or file_bytes == wire_bytes:
        return ""
    return f"file {fmt_bytes(file_bytes)} ({file_bytes:,} bytes; {wire_bytes:,} on the wire)"


def outcome_text(record: SessionRecord) -> str:
    if record.refused is not None or isinstance(record.result, Failed):
        return "failed: " + explain_failure(record)
    if isinstance(record.result, Completed):
        return "ok"
    return record.state


def unseen_options_text(record: SessionRecord) -> str:
    """The options of a transfer joined mid-way (SessionRecord.joined): what was asked is not known, only
    the block size its DATA show (protocol/observer_state.py, _blocks_show)."""
    negotiated = record.negotiated
    size = "" if negotiated is None else f": {negotiated.blksize}-byte blocks, as its DATA show"
    return f"request and options not captured{size}"


def options_lines(record: SessionRecord) -> list[str]:
    negotiated = record.negotiated
    if negotiated is None:
        return []
    lines = []
    for o in negotiated.outcomes:
        granted = clean(o.granted) if o.granted is not None else "-"
        asked = clean(o.asked) if o.asked is not None else "-"
        lines.append(f"{clean(o.name):<10} asked {asked:<6} granted {granted:<8} {o.verdict.value:<8} "
                     f"{clean(o.meaning)}")
    if record.joined:
        lines.append(unseen_options_text(record))
    elif not negotiated.outcomes:
        lines.append("no options asked: RFC 1350 defaults (512-byte blocks, lock-step)")
    return lines


def stray_kind(received: str) -> str:
    """What reached the listening port that was no request (RequestRefused.received), named where a list
    names a request by its kind and file: "stray ACK 1", "stray ERROR", "6 undecodable bytes"."""
    return received if "undecodable" in received else f"stray {received}"


def stray_text(refused: RequestRefused) -> str:
    """What reached the listening port that was no request at all, and what came of it: undecodable
    bytes are answered with the ERROR that says why, anything else only logged."""
    answer = f"answered with ERROR {refused.code} {clean(refused.message)}" if refused.answered else "ignored"
    return f"sent {refused.received} to the listening port, which takes only requests ({answer})"


def mode_text(mode: str, shown: Callable[[str], str] = quote) -> str:
    """A transfer's mode as every view says it after the file name: nothing for octet, which nearly every
    transfer uses, nor for none (a transfer a capture joined mid-way: the request that holds the mode was
    not seen); one of RFC 1350's by its word (netascii converts line ends: a common cause of a changed
    configuration file); any other, as the client sent it, ``shown`` as every string from the network
    is: by default fmt.quote (the decoder lower-cased only the modes it knows); a view whose strings are
    escaped already passes its own, as to fmt.file_name."""
    if mode in ("", "octet"):
        return ""
    return mode if mode in KNOWN_MODES else shown(mode)


def one_line(record: SessionRecord, *, server: bool = False) -> str:
    """A finished server session in one line (names and messages from the peer shown escaped; the mode
    after the name where it is not octet, see :func:`mode_text`); with ``server``, the server it went to
    as well (watch sees many)."""
    if record.refused is not None and record.refused.received:
        return f"{fmt_addr(record.client):<22} {stray_text(record.refused)}"
    kind = "RRQ" if record.direction == "download" else "WRQ"
    if server:
        kind += f" to {fmt_addr(record.peer)}"
    mode = mode_text(record.mode)
    name = file_name(record.filename) + (f" {mode}" if mode else "")
    return (f"{fmt_addr(record.client):<22} {kind} {name:<24} {record.direction:<8} "
            f"{fmt_bytes(record.bytes):>12} {fmt_rate(record.rate):>14}  {outcome_text(record)}")


def device_lines(device: Device) -> list[str]:
    """A device in plain lines: verdict and files in order, then its findings."""
    files = []
    for a in device.attempts:
        mark = {"done": "✔", "in-progress": "…"}.get(a.outcome, "·" if a.normal else "✘")
        shown = file_name(a.name)
        files.append(f"{shown} {mark}" if a.outcome in ("done", "in-progress") or a.normal
                     else f"{shown} {mark} {a.outcome}")
    out = [f"device {device.address:<22} {device.verdict:<11} " + " → ".join(files)]
    out.extend(f"    {text}" for text in finding_lines(device.findings, least="warning"))
    return out
