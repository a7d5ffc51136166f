"""The machine a benchmark ran on, in the figures our ratios against C peers depend on.

    python benchmarks/host.py

tftpdiag's time per block is mostly Python bytecode; tftpd-hpa's, curl's and atftp's is mostly system
calls and the wake-ups between the two processes. So the ratio moves with the machine even when the
code does not: the same build (a288bb6), 32 MiB lock-step on a quiet 2-core virtual machine, measured
0.47x tftpd-hpa + curl's time one day (0.92 s against 1.98 s) and 2.05x on another machine the next
(1.67 s against 0.82 s): there the C pair took less than half the time, ours nearly twice as long.
Every benchmark table therefore prints this line with its date (the first machine did not record it):

- the interpreter: its version and path (builds differ: on that second machine pyenv's 3.11.7 ran the
  loop below at 64 ns an iteration, Debian's 3.11.2 at 43 ns; how it was built cannot be read back
  reliably, since Debian's profile-guided build leaves no trace in sysconfig's configure arguments);
- ``loop``: nanoseconds per iteration of a plain ``for`` loop adding integers (the best of 5 runs of
  200,000), the speed of bytecode on this machine;
- ``round trip``: microseconds for a 4-byte UDP datagram to go to another process and back over
  loopback, each process blocked in recv until its datagram comes (median of 2,000), so every leg
  wakes a sleeping process, as a lock-step peer that does not spin does per block.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import time

__all__ = ["loop_ns", "round_trip_us", "describe"]


def loop_ns(iterations: int = 200_000, runs: int = 5) -> float:
    """Nanoseconds per iteration of a plain loop, the best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        total = 0
        started = time.perf_counter()
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return best / iterations * 1e9


def round_trip_us(count: int = 2000) -> float | None:
    """Median microseconds of a UDP round trip over loopback to a forked echoing process (None where
    there is no fork)."""
    if not hasattr(os, "fork"):
        return None
    here = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    there = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    here.bind(("127.0.0.1", 0))
    there.bind(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:  # the echo: blocked in recv for each datagram, until the parent's empty one
        try:
            here.close()
            while True:
                data, addr = there.recvfrom(64)
                if not data:
                    break
                there.sendto(data, addr)
        finally:
            os._exit(0)
    there_addr = there.getsockname()
    there.close()
    here.settimeout(5)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            here.sendto(b"ping", there_addr)
            here.recv(64)
            times.append(time.perf_counter() - started)
    except OSError:
        return None
    finally:
        here.sendto(b"", there_addr)
        here.close()
        os.waitpid(pid, 0)
    return statistics.median(times) * 1e6


def describe() -> str:
    """One line: cores, the interpreter, the loop's and the round trip's figures."""
    trip = round_trip_us()
    trip_text = f"{trip:.1f} us" if trip is not None else "n/a"
    return (f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()} "
            f"at {sys.executable}: loop {loop_ns():.0f} ns/iteration, loopback round trip "
            f"{trip_text}")


if __name__ == "__main__":
    print(describe())
