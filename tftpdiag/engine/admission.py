"""How many sessions a server runs at once, and what becomes of a request that comes while it is full.

The morning after a power cut every device asks at once. Refusing them ("server busy") makes each one
wait out its own retry timer, or give up; a request that waits here instead starts the moment a session
ends. So the server takes as many sessions as it has file descriptors for (two each: the file and the
session's socket), raises the process's open-file limit to its hard limit to make that many, and keeps
what is left over in a bounded first-come queue. Only a request that finds the queue full too is refused.

Abuse is told by behaviour, not by counting addresses: many devices behind one NAT address are all real,
while a session whose client never answered (a flood, a forged source address) is the one that gives
its place up when the server is full (see ``TftpServer._make_room``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from tftpdiag.protocol.events import Address

try:  # not on every platform; without it the limits are simply left as they are
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

__all__ = ["raise_open_file_limit", "open_file_limit", "default_capacity", "WaitingRoom", "MOST_SESSIONS",
           "FDS_KEPT"]

# The default capacity's ceiling. One loop serves every session, and its timer sweep walks them all a few
# times a second: past a couple of thousand, more sessions at once only share the same CPU more thinly,
# while waiting requests cost nothing until their turn.
MOST_SESSIONS = 2048
FDS_KEPT = 64  # descriptors kept for everything else: listeners, the wake-up pair, traces, logs, history
_FDS_PER_SESSION = 2  # the file served (or the upload's temporary file) and the session's own socket


def open_file_limit() -> int:
    """The process's soft limit on open files (a large number where it cannot be read)."""
    if resource is None:
        return 1 << 20
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit (Debian's default soft limit, 1024, is 500
    sessions at most) and return the soft limit now in force. A limit that cannot be raised is kept."""
    if resource is None:
        return open_file_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # an infinite hard limit still has the kernel's nr_open above it
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return open_file_limit()


def default_capacity(open_files: int | None = None) -> int:
    """Sessions at once when the user set no --max-sessions: what the open-file limit allows."""
    files = open_file_limit() if open_files is None else open_files
    return max(1, min(MOST_SESSIONS, (files - FDS_KEPT) // _FDS_PER_SESSION))


T = TypeVar("T")


@dataclass
class _Waiting(Generic[T]):
    """A request waiting for a session slot."""

    request: T
    first: float  # when it came, for its place in the queue
    last: float  # when the client last asked (a repeat keeps it alive, not a new place)


class WaitingRoom(Generic[T]):
    """Requests the server has no session for yet, first come first served, keyed by (client, request
    bytes) so that a client resending its request keeps one place. Bounded in count; a request the
    client has stopped repeating for ``patience`` seconds is dropped (the client has given up)."""

    def __init__(self, size: int, patience: float) -> None:
        self.size = size
        self.patience = patience
        self._queue: OrderedDict[tuple[Address, bytes], _Waiting[T]] = OrderedDict()
        self.queued_total = 0  # requests that ever waited here (for tests and reports)

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, client: Address, raw: bytes, request: T, now: float) -> bool:
        """Queue a request (or note a repeat of one already queued); False when the room is full."""
        key = (client, raw)
        waiting = self._queue.get(key)
        if waiting is not None:
            waiting.last = now
            return True
        if len(self._queue) >= self.size:
            return False
        self._queue[key] = _Waiting(request, now, now)
        self.queued_total += 1
        return True

    def holds(self, client: Address, raw: bytes) -> bool:
        return (client, raw) in self._queue

    def take(self, now: float) -> tuple[T, float] | None:
        """The oldest request whose client is still asking, with when it came; None when none is."""
        while self._queue:
            _, waiting = self._queue.popitem(last=False)
            if now - waiting.last <= self.patience:
                return waiting.request, waiting.first
        return None
