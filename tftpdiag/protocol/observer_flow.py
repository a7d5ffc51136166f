"""The observer's DATA and ACK rules: the hot path of a capture.

What a capture can tell is more than what one side knows, so notes and counters say what was seen:

- RETRANSMIT: a DATA block sent again by its sender (either side). It counts in ``retransmits`` and
  runs of consecutive blocks are grouped into one Retransmit event: reason "timeout" when the sender
  had heard nothing from the other side since its previous packet, or in lock-step (where a sender
  resends only on its timer), else "window-gap" (an ACK showed the gap).
- An ACK repeated, by either receiver (C in a download, the server in an upload), is what a live
  receiver would have sent: a RETRANSMIT after a silence (its timer's: counted in ``retransmits``, and
  C's also in ``timeouts``) or a REACK answering the sender's repeat (counted in neither: the repeat it
  answers was). Not a DUPLICATE: the sender may not have had the first copy (lost past the capture
  point is why it sent again); only after the end, with nothing from C between, is the server's ACK
  again one that came twice. DATA the receiver has not acknowledged is no such repeat: an older ACK
  after it means the receiver never got it (lost past the capture point), so that ACK is its timer's too
  (in an upload only in lock-step: the capture cannot tell which of a window's blocks the server has).
- A fresh DATA or ACK that comes only after a silence as long as a retransmission timeout (the timeout
  option, else RESEND_SILENCE), the other side's packet that asked for it having come last, is its
  sender's timer's too: the first copy was lost before the capture point. A RETRANSMIT counted as above
  (C's also as its timeout), though the capture saw it once.
- OUT_OF_ORDER: a DATA block of a download past a gap. Bytes count only blocks that arrive in order (a
  receiver drops the others and waits for the missing one, RFC 7440), except that an ACK from C
  covering blocks the capture never saw counts them (as full blocks: only the final one is short).
- Capture gaps: an ACK covering DATA the capture lacks, or fresh DATA that only an ACK the capture
  lacks allows, are the capture's losses, not the network's: a CaptureGap event says so, and the
  out-of-order notes such a gap caused are taken back.

Byte counts use the length on the wire, so a capture cut by a snap length still counts right (the DATA
packets in the events then hold only the captured part of the payload).
"""

from __future__ import annotations

from tftpdiag.protocol import blocks
from tftpdiag.protocol.blocks import WIRE_MAX
from tftpdiag.protocol.blocks import absolute as _absolute
from tftpdiag.protocol.datagram import Datagram
from tftpdiag.protocol.events import Note, PacketReceived, Retransmit
from tftpdiag.protocol.observer_copies import ObserverCopies
from tftpdiag.protocol.observer_state import (
    ENDED,
    MAX_PENDING_BLOCKS,
    PROGRESS_INTERVAL,
    TRANSFERRING,
)
from tftpdiag.protocol.packets import Data, ack_packet, head

__all__ = ["ObserverFlow"]


class ObserverFlow(ObserverCopies):
    """DATA and ACK of one transfer, seen from outside, as the client's events."""

    __slots__ = ()

    # -- DATA ---------------------------------------------------------------------------------------

    def _data(self, d: Datagram, raw: bytes, wire: int, from_client: bool) -> None:
        if d.orig_len > self.blksize + 4 and self.request_raw and self._coalesced(d, raw, wire, from_client):
            return
        packet = Data(wire, raw[4:])
        if from_client == self.is_read:
            # DATA from the side that should be receiving it.
            self._packet(d, packet, from_client, Note.UNEXPECTED if self.phase != ENDED else Note.LATE)
            return
        phase = self.phase
        if phase != TRANSFERRING:
            if phase == ENDED:
                note = Note.RETRANSMIT if self.absolute(wire) <= self.data_max else Note.LATE
                self._packet(d, packet, from_client, note)
                return
            self._begin_data(d.time)
        now = d.time
        size = d.orig_len - 4
        if size > len(raw) - 4:
            self.cut += 1
        n = _absolute(wire, self.data_max, self.rollover)
        if n > WIRE_MAX and not self.wrap_decided:
            # The first block past 65535 shows how this sender rolls over; numbering from here follows it.
            self.wrap_decided = True
            self.rollover = blocks.rollover_of(wire)
            n = self.absolute(wire)
        note = Note.NONE
        if n <= self.data_max:
            note = Note.RETRANSMIT
            self._retransmitted(now, n, from_client)
            if self.ahead_at:
                self.ahead_at.clear()  # the sender resends: the blocks past the gap were lost where C was too
        else:
            self.data_max = n
            self.run_index = -1
            if now - self.last >= self.resend_after and phase == TRANSFERRING and \
                    (n == self.expected or not self.is_read) and self._resent_unseen(now, wire, from_client):
                note = Note.RETRANSMIT
            if size < self.blksize and self.final is None:
                self.final = n
            elif size > self.blksize and self.request_raw == b"":
                self._blocks_show(size, now)  # joined mid-stream: the block size shows in the largest block
        if self.is_read:
            expected = self.expected
            ahead = self.ahead
            if n > expected and n not in ahead:
                room = len(ahead) < MAX_PENDING_BLOCKS
                if note is Note.NONE:
                    note = Note.OUT_OF_ORDER
                    self.out_of_order += 1
                    if room:
                        self.ahead_at[n] = self._base + len(self.events)  # undone if the gap was the capture's
                if room:
                    ahead[n] = size
            self._received(d, packet, note)
            if n > self.acked and (n <= expected or self.windowsize == 1):
                # A block C has not acknowledged asks for a new ACK, never a repeated one (a block past a
                # gap does only in a window: in lock-step a receiver drops it unanswered): if C's next is an
                # older ACK, C did not get this block (lost after the capture point), so its timer sent that
                # ACK. Only a block C acknowledged already, or one past a window's gap, is one a repeated
                # ACK answers (as the live receiver re-acks).
                self.client_heard = False
            if n == expected:
                # Only the block expected counts: a TFTP receiver drops blocks past a gap (RFC 7440) and
                # waits for them again; the sizes kept in ``ahead`` serve if C's ACK shows it had them.
                self.bytes += size
                self.blocks += 1
                self.expected = expected = n + 1
                if self.digest is not None:
                    if size > len(raw) - 4:
                        self.digest = None  # cut by the snap length: the capture has not every byte
                    else:
                        self.digest.update(packet.payload)
                if ahead:
                    ahead.pop(n, None)
                    self.ahead_at.pop(n, None)
                if note is Note.NONE and n > self.acked + self.windowsize and n > self.ack_floor + self.windowsize:
                    self._ack_proof(n)
                if self.final is not None and expected > self.final:
                    self.finishing = True
                    self.finish_time = now
                if now - self.last_progress >= PROGRESS_INTERVAL:
                    self._progress(now)
        else:
            if n > self.acked and len(self.sizes) < MAX_PENDING_BLOCKS:
                self.sizes[n] = size
            if note is Note.NONE and n > self.acked + self.windowsize and n > self.ack_floor + self.windowsize:
                self._ack_proof(n)
            self._sent(d, packet, note)
            if n > self.acked and self.windowsize == 1:
                # The mirror of a download's fresh block: lock-step DATA the server has not acknowledged asks
                # for a new ACK; if its next is an older one, it did not get this block, so its timer sent it.
                self.server_heard = False

    def _coalesced(self, d: Datagram, raw: bytes, wire: int, from_client: bool) -> bool:
        """A capture taken where the kernel had not yet cut a window into datagrams (UDP GSO on the
        sending host, always on loopback; GRO on the receiving one) holds the window as one datagram:
        DATA after DATA, each blksize + 4 bytes, block numbers one apart. Take its datagrams one by one;
        True when it was such a run."""
        step = self.blksize + 4
        starts = range(0, d.orig_len, step)
        for k, start in enumerate(starts):
            if len(raw) < start + 4:
                break  # the capture's snap length ends here: what follows is taken on trust
            if head(raw[start:start + 4]) != (3, blocks.wire(wire + k)):
                return False
        self.coalesced += 1
        for k, start in enumerate(starts):
            size = min(step, d.orig_len - start)
            part = raw[start:start + size]
            self._data(Datagram(d.time, d.src, d.dst, part, size), part, blocks.wire(wire + k), from_client)
        return True

    def _retransmitted(self, now: float, n: int, from_client: bool) -> None:
        """A DATA block sent again: count it and extend or start the Retransmit event of its run."""
        self.retransmits += 1
        events = self.events
        if self.run_index >= 0 and n == self.run_next:
            at = self.run_index - self._base
            old = events[at]
            assert isinstance(old, Retransmit)
            events[at] = Retransmit(old.session, old.time, old.reason, old.first_block, old.count + 1, old.attempt)
            self.run_next = n + 1
            return
        heard = not self._sent_again(now, from_client)
        self.run_attempt = self.run_attempt + 1 if self.run_first == n else 1
        self.run_first = n
        self.run_next = n + 1
        self.run_index = self._base + len(events)
        events.append(Retransmit(self.sid, now, "window-gap" if heard else "timeout", self.wire(n), 1,
                                 self.run_attempt))

    def _sent_again(self, now: float, from_client: bool) -> bool:
        """A DATA or ACK sent again by its sender: True when the sender had heard nothing from the other
        side since its previous packet, so only its timer can have sent it (C's timeout, counted here);
        False when it answers something it heard (a window's gap, a repeated block). The one rule for
        both, as the live machines resend on their timer or in answer."""
        # In lock-step a DATA sender resends only on its timer (RFC 1123 4.2.3.1: never in answer to a
        # duplicate ACK; a sender that does is the Sorcerer's Apprentice, a finding of its own): what it
        # heard is no window's gap.
        lockstep_data = self.windowsize == 1 and from_client != self.is_read
        heard = not lockstep_data and (self.client_heard if from_client else self.server_heard)
        if from_client and not heard:
            self._client_timeout(now)
        return not heard

    def _resent_unseen(self, now: float, wire: int, from_client: bool) -> bool:
        """A fresh DATA or ACK (the first copy the capture saw) after a silence of ``resend_after`` or more:
        True when the other side's packet that asked for it came last, so only the sender's timer can have
        sent it after so long: its first copy was lost before the capture point. Counted as _sent_again
        counts a copy seen twice: a retransmit with its Retransmit event, and C's also as its timeout; the
        caller notes it RETRANSMIT."""
        # Who sent last, from when C last sent (the heard flags say what a repeat would answer, not that).
        if (self.last <= self.client_sent_at) if from_client else (self.last != self.client_sent_at):
            return False
        self.retransmits += 1
        attempt = 1
        if from_client:
            self._client_timeout(now)
            attempt = self.client_attempt
        self.events.append(Retransmit(self.sid, now, "timeout", wire, 1, attempt))
        return True

    # -- ACK ------------------------------------------------------------------------------------------

    def _ack(self, d: Datagram, wire: int, from_client: bool) -> None:
        packet = ack_packet(wire)
        if from_client != self.is_read:
            # ACK from the side that sends the data.
            self._packet(d, packet, from_client, Note.UNEXPECTED if self.phase != ENDED else Note.LATE)
            return
        now = d.time
        phase = self.phase
        if phase != TRANSFERRING:
            if phase == ENDED:
                # After the end a receiver only answers the sender's repeated final DATA: a REACK, as live. (No
                # timer resends a final ACK: the server's again with nothing from C between came twice.)
                if self.absolute(wire) > self.acked:
                    note = Note.LATE
                else:
                    note = Note.REACK if from_client or self.server_heard else Note.DUPLICATE
                self._packet(d, packet, from_client, note)
                return
            self._begin_data(now)  # an upload's ACK 0, or C's ACK 0 after the OACK
        n = _absolute(wire, self.data_max, self.rollover)
        if self.proofs:
            self._settle_proofs(n, now)
        previous = self.acked
        if n <= previous:
            if self._sent_again(now, from_client):
                # The receiver's ACK again after a silence: its timer fired, and a live receiver resends its
                # ACK then (C's, or the server's in an upload).
                self.retransmits += 1
                if from_client:
                    attempt = self.client_attempt
                    # Waiting for it after the final block went by: C did not get that block (lost past the
                    # capture point), so the transfer completes with the ACK of a resent one, not before.
                    self.finishing = False
                else:
                    self.ack_attempt = attempt = self.ack_attempt + 1 if self.ack_again == n else 1
                    self.ack_again = n
                self.events.append(Retransmit(self.sid, now, "timeout", wire, 1, attempt))
                self._packet(d, packet, from_client, Note.RETRANSMIT)
            else:
                # Answering the sender's repeated DATA (or a window's gap), as a live receiver re-acks.
                self._packet(d, packet, from_client, Note.REACK)
            return
        self.acked = n
        note = Note.NONE
        if now - self.last >= self.resend_after and phase == TRANSFERRING and \
                self._resent_unseen(now, wire, from_client):
            note = Note.RETRANSMIT
        if from_client:  # _packet, unrolled: this runs for every ACK
            self._sent(d, packet, note)
        else:
            self._received(d, packet, note)
        if self.is_read:
            if n >= self.expected:
                # C acknowledges blocks the capture did not see arrive: it had them, so count them. Only a
                # final block is short, so a missing one counts as a full block.
                first, missing = self._acknowledged(self.ahead, self.expected, n)
                self.expected = n + 1
                # An ACK beyond anything the server can have sent is no evidence of what it sent.
                if missing and n > max(self.data_max, previous) + self.windowsize:
                    first = missing = 0
                if self.ahead_at:
                    self._settle_notes(first, n)
                if missing:
                    self._data_gap(now, first, n, missing, "client")
            if self.final is not None and n >= self.final:
                self._complete(now)
        else:
            first, missing = self._acknowledged(self.sizes, max(previous + 1, 1), n)
            if missing and n <= max(self.data_max, previous) + self.windowsize:
                self._data_gap(now, first, n, missing, "server")
            if self.final is not None and n >= self.final:
                self._complete(now)
            elif now - self.last_progress >= PROGRESS_INTERVAL:
                self._progress(now)

    def _acknowledged(self, held: dict[int, int], low: int, n: int) -> tuple[int, int]:
        """Blocks ``low``..``n`` are acknowledged: count their bytes (the sizes ``held`` for those seen, a
        full block for the rest) and return the first the capture lacks and how many it lacks. The work is
        what ``held`` holds, not how far the ACK reaches (a hostile ACK reaches 32767 blocks ahead)."""
        span = n + 1 - low
        if span <= 0:
            return 0, 0
        if self.is_read:
            self.digest = None  # counted from an ACK, not from DATA the capture saw: bytes it does not have
        self.blocks += span
        first = missing = size = 0
        if span <= len(held) + 8:  # the usual: an ACK of a block or a window, looked up one by one
            for k in range(low, n + 1):
                got = held.pop(k, None)
                if got is None:
                    missing += 1
                    first = first or k
                else:
                    size += got
        else:
            seen = {k for k in held if low <= k <= n}
            for k in seen:
                size += held.pop(k)
            missing = span - len(seen)
            first = low
            while first in seen:
                first += 1
        self.bytes += size + missing * self.blksize
        return (first, missing) if missing else (0, 0)

    # -- capture gaps: packets the capture lacks although the transfer shows they were delivered ---------

    def _ack_proof(self, n: int) -> None:
        """Fresh DATA ``n`` that no ACK in the capture allows: the sender had an ACK the capture lacks (at
        least one; the largest it can have been is n - 1). Held until the receiver's next ACK: one below
        ``n`` means the sender did not wait for it (a window bug), not that the capture lost it."""
        self.ack_floor = n - 1
        if not self.proofs:
            self.proof_first = n
        self.proofs += 1

    def _settle_proofs(self, n: int, now: float) -> None:
        """The receiver's first ACK since the proofs: at or past the first of them, the capture lacks the
        ACKs they needed; below it, the sender had not waited for that ACK, so they prove nothing."""
        count, first = self.proofs, self.proof_first
        self.proofs = 0
        if n < first:
            self.ack_floor = 0
            return
        sender = "server" if self.is_read else "client"
        detail = (f"the {sender} sent DATA {self.wire(first)} with no ACK in the capture that allowed it "
                  f"(windowsize {self.windowsize}), and ACK {self.wire(n)} shows the transfer went on")
        self._capture_gap(now, "ACK", count, detail)

    def _settle_notes(self, first: int, n: int) -> None:
        """C's ACK covers up to n: the blocks noted out of order up to n past a block the capture lacks
        (``first``) were in order where C was, so the note goes (the gap was the capture's, not the
        network's). Blocks the sender has resent since are not in ``ahead_at`` (a resend is a reaction to
        loss, so their notes stay); the rest past n wait for C's next ACK."""
        events, base = self.events, self._base
        for k in [k for k in self.ahead_at if k <= n]:
            at = self.ahead_at.pop(k) - base
            old = events[at]
            if first and k > first and isinstance(old, PacketReceived) and old.note is Note.OUT_OF_ORDER:
                events[at] = PacketReceived(old.session, old.time, old.local, old.peer, old.raw, old.packet,
                                            Note.NONE, old.detail)
                self.out_of_order -= 1

    def _data_gap(self, now: float, first: int, n: int, missing: int, receiver: str) -> None:
        which = f"DATA {self.wire(first)}" if missing == 1 else f"{missing} DATA blocks from {self.wire(first)} on"
        self._capture_gap(now, "DATA", missing, f"ACK {self.wire(n)} from the {receiver} covers {which}, "
                                                "which the capture lacks")
