"""The passive observer: one TFTP transfer seen from outside, datagram by datagram, as the events a live
tftpdiag client would have published.

One :class:`Observer` per transfer, fed every datagram from or to its client (C) in either direction,
with the time it was seen (:meth:`Observer.feed`), then :meth:`Observer.finish` when nothing more will
come. Which datagrams belong to which transfer is the caller's business (``trace.rebuild`` for a capture
file, the capture watcher for a live one): C's address and port are the client's transfer ID, so a
datagram belongs to the transfer of the client it comes from or goes to. Sans-IO: no sockets, clocks,
threads or files; memory is bounded per transfer (a window's blocks at most), whatever the peers send.

Events are made from the CLIENT's point of view (CLIENT_READ for RRQ, CLIENT_WRITE for WRQ): a datagram
from C is a PacketSent, one to C a PacketReceived, so the views, records, summaries and findings read
an observed transfer exactly as a live probe. Rules held here (DATA and ACK are in ``observer_flow``):

- The request: read as its client sent it (``packets.seen_request``), also one our server would refuse
  (over 512 bytes, an unknown mode, odd options): the server it went to may answer it all the same, and
  its ERROR is the outcome to show. Sent again from the same port before any reply, it is C's
  retransmit (a TimedOut and a Retransmit); a different one ends this transfer (:meth:`Observer.feed`
  hands it back to the caller).
- The transfer ID: the first reply fixes it (PeerLocked), also one that does not decode from the server's
  host (C cannot take it, and a live client locks on it all the same: C's ERROR to it ends the transfer
  as C's refusal, not for want of a reply). Later replies from other addresses are STRAY
  (e.g. a second server session that answered a repeated request); C's ERROR 5 to one is an ordinary
  PacketSent. If C then sends DATA or ACK to such an address, the reply the observer saw first never
  reached C: C's choice becomes the TID (a second PeerLocked).
- Options: the OACK checked as our client would (``options.accept_oack``); one our client would refuse
  is judged by C's next packet (ERROR 8 refuses it, anything else took it). An ERROR from the server
  that refuses the request's options (ERROR 8, or text naming them) ends the transfer unless C asks
  again without them soon after (as UEFI firmware does): then the same transfer goes on (RequestRetried).
- MALFORMED: an undecodable datagram between C and the TID (PacketSent/PacketReceived with
  ``packet=None``). UNEXPECTED / LATE: decoded but out of place, or after the transfer ended.
- Copies: a datagram the capture point saw twice (a mirror port, a bridge and its member, a loop) is
  noted COPY and passed over before any rule below (``observer_copies``): no retransmit, re-ack or
  repeated request, whatever it is.
- Timeouts are C's own repeats: a request, DATA (upload) or ACK (download) C sent again without having
  heard from the server since it last sent. The server's timeouts are not the client's.
- Endings: a download completes when the final (short) block has arrived in order and C ACKs it; an
  upload when the server ACKs the final block. ERROR from the server fails it with PEER_ERROR raised by
  the PEER; ERROR from C with PROTOCOL raised LOCALly. One that just stops fails with TIMEOUT at
  :meth:`Observer.finish`, saying how long the capture went on after it.
"""

from __future__ import annotations

from tftpdiag.fmt import address  # pure text: the one way an address is written
from tftpdiag.protocol.client import dropped_options, fallback_options
from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.events import (
    Event,
    Failed,
    Note,
    PacketReceived,
    PeerLocked,
    Reason,
    RequestRetried,
    Retransmit,
    Side,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.observer_flow import ObserverFlow
from tftpdiag.protocol.observer_state import (
    ENDED,
    NEGOTIATING,
    REQUESTING,
    TRANSFERRING,
    lenient,
)
from tftpdiag.protocol.options import (
    accept_oack,
    option_number,
    options_refused,
)
from tftpdiag.protocol.packets import (
    Error,
    ErrorCode,
    OAck,
    Options,
    Packet,
    ProtocolError,
    Request,
    ack_packet,
    decode,
    head,
    seen_request,
)

__all__ = ["Observer", "ASK_AGAIN_WITHIN", "FINISH_WAIT", "MAX_HELD"]

ASK_AGAIN_WITHIN = 30.0  # seconds after a refusal of its options in which a client's new request falls back
FINISH_WAIT = 5.0  # tick(): seconds a delivered final block waits for C's ACK before the transfer is complete
# A transfer whose last packet came this close to the capture's end was cut by it, not given up on (the
# devices of a finished trace read it so too: devices.py).
CUT_WITHIN = 1.0
MAX_HELD = 4096  # take(): events held back for a later change at most; past it, the change is given up


class Observer(ObserverFlow):
    """One transfer, fed datagrams in the order they were seen. Make it with :meth:`request` (a request
    seen) or :meth:`joined` (an exchange seen without its request); events go to ``sink`` (a list shared
    with other observers, as a capture file's) or to this observer's own list, which :meth:`take` empties.
    """

    __slots__ = ()

    @classmethod
    def request(cls, sid: int, d: Datagram, request: Request, sink: list[Event] | None = None) -> Observer:
        """The transfer ``request`` (decoded from ``d``) starts, from ``d.src`` to ``d.dst``."""
        obs = cls(sid, request.is_read, d.src, d.dst, d.time, sink)
        obs.request_raw = d.payload
        obs.options = request.options
        obs.requests = 1
        obs._copied(d, True)  # remembered: its copy is no retransmit
        if not request.is_read:
            obs.total = option_number(request.option("tsize"))
        obs.events.append(TransferStarted(sid, d.time, obs.role, request.filename, request.mode, d.src, d.dst,
                                          request.options, observed=True))
        obs._sent(d, request, Note.NONE)
        return obs

    @classmethod
    def joined(cls, sid: int, first: Datagram, client: Address, server: Address, *, is_read: bool, blksize: int,
               sink: list[Event] | None = None) -> Observer:
        """A transfer already under way, recognised from DATA and the ACK of the same block (``first`` is the
        first of them seen): no file name and no options are known, the block size is the largest block's,
        bytes count from the first block seen, and block numbers from the first one seen."""
        obs = cls(sid, is_read, client, server, first.time, sink)
        obs.midstream = True
        obs.tid = server
        obs.phase = TRANSFERRING
        obs.windowsize = 0xFFFF  # unknown; only the names of retransmit reasons depend on it
        raw = first.payload
        op, wire = head(raw)
        is_data = op == 3
        # No rollover is known before what the capture shows: the first number seen is where counting starts.
        if is_data:
            obs.data_max, obs.acked, obs.expected = wire - 1, wire - 1, wire
        else:
            obs.data_max, obs.acked, obs.expected = wire, wire, wire + 1
        obs.wrap_decided = True
        obs.events.append(TransferStarted(sid, first.time, obs.role, "", "", client, server, (), observed=True))
        obs._blocks_show(blksize, first.time)
        if is_data:
            obs.feed(first)
        else:
            # The ACK the capture begins with acknowledges blocks it never saw: a plain ACK, not a repeat.
            obs._copied(first, first.src == client)
            obs._packet(first, ack_packet(wire), first.src == client, Note.NONE)
        return obs

    # -- feeding ------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Ended (completed or failed): what it is still fed is LATE or a repeat."""
        return self.phase == ENDED and self.refusal is None

    def feed(self, d: Datagram) -> Request | None:
        """One datagram from or to the client, in the order seen. Returns None, or a new request from the
        client's port that is not this transfer's: this one has ended, and the caller starts another."""
        if d.src == self.client:
            return self.from_client(d)
        self.to_client(d)
        return None

    def from_client(self, d: Datagram) -> Request | None:
        """:meth:`feed` for a caller that knows ``d`` comes from the client (as its lookup found it)."""
        if self._copied(d, True):
            return None
        raw = d.payload
        op, wire = head(raw)
        # DATA and ACK between the client and the TID go straight to their rules: the hot path.
        if d.dst == self.tid and not self.finishing:
            if op == 4:
                self._ack(d, wire, True)
                return None
            if op == 3:
                self._data(d, raw, wire, True)
                return None
        return self._client_other(d, op, wire)

    def to_client(self, d: Datagram) -> None:
        """:meth:`feed` for a caller that knows ``d`` goes to the client."""
        if self._copied(d, False):
            return
        raw = d.payload
        op, wire = head(raw)
        if d.src == self.tid and not self.finishing:
            if op == 3:
                self._data(d, raw, wire, False)
                return
            if op == 4:
                self._ack(d, wire, False)
                return
        self._server_other(d, op, wire)

    def tick(self, now: float) -> None:
        """Time passed with nothing fed (a live capture): settle what only a later datagram would settle
        in a file. A refusal C did not follow by asking again ends the transfer; a delivered final block
        whose ACK did not come completes it."""
        if self.refusal is not None and now - self.refusal[1] > ASK_AGAIN_WITHIN:
            self._refused()
        elif self.finishing and now - self.finish_time > FINISH_WAIT:
            self._complete(self.finish_time)

    def finish(self, now: float) -> None:
        """Nothing more will come (the capture ended at ``now``): end the transfer if it has not ended."""
        if self.refusal is not None:
            self._refused()
        elif self.phase != ENDED:
            self._stop(now)

    def take(self) -> list[Event]:
        """The events that can no longer change, oldest first, taken out of this observer's own list (a
        later block can still extend a Retransmit event or take back an out-of-order note: those and what
        follows them wait, up to MAX_HELD events)."""
        if not self._own:
            raise ValueError("take() is for an observer with its own event list, not a shared sink")
        events = self.events
        keep = len(events)
        if self.run_index >= 0:
            keep = min(keep, self.run_index - self._base)
        if self.ahead_at:
            keep = min(keep, min(self.ahead_at.values()) - self._base)
        if len(events) - keep > MAX_HELD:
            self.run_index = -1  # a later resend starts a new Retransmit event
            self.ahead_at.clear()  # the notes stay
            keep = len(events)
        out = events[:keep]
        del events[:keep]
        self._base += keep
        return out

    # -- dispatch -------------------------------------------------------------------------------------

    def _client_other(self, d: Datagram, op: int, wire: int) -> Request | None:
        if self.finishing and not (op == 4 and d.dst == self.tid):
            self._complete(self.finish_time)
        if op == 1 or op == 2:
            return self._client_request(d)
        dst = d.dst
        if dst != (self.tid if self.tid is not None else self.server):
            if not ((op == 3 or op == 4) and self.strays is not None and dst in self.strays and self.phase != ENDED):
                # C talking to someone else: its ERROR 5 to a stray server session, say. Keep what decodes.
                packet = _try_decode(d.payload)
                if packet is not None:
                    self._sent(d, packet, Note.NONE)
                return None
            # C carries on with a session seen as stray: the reply seen first never reached C (lost after
            # the capture point), so C's choice of transfer ID wins.
            self._lock(dst, d.time)
        if op == 3:
            self._data(d, d.payload, wire, True)
        elif op == 4:
            self._ack(d, wire, True)
        else:
            self._other(d, True)
        return None

    def _server_other(self, d: Datagram, op: int, wire: int) -> None:
        raw = d.payload
        src = d.src
        if self.finishing:
            self._complete(self.finish_time)
        tid = self.tid
        if tid is None:
            try:
                packet: Packet = decode(raw)
            except ProtocolError as exc:
                if src[0] == self.server[0] and self.phase != ENDED:
                    # The server's answer all the same, one C cannot take (a live client locks on it and
                    # refuses it with an ERROR): what C sends it next is to its transfer ID, not a stranger.
                    self._lock(src, d.time)
                    self._received(d, None, Note.MALFORMED, exc.message)
                return
            if isinstance(packet, Request):
                return
            self._lock(src, d.time)
        elif src != tid:
            stray = _try_decode(raw)
            if stray is not None and not isinstance(stray, Request):
                if self.strays is None:
                    self.strays = set()
                if len(self.strays) < 64:
                    self.strays.add(src)
                self.stray += 1  # not in ``received``: like a live client, that counts packets of its peer
                self.events.append(PacketReceived(self.sid, d.time, self.client, src, raw, stray, Note.STRAY,
                                                  "unknown transfer ID"))
            return
        if op == 3:
            self._data(d, raw, wire, False)
        elif op == 4:
            self._ack(d, wire, False)
        else:
            self._other(d, False)

    def _lock(self, tid: Address, now: float) -> None:
        self.tid = tid
        self.events.append(PeerLocked(self.sid, now, tid, self.server))

    # -- requests -------------------------------------------------------------------------------------

    def _client_request(self, d: Datagram) -> Request | None:
        raw = d.payload
        if self.phase != ENDED and raw == self.request_raw and d.dst == self.server:
            self._request_again(d)
            return None
        packet = seen_request(raw)
        if packet is None:
            if self.phase != ENDED and d.dst == self.server:
                self._sent(d, None, Note.MALFORMED)
            return None
        if self.refusal is not None:
            if self._asks_again(packet, d):
                self._asked_again(d, packet)
                return None
            self._refused()
        if self.phase != ENDED:
            self._stop(d.time, f"the client gave up and sent a new {packet.opcode.name} from the same port")
        return packet

    def _request_again(self, d: Datagram) -> None:
        """The same request from the same port before the transfer ended: the client retransmitted it."""
        now = d.time
        self.requests += 1
        self.timeouts += 1
        self.client_attempt += 1
        self.events.append(TimedOut(self.sid, now, now - self.client_sent_at, self.client_attempt,
                                    f"reply to {self.kind}"))
        self.retransmits += 1
        self.events.append(Retransmit(self.sid, now, "timeout", None, 1, self.client_attempt))
        self._sent(d, seen_request(d.payload), Note.RETRANSMIT)

    def _asks_again(self, request: Request, d: Datagram) -> bool:
        """A request that falls back from the refused one: same file, kind and mode, fewer options, to the
        same server port, soon after the refusal."""
        assert self.refusal is not None
        first = seen_request(self.request_raw)
        return (first is not None and d.dst == self.server
                and d.time - self.refusal[1] <= ASK_AGAIN_WITHIN
                and (request.opcode, request.filename, request.mode) == (first.opcode, first.filename, first.mode)
                and set(request.options) < set(self.options))

    def _asked_again(self, d: Datagram, request: Request) -> None:
        """The client asked again without the options the server refused (as ClientRead does): the same
        transfer goes on with a new request, which the server answers from a new transfer ID."""
        assert self.refusal is not None
        error = self.refusal[0]
        self.refusal = None
        self.dropped = dropped_options(error, self.options, request.options)
        self.events.append(RequestRetried(self.sid, d.time, error.code, error.message, self.options,
                                          request.options))
        self.options = request.options
        self.request_raw = d.payload
        self.tid = None
        self.requests = 1
        self.client_sent_at = d.time
        self.client_attempt = 0
        self._sent(d, request, Note.NONE)

    def _refused(self) -> None:
        """The client did not ask again: the server's ERROR ended the transfer when it came."""
        assert self.refusal is not None
        error, when = self.refusal
        self.refusal = None
        if self.events and self.events[-1].time > when:
            self.unordered = True
        if error.code == ErrorCode.OPTION_REFUSED:
            self._negotiated(options_refused(self.options, None), when)
        self._end(Failed(self.sid, when, Reason.PEER_ERROR, Side.PEER, error.code, error.message or error.code_name,
                         self.stats(when)))

    # -- OACK, ERROR and what does not decode ------------------------------------------------------------

    def _other(self, d: Datagram, from_client: bool) -> None:
        raw = d.payload
        try:
            packet: Packet | None = decode(raw)
            detail = ""
        except ProtocolError as exc:
            packet, detail = None, exc.message
        if self.phase == ENDED:
            if packet is not None:
                note = Note.RETRANSMIT if isinstance(packet, OAck) and raw == self.oack_raw else Note.LATE
                self._packet(d, packet, from_client, note)
            return
        if packet is None:
            if from_client:
                self._sent(d, None, Note.MALFORMED)
            else:
                self._received(d, None, Note.MALFORMED, detail)
            return
        if isinstance(packet, Error):
            self._packet(d, packet, from_client, Note.NONE)
            self._error(packet, from_client, d.time)
        elif isinstance(packet, OAck) and not from_client:
            self._oack(d, packet)
        else:
            self._packet(d, packet, from_client, Note.UNEXPECTED)

    def _oack(self, d: Datagram, packet: OAck) -> None:
        now, raw = d.time, d.payload
        if self.phase != REQUESTING:
            if raw == self.oack_raw:
                self.retransmits += 1
                # Only the server's timer sends its OACK again (it is no window, so no window's gap): the
                # client's ACK 0 went missing, maybe past the capture point where the capture saw it.
                self.events.append(Retransmit(self.sid, now, "timeout", None, 1, 1))
                self._received(d, packet, Note.RETRANSMIT)
            else:
                self._received(d, packet, Note.UNEXPECTED, "OACK after the transfer began")
            return
        self.oack_raw = raw
        self._received(d, packet, Note.NONE)
        self.phase = NEGOTIATING
        try:
            negotiated = accept_oack(self.options, packet.options, is_read=self.is_read)
        except ProtocolError:
            # Our client would refuse it; whether this one did shows in its next packet (ERROR 8 or on).
            self.pending_oack = packet.options
            self._apply(lenient(self.options, packet.options))
            return
        self._negotiated(negotiated, now)

    def _error(self, packet: Error, from_client: bool, now: float) -> None:
        refused = packet.code == ErrorCode.OPTION_REFUSED and bool(self.options)
        if from_client:
            if refused and self.oack_raw is not None and self.phase == NEGOTIATING:
                self._negotiated(options_refused(self.options, _oack_options(self.oack_raw)), now)
            elif self.pending_oack is not None:
                self._negotiated(options_refused(self.options, self.pending_oack), now)
            self._end(Failed(self.sid, now, Reason.PROTOCOL, Side.LOCAL, packet.code,
                             packet.message or packet.code_name, self.stats(now)))
            return
        if self.phase == REQUESTING and not self.dropped and fallback_options(packet, self.options) is not None:
            self.refusal = (packet, now)  # ended, unless the client asks again without the options
            return
        if refused and self.phase == REQUESTING:
            self._negotiated(options_refused(self.options, None), now)
        self._end(Failed(self.sid, now, Reason.PEER_ERROR, Side.PEER, packet.code, packet.message or packet.code_name,
                         self.stats(now)))

    # -- a transfer that stops -------------------------------------------------------------------------

    def _stop(self, end: float, why: str | None = None) -> None:
        """The capture (or the client) moved on without this transfer ending: complete it if its final
        block was delivered, else fail it as a timeout and say what was seen last."""
        if self.finishing:
            self._complete(self.finish_time)
            return
        if self.pending_oack is not None:
            self._negotiated(lenient(self.options, self.pending_oack), self.last)
        now = self.last
        if self.tid is None:
            times = "once" if self.requests == 1 else f"{self.requests} times over {now - self.start:.1f} s"
            message = f"no reply from {address(self.server)} to the {self.kind} (sent {times})"
        else:
            message = (f"the transfer stopped after {self.bytes:,} byte{'' if self.bytes == 1 else 's'} in "
                       f"{self.blocks:,} block{'' if self.blocks == 1 else 's'}")
        if why is not None:
            message += f": {why}"
        elif self.tid is not None:
            gap = end - self.last
            if gap < CUT_WITHIN:
                message += ": the capture ends before the transfer does"
            else:
                message += f"; the capture goes on {gap:.1f} s without another packet of it"
        self._end(Failed(self.sid, now, Reason.TIMEOUT, Side.LOCAL, None, message, self.stats(now)))

    def stop(self, now: float, why: str) -> None:
        """The caller saw this transfer's port taken over by another exchange: end it, saying ``why``."""
        if self.refusal is not None:
            self._refused()
        elif self.phase != ENDED:
            self._stop(now, why)


def _try_decode(raw: bytes) -> Packet | None:
    try:
        return decode(raw)
    except ProtocolError:
        return None


def _oack_options(raw: bytes) -> Options | None:
    packet = _try_decode(raw)
    return packet.options if isinstance(packet, OAck) else None


