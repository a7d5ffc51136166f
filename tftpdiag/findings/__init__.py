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
