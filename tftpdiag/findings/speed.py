"""How fast could it go: a lock-step transfer whose rate is set by the round trip."""

from __future__ import annotations

from tftpdiag.findings.model import INFO, Finding, evidence, fmt_rate
from tftpdiag.findings.rules import Context, rule
from tftpdiag.findings.session_state import SessionState

MIN_RTT = 0.004  # below this the round trip is not what limits a transfer
MIN_BLOCKS = 16
MIN_SAMPLES = 8


@rule("latency-bound")
def latency_bound(s: SessionState, ctx: Context) -> Finding | None:
    if s.role is None or s.windowsize != 1 or s.rtt is None or s.rtt_n < MIN_SAMPLES or s.moved < MIN_BLOCKS:
        return None
    rtt = s.rtt
    if rtt < MIN_RTT or s.first_move is None or s.last_move is None or s.last_move <= s.first_move:
        return None
    rate = (s.moved - 1) * s.blksize / (s.last_move - s.first_move)
    if rate < 0.4 * s.blksize / rtt or rate > 1.25 * s.blksize / rtt:
        return None  # something else (loss, a slow disk) holds it back, or the estimate is off
    # The cap is what the fastest round trip allows: each block waits at least that long (a sample is a
    # block's wait), so the rate measured never exceeds it. The smoothed round trip leans to the last
    # samples, and a transfer that slowed at its end measured more than a cap taken from it.
    fastest = s.rtt_min or rtt
    cap = s.blksize / fastest
    summary = (f"Lock-step over a {rtt * 1000:.1f} ms round trip (the fastest {fastest * 1000:.1f} ms): one "
               f"{s.blksize}-byte block per round trip caps the rate at {fmt_rate(cap)}; measured {fmt_rate(rate)}")
    asked_ws = s.req.get("windowsize")
    bigger = f"; blksize 1468 alone would give {fmt_rate(1468 / rtt)}" if s.blksize < 1468 else ""
    if not s.client_side:
        suggestion = ("The client sets the pace: it should ask for windowsize (RFC 7440; we grant it) or a larger "
                      f"blksize{bigger}.")
    elif asked_ws is not None:
        suggestion = (f"{s.other.capitalize()} does not grant windowsize (asked {asked_ws}), so a larger blksize is "
                      f"the only lever{bigger or ' left'}.")
    else:
        # The reader of a capture is not the client that asks: the device is, and its request is what to change.
        ask = (f"{s.us[0].upper()}{s.us[1:]} sets the pace: its request should ask for windowsize" if s.observed
               else "Ask for windowsize")
        servers = "atftpd does" if s.observed else "atftpd and tftpdiag do"  # (a capture's server is not ours)
        suggestion = (f"{ask} (RFC 7440), e.g. 16: the cap becomes 16 x {s.blksize} B per round trip, "
                      f"about {fmt_rate(16 * s.blksize / rtt)}, if the server supports it ({servers}; "
                      f"tftpd-hpa 5.2 and dnsmasq 2.90 do not){bigger}.")
    ev = [f"{s.rtt_n} round trips sampled, smoothed RTT {rtt * 1000:.1f} ms",
          f"{s.moved:,} blocks of {s.blksize} B in {s.last_move - s.first_move:.2f} s"]
    return Finding("latency-bound", INFO, summary, evidence(ev), suggestion, s.session)


RULES = (latency_bound,)
