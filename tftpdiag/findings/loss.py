"""Packets that go missing or come twice: large blocks that never arrive, loss with an estimate,
duplicates, a capture that saw every packet twice, the Sorcerer's Apprentice, and packets from strangers."""

from __future__ import annotations

from tftpdiag.findings.model import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    describe,
    evidence,
    fmt_addr,
)
from tftpdiag.findings.predicates import blocks_done, large_block_case
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import QUICK, SessionState
from tftpdiag.protocol.packets import Ack, Data, OAck

ETHERNET_BLKSIZE = {4: 1468, 6: 1448}


def _ip_overhead(s: SessionState) -> tuple[int, int]:
    peer = s.locked or s.peer
    v6 = peer is not None and ":" in peer[0]
    return (6 if v6 else 4), (48 if v6 else 28)


@rule("large-block-loss", transient=True)
def large_block_loss(s: SessionState, ctx: Context) -> Finding | None:
    state = large_block_case(s, ctx)
    if state is None:
        return None
    version, overhead = _ip_overhead(s)
    b = s.blksize
    wire = b + 4 + overhead
    waits = sum(1 for e in s.timeouts if s.neg_time is None or e.time >= s.neg_time) or s.n_timeouts
    if s.client_side and s.receiver:
        summary = (f"The OACK (blksize {b}) and {s.our} ACK 0 got through, but no DATA ever came ({waits} timeouts "
                   f"waiting for DATA 1): IPv{version} packets of {wire:,} bytes are lost on the path (an MTU below "
                   f"that, or IP fragments dropped)")
        oack = s.negotiated.oack if s.negotiated is not None else None  # set: large_block_case saw the OACK
        ev = [f"{s.t(s.neg_time or s.last_time)}: OACK {' '.join(f'{k}={v}' for k, v in oack or ())}",
              f"{s.t(s.ack0_t or s.last_time)}: ACK 0 sent"]
    else:
        who = f"Client {fmt_addr(s.peer)}" if not s.client_side else fmt_addr(s.locked or s.peer)
        accepted = "accepted our OACK with ACK 0" if not s.client_side else f"granted blksize {b}"
        summary = (f"{who} {accepted}, but never acknowledged DATA 1 of {s.first_data_len:,} bytes "
                   f"({1 + waits} sends): IPv{version} packets of {wire:,} bytes are lost on the path (an MTU "
                   f"below that, or IP fragments dropped)")
        ev = [f"{s.t(s.ack0_t or s.neg_time or s.last_time)}: "
              + ("ACK 0 received" if not s.client_side else f"OACK blksize={b} received"),
              f"{s.t(s.first_data_t or s.last_time)}: DATA 1 ({s.first_data_len} B) sent"]
    ev += [f"{s.t(e.time)}: nothing after {e.waited:.2f} s waiting for {e.waiting_for}" for e in s.timeouts[:3]]
    fit = ETHERNET_BLKSIZE[version]
    if b > fit:
        target = (f"blksize {fit} or less (the largest that fits a 1500-byte Ethernet MTU over IPv{version}; "
                  f"{ETHERNET_BLKSIZE[6 if version == 4 else 4]} over IPv{6 if version == 4 else 4})")
    else:
        target = ("a blksize below the path's MTU, e.g. 1200 or 1024: tunnels, VPNs and PPPoE have MTUs under "
                  "1500")
    suggestion = (f"Use {target}. On the server, dnsmasq --tftp-mtu or tftpd-hpa -B caps it for every client; "
                  f"firewalls that drop IP fragments also cause this (FOGProject#455).")
    return Finding("large-block-loss", ERROR if state == "failed" else WARNING, summary, evidence(ev), suggestion,
                   s.session)


@rule("packet-loss")
def packet_loss(s: SessionState, ctx: Context) -> Finding | None:
    episodes = s.recovered_losses
    if s.role is None or s.moved == 0 or episodes == 0:
        return None
    blocks = blocks_done(s)
    ws = max(s.windowsize, 1)
    packets = blocks + max(blocks // ws, 1) + 2
    pct = 100.0 * episodes / packets
    severity = WARNING if pct >= 0.5 and episodes >= 2 else INFO
    repeated = s.dup_data + s.dup_ack
    parts = [f"{s.n_timeouts} timeout{'s' if s.n_timeouts != 1 else ''}"]
    late = repeated - s.dup_quick
    if late > 0:
        parts.append(f"{late} packet{'s' if late != 1 else ''} resent by {s.other}")
    if s.ooo:
        parts.append(f"{s.ooo} out of order")
    if s.window_gaps:
        parts.append(f"{s.window_gaps} window gap{'s' if s.window_gaps != 1 else ''}")
    gaps = s.ooo + s.window_gaps
    what = "lost or reordered" if gaps > s.n_timeouts else "lost"
    summary = (f"About {pct:.1f}% of packets {what}: {episodes} loss{'es' if episodes != 1 else ''} over "
               f"~{packets:,} packets ({', '.join(parts)})")
    ev = [f"{s.t(e.time)}: nothing after {e.waited:.2f} s waiting for {e.waiting_for} (attempt {e.attempt})"
          for e in s.timeouts[:4]]
    if s.dup_first is not None:
        ev.append(f"{s.t(s.dup_first[0])}: {s.dup_first[1]} came again")
    if s.ooo_first is not None:
        ev.append(f"{s.t(s.ooo_first[0])}: {s.ooo_first[1]} arrived past a gap")
    if s.stats is not None:
        # (A capture's count is what either side sent again, the server's resends too: not the client's alone.)
        resent = "resent in the capture" if s.observed else f"resent by {s.us}"
        ev.append(f"{s.stats.retransmits} packets {resent} in {s.stats.duration:.1f} s")
    if s.gap_data or s.gap_ack:
        ev.append(f"the capture also lacks {s.gap_data + s.gap_ack} packets the transfer shows were delivered: not "
                  f"counted here (see capture-gaps)")
    tips = [("Each loss costs a retransmit timeout; find the lossy link (Wi-Fi, a congested or half-duplex port, a "
             "policer).")]
    if ws > 1:
        tips.append(f"With windowsize {ws} a lost or merely reordered block resends the window from the gap: a "
                    "smaller window can help on this path.")
    if s.blksize > 1468:
        tips.append(f"blksize {s.blksize} travels as IP fragments: losing one loses the block; try 1468 or less.")
    return Finding("packet-loss", severity, summary, evidence(ev), " ".join(tips), s.session)


@rule("duplicates")
def duplicates(s: SessionState, ctx: Context) -> Finding | None:
    if s.observed:
        return _duplicates_seen(s)
    requests = max(s.requests_rx - 1, 0) if not s.client_side else 0
    total = s.dup_data + s.dup_ack + s.dup_other
    stats = s.stats
    received = max(stats.packets_received if stats is not None else 0, s.moved + total, 1)
    if not _many(total, received):
        return None
    parts = []
    if s.dup_data:
        parts.append(f"{s.dup_data} DATA")
    if s.dup_ack:
        parts.append(f"{s.dup_ack} ACK")
    if requests:
        parts.append(f"{requests} repeated request{'s' if requests != 1 else ''}")
    others = s.dup_other - requests
    if others > 0:
        parts.append(f"{others} other")
    quick = s.dup_quick
    late = total - quick - requests
    summary = (f"{total} packets from {s.other} came twice ({', '.join(parts)}): {quick} within "
               f"{QUICK * 1000:.0f} ms of the first copy (duplicated on the way, or sent twice)")
    if late > 0:
        summary += f", {late} after a pause (resent after a loss)"
    # In a window, repeats right after a gap are the sender's rewind, not the network's doing.
    gaps = s.ooo + s.window_gaps
    severity = WARNING if quick >= 3 and quick / received >= 0.05 and not gaps else INFO
    ev = [f"{s.t(s.dup_first[0])}: first duplicate: {s.dup_first[1]}"] if s.dup_first else []
    ev.append(f"{total} duplicates among {received:,} packets received")
    if quick >= late:
        suggestion = _QUICK_CAUSES
    else:
        suggestion = "Late duplicates are resends after a loss or a slow answer: see packet-loss."
    if requests:
        suggestion += " A repeated request means our first answer was slow to reach the client or was lost."
    return Finding("duplicates", severity, summary, evidence(ev), suggestion, s.session)


_QUICK_CAUSES = ("Close duplicates come from the network (a switching loop, a mirrored port, bonding) or a sender "
                 "that sends twice; they waste bandwidth, and double the traffic against a sender with the "
                 "Sorcerer's Apprentice bug.")


def _many(total: int, received: int) -> bool:
    """Enough duplicates to tell: three or more, and 1% of the packets received or ten."""
    return total >= 3 and (total / received >= 0.01 or total >= 10)


def _duplicates_seen(s: SessionState) -> Finding | None:
    """A capture's duplicates: the datagrams seen again within QUICK, asked for by nothing, of a side whose
    share says they reached their receiver twice (protocol/doubled.py; most of a side's again is the capture
    point's doing: capture-doubled). A datagram an end sent again is its resend (packet-loss), not here.
    The copies the final figures counted, as the transfer's duplicates say."""
    stats = s.stats
    if stats is None or s.copies_end is None:
        return None  # the share is known at the end, and the findings, once made, stay
    copies = s.copies_end
    sides = [(n, sender) for n, sender, received in ((copies[0], s.other, True), (copies[1], s.us, False))
             if n and not s.doubled(received)]
    total = sum(n for n, _ in sides)
    received = max(stats.packets_received, 1)
    if not _many(total, received):
        return None
    which = " and ".join(f"{n:,} from {sender}" for n, sender in sides)
    summary = (f"{total:,} packets came twice within {QUICK * 1000:.0f} ms ({which}), asked for by nothing the "
               f"other end sent: duplicated on the way, or sent twice, and received twice")
    severity = WARNING if total >= 3 and total / received >= 0.05 else INFO
    ev = [f"{s.t(s.copy_first[0])}: first duplicate: {s.copy_first[1]}"] if s.copy_first else []
    ev.append(f"{total:,} duplicates among {stats.packets_sent + stats.packets_received:,} packets (noted 'copy')")
    suggestion = (_QUICK_CAUSES + " A few packets twice are the network's or a sender's doing: a capture point "
                  "that saw the link twice would show nearly every packet twice (capture-doubled).")
    return Finding("duplicates", severity, summary, evidence(ev), suggestion, s.session)


@rule("capture-doubled", after_end=True)
def capture_doubled(s: SessionState, ctx: Context) -> Finding | None:
    """A capture that saw most packets of a side twice (the observer's COPY notes, as the share reads
    them: protocol/doubled.py): what the copies are, in which direction, and that no count or finding
    takes them for resends or packets."""
    stats = s.stats
    if stats is None or s.copies_end is None or not (s.copies_rx or s.copies_tx):
        return None  # the share is known at the end, and the findings, once made, stay
    # Every copy (those after the end too) against what the side sent: the copies are in no packet count.
    sides = [(copies, packets, sender)
             for copies, packets, sender, received in ((s.copies_rx, stats.packets_received, s.other, True),
                                                       (s.copies_tx, stats.packets_sent, s.us, False))
             if copies and s.doubled(received)]
    if not sides:
        return None
    which = " and ".join(f"{copies:,} of the {sent:,} packets from {sender}" for copies, sent, sender in sides)
    where = ("both directions" if len(sides) == 2 else
             f"one direction only (what {sides[0][2]} sent)")
    summary = (f"Most packets appear twice in the capture: {which} came again within {QUICK * 1000:.0f} ms with "
               f"identical bytes, asked for by nothing the other end sent. The capture point saw each of them twice, "
               f"in {where}: these are copies, not resends by either end, and no retransmit, loss or other "
               f"finding counts them, nor the packets sent and received")
    ev = []
    if s.copy_first is not None:
        ev.append(f"{s.t(s.copy_first[0])}: {s.copy_first[1]} seen again")
    ev += [f"{copies:,} copies of the {sent:,} packets {sender} sent ({copies + sent:,} datagrams in the capture)"
           for copies, sent, sender in sides]
    if stats.retransmits:
        ev.append(f"{stats.retransmits} packets resent in the capture besides the copies (see packet-loss)")
    return Finding("capture-doubled", INFO, summary, evidence(ev),
                   "Nothing to fix in the transfer: the capture shows each packet twice. A mirror (SPAN) port "
                   "copying both directions of two ports of one path, a capture on a bridge and one of its members "
                   "at once (tcpdump -i any), or a switching loop does this. For a capture with each packet once, "
                   "mirror one port, or capture on one interface (tcpdump -i eth0); a switching loop, whose copies "
                   "reach the devices too, is for spanning tree to stop.", s.session)


@rule("sorcerers-apprentice")
def sorcerers_apprentice(s: SessionState, ctx: Context) -> Finding | None:
    if not s.receiver or s.windowsize != 1 or s.sas_hits < 6 or s.sas_first is None:
        return None
    since = max(s.data_rx - s.sas_base + 1, 1)
    if s.sas_hits < 0.75 * since:
        return None
    t, first = s.sas_first
    # A capture counts the repeats as retransmits, no packet as a duplicate (see duplicates): its words too.
    dup, again = ("repeated", "DATA sent again") if s.observed else ("duplicate", "duplicate DATA")
    summary = (f"{s.other.capitalize()} sends DATA again for every {dup} ACK (the Sorcerer's Apprentice bug): "
               f"from block {first} on, {s.sas_hits} of {since} blocks {'were sent' if s.observed else 'came'} twice, "
               f"each right after one of {s.our} repeated ACKs, so every block travels twice")
    ev = [f"{s.t(t)}: DATA {first} came again right after {s.our} repeated ACK {(first - 1) & 0xFFFF}",
          f"{s.dup_data} {again} in all, {s.data_rx} blocks"]
    return Finding("sorcerers-apprentice", WARNING, summary, evidence(ev),
                   f"Fix the sender: RFC 1123 (4.2.3.1) says to resend only on a timeout, never on a {dup} ACK "
                   "(atftpd: --prevent-sas; tftpy before 0.8.1, tftpy#41). A late or lost ACK starts it, so loss "
                   "on the path makes it likelier; windowsize avoids lock-step altogether.", s.session)


@rule("window-overrun")
def window_overrun(s: SessionState, ctx: Context) -> Finding | None:
    if not s.receiver or not s.overrun or s.overrun_first is None:
        return None
    t, block, acked = s.overrun_first
    ws = s.windowsize
    summary = (f"{s.other.capitalize()} sent DATA {block} when {s.our} last ACK ({acked}) allowed blocks up to "
               f"{(acked + ws) & 0xFFFF} (windowsize {ws}): it does not go by the ACK number, so blocks past a gap "
               f"are thrown away and sent again ({s.overrun} past the window in all)")
    ev = [f"{s.t(t)}: DATA {block} arrived; {s.our} last ACK was {acked}",
          f"{s.ooo} blocks out of order, {s.window_gaps + s.n_timeouts} recoveries"]
    return Finding("window-overrun", WARNING, summary, evidence(ev),
                   f"A window bug in {s.other} (as uftpd#44, a sender ignoring the ACK number after a loss): use "
                   "windowsize 1 (lock-step) with it, or update it.", s.session)


@rule("stray-packets")
def stray_packets(s: SessionState, ctx: Context) -> Finding | None:
    if not s.stray or s.stray_first is None or s.role is None:
        return None
    t, addr, packet = s.stray_first
    peer = s.locked or s.peer
    sources = ", ".join(f"{fmt_addr(x)} ({n})" for x, n in list(s.stray_from.items())[:4])
    second_session = (s.client_side and peer is not None and all(x[0] == peer[0] for x in s.stray_from)
                      and (isinstance(packet, OAck) or (isinstance(packet, Data) and packet.block == 1)
                           or (isinstance(packet, Ack) and packet.block == 0)))
    # Whether the strays were answered is what the session shows: tftpdiag answers all but an ERROR, the
    # client in a capture may answer none.
    answered = s.stray_answered > 0
    ev = [f"{s.t(t)}: {describe(packet)} from {fmt_addr(addr)}, " + ("answered with ERROR 5" if answered
                                                                      else "not answered")]
    if second_session:
        summary = (f"{s.stray} packet{'s' if s.stray != 1 else ''} came from {sources} instead of this transfer's "
                   f"port {fmt_addr(peer)}: the server answered a request twice (a second session, after a resent "
                   f"or duplicated request); {s.us} {'answered with ERROR 5' if answered else 'did not answer'} "
                   f"and went on")
        ends = "ends on ERROR 5" if answered else "gives up on its own, unanswered"
        return Finding("stray-packets", INFO, summary, evidence(ev),
                       f"Harmless: the second session {ends}. It happens when the first answer was slow and the "
                       "request was resent.", s.session)
    summary = (f"{s.stray} packet{'s' if s.stray != 1 else ''} from {sources}, not this transfer's peer "
               f"{fmt_addr(peer)}: " + ("answered with ERROR 5 (unknown transfer ID)" if answered else "not answered"))
    return Finding("stray-packets", WARNING, summary, evidence(ev),
                   "Another host or program sends to this transfer's port, or a NAT changed the peer's port "
                   "mid-transfer: look for a second TFTP server, port rewriting, or a scanner.", s.session)


@rule("capture-gaps")
def capture_gaps(s: SessionState, ctx: Context) -> Finding | None:
    """A capture that lacks packets the transfer shows were delivered (only a rebuilt trace has these):
    the capture's loss, not the network's, so they count toward no loss or window finding."""
    total = s.gap_data + s.gap_ack
    if not total:
        return None
    parts = []
    if s.gap_data:
        parts.append(f"{s.gap_data} DATA")
    if s.gap_ack:
        parts.append(f"at least {s.gap_ack} ACK{'s' if s.gap_ack != 1 else ''}")
    summary = (f"The capture missed {total} packet{'s' if total != 1 else ''} ({', '.join(parts)}) that the "
               f"transfer shows were delivered: the capture dropped them, not the network, and the transfer "
               f"itself was not affected")
    ev = [f"{s.t(t)}: {detail}" for t, detail in s.gap_log]
    return Finding("capture-gaps", INFO, summary, evidence(ev),
                   "Nothing to fix in the transfer; only what its peers did (resends, repeated ACKs) counts as "
                   "loss in this capture. For captures without drops: a larger buffer (tcpdump -B 16384), a short "
                   "snap length (-s 96 keeps the TFTP headers), a fast disk or tmpfs to write to, and a capture on "
                   "one of the two hosts rather than a mirror port under load; tcpdump prints 'packets dropped by "
                   "kernel' when it stops.", s.session)


RULES = (large_block_loss, packet_loss, duplicates, capture_doubled, sorcerers_apprentice, window_overrun,
         stray_packets, capture_gaps)
