"""`watch`: TFTP between any clients and servers, captured live and shown as it happens.

The capture (engine/capture.py) hands over datagrams in batches; the trace rebuild, the same passive
machine that reopens a capture file, follows each transfer from its request to the server's new port;
its events go on the bus like a server's, so the sessions table, the detail view, the JSON lines and
the findings of `serve` show them unchanged.

Live, the rebuild's events are handed out once nothing can change them: the rebuild rewrites two
kinds of recent event in place (a run of retransmissions grows its count; an out-of-order note is
taken back when the receiver's ACK shows the gap was the capture's), so events wait behind the
earliest of those that is still open, a round trip or so. A transfer nobody has sent a packet of for
``idle`` seconds is ended as the end of a capture would end it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.capture import CaptureStats, LiveCapture
from tftpdiag.protocol.events import Address, Event
from tftpdiag.trace.pcap import Datagram, PcapWriter
from tftpdiag.trace.rebuild import Rebuilder
from tftpdiag.trace.rebuild_state import ENDED, TransferState

__all__ = ["LiveRebuild", "Watcher", "WatchConfig"]

_TRIM = 65536  # published events kept before the list is cut (its indices rebased)
_EXPIRE_EVERY = 1.0  # seconds between looks for transfers gone quiet


class LiveRebuild:
    """The trace rebuild fed as packets arrive; each call returns the events that became final."""

    def __init__(self, idle: float = 30.0) -> None:
        self.idle = idle
        self.rebuilder = Rebuilder()
        self._published = 0

    def feed(self, datagrams: Iterable[Datagram]) -> list[Event]:
        self.rebuilder.feed(datagrams)
        return self._settled()

    def expire(self, now: float) -> list[Event]:
        """End the transfers with no packet for ``idle`` seconds, as the end of a capture would."""
        r = self.rebuilder
        for t in self._open():
            if now - t.last >= self.idle:
                self._end(t, now)
        self._forget(now)
        return self._settled()

    def finish(self, now: float) -> list[Event]:
        """The capture stops: every open transfer ends; all events not yet handed out."""
        for t in self._open():
            self._end(t, now)
        return self._settled()

    def _open(self) -> list[TransferState]:
        return [t for t in self.rebuilder._transfers if t.phase != ENDED or t.refusal is not None]

    def _end(self, t: TransferState, now: float) -> None:
        r = self.rebuilder
        if t.refusal is not None:
            r._refused(t)
        elif t.phase != ENDED:
            r._stop(t, now)

    def _forget(self, now: float) -> None:
        """Ended transfers leave the rebuild's lists after a while: a watch runs for days."""
        r = self.rebuilder
        keep = [t for t in r._transfers if t.phase != ENDED or t.refusal is not None or now - t.last < self.idle]
        if len(keep) != len(r._transfers):
            r._transfers = keep
            live = {id(t) for t in keep}
            r._by_client = {addr: t for addr, t in r._by_client.items() if id(t) in live}

    def _settled(self) -> list[Event]:
        r = self.rebuilder
        events = r.events
        limit = len(events)
        for t in r._transfers:
            if t.phase == ENDED:
                continue
            if 0 <= t.run_index < limit:
                limit = t.run_index
            if t.ahead_at:
                first = min(t.ahead_at.values())
                if first < limit:
                    limit = first
        out = events[self._published:limit]
        self._published = max(self._published, limit)
        if self._published >= _TRIM:
            self._trim()
        return out

    def _trim(self) -> None:
        """Drop the events already handed out, moving the indices the rebuild keeps into the list."""
        r, cut = self.rebuilder, self._published
        del r.events[:cut]
        for t in r._transfers:
            if t.run_index >= 0:
                t.run_index -= cut
            if t.ahead_at:
                t.ahead_at = {k: i - cut for k, i in t.ahead_at.items()}
        self._published = 0


@dataclass(frozen=True, slots=True)
class WatchConfig:
    interface: str
    ports: tuple[int, ...] = (69,)
    hosts: tuple[str, ...] = ()
    idle: float = 30.0  # seconds without a packet before a transfer is judged stopped
    trace: str | None = None  # a pcap file keeping everything captured


class Watcher:
    """Captures until :meth:`stop`, publishing the rebuilt transfers' events on ``bus``.

    Shaped like the server engine (``serve()`` on a thread, ``stop()``, ``bus``), so the views and the
    headless loop of `serve` drive it as they are.
    """

    def __init__(self, config: WatchConfig, bus: EventBus) -> None:
        self.config = config
        self.bus = bus
        self.capture = LiveCapture(config.interface, ports=config.ports, hosts=config.hosts)
        self.live = LiveRebuild(config.idle)
        self._writer = PcapWriter(config.trace) if config.trace else None
        self._done = threading.Event()
        self.error: BaseException | None = None

    @property
    def addresses(self) -> list[Address]:
        return []

    def stats(self) -> CaptureStats:
        return self.capture.stats()

    def serve(self) -> None:
        publish, live, writer = self.bus.publish, self.live, self._writer
        next_expiry = time.monotonic() + _EXPIRE_EVERY
        try:
            for batch in self.capture.batches():
                if batch:
                    if writer is not None:
                        for d in batch:
                            writer.write(d.time, d.src, d.dst, d.payload)
                    events = live.feed(batch)
                    if events:
                        publish(events)
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + _EXPIRE_EVERY
                    events = live.expire(time.time())
                    if events:
                        publish(events)
                    if writer is not None:
                        writer.flush()
            events = live.finish(time.time())
            if events:
                publish(events)
        except BaseException as exc:  # surfaced by the caller; the capture is closed either way
            self.error = exc
            raise
        finally:
            self.capture.close()
            if writer is not None:
                writer.close()
            self._done.set()

    def stop(self) -> None:
        self.capture.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)
