"""Timing a program from its start to its exit, to the millisecond.

``subprocess.run(..., timeout=T)`` does not wait for the exit: it polls for it with sleeps that grow to
50 ms, so the time measured is that of the first poll after the exit. Every headless time that
benchmarks/transfer.py measured before 2026-12-04 fell on that grid (0.113, 0.163, 0.213, 0.263 s, ...:
up to 50 ms late, by as much for peers as for tftpdiag). Here the wait blocks in waitpid and a timer
thread enforces the limit.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

__all__ = ["run_timed"]


def run_timed(argv: list[str], timeout: float, **popen: Any) -> tuple[int | None, float]:
    """Run ``argv`` to its exit: (its exit status, or None if it was killed at ``timeout`` seconds; the
    seconds from just before it was started to its exit)."""
    killed = threading.Event()

    started = time.perf_counter()
    proc = subprocess.Popen(argv, **popen)

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        status = proc.wait()
    finally:
        elapsed = time.perf_counter() - started
        timer.cancel()
        timer.join()
    return (None if killed.is_set() else status), elapsed
