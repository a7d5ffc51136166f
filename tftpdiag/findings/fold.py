"""The event fold: each event of a session updates its :class:`SessionState`.

The fold is the hot path (it sees every event of every session), so the common events, an in-order
DATA or ACK and our own fresh DATA or ACK, touch a handful of attributes and return; everything else
goes through :func:`rx_rare` / :func:`tx_rare`. A handler returns True when the rules should look at
the session again (something a finding may depend on has changed).
"""

from __future__ import annotations

from tftpdiag.findings.fold_runs import on_run
from tftpdiag.findings.model import describe
from tftpdiag.findings.netascii_scan import scan
from tftpdiag.findings.session_state import LOG_CAP, QUICK, RTT_WAITING, SessionState
from tftpdiag.protocol.events import (
    CaptureGap,
    Completed,
    Failed,
    Note,
    OptionsNegotiated,
    PacketReceived,
    PacketSent,
    PeerLocked,
    Progress,
    RequestRefused,
    RequestRetried,
    Retransmit,
    SocketError,
    TimedOut,
    TransferStarted,
)
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Packet, Request

_NONE = Note.NONE
_DUP = Note.DUPLICATE
_RETX = Note.RETRANSMIT
_REACK = Note.REACK
_COPY = Note.COPY


def on_started(s: SessionState, ev: TransferStarted) -> bool:
    s.t0 = min(s.t0, ev.time)
    s.last_time = ev.time
    role = ev.role
    s.role = role
    s.client_side = role.is_client
    s.receiver = s.client_side == role.is_download  # a client that downloads, a server that takes an upload
    s.filename, s.mode = ev.filename, (ev.mode or "octet")
    s.local, s.peer = ev.local, ev.peer
    s.requested = tuple(ev.requested)
    s.req = dict(ev.requested)
    s.scan = s.mode == "netascii"
    s.observed = ev.observed
    if s.client_side:
        s.locked = None
    return False


def _first_movement(s: SessionState, t: float, size: int) -> None:
    if s.first_move is None:
        s.first_move = t
        s.first_data_t = t
        s.first_data_len = size


def _sample(s: SessionState, t: float) -> None:
    """One round trip: from our fresh DATA or ACK to the answer it drew."""
    fresh = s.fresh_t
    if fresh is not None:
        s.fresh_t = None
        samples = s.rtt_samples
        samples.append(t - fresh)
        if len(samples) >= RTT_WAITING:
            s.smooth_rtt()


def on_rx(s: SessionState, ev: PacketReceived) -> bool:
    # The ordinary case (an in-order DATA or ACK from the peer) is on_run's alone: one home for it.
    if on_run(s, (ev,)):
        return False
    s.last_time = ev.time
    return rx_rare(s, ev)


def _loss_hint(s: SessionState, t: float) -> None:
    if not s.episode_open:
        s.episodes += 1
        s.episode_open = True


def rx_rare(s: SessionState, ev: PacketReceived) -> bool:
    t, p, note = ev.time, ev.packet, ev.note
    if note is _COPY:
        return _copy(s, t, p, True)
    if isinstance(p, Request):
        return _request_received(s, ev, p)
    if note is not Note.STRAY and note is not Note.LATE and s.peer_answered is None:
        s.peer_answered = t
    if note is _NONE:
        if isinstance(p, Data):
            if not s.receiver:
                _unexpected(s, t, p, ev.detail or "DATA sent to the sending side")
                return True
            return _moved(s, t, p)
        if isinstance(p, Ack):
            if s.receiver:
                _unexpected(s, t, p, ev.detail or "ACK sent to the receiving side")
                return True
            if p.block == 0 and s.acks_rx == 0 and s.ack0_t is None:
                s.ack0_t = t  # the answer to our OACK (server read), or to a WRQ (client write)
                s.fresh_t = None
                s.last_move = t
                return True
            return _moved(s, t, p)
        if isinstance(p, OAck):
            if len(s.oacks_rx) < LOG_CAP:
                s.oacks_rx.append((t, p.options, note, ev.detail))
            return True
        if isinstance(p, Error):
            s.err_rx = (t, p.code, p.message)
            return True
        if p is None:
            s.malformed += 1
            _unexpected(s, t, p, ev.detail or "undecodable")
            return True
        return True
    # (A re-ack received comes only in a capture of an upload: the server's ACK again, answering C's DATA
    # sent again. A resend of the peer's, as its retransmit is.)
    if note is _DUP or note is _RETX or note is _REACK:
        # A capture's resend whose first copy it lacks (lost before the capture point) is also the one that
        # moves the transfer: an ACK past the last one, or in lock-step the receiver's next block. (In a
        # window that block comes with the rest of the window sent again, which the quick test would take
        # for copies once it moved: there the next fresh block moves it, as it always did.)
        moves = note is _RETX and (
            (isinstance(p, Ack) and not s.receiver and 0 < (p.block - (s.pos or 0)) & 0xFFFF < 0x8000)
            or (isinstance(p, Data) and s.receiver and s.windowsize == 1 and p.block == ((s.pos or 0) + 1) & 0xFFFF))
        ref = s.last_move if s.last_move is not None else s.peer_answered
        quick = ref is not None and t - ref < QUICK and not s.episode_open
        if quick:
            s.dup_quick += 1
        else:
            s.peer_resends += 1
            if not s.episode_open:
                s.quiet_episodes += 1
            _loss_hint(s, t)
            if s.windowsize == 1:
                # In lock-step the peer's resend answers the loss it waited on: that episode ends here, and
                # a wait after it is another datagram gone missing (the resend, or our answer to it).
                s.episode_open = False
        if moves and isinstance(p, (Data, Ack)):
            # A resend, then the movement it also is (and no Sorcerer's Apprentice's answer to a repeated
            # ACK: a first copy lost before the capture point is all it tells).
            if isinstance(p, Data):
                s.dup_data += 1
            else:
                s.dup_ack += 1
            if s.dup_first is None:
                s.dup_first = (t, describe(p))
            return _moved(s, t, p)
        if isinstance(p, Data):
            s.dup_data += 1
            if s.dupack_block is not None and p.block == (s.dupack_block + 1) & 0xFFFF and s.windowsize == 1:
                s.dupack_block = None
                if s.sas_first is None:
                    s.sas_first = (t, p.block)
                    s.sas_base = s.data_rx
                s.sas_hits += 1
        elif isinstance(p, Ack):
            s.dup_ack += 1
        else:
            s.dup_other += 1
            if isinstance(p, OAck) and len(s.oacks_rx) < LOG_CAP:
                s.oacks_rx.append((t, p.options, note, ev.detail))
                return True
        if s.dup_first is None:
            s.dup_first = (t, describe(p))
        return False
    if note is Note.OUT_OF_ORDER:
        s.ooo += 1
        if s.ooo_first is None:
            s.ooo_first = (t, describe(p))
        if isinstance(p, Data) and s.ack_tx is not None and 0 < (p.block - s.ack_tx) & 0xFFFF < 0x8000 and \
                (p.block - s.ack_tx) & 0xFFFF > s.windowsize:
            # No loss or reordering can bring a block the window does not allow yet: the sender overran.
            s.overrun += 1
            if s.overrun_first is None:
                s.overrun_first = (t, p.block, s.ack_tx)
            return s.overrun == 1
        _loss_hint(s, t)
        return False
    if note is Note.STRAY:
        s.stray += 1
        addr = ev.peer
        count = s.stray_from.get(addr)
        if count is None:
            if len(s.stray_from) < 16:
                s.stray_from[addr] = 1
            if s.stray_first is None:
                s.stray_first = (t, addr, p)
        else:
            s.stray_from[addr] = count + 1
        return s.stray == 1
    if note is Note.LATE:
        s.late += 1
        if len(s.late_log) < LOG_CAP:
            s.late_log.append((t, p))
            return True
        return False
    if note is Note.MALFORMED:
        s.malformed += 1
    if isinstance(p, OAck) and len(s.oacks_rx) < LOG_CAP:
        s.oacks_rx.append((t, p.options, note, ev.detail))
    _unexpected(s, t, p, ev.detail)
    return True


def _copy(s: SessionState, t: float, p: Packet | None, received: bool) -> bool:
    """A capture's datagram seen again, asked for by nothing (Note.COPY): counted as that, and nothing
    else. No end sent it again, so it is no resend, no loss, no repeated ACK that DATA again would answer,
    no answer from either end. Whether it is the capture point's copy or a duplicate the share says
    (SessionState.doubled). Counted after the end too (the copy of a final ACK comes after it), so the
    copies said are all of them, against each end's packets (Rule.after_end)."""
    if received:
        if p is None:
            return False  # as the observer counts them: a packet received is one that decodes
        s.copies_rx += 1
    else:
        s.copies_tx += 1
    if s.copy_first is None:
        s.copy_first = (t, describe(p))
    if s.result is not None:
        s.copies_late = True  # capture-doubled's tally moved on; the other findings stay as the end made them
    return False


def _moved(s: SessionState, t: float, p: Data | Ack) -> bool:
    """The peer's DATA or ACK moved the transfer (on_run takes the ordinary ones; these come one by one)."""
    if isinstance(p, Data):
        _first_movement(s, t, len(p.payload))
        s.data_rx += 1
        moved = s.data_rx
    else:
        s.acks_rx += 1
        moved = s.acks_rx
    s.pos = p.block
    s.last_move = t
    s.episode_open = False
    _sample(s, t)
    if s.scan and isinstance(p, Data):
        scan(s, p.payload, p.block)
    return moved == 1


def _unexpected(s: SessionState, t: float, p: Packet | None, detail: str) -> None:
    if len(s.unexpected) < LOG_CAP:
        s.unexpected.append((t, describe(p), detail))


def _request_received(s: SessionState, ev: PacketReceived, p: Request) -> bool:
    s.requests_rx += 1
    if s.requests_rx == 1:
        s.request = p
        s.listen = ev.local
        s.request_times.append(ev.time)
        if s.role is None:
            s.client_side = False
            s.receiver = not p.is_read
            s.peer = ev.peer
            s.filename, s.mode = p.filename, p.mode
            s.requested, s.req = p.options, dict(p.options)
        return True
    if len(s.request_times) < LOG_CAP:
        s.request_times.append(ev.time)
    s.dup_other += 1
    if s.dup_first is None:
        s.dup_first = (ev.time, "request repeated")
    return False


def on_tx(s: SessionState, ev: PacketSent) -> bool:
    # The ordinary case (our own fresh ACK or DATA) is on_run's alone, as for on_rx.
    if on_run(s, (ev,)):
        return False
    s.last_time = ev.time
    return tx_rare(s, ev)


def tx_rare(s: SessionState, ev: PacketSent) -> bool:
    t, p, note = ev.time, ev.packet, ev.note
    if note is _COPY:
        return _copy(s, t, p, False)
    s.peer_resends = s.quiet_episodes = 0  # this end answered (see SessionState.peer_resends)
    if isinstance(p, Request):
        s.requests_tx += 1
        if s.requests_tx == 1:
            s.request = p
        if len(s.request_times) < LOG_CAP:
            s.request_times.append(t)
        return False
    if isinstance(p, Ack):
        s.ack_tx = p.block
        if note is _NONE:
            s.fresh_t = t
            if p.block == 0 and s.ack0_t is None and s.data_rx == 0:
                s.ack0_t = t  # accepting the OACK of a read, or a server taking an upload
                return True
        else:
            s.fresh_t = None
            s.dupack_block = p.block
        return False
    if isinstance(p, Data):
        if note is _NONE:
            s.data_tx += 1
            s.data_tx_block = p.block
            s.fresh_t = t
            if s.first_data_len is None:
                s.first_data_len = len(p.payload)
                s.first_data_t = t
            if s.scan:
                scan(s, p.payload, p.block)
            return s.data_tx == 1
        s.fresh_t = None
        return False
    if isinstance(p, OAck):
        s.oack_tx += 1
        if len(s.oack_tx_times) < LOG_CAP:
            s.oack_tx_times.append(t)
        return s.oack_tx == 1
    if isinstance(p, Error):
        s.err_tx = (t, p.code, p.message)
        if ev.peer in s.stray_from:
            s.stray_answered += 1
        return True
    return False


def on_locked(s: SessionState, ev: PeerLocked) -> bool:
    s.last_time = ev.time
    if s.locked is None:
        s.lock_time = ev.time
        # Requests resent before the first answer were lost (or the answers were).
        s.episodes += s.req_timeouts
    s.locked = ev.peer
    if s.client_side and s.peer is None:
        s.peer = ev.requested
    return True


def on_retried(s: SessionState, ev: RequestRetried) -> bool:
    """The server refused our options and we asked again without them: from here the session is judged
    as the new request's transfer, and the refusal is kept for its own finding."""
    s.last_time = ev.time
    s.retried = (ev, s.request_times[0] if s.request_times else s.t0)
    s.requested = tuple(ev.requested)
    s.req = dict(ev.requested)
    s.request = None
    s.requests_tx = 0
    s.request_times = []
    s.req_timeouts = 0
    s.locked = None
    s.lock_time = None
    s.err_rx = None
    s.negotiated = None
    s.neg_time = None
    return True


def on_negotiated(s: SessionState, ev: OptionsNegotiated) -> bool:
    s.last_time = ev.time
    n = ev.negotiated
    s.negotiated = n
    s.neg_time = ev.time
    s.blksize = n.blksize
    s.windowsize = n.windowsize
    s.tsize = n.tsize
    if n.tsize is not None:
        s.total = n.tsize
    return True


def on_timeout(s: SessionState, ev: TimedOut) -> bool:
    s.last_time = ev.time
    s.n_timeouts += 1
    s.last_timeout = ev
    if len(s.timeouts) < LOG_CAP:
        s.timeouts.append(ev)
    if s.client_side and s.locked is None:
        s.req_timeouts += 1
    else:
        if s.open_since != s.last_move or s.open_timeouts == 0:
            s.open_since = s.last_move
            s.open_timeouts = 0
        s.open_timeouts += 1
        # One missing datagram is one loss however many timeouts it takes to recover: a peer that
        # (rightly) ignores our repeats answers only on its own, longer timer. The episode is open
        # until the transfer moves again.
        _loss_hint(s, ev.time)
    s.fresh_t = None
    return True


def on_retransmit(s: SessionState, ev: Retransmit) -> bool:
    s.last_time = ev.time
    s.fresh_t = None
    if ev.reason == "window-gap":
        s.window_gaps += 1
        _loss_hint(s, ev.time)
    return False


def on_progress(s: SessionState, ev: Progress) -> bool:
    s.last_time = ev.time
    s.bytes = ev.bytes
    if ev.total is not None:
        s.total = ev.total
    s.stats = ev.stats
    if ev.time - s.eval_t >= 0.2:
        s.eval_t = ev.time
        return True
    return False


def on_end(s: SessionState, ev: Completed | Failed) -> bool:
    s.last_time = ev.time
    s.result = ev
    s.stats = ev.stats
    s.bytes = ev.stats.bytes
    s.copies_end = (s.copies_rx, s.copies_tx)  # what the final figures were made with (SessionState.doubled)
    return True


def on_refused(s: SessionState, ev: RequestRefused) -> bool:
    s.last_time = ev.time
    s.refused = ev
    if s.role is None:
        s.client_side = False
        s.receiver = not ev.is_read
        s.peer = ev.peer
        s.filename = ev.filename
    return True


def on_socket_error(s: SessionState, ev: SocketError) -> bool:
    s.last_time = ev.time
    if len(s.sock_errors) < LOG_CAP:
        s.sock_errors.append(ev)
    return True


def on_capture_gap(s: SessionState, ev: CaptureGap) -> bool:
    s.last_time = ev.time
    if ev.missing == "DATA":
        s.gap_data += ev.count
        if s.receiver:
            s.data_rx += ev.count  # they arrived in order where the receiver was
    else:
        s.gap_ack += ev.count
    if len(s.gap_log) < LOG_CAP:
        s.gap_log.append((ev.time, ev.detail))
    return True


def ignore(s: SessionState, ev: object) -> bool:
    return False
