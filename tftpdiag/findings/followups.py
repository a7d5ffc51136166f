"""Server side: which read followed which. A UEFI size probe (a read ended with ERROR 8 after our OACK)
is followed by the real download of the same file by the same client host; the two may be published
in either order, so reads are remembered by (client host, file name) and a probe waiting for its
download is watched for."""

from __future__ import annotations

from tftpdiag.findings.rules import FollowUp
from tftpdiag.findings.session_state import SessionState
from tftpdiag.protocol.events import TransferStarted
from tftpdiag.protocol.packets import Options

__all__ = ["FollowUps"]

_Key = tuple[str, str]  # (client host, file name)


class FollowUps:
    """Recent reads by client host and file, and the size probes waiting for a read to follow them.
    Bounded: four reads per key, 4096 keys, 10,000 waiting probes."""

    def __init__(self) -> None:
        self._reads: dict[_Key, list[tuple[float, int, Options]]] = {}
        self._probes: dict[_Key, int] = {}

    def read_started(self, ev: TransferStarted) -> int | None:
        """A server-side read began; returns the session of a probe that was waiting for it, if any."""
        key = (ev.peer[0], ev.filename)
        reads = self._reads.pop(key, [])
        reads.append((ev.time, ev.session, ev.requested))
        self._reads[key] = reads[-4:]
        if len(self._reads) > 4096:
            del self._reads[next(iter(self._reads))]
        return self._probes.pop(key, None)

    def after(self, s: SessionState) -> FollowUp | None:
        """The read of the same file by the same client host that came after session ``s`` (time,
        session, its options in words), or None yet (then it is watched for)."""
        if s.peer is None:
            return None
        key = (s.peer[0], s.filename)
        for t, sid, requested in self._reads.get(key, ()):
            if sid != s.session and s.t0 <= t <= s.last_time + 30.0:
                how = "with " + " ".join(f"{k}={v}" for k, v in requested) if requested else "without options"
                return t, sid, how
        if len(self._probes) < 10_000:
            self._probes[key] = s.session
        return None
