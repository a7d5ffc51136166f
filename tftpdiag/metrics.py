"""``serve --metrics HOST:PORT``: Prometheus text at ``/metrics``, from the official client library.

Counters move when a session ends (the same moment it is printed, logged and recorded), so a scrape
agrees with the log line for line. The number of transfers running is read at each scrape from the
same feed: begun and not yet ended (the server may still hold an ended one a moment, for a late
repeat of its last packet; that one is not counted).
Every label value is a word of tftpdiag's own (a direction, a result, a refusal's reason, a finding
id), never text from the network: a client cannot grow the label set.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tftpdiag.served import Served

__all__ = ["Metrics", "MetricsSetupError"]

# Seconds: a config file takes milliseconds, a firmware image tens of seconds, a stalled one minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class MetricsSetupError(Exception):
    """The metrics endpoint cannot listen: one line for the user."""


class MetricsSetupError(Exception):
    """The metrics endpoint cannot listen: one line for the user."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (every IPv4 address) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, like 127.0.0.1:9469 or :9469, not {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.sessions = Counter("tftpdiag_sessions", "Transfers that ended, by direction and result (ok, failed)",
                                ["direction", "result"], registry=registry)
        self.sent = Counter("tftpdiag_bytes_sent", "File bytes sent to clients (downloads)", registry=registry)
        self.received = Counter("tftpdiag_bytes_received", "File bytes received from clients (uploads)",
                                registry=registry)
        self.retransmits = Counter("tftpdiag_retransmits", "Datagrams the server sent again", registry=registry)
        self.refused = Counter("tftpdiag_refused", "Requests refused before a transfer began, by reason",
                               ["reason"], registry=registry)
        self.findings = Counter("tftpdiag_findings", "Findings about finished sessions, by finding id", ["id"],
                                registry=registry)
        self.duration = Histogram("tftpdiag_session_duration_seconds", "How long transfers took",
                                  ["direction"], buckets=DURATION_BUCKETS, registry=registry)
        self._running: Callable[[], int] = lambda: 0
        gauge = Gauge("tftpdiag_active_sessions", "Transfers running now", registry=registry)
        gauge.set_function(lambda: self._running())
        self._http = None

    def watch_running(self, running: Callable[[], int]) -> None:
        """Where the gauge of transfers running reads (the feed that hands this sink its sessions)."""
        self._running = running

    def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics on a thread of the library's; the address it really got (port 0: any)."""
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsSetupError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self._http = server
        return host, server.server_address[1]

    def add(self, session: Served) -> None:
        record = session.record
        for finding in session.findings:
            self.findings.labels(finding.id).inc()
        if record.refused is not None:
            self.refused.labels(record.refused.why).inc()
            return
        direction = record.direction
        self.sessions.labels(direction, session.result).inc()
        (self.sent if direction == "download" else self.received).inc(record.bytes)
        self.retransmits.inc(record.retransmits)
        self.duration.labels(direction).observe(record.duration)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
