"""Which CPUs the full-screen view and its transfer's process (engine/apart.py) run on.

On a machine of two CPUs the view and its transfer share one, and a peer on this machine keeps the other
(:func:`shared_cpu`); beside a CPU-bound program the view moves to the other CPU for the transfer
(:func:`move_view_off`). Each decision says why, with what it was measured against, where it is made.
"""

from __future__ import annotations

import os
import resource
import threading

__all__ = ["own_cpus", "shared_cpu", "set_threads", "pin_transfer", "move_view_off", "pinned_transfer_ended"]

_CPUS: list[set[int]] = []  # this process's CPUs before it was first pinned (shared_cpu)


def own_cpus() -> set[int] | None:
    """The CPUs this process may use, as they were before :func:`_pin` kept it to one."""
    if not _CPUS:
        try:
            _CPUS.append(set(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return None
    return _CPUS[0]


def shared_cpu() -> int | None:
    """The CPU the view and its transfer's process share on a machine of two, else None.

    Why: a lock-step transfer against a peer on this machine keeps both ends spinning, one on each
    CPU. The view's frames, landing on either, pushed one end onto the other's CPU, and there the two
    ends preempted each other (15,000 times in one 32 MiB transfer, measured with perf sched): the
    transfer in the view took twice its headless time. Kept together on one CPU, the view and its
    transfer leave the other to the peer. With more CPUs the scheduler has room: nothing is pinned.
    Judged by the CPUs this process had before it was first pinned (:func:`own_cpus`): judged by its
    affinity, a rerun in the same view found one CPU, and its transfer ran pinned without counting the
    view's frames out of its wait for a CPU (cpu_wait.share_cpu_with), which paused its spinning."""
    cpus = own_cpus()
    return max(cpus) if cpus is not None and len(cpus) == 2 else None


def _pin(child: int, cpu: int) -> None:
    """This process's threads and the child's (threads either starts later inherit it: the child's
    engine and writer threads are started later) on ``cpu``."""
    set_threads(child, {cpu})
    set_threads("self", {cpu})


def set_threads(pid: int | str, cpus: set[int]) -> None:
    """Every thread of the process ``pid`` ("self": this one) on ``cpus``. A refusal (a container's
    cpuset), or a process that has ended, leaves things as the scheduler has them."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)
    except OSError:
        pass


# A CPU-bound program beside the view (a build, a browser tab): the transfer's end and a peer on this
# machine then share one CPU, one waking the other there as they do headless, and the view, pinned with
# them, took every frame's CPU out of the transfer's time: a lock-step download in the view took 1.65x
# its headless time beside one CPU-bound program (6 interleaved rounds, 32 MiB), against 1.17x with the
# view moved to the other CPU for the transfer, where its frames take their share from that program
# instead (its threads sleep between frames, so the scheduler lets them in promptly). The transfer's
# process may then run on either CPU, as a headless probe's engine does: kept to one, the scheduler
# moved a peer on this machine away from it (seen with perf sched); unpinned, the view's transfer took
# 1.389 s against 1.439 s and 1.550 s against 1.635 s (12 rounds each).
# Judged by the CPU time other programs used since the last mark (the view's first transfer made ready,
# or its last transfer's end): the CPUs' busy ticks in /proc/stat less this process's own CPU time and
# its transfer's process's. More than _BUSY of one CPU's time: a program of its own runs. Quiet, others
# used 6-22% while the view drew its first screens (the terminal drawing them: tmux, the benchmark's pty
# reader); beside a CPU-bound program, all of a CPU. /proc/stat counts in ticks of 10 ms: a span
# shorter than _JUDGE_TICKS a CPU says nothing, and the view stays with its transfer. (The system's
# count of runnable tasks told the two apart as cleanly at the start, but counts the whole machine's:
# in a container kept to two CPUs of a larger host, other containers' programs would count.)
_BUSY = 0.5
_JUDGE_TICKS = 5
_PROC_STAT = "/proc/stat"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MARK: list[tuple[int, int, float]] = []  # (idle, all, this process's own) ticks at the last mark (_mark)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """Clock ticks of ``cpus`` since boot, idle (with iowait) and all (steal left out: time the CPU was
    not this machine's to give), from /proc/stat's per-CPU lines; None where there are none (not Linux)."""
    try:
        with open(_PROC_STAT, "rb") as f:
            text = f.read()
    except OSError:
        return None
    idle = every = found = 0
    for line in text.splitlines():
        if line[:3] != b"cpu" or not line[3:4].isdigit():
            continue
        name, *fields = line.split()
        try:
            if int(name[3:]) not in cpus:
                continue
            user, nice, system, idle_, iowait, irq, softirq = (int(v) for v in fields[:7])
        except ValueError:
            return None
        idle += idle_ + iowait
        every += user + nice + system + idle_ + iowait + irq + softirq
        found += 1
    return (idle, every) if found == len(cpus) else None


def _own_ticks() -> float:
    """Clock ticks of CPU this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * _TICKS_PER_S


def _mark() -> None:
    """Start the span over which :func:`_others_busy` judges."""
    ticks = _cpu_ticks(own_cpus() or set())
    _MARK[:] = [(*ticks, _own_ticks())] if ticks is not None else []


def _others_busy(child_cpu: float) -> bool:
    """Whether other programs used more than _BUSY of one CPU's time on this process's CPUs since the
    last mark (see _BUSY): the CPUs' busy ticks less this process's CPU and ``child_cpu``, the seconds
    its transfer's process has used since it was spawned. False when the span is too short to say."""
    cpus = own_cpus() or set()
    if not _MARK or not cpus:
        return False
    ticks = _cpu_ticks(cpus)
    if ticks is None:
        return False
    (idle0, every0, own0), (idle1, every1) = _MARK[0], ticks
    span = (every1 - every0) / len(cpus)  # ticks of one CPU's time
    others = (every1 - every0) - (idle1 - idle0) - (_own_ticks() - own0) - child_cpu * _TICKS_PER_S
    return span >= _JUDGE_TICKS and others > _BUSY * span


# This process's transfers running pinned with it (shared_cpu). When the last has ended the view gets
# its CPUs back: kept to one, it could not move away from a CPU-bound program that came to share it.
_PINNED = [0]
_PIN_LOCK = threading.Lock()


def pinned_transfer_ended() -> None:
    """One of this process's pinned transfers has ended: the last gives the view its CPUs back."""
    with _PIN_LOCK:
        _PINNED[0] -= 1
        cpus = own_cpus()
        if _PINNED[0] == 0 and cpus:
            set_threads("self", cpus)
            _mark()  # a rerun judges from here


def pin_transfer(child: int, cpu: int) -> None:
    """Pin this process and its transfer's process ``child`` to ``cpu`` (see :func:`shared_cpu`),
    counted until :func:`pinned_transfer_ended`; the view's first transfer marks where the judging of
    other programs' CPU time begins (see _BUSY)."""
    with _PIN_LOCK:
        _pin(child, cpu)
        _PINNED[0] += 1
        if not _MARK:
            _mark()


def move_view_off(child: int, cpu: int, child_cpu: float) -> bool:
    """Whether other programs keep a CPU busy (see _BUSY; ``child_cpu``: the seconds the transfer's
    process has used); if so, this process's threads move off ``cpu`` and the transfer's process
    ``child`` may run on every CPU."""
    with _PIN_LOCK:
        moved = _others_busy(child_cpu)
        if moved:
            cpus = own_cpus() or set()
            set_threads("self", cpus - {cpu})
            set_threads(child, cpus)
        return moved
