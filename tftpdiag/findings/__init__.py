"""Findings: the cause of a failure (or of a slow or odd transfer) in plain words, read from the event
stream of live sessions and of transfers rebuilt from traces.

    analyzer = Analyzer()
    for batch in batches:              # live: e.g. a lossless bus subscription drained on a timer
        new_or_changed = analyzer.feed(batch)
        analyzer.tick(time.time())     # time passing alone can make a finding (stalled, no-reply)
    analyzer.findings(session_id)      # errors first

    analyze(events)                    # a finished list (a trace file, a run that has ended)

One module per family of causes: reach (silence, ICMP, answers from elsewhere, stalls), errors (ERROR
packets and refusals), negotiation (options), loss (missing and repeated packets), speed, rollover,
content, limits (a transfer stopped for its size). Every finding has a stable id; ``IDS`` lists them all.

Around them: session_state (what is known of one session) and fold (how each event updates it, with
netascii_scan for text content); rules (a rule's declarations, its context and the order they give);
predicates (judgments several rules share); followups (a size probe and the download after it);
analyzer (sessions, evaluation, retirement); model (the Finding and its wording helpers).

A rule is declared with what it makes and what it comes after, and reads a small context, not the
analyzer::

    @rule("tsize-mismatch", after=("client-ignored-oack",))
    def tsize_mismatch(s: SessionState, ctx: Context) -> Finding | None:
        if ctx.found("client-ignored-oack") is not None: ...
"""

from tftpdiag.findings.analyzer import IDS, Analyzer, analyze
from tftpdiag.findings.model import (
           ERROR,
           INFO,
           SEVERITIES,
           WARNING,
           Finding,
           escape_name,
           severity_rank,
)

__all__ = [
           "ERROR",
           "IDS",
           "INFO",
           "SEVERITIES",
           "WARNING",
           "Analyzer",
           "Finding",
           "analyze",
           "escape_name",
           "severity_rank",
]
