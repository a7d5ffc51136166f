"""The ordinary case of the event fold, a run at a time: consecutive DATA and ACKs of one session that
are what on_rx and on_tx (findings/fold.py) take without a second look, folded in one loop and stored
once, from events (:func:`on_run`) or from a run in columns (:func:`on_columns`, a transfer run apart:
protocol/events.py's PacketRun). Either returns False, having changed nothing, for a run holding
anything else; its events then go one by one through fold.py. (tests/findings/test_fold_runs.py holds
runs of every length, in both forms, to the same state as single events.)
"""

from __future__ import annotations

from collections.abc import Sequence

from tftpdiag.findings.netascii_scan import scan
from tftpdiag.findings.session_state import RTT_WAITING, SessionState
from tftpdiag.protocol.events import RUN_ACK, RUN_RECEIVED, Note, PacketReceived, PacketRun, PacketSent
from tftpdiag.protocol.packets import Ack, Data

__all__ = ["on_run", "on_columns"]

_NONE = Note.NONE


def on_run(s: SessionState, run: Sequence[PacketReceived | PacketSent]) -> bool:
    """A run of the session's packet events (:mod:`tftpdiag.packetruns`) folded in one loop, when every
    one of them is what :func:`on_rx` and :func:`on_tx` take without a second look (an in-order DATA or
    ACK, our own fresh ACK or DATA, in a transfer past its first block): the same updates, kept in
    locals and stored once, without a call and two dict lookups per event. Returns False, having
    changed nothing, when the run holds anything else: then its events go one by one through on_rx and
    on_tx, which hand each here first (a run of one), so that the ordinary case has this one home,
    and the rest to rx_rare and tx_rare. (tests/findings/test_fold_runs.py holds runs of every length
    to the same state, after every batch.)"""
    receiver = s.receiver
    theirs: type[Data | Ack]
    ours: type[Data | Ack]
    if receiver:
        if not s.data_rx:
            return False
        theirs, ours = Data, Ack
    else:
        if not (s.acks_rx and s.data_tx):
            return False
        theirs, ours = Ack, Data
    fresh = s.fresh_t
    samples: list[float] = []
    received = 0
    moved_t = pos = ours_block = None
    t = 0.0
    # Each attribute is read in the branch of its event's type: a line that sees one type keeps the
    # interpreter's specialised (cheap) attribute load, one that sees both falls back to the generic one.
    for ev in run:
        if type(ev) is PacketReceived:
            p = ev.packet
            if ev.note is not _NONE or type(p) is not theirs:
                return False
            received += 1
            pos = p.block
            moved_t = t = ev.time
            if fresh is not None:
                samples.append(t - fresh)  # a round trip: our packet, then this answer
                fresh = None
        else:
            # (An ACK of block 0, at a rollover, goes the long way in on_tx, and changes the same things.)
            q = ev.packet
            if ev.note is not _NONE or type(q) is not ours:
                return False
            fresh = t = ev.time
            ours_block = q.block
    _store_run(s, received, len(run) - received, pos, moved_t, ours_block, fresh, t, samples)
    if s.scan:
        for ev in run:
            p = ev.packet
            if type(p) is Data:
                scan(s, p.payload, p.block)
    return True


def _store_run(s: SessionState, received: int, sent: int, pos: int | None, moved_t: float | None,
               ours_block: int | None, fresh: float | None, t: float, samples: list[float]) -> None:
    """What a run of ordinary packets changes (on_run, on_columns): stored once, for the whole run."""
    receiver = s.receiver
    if received:
        if receiver:
            s.data_rx += received
        else:
            s.acks_rx += received
        s.pos = pos
        s.last_move = moved_t
        s.episode_open = False
    if sent:
        s.peer_resends = s.quiet_episodes = 0  # this end answered (see SessionState.peer_resends)
        if receiver:
            s.ack_tx = ours_block
        else:
            s.data_tx += sent
            s.data_tx_block = ours_block
    s.fresh_t = fresh
    s.last_time = t
    if samples:
        waiting = s.rtt_samples
        waiting += samples
        if len(waiting) >= RTT_WAITING:
            s.smooth_rtt()


# The tags (protocol/events.py) of a run on_columns takes, by the session's side: the peer's packet and
# ours, each DATA or ACK as the transfer's direction has it, neither with a note.
_RECEIVER_TAGS = bytes((RUN_RECEIVED, RUN_ACK))  # their DATA, our ACK
_SENDER_TAGS = bytes((RUN_RECEIVED | RUN_ACK, 0))  # their ACK, our DATA
# Our packet's tag, and the peer's, by ours (the receiver's ACK, the sender's DATA), for the tags' searches.
_OURS = {RUN_ACK: bytes((RUN_ACK,)), 0: bytes((0,))}
_THEIRS = {RUN_ACK: bytes((RUN_RECEIVED,)), 0: bytes((RUN_RECEIVED | RUN_ACK,))}


def on_columns(s: SessionState, run: PacketRun) -> bool:
    """:func:`on_run` for a run in columns (from a transfer run apart): the same test of every packet
    and the same updates, read from the run's tags, times and blocks without an event built. Returns
    False, having changed nothing, where on_run would (then the caller folds the run's events)."""
    receiver = s.receiver
    tags = run.tags
    if receiver:
        if not s.data_rx:
            return False
        ours = RUN_ACK
    else:
        if not (s.acks_rx and s.data_tx):
            return False
        ours = 0
    if s.scan or tags.strip(_RECEIVER_TAGS if receiver else _SENDER_TAGS):
        return False  # a netascii scan reads payloads; any other packet needs a second look
    # Found with the tags' own searches, not packet by packet: ours are one in every 17 packets of a
    # windowed download. A round trip is timed from ours to the peer's packet just after it (from the
    # session's last one of ours, if the run starts with the peer's).
    times, blocks = run.times, run.blocks
    count = len(tags)  # (never 0: PacketRun refuses an empty run)
    ours_tag = _OURS[ours]
    fresh = s.fresh_t
    samples: list[float] = []
    if fresh is not None and tags[0] != ours:
        samples.append(times[0] - fresh)
    i = tags.find(ours_tag)
    while i >= 0:
        after = i + 1
        if after < count and tags[after] != ours:
            samples.append(times[after] - times[i])
        i = tags.find(ours_tag, after)
    last_ours = tags.rfind(ours_tag)
    last_theirs = tags.rfind(_THEIRS[ours])
    received = count - tags.count(ours_tag)
    ours_block = blocks[last_ours] if last_ours >= 0 else None
    pos, moved_t = (blocks[last_theirs], times[last_theirs]) if last_theirs >= 0 else (None, None)
    t = times[-1]
    fresh = t if last_ours == count - 1 else None
    _store_run(s, received, len(tags) - received, pos, moved_t, ours_block, fresh, t, samples)
    return True
