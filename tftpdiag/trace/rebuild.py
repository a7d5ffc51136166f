"""Captured datagrams -> TFTP transfers -> the events a live tftpdiag client would have published.

A transfer starts with a request (RRQ/WRQ) from a client address C to a server address S. The server
answers from its transfer ID (a new port, S itself for single-port servers, or another address of a
multi-homed host) and from then on DATA, ACK, OACK and ERROR between C and that TID belong to it.
C's port is the client's own transfer ID, so the transfer a datagram belongs to is found by C alone:
one dict lookup on the source, one on the destination, whichever host the capture was taken on.

Events are made from the CLIENT's point of view (CLIENT_READ for RRQ, CLIENT_WRITE for WRQ): a
datagram from C is a PacketSent, one to C a PacketReceived, so the TUI, the headless summary and the
findings read a capture exactly as a live probe. Session ids are 1, 2, ... in order of first request.

What a capture can tell is more than what one side knows, so notes and counters say what was seen:

- RETRANSMIT: a DATA block, a request or an OACK sent again by its sender (either side). They count
  in ``retransmits`` and are grouped into Retransmit events (one per run of consecutive blocks): reason
  "timeout" when the sender had heard nothing from the other side since its previous packet, else
  "window-gap" (an ACK showed the gap).
- DUPLICATE: an ACK repeated (either side); counted in ``duplicates``.
- OUT_OF_ORDER: a DATA block of a download past a gap. Bytes count only blocks that arrive in order
  (a receiver drops the others and waits for the missing one, RFC 7440), except that an ACK from C
  covering blocks the capture never saw counts them (as full blocks: only the final one is short).
- STRAY: a packet to C from an address other than the TID (e.g. a second server session that answered
  a repeated request); C's ERROR 5 back to it is kept as an ordinary PacketSent. If C then sends DATA
  or ACK to such an address, the reply the capture saw first never reached C: C's choice becomes the
  TID (a second PeerLocked event).
- MALFORMED: an undecodable datagram between C and the TID. One that C sent is a PacketSent with
  ``packet=None``, as PacketReceived has for the received ones.
- UNEXPECTED / LATE: decoded but out of place, or after the transfer ended.

Timeouts are estimated from the client's own repeats: a request, DATA (upload) or ACK (download) that
C sent again without having heard from the server since it last sent counts as one timeout, with a
TimedOut event. The server's timeouts are not the client's and are not counted.

Endings: a download completes when the final (short, possibly empty) block has arrived in order and C
ACKs it; an upload when the server ACKs the final block. ERROR from the server fails it with
PEER_ERROR raised by the PEER; ERROR from C fails it with PROTOCOL raised LOCALly (what C does when it
refuses something, as the live client does). A transfer that just stops, or gets no reply at all,
fails with TIMEOUT when the capture ends, and the message says how long the capture went on after it.

A capture that starts mid-transfer (no request seen) is rebuilt when a DATA block and the ACK of the
same block show a TFTP exchange between two addresses: the file name is empty and no options are
known; the block size is taken from the largest block seen; it is taken as a download unless the
ACKing side uses port 69 (then an upload), and bytes count from the first block captured.
Such sessions get their id when the exchange is recognised. ``Rebuilder.midstream`` counts them.

Byte counts use the length on the wire, so a capture cut by a snap length still counts right (the
DATA packets in the events then hold only the captured part of the payload).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable

from tftpdiag.protocol.events import (
    Address,
    CaptureGap,
    Completed,
    Event,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    PeerLocked,
    Progress,
    Reason,
    RequestRetried,
    Retransmit,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.client import fallback_options
from tftpdiag.protocol.options import (
    DEFAULT_BLKSIZE,
    Negotiated,
    OptionOutcome,
    Verdict,
    accept_oack,
    options_ignored,
    options_refused,
)
from tftpdiag.protocol.packets import (
    Data,
    Error,
    ErrorCode,
    OAck,
    Options,
    Packet,
    ProtocolError,
    Request,
    decode,
)
from tftpdiag.protocol.packets import ack_packet
from tftpdiag.trace.pcap import Datagram
from tftpdiag.trace.rebuild_state import (
    ENDED,
    NEGOTIATING,
    REQUESTING,
    TRANSFERRING,
    TransferState,
    lenient,
)

__all__ = ["rebuild", "Rebuilder", "PROGRESS_INTERVAL"]

PROGRESS_INTERVAL = 0.1  # as Timing.progress_interval: a rebuilt rate graph is as dense as a live one
_ORPHAN_BUFFER = 64  # datagrams kept per address pair while deciding whether it is a TFTP exchange
_ORPHAN_PAIRS = 4096  # pairs under watch at once; unrelated traffic must not grow this without bound
_ASK_AGAIN_WITHIN = 30.0  # seconds after a refusal of its options in which a client's new request falls back


def _try_decode(raw: bytes) -> Packet | None:
    try:
        return decode(raw)
    except ProtocolError:
        return None


def _fmt(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Rebuilder:
    """Feed datagrams in capture order with :meth:`feed` (as often as needed), then call :meth:`finish`.

    Feeding can stop at any point (a damaged capture raises from the reader): :meth:`finish` still
    turns what was read into complete transfers.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.datagrams = 0  # UDP datagrams fed, TFTP or not
        self.midstream = 0  # transfers rebuilt without their request (the capture began after it)
        self.cut = 0  # TFTP datagrams the capture's snap length cut short
        self.coalesced = 0  # windows captured as one datagram (UDP offload), taken apart
        self.capture_gaps = 0  # packets the capture lacks although the transfers show they were delivered
        self._by_client: dict[Address, TransferState] = {}
        self._transfers: list[TransferState] = []
        self._orphans: dict[tuple[Address, Address], list[Datagram]] = {}
        self._rejected: set[tuple[Address, Address]] = set()
        self._next_id = 1
        self._capture_end = float("-inf")
        self._unordered = False
        self._finished = False

    # -- driving ------------------------------------------------------------------------------------

    def feed(self, datagrams: Iterable[Datagram]) -> None:
        by_client = self._by_client
        from_client, from_server, unknown = self._from_client, self._from_server, self._unknown
        data, ack = self._data, self._ack
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
                # DATA and ACK between a client and its transfer's TID go straight to their handler.
                t = by_client.get(d.src)
                if t is not None:
                    raw = d.payload
                    if len(raw) > 3 and raw[0] == 0 and d.dst == t.tid and not t.finishing:
                        op = raw[1]
                        if op == 4:
                            ack(t, d, raw, True)
                            continue
                        if op == 3:
                            data(t, d, raw, True)
                            continue
                    from_client(t, d)
                    continue
                t = by_client.get(d.dst)
                if t is not None:
                    raw = d.payload
                    if len(raw) > 3 and raw[0] == 0 and d.src == t.tid and not t.finishing:
                        op = raw[1]
                        if op == 3:
                            data(t, d, raw, False)
                            continue
                        if op == 4:
                            ack(t, d, raw, False)
                            continue
                    from_server(t, d)
                else:
                    unknown(d)
        finally:
            if collecting:
                gc.enable()
            self.datagrams += count
            if last is not None and last.time > self._capture_end:
                self._capture_end = last.time

    def finish(self) -> list[Event]:
        """End every open transfer and return all events (in time order)."""
        if not self._finished:
            self._finished = True
            end = self._capture_end
            for t in self._transfers:
                if t.refusal is not None:
                    self._refused(t)
                elif t.phase != ENDED:
                    self._stop(t, end)
            if self._unordered:
                # Transfers recognised mid-stream or found to have stopped earlier add events behind
                # others; timsort handles the nearly-sorted list in about one pass, and it is stable, so
                # the events of one datagram keep their order.
                self.events.sort(key=_event_time)
        return self.events

    @property
    def transfers(self) -> int:
        return len(self._transfers)

    # -- dispatch -------------------------------------------------------------------------------------

    def _from_client(self, t: TransferState, d: Datagram) -> None:
        raw = d.payload
        op = raw[1] if len(raw) >= 4 and raw[0] == 0 else -1
        if t.finishing and not (op == 4 and d.dst == t.tid):
            self._complete(t, t.finish_time)
        if op == 1 or op == 2:
            self._client_request(t, d)
            return
        dst = d.dst
        if dst != (t.tid if t.tid is not None else t.server):
            if not ((op == 3 or op == 4) and t.strays is not None and dst in t.strays and t.phase != ENDED):
                # C talking to someone else: its ERROR 5 to a stray server session, say. Keep what decodes.
                packet = _try_decode(raw)
                if packet is not None:
                    self._sent(t, d, packet, Note.NONE)
                return
            # C carries on with a session the capture showed as stray: the reply the capture saw first
            # never reached C (lost after the capture point), so C's choice of transfer ID wins.
            self._lock(t, dst, d.time)
        if op == 3:
            self._data(t, d, raw, True)
        elif op == 4:
            self._ack(t, d, raw, True)
        else:
            self._other(t, d, raw, True)

    def _from_server(self, t: TransferState, d: Datagram) -> None:
        raw = d.payload
        src = d.src
        if t.finishing:
            self._complete(t, t.finish_time)
        tid = t.tid
        if tid is None:
            prev = t.prev
            if prev is not None and src == prev.tid and src != t.server:
                self._from_server(prev, d)  # the previous transfer's server, still talking
                return
            packet = _try_decode(raw)
            if packet is None:
                if src[0] == t.server[0] and t.phase != ENDED:
                    self._received(t, d, None, Note.MALFORMED, _malformed(raw))
                return
            if isinstance(packet, Request):
                return
            self._lock(t, src, d.time)
        elif src != tid:
            packet = _try_decode(raw)
            if packet is not None and not isinstance(packet, Request):
                if t.strays is None:
                    t.strays = set()
                if len(t.strays) < 64:
                    t.strays.add(src)
                t.stray += 1  # not in ``received``: like a live client, that counts packets of its peer
                self.events.append(PacketReceived(t.sid, d.time, t.client, src, raw, packet, Note.STRAY,
                                                  "unknown transfer ID"))
            return
        op = raw[1] if len(raw) >= 4 and raw[0] == 0 else -1
        if op == 3:
            self._data(t, d, raw, False)
        elif op == 4:
            self._ack(t, d, raw, False)
        else:
            self._other(t, d, raw, False)

    def _unknown(self, d: Datagram) -> None:
        """A datagram of no known transfer: a new request, a transfer already under way, or not TFTP."""
        raw = d.payload
        if len(raw) < 4 or raw[0] != 0:
            return
        op = raw[1]
        if op == 1 or op == 2:
            packet = _try_decode(raw)
            if isinstance(packet, Request):
                self._new_transfer(d, packet, None)
        elif op == 3 or op == 4:
            self._orphan(d)

    # -- requests -------------------------------------------------------------------------------------

    def _client_request(self, t: TransferState, d: Datagram) -> None:
        raw = d.payload
        if t.phase != ENDED and raw == t.request_raw and d.dst == t.server:
            self._request_again(t, d)
            return
        packet = _try_decode(raw)
        if not isinstance(packet, Request):
            if t.phase != ENDED and d.dst == t.server:
                self._sent(t, d, packet, Note.MALFORMED)  # type: ignore[arg-type]
            return
        if t.refusal is not None:
            if _asks_again(t, packet, d):
                self._asked_again(t, d, packet)
                return
            self._refused(t)
        if t.phase != ENDED:
            self._stop(t, d.time, f"the client gave up and sent a new {packet.opcode.name} from the same port")
        self._new_transfer(d, packet, t)

    def _new_transfer(self, d: Datagram, request: Request, prev: TransferState | None) -> None:
        t = TransferState(self._next_id, request.is_read, d.src, d.dst, d.time)
        self._next_id += 1
        t.request_raw = d.payload
        t.options = request.options
        t.requests = 1
        t.prev = prev
        if prev is not None:
            prev.prev = None  # keep one generation only: a long-lived client port must not chain them all
        if not request.is_read:
            size = request.option("tsize")
            if size is not None and size.isdigit():
                t.total = int(size)
        self._transfers.append(t)
        self._by_client[d.src] = t
        self.events.append(TransferStarted(t.sid, d.time, t.role, request.filename, request.mode, d.src, d.dst,
                                           request.options))
        self._sent(t, d, request, Note.NONE)

    def _request_again(self, t: TransferState, d: Datagram) -> None:
        """The same request from the same port before the transfer ended: the client retransmitted it."""
        now = d.time
        t.requests += 1
        t.timeouts += 1
        t.client_attempt += 1
        self.events.append(TimedOut(t.sid, now, now - t.client_sent_at, t.client_attempt, f"reply to {t.kind}"))
        t.retransmits += 1
        self.events.append(Retransmit(t.sid, now, "timeout", None, 1, t.client_attempt))
        packet = _try_decode(d.payload)
        self._sent(t, d, packet, Note.RETRANSMIT)  # type: ignore[arg-type]

    def _asked_again(self, t: TransferState, d: Datagram, request: Request) -> None:
        """The client asked again without the options the server refused (as ClientRead does): the same
        transfer goes on with a new request, which the server answers from a new transfer ID."""
        error, _ = t.refusal  # type: ignore[misc]
        t.refusal = None
        t.dropped = tuple(OptionOutcome(name, value, None, Verdict.DROPPED)
                          for name, value in t.options if (name, value) not in request.options)
        self.events.append(RequestRetried(t.sid, d.time, error.code, error.message, t.options, request.options))
        t.options = request.options
        t.request_raw = d.payload
        t.tid = None
        t.requests = 1
        t.client_sent_at = d.time
        t.client_attempt = 0
        self._sent(t, d, request, Note.NONE)

    def _refused(self, t: TransferState) -> None:
        """The client did not ask again: the server's ERROR ended the transfer when it came."""
        error, when = t.refusal  # type: ignore[misc]
        t.refusal = None
        if self.events and self.events[-1].time > when:
            self._unordered = True
        if error.code == ErrorCode.OPTION_REFUSED:
            self._negotiated(t, options_refused(t.options, None), when)
        self._end(t, Failed(t.sid, when, Reason.PEER_ERROR, Side.PEER, error.code, error.message or error.code_name,
                            t.stats(when)))

    def _lock(self, t: TransferState, tid: Address, now: float) -> None:
        t.tid = tid
        self.events.append(PeerLocked(t.sid, now, tid, t.server))

    # -- DATA and ACK: the hot path ----------------------------------------------------------------

    def _data(self, t: TransferState, d: Datagram, raw: bytes, from_client: bool) -> None:
        if d.orig_len > t.blksize + 4 and t.request_raw and self._coalesced(t, d, raw, from_client):
            return
        wire = raw[2] << 8 | raw[3]
        packet = Data(wire, raw[4:])
        if from_client == t.is_read:
            # DATA from the side that should be receiving it.
            self._packet(t, d, packet, from_client, Note.UNEXPECTED if t.phase != ENDED else Note.LATE)
            return
        phase = t.phase
        if phase != TRANSFERRING:
            if phase == ENDED:
                note = Note.RETRANSMIT if t.absolute(wire) <= t.data_max else Note.LATE
                self._packet(t, d, packet, from_client, note)
                return
            self._begin_data(t, d.time)
        now = d.time
        size = d.orig_len - 4
        if size > len(raw) - 4:
            self.cut += 1
        if t.wrap1:
            n = t.absolute(wire)
        else:  # t.absolute inlined: this runs for every DATA block
            ref = t.data_max
            n = ref + ((wire - ref + 0x8000) & 0xFFFF) - 0x8000
        if n > 0xFFFF and not t.wrap_decided:
            self._decide_wrap(t, wire)
            n = t.absolute(wire)
        note = Note.NONE
        if n <= t.data_max:
            note = Note.RETRANSMIT
            self._retransmitted(t, now, n, from_client)
            if t.ahead_at:
                t.ahead_at.clear()  # the sender resends: the blocks past the gap were lost where C was too
        else:
            t.data_max = n
            t.run_index = -1
            if size < t.blksize and t.final is None:
                t.final = n
            elif size > t.blksize and t.request_raw == b"":
                t.blksize = size  # mid-stream transfer: the block size shows in the largest block
        if t.is_read:
            expected = t.expected
            if n > expected and n not in t.ahead:
                if note is Note.NONE:
                    note = Note.OUT_OF_ORDER
                    t.out_of_order += 1
                    t.ahead_at[n] = len(self.events)  # the note is undone if the gap was the capture's
                t.ahead[n] = size
            self._received(t, d, packet, note)
            if n == expected:
                # Only the block expected counts: a TFTP receiver drops blocks past a gap (RFC 7440) and
                # waits for them again; the sizes kept in ``ahead`` serve if C's ACK shows it had them.
                t.bytes += size
                t.blocks += 1
                t.expected = expected = n + 1
                if t.ahead:
                    t.ahead.pop(n, None)
                    t.ahead_at.pop(n, None)
                if note is Note.NONE and n > t.acked + t.windowsize and n > t.ack_floor + t.windowsize:
                    self._ack_proof(t, n)
                if t.final is not None and expected > t.final:
                    t.finishing = True
                    t.finish_time = now
                if now - t.last_progress >= PROGRESS_INTERVAL:
                    self._progress(t, now)
        else:
            if n > t.acked:
                t.sizes[n] = size
            if note is Note.NONE and n > t.acked + t.windowsize and n > t.ack_floor + t.windowsize:
                self._ack_proof(t, n)
            self._sent(t, d, packet, note)

    def _coalesced(self, t: TransferState, d: Datagram, raw: bytes, from_client: bool) -> bool:
        """A capture taken where the kernel had not yet cut a window into datagrams (UDP GSO on the
        sending host, always on loopback; GRO on the receiving one) holds the window as one datagram:
        DATA after DATA, each blksize + 4 bytes, block numbers one apart. Take its datagrams one by one;
        True when it was such a run."""
        step = t.blksize + 4
        wire = raw[2] << 8 | raw[3]
        starts = range(0, d.orig_len, step)
        for k, start in enumerate(starts):
            head = raw[start:start + 4]
            if len(head) < 4:
                break  # the capture's snap length ends here: what follows is taken on trust
            if head[:2] != b"\x00\x03" or (head[2] << 8 | head[3]) != (wire + k) & 0xFFFF:
                return False
        self.coalesced += 1
        for start in starts:
            size = min(step, d.orig_len - start)
            self._data(t, Datagram(d.time, d.src, d.dst, raw[start:start + size], size), raw[start:start + size],
                       from_client)
        return True

    def _ack(self, t: TransferState, d: Datagram, raw: bytes, from_client: bool) -> None:
        wire = raw[2] << 8 | raw[3]
        packet = ack_packet(wire)
        if from_client != t.is_read:
            # ACK from the side that sends the data.
            self._packet(t, d, packet, from_client, Note.UNEXPECTED if t.phase != ENDED else Note.LATE)
            return
        now = d.time
        phase = t.phase
        if phase != TRANSFERRING:
            if phase == ENDED:
                note = Note.DUPLICATE if t.absolute(wire) <= t.acked else Note.LATE
                self._packet(t, d, packet, from_client, note)
                return
            if phase == REQUESTING:  # an upload's ACK 0: the server took the WRQ without options
                self._negotiated(t, options_ignored(t.options), now)
            elif t.pending_oack is not None:  # C took an OACK our client would have refused
                self._negotiated(t, lenient(t.options, t.pending_oack), now)
            t.phase = TRANSFERRING
        n = t.absolute(wire)
        if t.proofs:
            self._settle_proofs(t, n, now)
        previous = t.acked
        if n <= previous:
            t.duplicates += 1
            if from_client and not t.client_heard:
                self._client_timeout(t, now)
            self._packet(t, d, packet, from_client, Note.DUPLICATE)
            return
        t.acked = n
        self._packet(t, d, packet, from_client, Note.NONE)
        if t.is_read:
            if n >= t.expected:
                # C acknowledges blocks the capture did not see arrive: it had them, so count them. Only a
                # final block is short, so a missing one counts as a full block.
                ahead, blksize = t.ahead, t.blksize
                first = missing = 0
                for k in range(t.expected, n + 1):
                    size = ahead.pop(k, None)
                    if size is None:
                        size = blksize
                        missing += 1
                        first = first or k
                    t.bytes += size
                    t.blocks += 1
                t.expected = n + 1
                # An ACK beyond anything the server can have sent is no evidence of what it sent.
                if missing and n > max(t.data_max, previous) + t.windowsize:
                    first = missing = 0
                if t.ahead_at:
                    self._settle_notes(t, first, n)
                if missing:
                    self._data_gap(t, now, first, n, missing, "client")
            if t.final is not None and n >= t.final:
                self._complete(t, now)
        else:
            sizes, blksize = t.sizes, t.blksize
            first = missing = 0
            for k in range(max(previous + 1, 1), n + 1):
                size = sizes.pop(k, None)
                if size is None:
                    size = blksize
                    missing += 1
                    first = first or k
                t.bytes += size
                t.blocks += 1
            if missing and n <= max(t.data_max, previous) + t.windowsize:
                self._data_gap(t, now, first, n, missing, "server")
            if t.final is not None and n >= t.final:
                self._complete(t, now)
            elif now - t.last_progress >= PROGRESS_INTERVAL:
                self._progress(t, now)

    def _decide_wrap(self, t: TransferState, wire: int) -> None:
        """First block past 65535: 0 is the usual rollover, 1 the one some senders use (65535 -> 1)."""
        t.wrap_decided = True
        t.wrap1 = wire == 1

    # -- capture gaps: packets the capture lacks although the transfer shows they were delivered ----------

    def _ack_proof(self, t: TransferState, n: int) -> None:
        """Fresh DATA ``n`` that no ACK in the capture allows: the sender had an ACK the capture lacks (at
        least one; the largest it can have been is n - 1). Held until the receiver's next ACK: one below
        ``n`` means the sender did not wait for it (a window bug), not that the capture lost it."""
        t.ack_floor = n - 1
        if not t.proofs:
            t.proof_first = n
        t.proofs += 1

    def _settle_proofs(self, t: TransferState, n: int, now: float) -> None:
        """The receiver's first ACK since the proofs: at or past the first of them, the capture lacks the
        ACKs they needed; below it, the sender had not waited for that ACK, so they prove nothing."""
        count, first = t.proofs, t.proof_first
        t.proofs = 0
        if n < first:
            t.ack_floor = 0
            return
        sender = "server" if t.is_read else "client"
        detail = (f"the {sender} sent DATA {t.wire(first)} with no ACK in the capture that allowed it (windowsize "
                  f"{t.windowsize}), and ACK {t.wire(n)} shows the transfer went on")
        self._capture_gap(t, now, "ACK", count, detail)

    def _settle_notes(self, t: TransferState, first: int, n: int) -> None:
        """C's ACK covers up to n: the blocks noted out of order up to n past a block the capture lacks
        (``first``) were in order where C was, so the note goes (the gap was the capture's, not the
        network's). Blocks the sender has resent since are not in ``ahead_at`` (a resend is a reaction to
        loss, so their notes stay); the rest past n wait for C's next ACK."""
        events = self.events
        for k in [k for k in t.ahead_at if k <= n]:
            index = t.ahead_at.pop(k)
            old = events[index]
            if first and k > first and isinstance(old, PacketReceived) and old.note is Note.OUT_OF_ORDER:
                events[index] = PacketReceived(old.session, old.time, old.local, old.peer, old.raw, old.packet,
                                               Note.NONE, old.detail)
                t.out_of_order -= 1

    def _data_gap(self, t: TransferState, now: float, first: int, n: int, missing: int, receiver: str) -> None:
        which = f"DATA {t.wire(first)}" if missing == 1 else f"{missing} DATA blocks from {t.wire(first)} on"
        self._capture_gap(t, now, "DATA", missing, f"ACK {t.wire(n)} from the {receiver} covers {which}, "
                                                   "which the capture lacks")

    def _capture_gap(self, t: TransferState, now: float, missing: str, count: int, detail: str) -> None:
        self.capture_gaps += count
        self.events.append(CaptureGap(t.sid, now, missing, count, detail))

    def _retransmitted(self, t: TransferState, now: float, n: int, from_client: bool) -> None:
        """A DATA block sent again: count it and extend or start the Retransmit event of its run."""
        t.retransmits += 1
        events = self.events
        if t.run_index >= 0 and n == t.run_next:
            old = events[t.run_index]
            assert isinstance(old, Retransmit)
            events[t.run_index] = Retransmit(old.session, old.time, old.reason, old.first_block, old.count + 1,
                                             old.attempt)
            t.run_next = n + 1
            return
        heard = t.server_heard if not from_client else t.client_heard
        if from_client and not heard:
            self._client_timeout(t, now)
        t.run_attempt = t.run_attempt + 1 if t.run_first == n else 1
        t.run_first = n
        t.run_next = n + 1
        t.run_index = len(events)
        events.append(Retransmit(t.sid, now, "window-gap" if heard else "timeout", t.wire(n), 1, t.run_attempt))

    def _client_timeout(self, t: TransferState, now: float) -> None:
        t.timeouts += 1
        t.client_attempt += 1
        if t.is_read:
            waiting = f"DATA {t.wire(t.expected)}"
        else:
            waiting = f"ACK {t.wire(t.data_max)}"
        self.events.append(TimedOut(t.sid, now, now - t.client_sent_at, t.client_attempt, waiting))

    # -- OACK, ERROR and what does not decode ------------------------------------------------------------

    def _other(self, t: TransferState, d: Datagram, raw: bytes, from_client: bool) -> None:
        try:
            packet: Packet | None = decode(raw)
            detail = ""
        except ProtocolError as exc:
            packet, detail = None, exc.message
        now = d.time
        if t.phase == ENDED:
            if packet is not None:
                note = Note.RETRANSMIT if isinstance(packet, OAck) and raw == t.oack_raw else Note.LATE
                self._packet(t, d, packet, from_client, note)
            return
        if packet is None:
            if from_client:
                self._sent(t, d, None, Note.MALFORMED)  # type: ignore[arg-type]
            else:
                self._received(t, d, None, Note.MALFORMED, detail)
            return
        if isinstance(packet, Error):
            self._packet(t, d, packet, from_client, Note.NONE)
            self._error(t, packet, from_client, now)
        elif isinstance(packet, OAck) and not from_client:
            self._oack(t, d, packet, raw)
        else:
            self._packet(t, d, packet, from_client, Note.UNEXPECTED)

    def _oack(self, t: TransferState, d: Datagram, packet: OAck, raw: bytes) -> None:
        now = d.time
        if t.phase != REQUESTING:
            if raw == t.oack_raw:
                t.retransmits += 1
                self.events.append(Retransmit(t.sid, now, "window-gap" if t.server_heard else "timeout", None, 1,
                                              1))
                self._received(t, d, packet, Note.RETRANSMIT)
            else:
                self._received(t, d, packet, Note.UNEXPECTED, "OACK after the transfer began")
            return
        t.oack_raw = raw
        self._received(t, d, packet, Note.NONE)
        t.phase = NEGOTIATING
        try:
            negotiated = accept_oack(t.options, packet.options, is_read=t.is_read)
        except ProtocolError:
            # Our client would refuse it; whether this one did shows in its next packet (ERROR 8 or on).
            t.pending_oack = packet.options
            self._apply(t, lenient(t.options, packet.options))
            return
        self._negotiated(t, negotiated, now)

    def _error(self, t: TransferState, packet: Error, from_client: bool, now: float) -> None:
        refused = packet.code == ErrorCode.OPTION_REFUSED and bool(t.options)
        if from_client:
            if refused and t.oack_raw is not None and t.phase == NEGOTIATING:
                self._negotiated(t, options_refused(t.options, _try_oack(t.oack_raw)), now)
            elif t.pending_oack is not None:
                self._negotiated(t, options_refused(t.options, t.pending_oack), now)
            self._end(t, Failed(t.sid, now, Reason.PROTOCOL, Side.LOCAL, packet.code,
                                packet.message or packet.code_name, t.stats(now)))
        else:
            if t.phase == REQUESTING and not t.dropped and fallback_options(packet, t.options) is not None:
                t.refusal = (packet, now)  # ended, unless the client asks again without the options
                return
            if refused and t.phase == REQUESTING:
                self._negotiated(t, options_refused(t.options, None), now)
            self._end(t, Failed(t.sid, now, Reason.PEER_ERROR, Side.PEER, packet.code,
                                packet.message or packet.code_name, t.stats(now)))

    # -- negotiation ------------------------------------------------------------------------------------

    def _begin_data(self, t: TransferState, now: float) -> None:
        """The first DATA: without an OACK the server ignored every option (RFC 2347)."""
        if t.phase == REQUESTING:
            self._negotiated(t, options_ignored(t.options), now)
        elif t.pending_oack is not None:
            self._negotiated(t, lenient(t.options, t.pending_oack), now)
        t.phase = TRANSFERRING

    def _apply(self, t: TransferState, negotiated: Negotiated) -> None:
        t.blksize = negotiated.blksize
        t.windowsize = negotiated.windowsize
        if t.is_read and negotiated.tsize is not None:
            t.total = negotiated.tsize

    def _negotiated(self, t: TransferState, negotiated: Negotiated, now: float) -> None:
        if t.dropped:
            negotiated = dataclasses.replace(negotiated, outcomes=t.dropped + negotiated.outcomes)
        t.pending_oack = None
        self._apply(t, negotiated)
        self.events.append(OptionsNegotiated(t.sid, now, negotiated))

    # -- packet events --------------------------------------------------------------------------------

    def _packet(self, t: TransferState, d: Datagram, packet: Packet, from_client: bool, note: Note) -> None:
        if from_client:
            self._sent(t, d, packet, note)
        else:
            self._received(t, d, packet, note)

    def _sent(self, t: TransferState, d: Datagram, packet: Packet, note: Note) -> None:
        now = d.time
        self.events.append(PacketSent(t.sid, now, t.client, d.dst, d.payload, packet, note))
        t.sent += 1
        t.last = now
        t.client_sent_at = now
        t.client_heard = False
        t.server_heard = True

    def _received(self, t: TransferState, d: Datagram, packet: Packet | None, note: Note, detail: str = "") -> None:
        now = d.time
        self.events.append(PacketReceived(t.sid, now, t.client, d.src, d.payload, packet, note, detail))
        if packet is not None:  # a live client does not count what it could not decode
            t.received += 1
        t.last = now
        t.client_heard = True
        t.server_heard = False
        t.client_attempt = 0

    def _progress(self, t: TransferState, now: float) -> None:
        t.last_progress = now
        self.events.append(Progress(t.sid, now, t.bytes, t.total, t.stats(now)))

    # -- endings ----------------------------------------------------------------------------------------

    def _end(self, t: TransferState, result: Completed | Failed) -> None:
        events = self.events
        if events and events[-1].time > result.time:
            self._unordered = True  # a transfer found to have stopped earlier, while others went on
        events.append(Progress(t.sid, result.time, t.bytes, t.total, result.stats))
        events.append(result)
        t.phase = ENDED
        t.finishing = False
        t.ahead = {}
        t.ahead_at = {}
        t.proofs = 0
        t.sizes = {}
        t.run_index = -1

    def _complete(self, t: TransferState, now: float) -> None:
        t.finishing = False
        self._end(t, Completed(t.sid, now, t.stats(now)))

    def _stop(self, t: TransferState, end: float, why: str | None = None) -> None:
        """The capture (or the client) moved on without this transfer ending: complete it if its final
        block was delivered, else fail it as a timeout and say what was seen last."""
        if t.finishing:
            self._complete(t, t.finish_time)
            return
        if t.pending_oack is not None:
            self._negotiated(t, lenient(t.options, t.pending_oack), t.last)
        now = t.last
        if t.tid is None:
            times = "once" if t.requests == 1 else f"{t.requests} times over {now - t.start:.1f} s"
            message = f"no reply from {_fmt(t.server)} to the {t.kind} (sent {times})"
        else:
            message = f"the transfer stopped after {t.bytes:,} bytes in {t.blocks} blocks"
        if why is not None:
            message += f": {why}"
        elif t.tid is not None:
            gap = end - t.last
            if gap < 1.0:
                message += ": the capture ends before the transfer does"
            else:
                message += f"; the capture goes on {gap:.1f} s without another packet of it"
        self._end(t, Failed(t.sid, now, Reason.TIMEOUT, Side.LOCAL, None, message, t.stats(now)))

    # -- transfers the capture joined mid-way ---------------------------------------------------------

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
        raw = d.payload
        if raw[1] == 4:
            wire = raw[2] << 8 | raw[3]
            for seen in buffered:
                p = seen.payload
                if p[1] == 3 and seen.src == dst and p[2] << 8 | p[3] == wire:
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
        t = TransferState(self._next_id, is_read, client, server, first.time)
        self._next_id += 1
        self.midstream += 1
        t.tid = server
        t.phase = TRANSFERRING
        t.blksize = max((s.orig_len - 4 for s in buffered if s.payload[1] == 3), default=DEFAULT_BLKSIZE)
        t.windowsize = 0xFFFF  # unknown; only the names of retransmit reasons depend on it
        wire = first.payload[2] << 8 | first.payload[3]
        if first.payload[1] == 3:
            t.data_max, t.acked, t.expected = wire - 1, wire - 1, wire
        else:
            t.data_max, t.acked, t.expected = wire, wire, wire + 1
        t.wrap_decided = True  # numbering from here is all the capture shows
        previous = self._by_client.get(client)
        if previous is not None and previous.phase != ENDED:
            self._stop(previous, first.time, "another exchange took over its port")
        self._transfers.append(t)
        self._by_client[client] = t
        events = self.events
        if events and events[-1].time > first.time:
            self._unordered = True
        events.append(TransferStarted(t.sid, first.time, t.role, "", "", client, server, ()))
        if first.payload[1] == 4:
            # The ACK the capture begins with acknowledges blocks it never saw: a plain ACK, not a repeat.
            self._packet(t, first, ack_packet(wire), first.src == client, Note.NONE)
            buffered = buffered[1:]
        for d in buffered:
            if d.src == client:
                self._from_client(t, d)
            else:
                self._from_server(t, d)


def _asks_again(t: TransferState, request: Request, d: Datagram) -> bool:
    """A request that falls back from the refused one: same file, kind and mode, fewer options, to the
    same server port, soon after the refusal."""
    _, when = t.refusal  # type: ignore[misc]
    first = _try_decode(t.request_raw)
    return (isinstance(first, Request) and d.dst == t.server and d.time - when <= _ASK_AGAIN_WITHIN
            and (request.opcode, request.filename, request.mode) == (first.opcode, first.filename, first.mode)
            and set(request.options) < set(t.options))


def _try_oack(raw: bytes) -> Options | None:
    packet = _try_decode(raw)
    return packet.options if isinstance(packet, OAck) else None


def _malformed(raw: bytes) -> str:
    try:
        decode(raw)
    except ProtocolError as exc:
        return exc.message
    return ""


def _event_time(event: Event) -> float:
    return event.time


def rebuild(datagrams: Iterable[Datagram]) -> list[Event]:
    """Every TFTP transfer in ``datagrams`` (in capture order) as the events a live client publishes."""
    rebuilder = Rebuilder()
    rebuilder.feed(datagrams)
    return rebuilder.finish()

