"""The capture's copies: one datagram seen twice at the capture point, which neither end sent twice.

A capture taken on a mirror (SPAN) port that copies both directions of a link, on a bridge and one of
its members at once (tcpdump -i any), or across a switching loop shows every datagram twice, microseconds
to a few ms apart, byte for byte. Taken for what the ends did, each second sight would be a retransmit, a
re-ack or a repeated request, and the findings would see loss and a Sorcerer's Apprentice in a clean
transfer. So the observer asks first, of every datagram, whether it is such a copy (:meth:`_copied`):
then it is noted COPY and counted as a packet seen, and nothing else.

A copy is the same bytes between the same two addresses again within COPY_WITHIN of the last time its
sender sent them, which nothing the other side sent asked for:

- No timer resends so soon: retransmit timeouts are hundreds of ms at the least. (A resend after a
  timeout, the same bytes much later, is a resend.)
- With nothing from the other side since its sender last sent it, nothing asked for it.
- A copy a little behind its original may come after the other side's answer to that original (a copy
  1 ms behind on loopback comes after several). In lock-step the other side's packet it answers tells: a
  side sends a datagram as often as the other side sent the one it answers (a receiver re-acks DATA sent
  again; a Sorcerer's Apprentice sends DATA again for each ACK sent again), so a sighting beyond that is a
  copy wherever it comes. Answers to a packet that its sender then sent again on its timer never reached
  it, and ask for nothing. A request once the transfer has ended is the exception: the same request
  again after the server's ERROR is the client asking anew (a new transfer), so for it only "nothing
  between" tells.
- In a window an ACK below a block asks for it again (a gap), even one that came before the block (it
  was on its way), and a sender gone back to a gap sends the blocks after it again one by one, whatever
  came between: those are resends. A block the receiver's last ACK covers is asked for by nothing, so its
  copy is a copy wherever it comes. A window's ACK is asked for again only by DATA the receiver has
  already or that comes past a gap; after the next blocks in order, an ACK again is the copy.

Whose copies they are the share tells, at the end of the transfer (protocol/doubled.py): a capture
point that sees a link twice copies nearly every packet of a side, a network that duplicates now and then
(a flaky link, bonding) or a sender that sends twice makes a few. One datagram cannot tell, so each is noted
COPY as it comes; the transfer's figures, its findings and the trace's warning read the share by that one
function: the capture point's copies are counted in nothing, a few are duplicates that reached their
receiver, as a live end counts them.

Per side the last COPY_LOOKBACK distinct datagrams are kept (the datagram objects themselves, found by
their first four bytes; one let go drops its link to what it answered), so memory is bounded whatever
the peers send.
"""

from __future__ import annotations

from typing import Any

from tftpdiag.protocol.datagram import Datagram
from tftpdiag.protocol.events import Note, PacketReceived, PacketSent
from tftpdiag.protocol.observer_state import ENDED, ObserverState
from tftpdiag.protocol.packets import Packet, ProtocolError, decode, head, seen_request

__all__ = ["COPY_WITHIN", "COPY_LOOKBACK", "ObserverCopies"]

COPY_WITHIN = 0.02  # seconds; the findings' QUICK is this figure
# Distinct datagrams kept per side, at least (twice as many at most): a copy 1 ms behind on loopback comes
# some 25 of a side's later; past this a copy goes by as a resend, as before.
COPY_LOOKBACK = 64

# A datagram kept, as a list (changed in place when it is sent again): the datagram its sender last sent,
# the other side's entry it answers, how many datagrams the other side had sent then and how many of a
# window's DATA had asked for an ACK again, how often it was sent, how many of those still ask for an answer.
_LAST, _CAUSE, _HEARD, _ASKING, _SENDS, _ASKS = range(6)


class ObserverCopies(ObserverState):
    """The copies' rule, before every other rule of the observer."""

    __slots__ = ()

    def _copied(self, d: Datagram, from_client: bool) -> bool:
        """True when ``d`` is the capture's copy of a datagram it saw already: noted COPY and counted as a
        packet seen, and nothing else. Otherwise ``d`` is kept for the copies that may follow it, and
        False. (The hot path: a datagram not seen before costs a lookup and a list, written out for each
        side.)"""
        raw = d.payload
        key = raw[:4]
        if from_client:
            mine = self.seen_c
            seen = mine.get(key)
            if seen is not None and seen[_LAST].payload == raw:
                return self._again(d, True, seen, key)
            self.newest_c = seen = mine[key] = [d, self.newest_s, self.count_s, self.asking, 1, 1]
            self.count_c += 1
        else:
            mine = self.seen_s
            seen = mine.get(key)
            if seen is not None and seen[_LAST].payload == raw:
                return self._again(d, False, seen, key)
            self.newest_s = seen = mine[key] = [d, self.newest_c, self.count_c, self.asking, 1, 1]
            self.count_s += 1
        if len(mine) >= 2 * COPY_LOOKBACK:
            for old in list(mine)[:COPY_LOOKBACK]:  # the oldest half, now and then: cheaper than one by one
                # Let go of what it answered too: an entry kept alive by a newer one's link must not hold
                # a chain of every datagram before it.
                mine.pop(old)[_CAUSE] = None
        if self.windowsize != 1:
            self._window(raw, from_client, seen)
        return False

    def _again(self, d: Datagram, from_client: bool, seen: list[Any], key: bytes) -> bool:
        """``d`` has the bytes of ``seen``: the capture's copy, or sent again (or, between other addresses,
        a datagram of its own)."""
        raw = d.payload
        mine = self.seen_c if from_client else self.seen_s
        last: Datagram = seen[_LAST]
        if last.src != d.src or last.dst != d.dst:
            # The same bytes between other addresses (a second server session's DATA 1): one of its own.
            del mine[key]
            if from_client:
                self.newest_c = seen = mine[key] = [d, self.newest_s, self.count_s, self.asking, 1, 1]
                self.count_c += 1
            else:
                self.newest_s = seen = mine[key] = [d, self.newest_c, self.count_c, self.asking, 1, 1]
                self.count_s += 1
            if self.windowsize != 1:
                self._window(raw, from_client, seen)
            return False
        op = raw[1] if len(raw) > 1 and raw[0] == 0 else 0
        windowed = self.windowsize != 1 and (op == 3 or op == 4)
        if d.time - seen[_LAST].time < COPY_WITHIN:
            if windowed:
                unasked = (self.ack_last >= self.absolute(head(raw)[1]) if op == 3
                           else seen[_ASKING] == self.asking)
            else:
                cause = seen[_CAUSE]
                unasked = ((self.phase != ENDED or op > 2)
                           and seen[_SENDS] >= (cause[_ASKS] if cause is not None else 1))
            if unasked or seen[_HEARD] == (self.count_s if from_client else self.count_c):
                self._copy(d, from_client)
                return True
        else:
            for answer in (self.seen_s if from_client else self.seen_c).values():
                if answer[_CAUSE] is seen:
                    answer[_ASKS] = 0  # sent again on a timer: its sender never had these answers
        # Sent again, on a timer or asked for: now the newest of this side's.
        del mine[key]
        mine[key] = seen
        seen[_LAST] = d
        seen[_SENDS] += 1
        seen[_ASKS] += 1
        seen[_ASKING] = self.asking
        if from_client:
            seen[_HEARD] = self.count_s
            self.newest_c = seen
            self.count_c += 1
        else:
            seen[_HEARD] = self.count_c
            self.newest_s = seen
            self.count_s += 1
        if self.windowsize != 1:
            self._window(raw, from_client, seen)
        return False

    def _window(self, raw: bytes, from_client: bool, seen: list[Any]) -> None:
        """What a window's DATA and ACK tell of the copies to come (a datagram that is no copy)."""
        op = raw[1] if len(raw) > 1 and raw[0] == 0 else 0
        if op == 4 and from_client == self.is_read:
            self.ack_last = self.absolute(head(raw)[1])
        elif op == 3 and from_client != self.is_read:
            n = self.absolute(head(raw)[1])
            if n <= self.ack_last or n > max(self.data_last, self.ack_last, 0) + 1:
                self.asking += 1  # a block the receiver has, or one past a gap: it acknowledges again
            if n <= self.data_last:
                # Back to a window's gap: the blocks after it come again, whatever came between. As if the
                # other side had spoken: none of this side's earlier datagrams is copied by what follows.
                if from_client:
                    self.count_s += 1
                    seen[_HEARD] = self.count_s
                else:
                    self.count_c += 1
                    seen[_HEARD] = self.count_c
            self.data_last = n

    def _copy(self, d: Datagram, from_client: bool) -> None:
        """Noted COPY and counted as a copy of its side's, in no packet count: whether the copies are
        packets sent and received is for the share to say (ObserverState.doubled)."""
        raw = d.payload
        packet = _seen(raw)
        if from_client:
            self.events.append(PacketSent(self.sid, d.time, self.client, d.dst, raw, packet, Note.COPY))
            self.copies_c += 1
        else:
            self.events.append(PacketReceived(self.sid, d.time, self.client, d.src, raw, packet, Note.COPY))
            if packet is not None:  # as a live client counts what it received: what decodes
                self.copies_s += 1


def _seen(raw: bytes) -> Packet | None:
    """The packet in ``raw`` as a watcher reads it (a request as its client sent it), or None."""
    try:
        return decode(raw)
    except ProtocolError:
        return seen_request(raw)
