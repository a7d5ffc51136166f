"""Captured datagrams -> TFTP transfers -> the events a live tftpdiag client would have published.

This module only says which datagrams belong to which transfer; each transfer's rules (numbering,
negotiation, retransmits, gaps, endings) are :class:`tftpdiag.protocol.observer.Observer`'s.

A transfer starts with a request (RRQ/WRQ) from a client address C to a server address S. The server
answers from its transfer ID (a new port, S itself for single-port servers, or another address of a
multi-homed host) and from then on DATA, ACK, OACK and ERROR between C and that TID belong to it.
C's port is the client's own transfer ID, so the transfer a datagram belongs to is found by C alone:
one dict lookup on the source, one on the destination, whichever host the capture was taken on.

- A new request from C's port while a transfer runs there is the observer's to judge (C's retransmit,
  or asking again without refused options); when it is another transfer, the observer ends its own and
  a new one starts here. The previous transfer of that port stays known one generation, so its server,
  still talking before the new one has answered, reaches it and not the new one.
- A capture that starts mid-transfer (no request seen) is recognised when a DATA block and the ACK of
  the same block show a TFTP exchange between two addresses: it is taken as a download unless the
  ACKing side uses port 69 (then an upload), with the block size of the largest block seen.
  ``Rebuilder.midstream`` counts them. Other traffic is dropped after a bounded look.

Session ids are 1, 2, ... in order of first request (or of recognition, for those joined mid-way).
Every observer writes into the one event list, in capture order; transfers found to have stopped
earlier than the last event make :meth:`Rebuilder.finish` sort it once.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable

from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.observer import Observer
from tftpdiag.protocol.options import DEFAULT_BLKSIZE
from tftpdiag.protocol.packets import Request, head, seen_request

__all__ = ["rebuild", "Rebuilder"]

_ORPHAN_BUFFER = 64  # datagrams kept per address pair while deciding whether it is a TFTP exchange
_ORPHAN_PAIRS = 4096  # pairs under watch at once; unrelated traffic must not grow this without bound
FORGET_AFTER = 30.0  # live, by default: seconds a quiet transfer is taken to have stopped, its client port forgotten


class Rebuilder:
    """Feed datagrams in capture order with :meth:`feed` (as often as needed), then call :meth:`finish`.

    Feeding can stop at any point (a damaged capture raises from the reader): :meth:`finish` still
    turns what was read into complete transfers.

    A capture file's events all go to :attr:`events`. A live capture (``live=True``) takes them as they
    settle instead, with :meth:`take`, and says how time passes with :meth:`tick`: a transfer quiet for
    ``idle`` seconds ends as at the end of a capture file, and ended transfers are let go, so memory
    follows the transfers under way, not how long the capture runs.
    """

    def __init__(self, *, live: bool = False, idle: float = FORGET_AFTER, digest: bool = False) -> None:
        self.live = live
        # Hash each download's bytes as seen (ContentDigest before its Completed): a SHA-256 per 1.4 KB
        # block costs more than the rest of the rebuild, so only a watcher that shows it asks for it.
        self.digest = digest
        self.idle = idle  # live: seconds without a packet after which a transfer is taken to have stopped
        self.events: list[Event] = []  # every event, for a capture file (live: empty; see take())
        self.datagrams = 0  # UDP datagrams fed, TFTP or not
        self.midstream = 0  # transfers rebuilt without their request (the capture began after it)
        self._sink: list[Event] | None = None if live else self.events
        self._by_client: dict[Address, Observer] = {}
        self._prev: dict[Address, Observer] = {}  # the transfer a client port ran before its current one
        self._transfers: list[Observer] = []  # live: only those not yet let go
        # live: cut, coalesced, capture_gaps, the capture point's copies and duplicates of the transfers let go
        self._let_go = [0, 0, 0, 0, 0]
        self._orphans: dict[tuple[Address, Address], list[Datagram]] = {}
        self._rejected: set[tuple[Address, Address]] = set()
        self._next_id = 1
        self._capture_end = float("-inf")
        self._unordered = False
        self._finished = False

    # -- what the observers counted -------------------------------------------------------------------

    @property
    def transfers(self) -> int:
        return self._next_id - 1

    @property
    def cut(self) -> int:
        """TFTP datagrams the capture's snap length cut short."""
        return self._let_go[0] + sum(t.cut for t in self._transfers)

    @property
    def coalesced(self) -> int:
        """Windows captured as one datagram (UDP offload), taken apart."""
        return self._let_go[1] + sum(t.coalesced for t in self._transfers)

    @property
    def capture_gaps(self) -> int:
        """Packets the capture lacks although the transfers show they were delivered."""
        return self._let_go[2] + sum(t.capture_gaps for t in self._transfers)

    @property
    def copies(self) -> int:
        """Datagrams seen again that the share says the capture point copied (protocol/doubled.py)."""
        return self._let_go[3] + sum(t.copies()[0] for t in self._transfers)

    @property
    def duplicated(self) -> int:
        """Datagrams seen again that the share says reached their receiver twice: duplicates."""
        return self._let_go[4] + sum(t.copies()[1] for t in self._transfers)

    # -- a live capture ---------------------------------------------------------------------------------

    def take(self) -> list[Event]:
        """Live: the events that settled since the last take, from every transfer, in time order. Ended
        transfers that no datagram can reach any more are let go."""
        out: list[Event] = []
        kept: list[Observer] = []
        for t in self._transfers:
            out += t.take()
            if t.done and not t.events and self._by_client.get(t.client) is not t \
                    and self._prev.get(t.client) is not t:
                self._let_go[0] += t.cut
                self._let_go[1] += t.coalesced
                self._let_go[2] += t.capture_gaps
                ours, theirs = t.copies()
                self._let_go[3] += ours
                self._let_go[4] += theirs
            else:
                kept.append(t)
        self._transfers = kept
        out.sort(key=_event_time)
        return out

    def tick(self, now: float) -> None:
        """Live: time is ``now`` and nothing else came. Settles what waits for time (a refusal the client
        did not follow, a final ACK that did not come), ends transfers quiet for ``idle`` seconds as a
        capture file's end would, and forgets client ports whose transfer ended that long ago."""
        idle = self.idle
        for t in self._transfers:
            t.tick(now)
            if not t.done and now - t.last >= idle:
                t.finish(now)
        for client in [c for c, t in self._by_client.items() if t.done and now - t.last >= idle]:
            del self._by_client[client]
            self._prev.pop(client, None)

    # -- driving ------------------------------------------------------------------------------------

    def feed(self, datagrams: Iterable[Datagram]) -> None:
        by_client = self._by_client
        count = 0
        last: Datagram | None = None
        # Every datagram makes a few objects that live on in the event list and none makes a cycle;
        # the cyclic collector would rescan that growing list again and again, taking half the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for d in datagrams:
                count += 1
                last = d
                t = by_client.get(d.src)
                if t is not None:
                    request = t.from_client(d)
                    if request is not None:
                        self._new_transfer(d, request, t)
                    continue
                t = by_client.get(d.dst)
                if t is not None:
                    if t.tid is None:
                        prev = self._prev.get(d.dst)
                        if prev is not None and d.src == prev.tid and d.src != t.server:
                            t = prev  # the previous transfer's server, still talking
                    t.to_client(d)
                else:
                    self._unknown(d)
        finally:
            if collecting:
                gc.enable()
            self.datagrams += count
            if last is not None and last.time > self._capture_end:
                self._capture_end = last.time

    def finish(self, now: float | None = None) -> list[Event]:
        """End every open transfer (the capture ended at ``now``, by default its last datagram) and return
        all events in time order (live: those not yet taken)."""
        if self.live:
            for t in self._transfers:
                t.finish(self._capture_end if now is None else now)
            return self.take()
        if not self._finished:
            self._finished = True
            for t in self._transfers:
                t.finish(self._capture_end if now is None else now)
            if self._unordered or any(t.unordered for t in self._transfers):
                # Transfers recognised mid-stream or found to have stopped earlier add events behind
                # others; timsort handles the nearly-sorted list in about one pass, and it is stable, so
                # the events of one datagram keep their order.
                self.events.sort(key=_event_time)
        return self.events

    # -- which transfer ---------------------------------------------------------------------------------

    def _unknown(self, d: Datagram) -> None:
        """A datagram of no known transfer: a new request, a transfer already under way, or not TFTP."""
        op = head(d.payload)[0]
        if op == 1 or op == 2:
            # As its client sent it, even one a server refuses: the server's answer is what is to be seen.
            request = seen_request(d.payload)
            if request is not None:
                self._new_transfer(d, request, None)
        elif op == 3 or op == 4:
            self._orphan(d)

    def _new_transfer(self, d: Datagram, request: Request, prev: Observer | None) -> None:
        t = Observer.request(self._next_id, d, request, self._sink)
        if self.digest and t.is_read:
            t.digest = hashlib.sha256()
        self._next_id += 1
        self._transfers.append(t)
        self._by_client[d.src] = t
        if prev is not None:
            self._prev[d.src] = prev  # one generation only: a long-lived client port must not chain them all
        else:
            self._prev.pop(d.src, None)

    def _orphan(self, d: Datagram) -> None:
        src, dst = d.src, d.dst
        key = (src, dst) if src < dst else (dst, src)
        buffered = self._orphans.get(key)
        if buffered is None:
            if key in self._rejected:
                return
            if len(self._orphans) >= _ORPHAN_PAIRS:
                self._orphans.clear()
            buffered = self._orphans[key] = []
        buffered.append(d)
        op, wire = head(d.payload)
        if op == 4:
            for seen in buffered:
                if seen.src == dst and head(seen.payload) == (3, wire):
                    del self._orphans[key]
                    self._adopt(buffered, data_sender=dst, acker=src)
                    return
        if len(buffered) >= _ORPHAN_BUFFER:
            del self._orphans[key]
            if len(self._rejected) >= _ORPHAN_PAIRS:
                self._rejected.clear()
            self._rejected.add(key)

    def _adopt(self, buffered: list[Datagram], data_sender: Address, acker: Address) -> None:
        """DATA one way and the ACK of that block back: a transfer whose request the capture missed."""
        is_read = not (acker[1] == 69 and data_sender[1] != 69)
        client, server = (acker, data_sender) if is_read else (data_sender, acker)
        first = buffered[0]
        previous = self._by_client.get(client)
        if previous is not None:
            previous.stop(first.time, "another exchange took over its port")
        self._prev.pop(client, None)
        blksize = max((s.orig_len - 4 for s in buffered if head(s.payload)[0] == 3), default=DEFAULT_BLKSIZE)
        if self.events and self.events[-1].time > first.time:
            self._unordered = True
        t = Observer.joined(self._next_id, first, client, server, is_read=is_read, blksize=blksize, sink=self._sink)
        self._next_id += 1
        self.midstream += 1
        self._transfers.append(t)
        self._by_client[client] = t
        for d in buffered[1:]:
            t.feed(d)


def _event_time(event: Event) -> float:
    return event.time


def rebuild(datagrams: Iterable[Datagram]) -> list[Event]:
    """Every TFTP transfer in ``datagrams`` (in capture order) as the events a live client publishes."""
    rebuilder = Rebuilder()
    rebuilder.feed(datagrams)
    return rebuilder.finish()
