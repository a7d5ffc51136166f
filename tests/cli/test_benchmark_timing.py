"""benchmarks/timing.py: a program timed to its exit, with a limit that kills it."""

from __future__ import annotations

import sys
import threading

import pytest

from tests.support.benchmarks import benchmark_module


@pytest.fixture(scope="module")
def timing():
    with benchmark_module("timing") as module:
        yield module


def test_the_exit_status_comes_back(timing) -> None:
    assert timing.run_timed([sys.executable, "-c", "pass"], 30)[0] == 0
    assert timing.run_timed([sys.executable, "-c", "raise SystemExit(3)"], 30)[0] == 3


def test_a_program_past_its_limit_is_killed_and_reported(timing) -> None:
    status, elapsed = timing.run_timed([sys.executable, "-c", "import time; time.sleep(60)"], 0.5)
    assert status is None and elapsed < 60


def test_the_wait_blocks_instead_of_polling(timing, monkeypatch) -> None:
    # subprocess's wait(timeout) polls with sleeps growing to 50 ms and reports the poll's time, not the
    # exit's: the wait must be the blocking one (no timeout), the limit kept by a timer thread.
    import subprocess

    waits = []
    original = subprocess.Popen.wait

    def wait(self, timeout=None):
        waits.append(timeout)
        return original(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", wait)
    timing.run_timed([sys.executable, "-c", "pass"], 30)
    assert waits == [None]
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]
