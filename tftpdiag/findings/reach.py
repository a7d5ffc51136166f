"""Can the two ends hear each other? Silence, ICMP errors, answers from elsewhere, a peer that goes
quiet, and transfers that stop moving."""

from __future__ import annotations

import errno

from tftpdiag.findings.model import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    escape_name,
    evidence,
    fmt_addr,
    fmt_bytes,
)
from tftpdiag.findings.predicates import (
    UNREACHABLE_HOST,
    stopped_cause_elsewhere,
    timed_out,
    timed_out_or_stuck,
    went_quiet,
)
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean
from tftpdiag.protocol.events import Completed, Failed, SocketError


def _request_evidence(s: SessionState) -> list[str]:
    where = fmt_addr(s.peer)
    items = []
    for i, t in enumerate(s.request_times[:3]):
        items.append(f"{s.t(t)}: {s.kind} {escape_name(s.filename)} sent to {where}" + (" again" if i else ""))
    return items


def _timeout_evidence(s: SessionState, limit: int = 3) -> list[str]:
    return [f"{s.t(e.time)}: nothing after {e.waited:.2f} s waiting for {e.waiting_for} (attempt {e.attempt})"
            for e in s.timeouts[:limit]]


def _end_evidence(s: SessionState) -> list[str]:
    res = s.result
    if isinstance(res, Failed):
        return [f"{s.t(res.time)}: gave up: {clean(res.message)}"]
    return []


@rule("no-reply")
def no_reply(s: SessionState, ctx: Context) -> Finding | None:
    if not s.client_side or s.role is None:
        return None
    if s.locked is not None or s.peer_answered is not None:
        prior = ctx.found("no-reply")
        if prior is None or prior.severity == INFO:
            return None
        late = (s.lock_time or s.peer_answered or s.last_time) - s.t0
        return Finding("no-reply", INFO,
                       f"{fmt_addr(s.peer)} answered only after {s.requests_tx} requests ({late:.1f} s): "
                       f"requests or answers were lost, or the server is slow to start",
                       evidence(_request_evidence(s) + _timeout_evidence(s)),
                       "If this repeats, look for loss on the path or a server started on demand (inetd).",
                       s.session)
    if any(e.errno == errno.ECONNREFUSED or e.errno in UNREACHABLE_HOST for e in s.sock_errors):
        return None
    res = s.result
    if timed_out(s):
        severity = ERROR
        lead = "No reply"
    elif res is None and ctx.now - s.t0 >= ctx.stall_after:
        severity = WARNING
        lead = "No reply yet"
    else:
        return None
    end = res.time if res is not None else ctx.now
    n = max(s.requests_tx, 1)
    host, port = s.peer if s.peer else ("?", 0)
    summary = (f"{lead} from {fmt_addr(s.peer)} to the {s.kind} for {escape_name(s.filename)}: {n} request"
               f"{'s' if n != 1 else ''} in {end - s.t0:.1f} s and no ICMP error came back: the server is "
               f"down, or a firewall drops the request or its answer")
    suggestion = (f"Check that a TFTP server runs on {host} and listens on UDP port {port} (`ss -ulpn` there). "
                  f"Silence rather than an ICMP port-unreachable means packets are filtered: open UDP {port} "
                  f"towards the server and its answers, which come from another port of its own (a stateful "
                  f"firewall needs the TFTP conntrack helper, nf_conntrack_tftp); check the address and route.")
    return Finding("no-reply", severity, summary,
                   evidence(_request_evidence(s) + _timeout_evidence(s) + _end_evidence(s)), suggestion, s.session)


def _socket_errors(s: SessionState, codes: tuple[int, ...]) -> list[SocketError]:
    target = s.locked or s.peer
    return [e for e in s.sock_errors if e.errno in codes and (e.peer is None or target is None or e.peer == target)]


@rule("port-unreachable")
def port_unreachable(s: SessionState, ctx: Context) -> Finding | None:
    errs = _socket_errors(s, (errno.ECONNREFUSED,))
    if not errs or isinstance(s.result, Completed):
        # Completed: the error only says the peer had left once it was done (a client that does not
        # dally, answered by a last DATA sent again as its final ACK was on its way): nothing to act on.
        return None
    e = errs[0]
    if s.moved and (s.result is None or stopped_cause_elsewhere(s, ctx)):
        # Mid-transfer the session ends right after the ICMP; wait for that, since the ICMP may be how a
        # stop at the block-number wrap showed (then rollover-stall says it).
        return None
    ev = [f"{s.t(x.time)}: ICMP from {fmt_addr(x.peer or s.peer)}: {x.message}" for x in errs[:3]]
    if s.client_side:
        if s.locked is None:
            host, port = s.peer if s.peer else ("?", 0)
            summary = (f"{host} answered with ICMP port unreachable: nothing listens on UDP port {port} there "
                       f"(the host is up, but no TFTP server is bound to that port)")
            suggestion = (f"Start the TFTP server, or use the port it listens on (tftpd-hpa, atftpd and dnsmasq "
                          f"use 69 unless told otherwise; `ss -ulpn` on {host} shows it); in a container, "
                          f"publish UDP {port}.")
            return Finding("port-unreachable", ERROR, summary, evidence(_request_evidence(s)[:1] + ev),
                           suggestion, s.session)
        summary = (f"The server's transfer port {fmt_addr(s.locked)} became unreachable (ICMP port "
                   f"unreachable) after {s.moved:,} blocks: the server ended this session (gave up, crashed "
                   f"or restarted)")
        return Finding("port-unreachable", ERROR, summary, evidence(ev),
                       "Look at the server's log around that time; retry the transfer.", s.session)
    summary = (f"The client's port {fmt_addr(e.peer or s.peer)} is unreachable (ICMP port unreachable) after "
               f"{s.moved:,} blocks: the client gave up or closed its socket")
    return Finding("port-unreachable", WARNING, summary, evidence(ev),
                   "The client stopped this transfer on its side; its own log says why.", s.session)


@rule("host-unreachable")
def host_unreachable(s: SessionState, ctx: Context) -> Finding | None:
    errs = _socket_errors(s, UNREACHABLE_HOST)
    if not errs:
        return None
    e = errs[0]
    target = e.peer or s.locked or s.peer
    summary = f"{fmt_addr(target)} cannot be reached: {e.message} (ICMP from a router or this host)"
    return Finding("host-unreachable", ERROR if s.client_side else WARNING, summary,
                   evidence(f"{s.t(x.time)}: {x.message}" for x in errs[:3]),
                   "Check the address, the route to it and that the host is up (ping, ip route get ADDRESS); "
                   "on the same subnet, ARP gets no answer.", s.session)


@rule("reply-from-other-address")
def reply_from_other_address(s: SessionState, ctx: Context) -> Finding | None:
    if not s.client_side or s.locked is None or s.peer is None or s.locked[0] == s.peer[0]:
        return None
    other = s.locked[0]
    summary = (f"The answer came from {fmt_addr(s.locked)} although the request went to {fmt_addr(s.peer)}: the "
               f"server answers from another address (a multi-homed host or a virtual IP); many firmware clients "
               f"drop such answers")
    ev = _request_evidence(s)[:1] + [f"{s.t(s.lock_time or s.last_time)}: first answer from {fmt_addr(s.locked)}"]
    suggestion = (f"Bind the TFTP server to the address clients use (tftpd-hpa --address, dnsmasq "
                  f"--listen-address with --bind-interfaces, atftpd --bind-address), or point clients at {other} "
                  f"(DHCP next-server / option 66).")
    return Finding("reply-from-other-address", WARNING, summary, evidence(ev), suggestion, s.session)


@rule("client-stopped-acking", transient=True)
def client_stopped_acking(s: SessionState, ctx: Context) -> Finding | None:
    """Server side: the client answered none of the server's packets sent again. Live, our timeouts tell
    it; in a capture (read from the client's side) the server's resends the client never answered do."""
    if s.role is None or (s.client_side and not s.observed):
        return None
    capture = s.client_side
    state = went_quiet(s, ctx) if capture else timed_out_or_stuck(s, ctx)
    if state is None or stopped_cause_elsewhere(s, ctx):
        return None
    failed = state == "failed"
    severity = ERROR if failed else WARNING
    # The ends as the session holds them: a capture's local end is the client, a live server's its own.
    client_addr, server_addr, listen = (s.local, s.locked, s.peer) if capture else (s.peer, s.local, s.listen)
    client = fmt_addr(client_addr)
    port = server_addr[1] if server_addr else "?"
    single = server_addr is not None and listen is not None and server_addr[1] == listen[1]
    if capture:
        sends = s.peer_resends + 1
        we, ours, client_sends_data = "the server", "the server's", not s.receiver
        answered = s.ack_tx is not None if s.receiver else s.data_tx > 0
        repeats = s.requests_tx - 1
    else:
        attempt = s.last_timeout.attempt if s.last_timeout is not None else 1
        sends = attempt if failed else attempt + 1
        we, ours, client_sends_data = "we", "our", s.receiver
        answered = s.peer_answered is not None
        repeats = s.requests_rx - 1
    since = s.last_move if s.last_move is not None else s.t0
    duration = (s.result.time if s.result else ctx.now) - since
    ev = [f"{s.t(s.request_times[0])}: {s.kind} {escape_name(s.filename)} from {client}"] if s.request_times else []
    lead = "The client" if capture else "Client"
    if not answered:
        what = "OACK" if (s.oacks_rx if capture else s.oack_tx) else ("ACK 0" if client_sends_data else "DATA 1")
        summary = (f"{lead} {client} never answered {ours} {what}, sent {sends} times from port {port} in "
                   f"{duration:.1f} s")
        if repeats > 0:
            summary += f"; it repeated its request {repeats} times meanwhile, so {ours} answers do not reach it"
            ev += [f"{s.t(t)}: the client repeated its request" for t in s.request_times[1:3]]
        if single:
            summary += (": it may have given up, or it ignores the answer (which comes from the port it asked)"
                        if capture else
                        ": it may have given up, or it ignores our answer (we answer from the port it asked)")
            suggestion = ("Look at the client's console; check for a firewall on the client itself that drops "
                          "answers, or a client that expects another server address.")
        else:
            summary += (f": a firewall or NAT in front of the client most likely drops packets from {ours} new port "
                        "(the PXE-E32 'TFTP open timeout')")
            suggestion = (f"Serve in single-port mode ({s.ours_only('tftpdiag serve --single-port, ')}dnsmasq "
                          f"--tftp-single-port) so answers come from port {listen[1] if listen else 69}; or allow "
                          f"UDP from {'the' if capture else 'this'} server to the client; on a Linux router or "
                          "firewall load the TFTP conntrack helper (nf_conntrack_tftp, nf_nat_tftp).")
    else:
        where = f"block {s.pos}" if s.pos is not None else ("ACK 0" if s.ack0_t is not None else "its first answer")
        size = f" ({fmt_bytes(s.bytes_now)})"
        if capture and s.receiver:
            # A capture's downloading client: the block it last acknowledged (the one after it was seen
            # going to it, so the bytes counted are not what it acknowledged).
            where, size = f"block {s.ack_tx}", ""
        verb = "sending DATA" if client_sends_data else "acknowledging"
        summary = (f"{lead} {client} stopped {verb} after {where}{size}: {we} sent {sends} times in {duration:.1f} "
                   "s without an answer: it gave up, rebooted, or the path to it broke")
        if s.last_move is not None:
            ev.append(f"{s.t(s.last_move)}: last progress ({where})")
        suggestion = "Look at the client's console or log; check the path for loss (other findings of this session)."
    ev += _timeout_evidence(s, 2) + _end_evidence(s)
    return Finding("client-stopped-acking", severity, summary, evidence(ev), suggestion, s.session)


@rule("server-stopped", transient=True)
def server_stopped(s: SessionState, ctx: Context) -> Finding | None:
    """Client side: the server answered, then fell silent (the counterpart of client-stopped-acking)."""
    if not s.client_side or s.role is None or s.locked is None:
        return None
    state = timed_out_or_stuck(s, ctx)
    if state is None or stopped_cause_elsewhere(s, ctx):
        return None
    if _socket_errors(s, (errno.ECONNREFUSED,) + UNREACHABLE_HOST):
        return None
    server = fmt_addr(s.locked)
    attempt = s.last_timeout.attempt if s.last_timeout is not None else 1
    since = s.last_move if s.last_move is not None else (s.ack0_t or s.lock_time or s.t0)
    duration = (s.result.time if s.result else ctx.now) - since
    waiting = s.last_timeout.waiting_for if s.last_timeout is not None else "an answer"
    if s.moved == 0:
        first = "OACK" if s.oacks_rx else "first answer"
        summary = (f"{server} sent its {first}, then nothing more: {attempt} timeouts in {duration:.1f} s waiting "
                   f"for {waiting}")
        suggestion = (f"The server may not take {s.our} answer to its OACK (check its log), or a firewall lets its "
                      "first packet through and drops what follows; try without options, or from the server's own "
                      "network.")
    else:
        summary = (f"{server} stopped {'sending DATA' if s.receiver else 'acknowledging'} after block {s.pos} "
                   f"({fmt_bytes(s.bytes_now)}): {attempt} timeouts in {duration:.1f} s waiting for {waiting}")
        suggestion = ("The server gave up or crashed, or the path to it broke mid-transfer (a NAT or firewall "
                      "state that expired): look at its log.")
    ev = [f"{s.t(s.lock_time or s.t0)}: first answer from {server}"]
    if s.last_move is not None:
        ev.append(f"{s.t(s.last_move)}: last progress (block {s.pos})")
    ev += _timeout_evidence(s, 3) + _end_evidence(s)
    return Finding("server-stopped", ERROR if state == "failed" else WARNING, summary, evidence(ev), suggestion,
                   s.session)


# The specific causes of a stall: once one of them is found, a stall it explains says so and turns into
# info. stalled reads their findings, so it is declared after them.
_SPECIFIC_STALLS = ("rollover-stall", "large-block-loss", "client-stopped-acking", "server-stopped",
                    "port-unreachable")


@rule("stalled", after=_SPECIFIC_STALLS, transient=True)
def stalled(s: SessionState, ctx: Context) -> Finding | None:
    if s.role is None or s.last_move is None or s.moved == 0:
        return None
    res = s.result
    if res is None:
        gap = ctx.now - s.last_move
        if gap < ctx.stall_after:
            return None
        if gap > s.stall_max:
            s.stall_max = gap
            s.stall_pos = s.pos
        waiting = s.last_timeout.waiting_for if s.last_timeout is not None and s.last_timeout.time >= s.last_move \
            else ("DATA" if s.receiver else "ACK") + " after block " + str(s.pos)
        total = f" of {fmt_bytes(s.total)}" if s.total else ""
        summary = (f"No progress for {gap:.1f} s at block {s.pos} ({fmt_bytes(s.bytes_now)}{total}): waiting for "
                   f"{waiting}")
        ev = [f"{s.t(s.last_move)}: last progress, block {s.pos}"] + \
             [f"{s.t(e.time)}: timeout waiting for {e.waiting_for} (attempt {e.attempt})"
              for e in s.timeouts if e.time >= s.last_move][:4]
        return Finding("stalled", WARNING, summary, evidence(ev),
                       f"{s.other.capitalize()} stopped answering or the path lost everything; see the other findings "
                       "of this session for the cause.", s.session)
    prior = ctx.found("stalled")
    if prior is None or prior.severity == INFO:
        return None
    if isinstance(res, Completed):
        return Finding("stalled", INFO,
                       f"Stalled for up to {s.stall_max:.1f} s at block {s.stall_pos}, then went on and completed",
                       prior.evidence, prior.suggestion, s.session)
    for cause in _SPECIFIC_STALLS:
        if ctx.found(cause) is not None:
            return Finding("stalled", INFO, prior.summary + f" (explained by {cause})", prior.evidence,
                           f"See {cause}.", s.session)
    return None


RULES = (no_reply, port_unreachable, host_unreachable, reply_from_other_address, client_stopped_acking,
         server_stopped, stalled)
