"""benchmarks/host.py: the line every benchmark table prints about the machine it ran on."""

from __future__ import annotations

import math
import os
import sys

import pytest

from tests.support.benchmarks import benchmark_module


@pytest.fixture(scope="module")
def host():
    with benchmark_module("host") as module:
        yield module


def test_loop_figure_is_a_time_per_iteration(host) -> None:
    ns = host.loop_ns(iterations=1000, runs=2)
    assert 0 < ns < 1e6 and math.isfinite(ns)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the echo is a forked process")
def test_round_trip_reaches_the_echo_and_reaps_it(host, monkeypatch) -> None:
    forked: list[int] = []
    fork = os.fork

    def recording_fork() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(host.os, "fork", recording_fork)
    trip = host.round_trip_us(count=20)
    assert trip is not None and trip > 0
    assert len(forked) == 1
    with pytest.raises(ChildProcessError):  # the echo has ended and was waited for: no zombie left
        os.waitpid(forked[0], os.WNOHANG)


def test_describe_names_the_interpreter_and_both_figures(host) -> None:
    line = host.describe()
    assert sys.executable in line
    assert "ns/iteration" in line and "loopback round trip" in line and " us" in line
