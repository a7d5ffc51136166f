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

Per side the last COPY_LOOKBACK distinct datagrams are kept (the datagram objects themselves, found by
their first four bytes), so memory is bounded whatever the peers send.
"""

from __future__ import annotations

from tftpdiag.protocol.datagram import Datagram
from tftpdiag.protocol.events import Note, PacketReceived, PacketSent
from tftpdiag.protocol.observer_state import ENDED, ObserverState
from tftpdiag.protocol.packets import Packet, ProtocolError, decode, head, seen_request

__all__ = ["COPY_WITHIN", "COPY_LOOKBACK", "ObserverCopies"]

COPY_WITHIN = 0.02  # seconds; the findings' QUICK is this figure
# Distinct datagrams kept per side: a copy 1 ms behind on loopback comes some 25 of a side's later; past
# this a copy goes by as a resend, as before.
COPY_LOOKBACK = 64

# A datagram kept, as a list (the hot path changes it in place): the datagram its sender last sent, how
# often it sent it, the other side's entry it answers, how many of its sendings still ask for an answer,
# how many datagrams the other side had sent then, and how many of a window's DATA had asked for an ACK again.
_LAST, _SENDS, _CAUSE, _ASKS, _HEARD, _ASKING = range(6)


class ObserverCopies(ObserverState):
    """The copies' rule, before every other rule of the observer."""

    __slots__ = ()

    def _copied(self, d: Datagram, from_client: bool) -> bool:
        """True when ``d`` is the capture's copy of a datagram it saw already: noted COPY and counted as a
        packet seen, and nothing else. Otherwise ``d`` is kept for the copies that may follow it, and
        False."""
        raw, now = d.payload, d.time
        if from_client:
            mine, theirs, heard = self.seen_c, self.seen_s, self.count_s
        else:
            mine, theirs, heard = self.seen_s, self.seen_c, self.count_c
        op = raw[1] if len(raw) > 1 and raw[0] == 0 else 0
        windowed = self.windowsize != 1 and (op == 3 or op == 4)
        key = raw[:4]
        seen = mine.get(key)
        if seen is not None:
            last: Datagram = seen[_LAST]
            if last.payload == raw and last.src == d.src and last.dst == d.dst:
                if now - last.time < COPY_WITHIN:
                    if windowed:
                        unasked = (self.ack_last >= self.absolute(head(raw)[1]) if op == 3
                                   else seen[_ASKING] == self.asking)
                    else:
                        cause = seen[_CAUSE]
                        unasked = ((self.phase != ENDED or op > 2)
                                   and seen[_SENDS] >= (cause[_ASKS] if cause is not None else 1))
                    if unasked or seen[_HEARD] == heard:
                        self._copy(d, from_client)
                        return True
                else:
                    for answer in theirs.values():
                        if answer[_CAUSE] is seen:
                            answer[_ASKS] = 0  # sent again on a timer: its sender never had these answers
                # Sent again, on a timer or asked for: now the newest of this side's.
                seen[_LAST] = d
                seen[_SENDS] += 1
                seen[_ASKS] += 1
                del mine[key]
                mine[key] = seen
            else:
                seen = None
        if seen is None:
            if len(mine) >= COPY_LOOKBACK:
                del mine[next(iter(mine))]
            seen = [d, 1, self.newest_s if from_client else self.newest_c, 1, heard, 0]
            mine[key] = seen
        if windowed and op == 4 and from_client == self.is_read:
            self.ack_last = self.absolute(head(raw)[1])
        elif windowed and op == 3 and from_client != self.is_read:
            n = self.absolute(head(raw)[1])
            if n <= self.ack_last or n > max(self.data_last, self.ack_last, 0) + 1:
                self.asking += 1  # a block the receiver has, or one past a gap: it acknowledges again
            if n <= self.data_last:
                # Back to a window's gap: the blocks after it come again, whatever came between. As if the
                # other side had spoken: none of this side's earlier datagrams is copied by what follows.
                heard += 1
                if from_client:
                    self.count_s = heard
                else:
                    self.count_c = heard
            self.data_last = n
        seen[_HEARD] = heard
        seen[_ASKING] = self.asking
        if from_client:
            self.newest_c = seen
            self.count_c += 1
        else:
            self.newest_s = seen
            self.count_s += 1
        return False

    def _copy(self, d: Datagram, from_client: bool) -> None:
        self.copies += 1
        raw = d.payload
        packet = _seen(raw)
        if from_client:
            self.events.append(PacketSent(self.sid, d.time, self.client, d.dst, raw, packet, Note.COPY))
            self.sent += 1
        else:
            self.events.append(PacketReceived(self.sid, d.time, self.client, d.src, raw, packet, Note.COPY))
            if packet is not None:
                self.received += 1


def _seen(raw: bytes) -> Packet | None:
    """The packet in ``raw`` as a watcher reads it (a request as its client sent it), or None."""
    try:
        return decode(raw)
    except ProtocolError:
        return seen_request(raw)
