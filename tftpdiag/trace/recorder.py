"""Streams the event bus to a trace file on its own thread: pcap (every datagram, for Wireshark) or
jsonl (every event). Lossless, bounded memory, flushed about every second, complete after close()."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from tftpdiag.engine.bus import EventBus, Subscription
from tftpdiag.protocol.events import Address, Event, Impaired, PacketReceived, PacketRun, PacketSent
from tftpdiag.trace import snapped
from tftpdiag.trace.jsonl import JsonlWriter
from tftpdiag.trace.pcap import PcapWriter

__all__ = ["TraceRecorder", "TraceSetupError", "trace_format", "EventWriter", "PcapEventWriter", "open_writer",
           "copy_events", "copy_trace"]

_DRAIN_EVERY = 0.2
_FLUSH_EVERY = 1.0


class TraceSetupError(Exception):
    pass


class EventWriter(Protocol):
    """Writes events to a file. A PacketRun reaches ``write`` whole only if the writer's class sets
    ``takes_runs``; otherwise the recorder writes its events one by one."""

    def write(self, event: Event) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


SessionFilter = Callable[[int], bool]


class PcapEventWriter:
    """Packet events as IP/UDP datagrams; other events have no place in a pcap and are skipped.

    When both ends of a transfer publish on one bus (the demo), each datagram is seen twice;
    ``skip`` names the sessions whose view is left out so the capture holds it once.

    With fault injection the capture shows what went on the wire: the engine publishes an outgoing
    datagram's Impaired events before the PacketSent they apply to, so a dropped datagram is left
    out, a delayed one is written when it left, and a duplicated one twice. (What is impaired on the
    way in never reaches the machine, or reaches it late, and is recorded as it arrives.)
    """

    def __init__(self, path: Path, snaplen: int | None = None, skip: SessionFilter | None = None) -> None:
        self._pcap = PcapWriter(path, snaplen=snaplen)
        self._skip = skip
        self._fates: dict[tuple[Address, bytes], deque[list[float]]] = {}
        self._last_fate_key: tuple[Address, bytes] | None = None

    def write(self, event: Event) -> None:
        if self._skip is not None and self._skip(event.session):
            return
        if isinstance(event, PacketSent):
            if self._fates:
                self._write_impaired(event)
            else:
                self._pcap.write(event.time, event.local, event.peer, event.raw, not snapped(event.packet))
        elif isinstance(event, PacketReceived):
            self._pcap.write(event.time, event.peer, event.local, event.raw, not snapped(event.packet))
        elif isinstance(event, Impaired) and event.direction == "out":
            self._note_fate(event)

    def _note_fate(self, event: Impaired) -> None:
        key = (event.peer, event.raw)
        queue = self._fates.setdefault(key, deque())
        # One datagram's events come together: a drop; or a delay (or reorder), maybe then a duplicate;
        # or a duplicate alone.
        if event.action == "dropped":
            queue.append([])
        elif event.action in ("delayed", "reordered"):
            queue.append([event.delay])
        elif event.action == "duplicated":
            if self._last_fate_key == key and queue and len(queue[-1]) == 1:
                queue[-1].append(event.delay)
            else:
                queue.append([0.0, event.delay])
        self._last_fate_key = key

    def _write_impaired(self, event: PacketSent) -> None:
        key = (event.peer, event.raw)
        queue = self._fates.get(key)
        delays = queue.popleft() if queue else [0.0]
        if queue is not None and not queue:
            del self._fates[key]
        whole = not snapped(event.packet)
        for delay in delays:
            self._pcap.write(event.time + delay, event.local, event.peer, event.raw, whole)

    def flush(self) -> None:
        self._pcap.flush()

    def close(self) -> None:
        self._pcap.close()


def trace_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".pcap", ".cap"):
        return "pcap"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise TraceSetupError(f"cannot tell the trace format of {path.name!r}: "
                          "name it .pcap (Wireshark) or .jsonl (all events)")


def open_writer(path: Path, snaplen: int | None = None, skip: SessionFilter | None = None) -> EventWriter:
    kind = trace_format(path)
    try:
        if kind == "pcap":
            return PcapEventWriter(path, snaplen, skip)
        return JsonlWriter(open(path, "w", encoding="utf-8"), snaplen)
    except OSError as exc:
        raise TraceSetupError(f"cannot write the trace {path}: {exc.strerror}") from None


class TraceRecorder:
    def __init__(self, writer: EventWriter, sub: Subscription, path: Path, only: SessionFilter | None = None) -> None:
        self.path = path
        self._only = only
        self._writer = writer
        self._sub = sub
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.events_written = 0
        self._thread = threading.Thread(target=self._run, name="trace-recorder", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path, bus: EventBus, snaplen: int | None = None,
             skip: SessionFilter | None = None, only: SessionFilter | None = None) -> TraceRecorder:
        """``skip``: sessions left out of a pcap only; ``only``: the sessions recorded at all."""
        writer = open_writer(path, snaplen, skip)
        return cls(writer, bus.subscribe(), path, only)

    def _run(self) -> None:
        since_flush = 0.0
        while not self._stop.wait(_DRAIN_EVERY):
            self._write_pending()
            since_flush += _DRAIN_EVERY
            if since_flush >= _FLUSH_EVERY:
                since_flush = 0.0
                with self._lock:
                    self._writer.flush()

    def _write_pending(self) -> None:
        with self._lock:
            write = self._writer.write
            events = self._sub.drain()
            only = self._only
            takes_runs = getattr(self._writer, "takes_runs", False)
            written = len(events)
            for event in events:
                if only is None or only(event.session):
                    if type(event) is PacketRun and not takes_runs:  # a file holds the events themselves
                        for one in event:
                            write(one)
                        written += len(event) - 1
                    else:
                        write(event)
            self.events_written += written

    def flush(self) -> None:
        """Write everything published so far to disk (for saving a copy mid-run)."""
        self._write_pending()
        with self._lock:
            self._writer.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._write_pending()
        self._sub.close()
        self._writer.close()


def copy_events(events: Iterable[Event], dest: Path, skip: SessionFilter | None = None) -> int:
    """Write ``events`` to ``dest`` in the format its name asks for; returns how many were written
    (a pcap leaves out those that are not datagrams, which still count)."""
    writer = open_writer(dest, skip=skip)
    count = 0
    try:
        for event in events:
            writer.write(event)
            count += 1
    finally:
        writer.close()
    return count


def copy_trace(jsonl_source: Path, dest: Path, skip: SessionFilter | None = None) -> int:
    """Write the events of a jsonl trace to ``dest`` in the format its name asks for; returns how many."""
    from tftpdiag.trace.jsonl import read_events

    with open(jsonl_source, encoding="utf-8") as f:
        return copy_events(read_events(f), dest, skip)
