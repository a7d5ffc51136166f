"""How long a thread has waited for a CPU, what another process's threads have used, and how many
tasks on the machine are runnable besides this process's own: Linux's schedstat and loadavg, read as a
spinning loop (engine/spin.py) judges whether the peer it waits for is short of CPU."""

from __future__ import annotations

import os

__all__ = ["ThreadDelay", "ProcessCpu", "share_cpu_with", "others_runnable"]


class ThreadDelay:
    """The total time the calling thread has waited, runnable, for a CPU (seconds): the run_delay of
    Linux's /proc/thread-self/schedstat, less the CPU time of the process :func:`share_cpu_with` named,
    if any. Made on the thread it measures; raises OSError where there is no such file (not Linux, or a
    kernel without schedstats). ``shared``: whether such a process's CPU time is taken out."""

    __slots__ = ("_fd", "_shared")

    def __init__(self) -> None:
        self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        self._shared = ProcessCpu(_SHARED_WITH) if _SHARED_WITH is not None else None

    def __call__(self) -> float:
        try:
            delay = int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0
        return delay - self._shared() if self._shared is not None else delay

    @property
    def shared(self) -> bool:
        return self._shared is not None

    def close(self) -> None:
        os.close(self._fd)


class ProcessCpu:
    """The CPU time (seconds) the threads of process ``pid`` have used since this was made, from each
    thread's /proc schedstat (nanoseconds; /proc/PID/stat counts in 10 ms ticks, too coarse for the
    spans a spinning loop judges the delay over). A thread that ends keeps what it used; nothing raises."""

    __slots__ = ("_tasks", "_last", "_total")

    def __init__(self, pid: int) -> None:
        self._tasks = f"/proc/{pid}/task"
        self._last: dict[str, int] = {}
        self._total = 0
        self()
        self._total = 0  # what the threads used before: not counted

    def __call__(self) -> float:
        try:
            tids = os.listdir(self._tasks)
        except OSError:
            return self._total / 1e9  # the process has ended
        last, now = self._last, {}
        for tid in tids:
            try:
                with open(f"{self._tasks}/{tid}/schedstat", "rb") as f:
                    used = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            now[tid] = used
            self._total += max(used - last.get(tid, 0), 0)
        self._last = now
        return self._total / 1e9


# A process whose threads share this process's CPU (share_cpu_with): its CPU time is not contention.
_SHARED_WITH: int | None = None


def share_cpu_with(pid: int | None) -> None:
    """Tell this process's spinning loops that the process ``pid`` runs on the same CPU as they do, on
    purpose, and that the time it keeps them waiting is not contention to give way to (see
    engine/spin.py's _DELAYED).

    Why: the full-screen view runs its transfer apart (engine/apart.py) and, on a 2-core machine, on
    the same CPU as itself, so that a lock-step peer on the other keeps a CPU of its own (otherwise the
    view's frames pushed one spinning end onto the other's CPU, where the two then preempted each other
    15,000 times in a 32 MiB transfer: measured with perf sched). But every frame of the view then
    keeps the transfer's thread waiting for a moment, which looked like a CPU-bound neighbour and
    paused spinning for 0.25-2 s three to six times a transfer. Counted out, a frame costs the
    transfer the CPU it takes and no more."""
    global _SHARED_WITH
    _SHARED_WITH = pid


def others_runnable(loadavg: str = "/proc/loadavg", tasks: str = "/proc/self/task") -> int | None:
    """How many tasks (threads) on the machine are runnable now, besides this process's own (None: not
    known here). /proc/loadavg's fourth field counts every runnable task, the reader included; each of
    this process's threads says its own state in its stat file."""
    try:
        with open(loadavg, "rb") as f:
            runnable = int(f.read().split()[3].split(b"/")[0])
        own = 0
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/stat", "rb") as f:
                    # The state follows the command name, which is in parentheses and may hold any byte.
                    own += f.read().rpartition(b")")[2][1:2] == b"R"
            except OSError:
                continue  # the thread ended meanwhile
    except (OSError, ValueError, IndexError):
        return None
    return max(runnable - own, 0)
