"""Option negotiation (RFC 2347-2349, 7440): options ignored, reduced or refused, OACKs that break the
rules, and clients that ask for options and then ignore the OACK."""

from __future__ import annotations

from tftpdiag.findings.errors import meant_code, sent_as
from tftpdiag.findings.model import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    escape_name,
    evidence,
    fmt_addr,
    fmt_options,
)
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState
from tftpdiag.fmt import clean, quote
from tftpdiag.protocol.events import Completed, Failed, Reason, RequestRetried, Side
from tftpdiag.protocol.options import RANGES, OptionOutcome, Verdict, option_number
from tftpdiag.protocol.packets import Data, error_code_name

TWICE = 0.1  # a second identical OACK sooner than this is not a retransmission after a timeout

_ADVICE = {
    "blksize": "512-byte blocks are slow on large files: enable blksize on the server if you can",
    "windowsize": "this server does not implement RFC 7440 windowsize (tftpd-hpa 5.2 and dnsmasq 2.90 do not): "
                  "a larger blksize is the way to go faster",
    "timeout": "harmless: each side keeps its own retransmit timer",
    "tsize": "no size announced, so no percentage or ETA (harmless)",
}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _outcomes(s: SessionState, verdict: Verdict) -> list[OptionOutcome]:
    n = s.negotiated
    if n is None:
        return []
    return [o for o in n.outcomes if o.verdict is verdict]


@rule("options-ignored")
def options_ignored(s: SessionState, ctx: Context) -> Finding | None:
    ignored = _outcomes(s, Verdict.IGNORED)
    n = s.negotiated
    if not ignored or not s.requested or n is None:
        return None
    names = fmt_options((o.name, o.asked or "") for o in ignored)
    t = s.neg_time or s.last_time
    if not s.client_side:
        return Finding("options-ignored", INFO,
                       f"We left {names} out of our answer to {fmt_addr(s.peer)} (our policy, or a value or mode "
                       f"we do not grant): {'; '.join(clean(o.meaning) for o in ignored)}",
                       evidence([f"{s.t(t)}: negotiated {fmt_options(n.oack)}"]),
                       "Nothing to do unless the client needs them.", s.session)
    server = fmt_addr(s.locked or s.peer)
    if n.oack is None:
        slow = any((o.name == "blksize" and o.asked != "512") or (o.name == "windowsize" and o.asked != "1")
                   for o in ignored)
        answer = "DATA 1" if s.receiver else "ACK 0"
        summary = (f"{server} answered without an OACK (with {answer}): it ignored every option asked ({names}); "
                   f"the transfer runs with the RFC 1350 defaults, 512-byte blocks in lock-step")
        suggestion = ("This server does not negotiate options, or has them turned off (tftpd-hpa -r OPTION, "
                      "dnsmasq --tftp-no-blocksize); nothing is broken, but large files go slower.")
        return Finding("options-ignored", WARNING if slow else INFO, summary,
                       evidence([f"{s.t(t)}: {answer} came instead of an OACK"]), suggestion, s.session)
    summary = (f"{server} left {names} out of its OACK ({fmt_options(n.oack)}): "
               f"{'; '.join(clean(o.meaning) for o in ignored)}")
    suggestion = _sentence("; ".join(_ADVICE.get(o.name, f"{clean(o.name)} is not supported") for o in ignored))
    return Finding("options-ignored", INFO, summary, evidence([f"{s.t(t)}: OACK {fmt_options(n.oack)}"]),
                   suggestion, s.session)


@rule("option-reduced")
def option_reduced(s: SessionState, ctx: Context) -> Finding | None:
    reduced = _outcomes(s, Verdict.REDUCED)
    if not reduced:
        return None
    parts = ", ".join(f"{o.name} {o.granted} of the {o.asked} asked" for o in reduced)
    t = s.neg_time or s.last_time
    if s.client_side:
        summary = f"{fmt_addr(s.locked or s.peer)} granted {parts}"
        suggestion = ("Normal: servers cap these (tftpd-hpa -B, dnsmasq --tftp-mtu, windowsize limits such as 32 or "
                      "64); ask for " + ", ".join(f"{o.name} {o.granted}" for o in reduced) + " directly next time.")
    else:
        summary = f"We granted {fmt_addr(s.peer)} {parts} (our limits)"
        suggestion = "Raise the server's limits if clients need more."
    return Finding("option-reduced", INFO, summary,
                   evidence([f"{s.t(t)}: OACK {fmt_options(s.negotiated.oack if s.negotiated else None)}"]),
                   suggestion, s.session)


def _refusal_hints(s: SessionState, asked: dict[str, str]) -> list[str]:
    """What is known to make servers refuse these options."""
    hints = []
    if s.mode == "netascii" and "tsize" in asked:
        hints.append("tftpd-hpa refuses tsize in netascii mode: drop tsize, or use octet")
    blksize = option_number(asked.get("blksize"))
    if "windowsize" in asked and (512 if blksize is None else blksize) < 64:
        hints.append("atftpd needs the OACK to fit in one block: use a larger blksize with windowsize")
    return hints


def _refused_then_retried(s: SessionState, retried: RequestRetried, first_sent: float) -> Finding:
    """Our request's options were refused and we asked again without them (see ClientRead)."""
    server = fmt_addr(s.peer)  # the address asked: each request was answered from a port of its own
    again = f"with only {fmt_options(retried.requested)}" if retried.requested else "without options"
    res = s.result
    then = ("and the transfer completed" if isinstance(res, Completed)
            else "and that failed too" if isinstance(res, Failed) else "")
    code = f"ERROR {retried.code}" + (f" ({error_code_name(retried.code)})" if retried.code != 8 else "")
    summary = (f"{server} refused the options with {code}, {quote(retried.message)}; asked: "
               f"{fmt_options(retried.asked)} ({clean(s.mode)} mode). The client asked again {again}, as real clients "
               f"fall back, {then}").rstrip(", ")
    hints = _refusal_hints(s, dict(retried.asked))
    hints.append("a device that does not fall back fails here: take the refused options out of its request, or "
                 "let the server accept them")
    ev = [f"{s.t(first_sent)}: {s.kind} {escape_name(s.filename)} {clean(s.mode)} {fmt_options(retried.asked)}",
          f"{s.t(retried.time)}: {code} {quote(retried.message)} from {server}",
          f"{s.t(retried.time)}: {s.kind} again {fmt_options(retried.requested) or 'without options'}"]
    severity = ERROR if isinstance(res, Failed) else WARNING
    return Finding("option-refused", severity, summary, evidence(ev), _sentence("; ".join(hints)), s.session)


@rule("option-refused")
def option_refused(s: SessionState, ctx: Context) -> Finding | None:
    if s.retried is not None and s.client_side:
        return _refused_then_retried(s, *s.retried)
    res = s.result
    if not isinstance(res, Failed) or res.raised_by is not Side.PEER:
        return None
    # A server may say it with ERROR 0 and words ("Option negotiation failed"): the same finding.
    code = meant_code(res.code, res.message, options=bool(s.requested)) if s.client_side else res.code
    if code != 8:
        return None
    if s.client_side:
        server = fmt_addr(s.locked or s.peer)
        summary = (f"{server} refused the options with {sent_as(res, code)}; asked: {fmt_options(s.requested)}"
                   f" ({clean(s.mode)} mode)")
        hints = _refusal_hints(s, s.req)
        if s.observed:  # the fix is on the device or its server, not in a flag of tftpdiag's
            hints.append("the client did not fall back to a request without them: take the refused options out "
                         "of its request, or let the server accept them")
        else:
            hints.append("retry without options, or with one at a time (tftpdiag probe --sweep) to find the one "
                         "it refuses")
        ev = [f"{s.t(t)}: {s.kind} {escape_name(s.filename)} {clean(s.mode)} {fmt_options(s.requested)}"
              for t in s.request_times[:1]]
        ev.append(f"{s.t(res.time)}: ERROR {res.code} {quote(res.message)} from {server}")
        return Finding("option-refused", ERROR, summary, evidence(ev), _sentence("; ".join(hints)), s.session)
    if "tsize" in s.req and not s.receiver:
        return None  # a size probe
    oack = s.negotiated.oack if s.negotiated else None
    summary = (f"Client {fmt_addr(s.peer)} refused our OACK ({fmt_options(oack)}) with ERROR 8, "
               f"{quote(res.message)}")
    return Finding("option-refused", WARNING, summary,
                   evidence([f"{s.t(res.time)}: ERROR 8 from the client"]),
                   "The client cannot take a value we granted: lower our limits for it, or refuse the option "
                   "(tftpdiag serve policy) so it runs without.", s.session)


def _oack_problems(s: SessionState) -> list[str]:
    first_t, options, _, _ = s.oacks_rx[0]
    asked = s.req
    problems = []
    for name, value in options:
        if name not in asked:
            problems.append(f"{clean(name)}={clean(value)}, which was not asked for")
            continue
        number = option_number(value)
        if number is None:
            problems.append(f"{clean(name)}={quote(value)}, not a number")
            continue
        if name in RANGES:
            low, high = RANGES[name]
            if not low <= number <= high:
                problems.append(f"{name}={number}, outside {low}..{high}")
                continue
        asked_value = asked[name]
        limit = option_number(asked_value)
        if name in ("blksize", "windowsize") and limit is not None and number > limit:
            problems.append(f"{name}={number}, above the {clean(asked_value)} asked")
        elif name == "timeout" and limit is not None and number != limit:
            problems.append(f"timeout={number} where {clean(asked_value)} was asked (RFC 2349: echo it)")
    for t, opts, _note, detail in s.oacks_rx[1:]:
        if detail == "OACK after the transfer began" or (s.first_data_t is not None and t > s.first_data_t):
            problems.append(f"a second OACK at {s.t(t)}, after DATA had begun")
        elif opts != options:
            problems.append(f"a second OACK with other values ({fmt_options(opts)})")
        elif t - first_t < TWICE:
            problems.append(f"the OACK twice, {1000 * (t - first_t):.0f} ms apart (no retransmit timer is that "
                            f"short: sent twice, or duplicated on the way)")
        else:
            continue
        break
    return problems


@rule("bad-oack")
def bad_oack(s: SessionState, ctx: Context) -> Finding | None:
    if not s.client_side or not s.oacks_rx or not s.requests_tx:
        # (Without a request seen sent there is nothing the OACK answered: an OACK sent to a server's
        # listening port, which stray-packets tells, or a capture begun after the request.)
        return None
    problems = _oack_problems(s)
    if not problems:
        return None
    res = s.result
    refused = res if (isinstance(res, Failed) and res.reason is Reason.PROTOCOL and res.raised_by is Side.LOCAL
                      and res.code == 8) else None
    server = fmt_addr(s.locked or s.peer)
    summary = f"{server} sent a bad OACK: {'; '.join(problems)}"
    if refused is not None:
        summary += f"; {s.us} refused it with ERROR 8, as strict clients do"
    ev = [f"{s.t(t)}: OACK {fmt_options(opts)}" + (f" ({note.value})" if note.value else "")
          for t, opts, note, _ in s.oacks_rx[:3]]
    ev.insert(0, f"asked: {fmt_options(s.requested)}")
    if refused is not None:
        ev.append(f"{s.t(refused.time)}: ERROR 8 sent: {clean(refused.message)}")
    if any("second OACK" in p or "twice" in p for p in problems) and len(problems) == 1:
        suggestion = ("A repeated OACK makes some clients answer twice or restart (raspberrypi/firmware#1041); "
                      "fix or update the server.")
    else:
        suggestion = ("RFC 2347 lets an OACK hold only options the client asked for, at most at the value asked; "
                      "firmware clients abort on anything else (PyPXE#125). Fix or update the server; tftpy OACKs "
                      "blksize=512 when it was not asked: asking for blksize too avoids it.")
    return Finding("bad-oack", ERROR if refused is not None else WARNING, summary, evidence(ev), suggestion, s.session)


@rule("client-ignored-oack")
def client_ignored_oack(s: SessionState, ctx: Context) -> Finding | None:
    if s.client_side or s.role is None or not s.oack_tx:
        return None
    client = fmt_addr(s.peer)
    oack = fmt_options(s.negotiated.oack if s.negotiated else None)
    ev = [f"{s.t(t)}: OACK {oack} sent" for t in s.oack_tx_times[:1]]
    summary = None
    severity = WARNING
    if s.err_rx is not None and s.err_rx[1] not in (5, 8) and s.moved == 0 and s.ack0_t is None and \
            s.first_data_t is None:
        t, code, message = s.err_rx
        summary = (f"Client {client} answered our OACK ({oack}) with ERROR {code} {quote(message)}: it asked for "
                   f"options but does not take an OACK")
        ev.append(f"{s.t(t)}: ERROR {code} from the client")
    else:
        for t, what, detail in s.unexpected:
            if detail == "ACK before the OACK was accepted":
                summary = (f"Client {client} answered our OACK ({oack}) with {what} instead of ACK 0: it does not "
                           f"take the OACK")
                ev.append(f"{s.t(t)}: {what} from the client")
                break
    if summary is None and s.receiver and s.first_data_len == 512 and s.blksize > 512:
        tsize = s.req.get("tsize", "")
        late_data = [t for t, p in s.late_log if isinstance(p, Data)]
        if late_data or (option_number(tsize) or 0) > 512:
            severity = ERROR
            summary = (f"Client {client} sent DATA 1 of 512 bytes although our OACK granted blksize {s.blksize}: it "
                       f"ignored the OACK, so its upload ended after 512 bytes")
            ev.append(f"{s.t(s.first_data_t or s.last_time)}: DATA 1 (512 B) from the client")
            ev += [f"{s.t(t)}: more DATA after the end" for t in late_data[:2]]
    if summary is None:
        return None
    return Finding("client-ignored-oack", severity, summary, evidence(ev),
                   "The client asks for options it does not handle: configure it not to send them, or refuse them "
                   "on the server (tftpd-hpa -r OPTION, a tftpdiag serve policy) so it gets plain RFC 1350.",
                   s.session)


RULES = (options_ignored, option_reduced, option_refused, bad_oack, client_ignored_oack)
