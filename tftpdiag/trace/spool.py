"""The save key's spool: every event of a live view kept on disk as it comes, so that the trace so far
can be written when the user asks for it, in the format the name given asks for.

The spool once was a jsonl trace, formatted event by event as the run went: 4.1 us of base64 and JSON
for each 1,468-byte DATA block (measured), at a windowed transfer's 120,000 events a second half a core
of the view's process, on a machine whose cores the transfer and its server need. Nobody reads the
spool unless they save, so it now holds events in the form that costs least to write: batches in the
apart wire format (engine/apart_wire.py, which sends the same events between processes), each a 4-byte
big-endian length and then ``pack(batch)``. Saving reads the batches back one at a time and writes their
events with the writer a trace recorded directly would use (trace/recorder.py), so the file saved is
the same, byte for byte; the conversion costs once, when the user saves, instead of at every event.

A run that came from a transfer run apart holds where its datagrams are, not the datagrams: that
transfer kept them in a file of the view's (engine/apart_wire.py), read back only when saved.

The spool is a file of this process's own in a directory only its user can read (it is unpickled when
saved); a batch that is not whole or does not unpack ends what is saved, with a word on why.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tftpdiag.engine.apart_wire import expand, pack, unpack
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.scratch import scratch_prefix
from tftpdiag.protocol.events import Event, PacketRun
from tftpdiag.trace.jsonl import KIND
from tftpdiag.trace.recorder import SessionFilter, TraceRecorder, copy_events

__all__ = ["Spool", "SpoolWriter", "SpoolReader"]

_LENGTH = struct.Struct(">I")
# Events packed together: enough that a batch's own cost (a pickle call, two writes) is small beside its
# events', few enough that a batch of 64 KiB datagrams (the largest block size) packs in 16 MiB.
BATCH = 256


class SpoolWriter:
    """An event writer (for a :class:`TraceRecorder`) that appends batches of packed events to ``path``.

    ``whole`` is how many bytes of the file are whole batches on disk: a reader stops there, so a batch
    being written meanwhile is never read half-written. A failure to write (a full disk) stops the
    spool, said in ``failure``, and never raises into the recorder's thread: what was written stays good.
    """

    takes_runs = True  # a PacketRun is kept as it came, in columns (see TraceRecorder)

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._pending: list[Event] = []
        self._pending_events = 0  # events in _pending, a PacketRun's counted each
        self._end = 0  # bytes written to the file object, all whole batches
        self.whole = 0
        self.failure: str | None = None

    def write(self, event: Event) -> None:
        self._pending.append(event)
        self._pending_events += len(event) if type(event) is PacketRun else 1
        if self._pending_events >= BATCH:
            self._append()

    def _append(self) -> None:
        batch = self._pending
        if not batch:
            return
        self._pending = []
        self._pending_events = 0
        if self.failure is not None:
            return
        blob = pack(batch)
        try:
            self._file.write(_LENGTH.pack(len(blob)))
            self._file.write(blob)
        except OSError as exc:
            self._fail(exc)
            return
        self._end += _LENGTH.size + len(blob)

    def _fail(self, exc: OSError) -> None:
        self.failure = exc.strerror or type(exc).__name__

    def flush(self) -> None:
        self._append()
        if self.failure is not None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self._fail(exc)
            return
        self.whole = self._end

    def close(self) -> None:
        self.flush()
        try:
            self._file.close()
        except OSError:
            pass


class SpoolReader:
    """The events of a spool's first ``end`` bytes, batch by batch. Stops at the first batch that is not
    whole or does not unpack (the file was cut short or damaged), and says why in ``problem``."""

    def __init__(self, file: BinaryIO, end: int) -> None:
        self._file = file
        self._end = end
        self.problem: str | None = None

    def __iter__(self) -> Iterator[Event]:
        read = self._file.read
        left = self._end
        while left > 0:
            head = read(_LENGTH.size)
            if len(head) < _LENGTH.size:
                self.problem = "it ends in the middle of a batch"
                return
            (size,) = _LENGTH.unpack(head)
            left -= _LENGTH.size
            if size > left:
                self.problem = "it ends in the middle of a batch"
                return
            blob = read(size)
            if len(blob) < size:
                self.problem = "it ends in the middle of a batch"
                return
            left -= size
            try:
                batch = unpack(blob)
            except Exception:  # noqa: BLE001 - damaged bytes can fail in any way pickle can
                batch = None
            if batch is None or not all(type(event) in KIND or type(event) is PacketRun for event in batch):
                self.problem = "a batch in it is damaged"
                return
            try:  # a run's datagrams may be in the file its transfer kept them in (engine/apart_wire.py)
                events = list(expand(batch))
            except ValueError as exc:
                self.problem = str(exc)
                return
            yield from events


class Spool:
    """Every event of the run, kept cheaply in a temporary file, so the save key can write the trace so
    far. ``only``: the sessions kept at all."""

    def __init__(self, bus: EventBus, only: SessionFilter | None = None) -> None:
        # Mode 0700: this user's only. Named so that the spool of a view killed outright is removed later.
        self._dir = tempfile.TemporaryDirectory(prefix=scratch_prefix("spool"))
        self.path = Path(self._dir.name) / "spool.bin"
        self.writer = SpoolWriter(self.path)
        self.recorder = TraceRecorder(self.writer, bus.subscribe(), self.path, only)

    def save(self, dest: Path) -> str:
        """Write the events so far to ``dest`` (.jsonl or .pcap); says how many. A damaged spool saves
        the events before the damage, and says so."""
        self.recorder.flush()
        with open(self.path, "rb") as f:
            events = SpoolReader(f, self.writer.whole)
            count = copy_events(events, dest)
        message = f"saved {count:,} events to {dest}"
        if events.problem is not None:
            message += f"; the spool's later events could not be read: {events.problem}"
        elif self.writer.failure is not None:
            message += f"; the spool stopped keeping events after these: {self.writer.failure}"
        return message

    def close(self) -> None:
        self.recorder.close()
        self._dir.cleanup()
