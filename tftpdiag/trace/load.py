"""Open any trace tftpdiag reads and turn it into events: its own jsonl record (events as they were
published), or a pcap/pcapng capture from tftpdiag, tcpdump or Wireshark (datagrams, rebuilt into
transfers by :mod:`tftpdiag.trace.rebuild`).

The kind is told by the file's first bytes, not its name, since captures arrive named anything.
A damaged or truncated file still gives what could be read (a capture: what came before the damage;
a jsonl record: every line but the damaged ones), with a message saying so; only a file with nothing
readable raises :class:`TraceError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from tftpdiag.protocol.events import Event
from tftpdiag.protocol.observer_copies import COPY_WITHIN
from tftpdiag.records import record
from tftpdiag.trace.jsonl import MAX_LINE, parse_line
from tftpdiag.trace.pcap import CaptureError, read_datagrams
from tftpdiag.trace.pcap.fragments import Fragments
from tftpdiag.trace.rebuild import Rebuilder

__all__ = ["TraceLoad", "TraceError", "load_trace"]

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class TraceError(Exception):
    """The file cannot be read as a trace at all (missing, empty, not a trace): one line for the user."""


@record
class TraceLoad:
    """A trace file read back: its events and what was wrong with it."""

    path: Path
    kind: str  # "jsonl", "pcap" or "pcapng"
    events: list[Event]
    records: int  # events read (jsonl) or UDP datagrams read (captures)
    transfers: int  # sessions in a jsonl record, transfers rebuilt from a capture
    warning: str | None  # damage, and what the rebuild had to guess; None when all is well


def load_trace(path: str | os.PathLike[str]) -> TraceLoad:
    """Read a trace; raises TraceError only when nothing in it can be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise TraceError(f"cannot open {path}: {exc.strerror or exc}") from None
    if not head:
        raise TraceError(f"{path} is empty")
    if head.lstrip()[:1] == b"{":
        return _load_jsonl(path)
    return _load_capture(path, "pcapng" if head[:4] == _PCAPNG_MAGIC else "pcap")


def _load_capture(path: Path, kind: str) -> TraceLoad:
    rebuilder = Rebuilder()
    fragments = Fragments()
    notes: list[str] = []
    try:
        rebuilder.feed(read_datagrams(path, fragments))
    except CaptureError as exc:
        if exc.packets == 0 and rebuilder.datagrams == 0:
            if str(exc).startswith("not a pcap"):
                raise TraceError(f"{path}: {exc}, nor a tftpdiag jsonl trace") from None
            raise TraceError(f"{path}: {exc}") from None
        notes.append(f"{exc}: showing what was read before it")
    except OSError as exc:
        if rebuilder.datagrams == 0:
            raise TraceError(f"cannot read {path}: {exc.strerror or exc}") from None
        notes.append(f"read error after {rebuilder.datagrams} datagrams ({exc.strerror or exc}): "
                     "showing what was read before it")
    events = rebuilder.finish()
    if rebuilder.transfers == 0:
        notes.append(f"no TFTP transfer found among {rebuilder.datagrams} UDP datagrams")
    if rebuilder.midstream:
        notes.append(f"{_count(rebuilder.midstream, 'transfer')} began before the capture did: file name and "
                     "options unknown but the block size its DATA show, bytes counted from the first block captured")
    if rebuilder.coalesced:
        notes.append(f"{_count(rebuilder.coalesced, 'window')} of DATA were captured as one datagram each, before "
                     "the kernel cut them apart (UDP offload on the capturing host): shown as the datagrams sent")
    if rebuilder.capture_gaps:
        notes.append(f"the capture lacks {_count(rebuilder.capture_gaps, 'packet')} the transfers show were "
                     "delivered (it dropped them, as tcpdump's 'packets dropped by kernel'): see capture-gaps")
    # Whose copies they are is the share's to say (protocol/doubled.py), as for the figures and findings.
    if rebuilder.copies:
        notes.append(f"{_count(rebuilder.copies, 'TFTP datagram')} appear twice, the second a copy the capture point "
                     "made (a mirror port seeing both directions, a bridge and its member, a loop): noted 'copy', "
                     "counted as no resend (see capture-doubled)")
    if rebuilder.duplicated:
        notes.append(f"{_count(rebuilder.duplicated, 'TFTP datagram')} came twice within "
                     f"{COPY_WITHIN * 1000:.0f} ms, asked for by nothing (duplicated on the way, or sent twice): "
                     "noted 'copy', counted as duplicates, not resends (see duplicates)")
    if fragments.reassembled:
        notes.append(f"{_count(fragments.reassembled, 'UDP datagram')} came in IP fragments: read whole, at the "
                     "time of the last fragment")
    if fragments.incomplete:
        notes.append(f"{_count(fragments.incomplete, 'fragmented UDP datagram')} could not be put together "
                     "(fragments missing, overlapping or past the reader's bounds): read as their first fragment, "
                     "cut short")
    if rebuilder.cut:
        notes.append(f"the capture's snap length cut {_count(rebuilder.cut, 'DATA packet')} short: "
                     "byte counts use their length on the wire")
    return TraceLoad(path, kind, events, rebuilder.datagrams, rebuilder.transfers, "; ".join(notes) or None)


def _load_jsonl(path: Path) -> TraceLoad:
    """Every event that can be read. A damaged line (not JSON, not an event, a field of the wrong type,
    bytes that are not text, brackets nested too deep, a line longer than any event) is skipped and
    counted; the warning names the first. Memory stays bounded by MAX_LINE whatever the file holds."""
    events: list[Event] = []
    damaged = 0
    first: str | None = None
    trouble: str | None = None
    number = 0
    try:
        with open(path, "rb") as f:
            while line := f.readline(MAX_LINE + 1):
                number += 1
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    _skip_line(f)
                    damaged += 1
                    first = first or f"line {number} is longer than any event (over {MAX_LINE:,} bytes)"
                    continue
                try:
                    event = parse_line(line, number)
                except ValueError as exc:
                    if number == 1:
                        from tftpdiag.served import is_served_line

                        if is_served_line(line):
                            raise TraceError(f"{path}: this is a serve --log file (one line per session); trace "
                                             "reads files written by --trace or the s key") from None
                    damaged += 1
                    first = first or str(exc)
                    continue
                if event is not None:
                    events.append(event)
    except OSError as exc:
        trouble = f"read error after {_count(number, 'line')} ({exc.strerror or exc})"
    if not events and (damaged or trouble):
        raise TraceError(f"{path}: not a tftpdiag jsonl trace ({trouble or first})")
    notes = []
    if damaged:
        notes.append(f"skipped {_count(damaged, 'damaged line')} (the first: {first}): showing the "
                     f"{_count(len(events), 'event')} that could be read")
    if trouble:
        notes.append(trouble)
    sessions = len({event.session for event in events})
    return TraceLoad(path, "jsonl", events, len(events), sessions, "; ".join(notes) or None)


def _skip_line(f: BinaryIO) -> None:
    """Read on to the end of an overlong line, a bounded piece at a time."""
    while chunk := f.readline(MAX_LINE):
        if chunk.endswith(b"\n"):
            return


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
