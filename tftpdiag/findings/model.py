"""The Finding type and the small formatters every family of causes uses for its wording."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import field
from typing import Any

from tftpdiag import fmt
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    OAck,
    Packet,
    Request,
    error_code_name,
)
from tftpdiag.records import record
from tftpdiag.sessions import fmt_addr, fmt_bytes, fmt_rate

__all__ = [
    "ERROR",
    "INFO",
    "MAX_EVIDENCE",
    "SEVERITIES",
    "WARNING",
    "Finding",
    "describe",
    "escape_name",
    "fmt_addr",
    "fmt_bytes",
    "fmt_options",
    "fmt_rate",
    "fmt_t",
    "severity_rank",
]

INFO, WARNING, ERROR = "info", "warning", "error"
SEVERITIES = (INFO, WARNING, ERROR)
_RANK = {INFO: 0, WARNING: 1, ERROR: 2}
MAX_EVIDENCE = 8


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for error."""
    return _RANK[severity]


@record
class Finding:
    """A diagnosis of one session, in plain words, with what it rests on and what to try.

    ``id`` is stable (scripts match on it); ``summary`` is one line with the concrete figures;
    ``evidence`` cites packets and events by time since the session began; ``session`` is the id of the
    session on the event bus.
    """

    id: str
    severity: str
    summary: str
    evidence: tuple[str, ...] = field(default=())
    suggestion: str = ""
    session: int = 0

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        # A finding's words quote what peers sent (names, messages, options): made safe here, once, for
        # every view that shows them (plain lines, JSON, the TUI).
        object.__setattr__(self, "summary", fmt.line(self.summary))
        object.__setattr__(self, "evidence", tuple(fmt.line(item) for item in self.evidence))
        object.__setattr__(self, "suggestion", fmt.line(self.suggestion))

    @property
    def rank(self) -> int:
        return _RANK[self.severity]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{id, severity, summary, evidence, suggestion}``."""
        return {
            "id": self.id,
            "severity": self.severity,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "suggestion": self.suggestion,
        }


def evidence(items: Iterable[str], more: int = 0) -> tuple[str, ...]:
    """At most MAX_EVIDENCE lines; ``more`` extra items not listed are counted in a last line."""
    out = list(items)
    if len(out) > MAX_EVIDENCE:
        more += len(out) - MAX_EVIDENCE + 1
        out = out[: MAX_EVIDENCE - 1]
    if more > 0:
        out.append(f"... and {more} more")
    return tuple(out)


# A file name as findings quote it: the one escaper in tftpdiag.fmt, under the name findings know.
escape_name = quote


def fmt_t(t: float) -> str:
    """A time since the session began, as evidence cites it."""
    return f"t+{t:.3f}s"


def fmt_options(options: Iterable[tuple[str, str]] | None) -> str:
    return fmt.options(options)


def describe(packet: Packet | None) -> str:
    """A packet in a few words, as evidence cites it."""
    if packet is None:
        return "undecodable datagram"
    if isinstance(packet, Data):
        return f"DATA {packet.block} ({len(packet.payload)} B)"
    if isinstance(packet, Ack):
        return f"ACK {packet.block}"
    if isinstance(packet, OAck):
        return f"OACK {fmt_options(packet.options)}"
    if isinstance(packet, Error):
        text = f"ERROR {packet.code} ({error_code_name(packet.code)})"
        return text + (f" {quote(packet.message)}" if packet.message else "")
    if isinstance(packet, Request):
        opts = f" {fmt_options(packet.options)}" if packet.options else ""
        return f"{packet.opcode.name} {escape_name(packet.filename)} {clean(packet.mode)}{opts}"
    return type(packet).__name__  # pragma: no cover
