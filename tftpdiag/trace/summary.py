"""A loaded trace as per-transfer summaries: the JSON object of ``tftpdiag trace --json`` and the plain
text of ``--no-tui``. Sessions are folded by the same SessionTable and summarised by the same
``session_summary`` as live runs, so a transfer reads the same whether it was probed or captured."""

from __future__ import annotations

from typing import Any, TextIO

from tftpdiag.devices import Device, DeviceBook
from tftpdiag.findings import analyze
from tftpdiag.fmt import duration, line
from tftpdiag.protocol.events import Event
from tftpdiag.report import SCHEMA, by_session, device_lines, finding_lines, one_line, options_lines, session_summary
from tftpdiag.sessions import SessionRecord, SessionTable, fmt_addr
from tftpdiag.trace.load import TraceLoad

__all__ = ["trace_records", "trace_json", "print_trace"]


def trace_records(events: list[Event]) -> list[SessionRecord]:
    """One record per transfer, in session order.

    A jsonl trace written by ``demo`` holds each transfer twice, as the client and as the server saw
    it; the server's view of a transfer whose client view is in the trace too is left out.
    """
    table = SessionTable()
    table.apply(events)
    records = [r for r in table if r.role is not None or r.refused is not None]
    clients = {(r.local, r.filename) for r in records if r.role is not None and r.role.is_client}
    return [r for r in records if not (_server_side(r) and (r.peer, r.filename) in clients)]


def _server_side(record: SessionRecord) -> bool:
    return record.refused is not None or (record.role is not None and not record.role.is_client)


def trace_json(loaded: TraceLoad) -> dict[str, Any]:
    findings = by_session(analyze(loaded.events))
    records = trace_records(loaded.events)
    return {
        "schema": SCHEMA,
        "file": str(loaded.path),
        "transfers": [session_summary(r, findings=findings.get(r.session, [])) for r in records],
        "devices": [d.to_dict() for d in _devices(loaded, records)],
        "warning": loaded.warning,
    }


def _devices(loaded: TraceLoad, records: list[SessionRecord]) -> list[Device]:
    """The capture's devices, judged as they stood when it ended."""
    end = max((e.time for e in loaded.events), default=0.0)
    return DeviceBook().add_all(records).judge(end, ended=True)


def print_trace(loaded: TraceLoad, out: TextIO) -> None:
    """The plain summary. Every line is written through :func:`tftpdiag.fmt.line`: what the file holds
    (names, messages, options, the damage described in the warning) cannot drive the terminal."""
    def write(text: str = "") -> None:
        out.write(line(text) + "\n")

    records = trace_records(loaded.events)
    what = "events" if loaded.kind == "jsonl" else "UDP datagrams"
    noun = "transfer" if len(records) == 1 else "transfers"
    write(f"{loaded.path}: {loaded.kind}, {loaded.records:,} {what}, {len(records)} {noun}")
    if loaded.warning:
        write(f"warning: {loaded.warning}")
    findings = analyze(loaded.events)
    for record in records:
        write()
        write(_headline(record))
        for text in _details(record):
            write(f"    {text}")
        for text in finding_lines(f for f in findings if f.session == record.session):
            write(f"    {text}")
    devices = _devices(loaded, records)
    if devices:
        write()
        for device in devices:
            for text in device_lines(device):
                write(text)


def _headline(record: SessionRecord) -> str:
    return f"#{record.session:<3} {one_line(record)}"


def _details(record: SessionRecord) -> list[str]:
    lines = []
    if record.role is not None and record.role.is_client:
        server = f"server {fmt_addr(record.peer)}"
        if record.replied_from is not None and record.replied_from != record.peer:
            server += f", answered from {fmt_addr(record.replied_from)}"
        lines.append(server)
    elif record.role is not None:
        lines.append(f"server {fmt_addr(record.local)} (the trace is the server's own)")
    summary = session_summary(record)
    lines.append(f"{duration(record.duration)}; packets sent {record.packets_sent}, "
                 f"received {record.packets_received}; "
                 f"retransmits {summary['retransmits']}, duplicates {summary['duplicates']}, "
                 f"timeouts {summary['timeouts']}")
    lines.extend(options_lines(record))
    return lines
