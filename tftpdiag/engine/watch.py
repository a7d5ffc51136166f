"""`watch`: TFTP between any clients and servers, captured live and shown as it happens.

The capture (engine/capture.py) hands over datagrams in batches; the trace rebuild, the same passive
machine that reopens a capture file, follows each transfer from its request to the server's new port;
its events go on the bus like a server's, so the sessions table, the detail view, the JSON lines and
the findings of `serve` show them unchanged.

Live, the rebuild (``Rebuilder(live=True)``: the trace's demultiplexing, one protocol/observer.py
Observer per transfer) hands out events once nothing can change them (Observer.take: a run of
retransmissions grows its count, an out-of-order note is taken back when the receiver's ACK shows the
gap was the capture's), a round trip or so. A transfer nobody has sent a packet of for ``idle``
seconds is ended as the end of a capture would end it.
"""

from __future__ import annotations

import threading
import time

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.capture import CaptureStats, LiveCapture
from tftpdiag.protocol.events import Address
from tftpdiag.records import record
from tftpdiag.trace.pcap import PcapWriter
from tftpdiag.trace.rebuild import Rebuilder

__all__ = ["Watcher", "WatchConfig"]

_EXPIRE_EVERY = 1.0  # seconds between looks for transfers gone quiet


@record
class WatchConfig:
    """What watch captures: the interface, ports and hosts, and when a transfer counts as stopped."""

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
        self.live = Rebuilder(live=True, idle=config.idle, digest=True)
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
                    live.feed(batch)
                    events = live.take()
                    if events:
                        publish(events)
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + _EXPIRE_EVERY
                    live.tick(time.time())
                    events = live.take()
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
