"""benchmarks/transfer.py says whether issue 16's targets are met, from the medians it measured."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import benchmark_module

LOCK_STEP, WINDOWED = "blksize 1468", "blksize 1468, windowsize 16"


@pytest.fixture(scope="module")
def transfer():
    with benchmark_module("transfer") as module:
        yield module


def verdicts(transfer, medians, load):
    configs = [c for c in transfer.CONFIGS if c.blksize == 1468]
    judged = transfer.targets(medians, configs, load)
    return {text: (round(over, 3), limit, met) for text, over, limit, met, _ in judged}


def test_quiet_targets(transfer) -> None:
    medians = {(LOCK_STEP, "ours"): 1.2, (LOCK_STEP, "tftpd-hpa+curl"): 2.0, (LOCK_STEP, "tftpy"): 3.0,
               (WINDOWED, "ours"): 0.27, (WINDOWED, "atftpd+atftp"): 0.27}
    assert verdicts(transfer, medians, 0) == {
        f"{LOCK_STEP}: ours vs tftpd-hpa+curl": (0.6, 0.6, True),  # at most 0.6x: exactly is met
        f"{WINDOWED}: ours vs atftpd+atftp": (1.0, 1.0, True),  # no slower
    }
    medians[(WINDOWED, "ours")] = 0.28
    assert not verdicts(transfer, medians, 0)[f"{WINDOWED}: ours vs atftpd+atftp"][2]


def test_loaded_targets_and_a_pair_that_did_not_run(transfer) -> None:
    medians = {(LOCK_STEP, "ours"): 1.3, (LOCK_STEP, "tftpd-hpa+curl"): 0.5, (LOCK_STEP, "tftpy"): 1.3,
               (LOCK_STEP, "ours --busy-poll 0"): 1.2, (WINDOWED, "ours"): 0.36, (WINDOWED, "pytftp"): 0.57}
    assert verdicts(transfer, medians, 1) == {
        f"{LOCK_STEP}: ours vs tftpd-hpa+curl": (2.6, 2.5, False),
        f"{LOCK_STEP}: ours faster than tftpy": (1.0, 1.0, False),  # a tie is not faster
        f"{LOCK_STEP}: ours vs ours --busy-poll 0": (1.083, 1.0, False),
        f"{WINDOWED}: ours faster than pytftp": (0.632, 1.0, True),
        # the windowed "--busy-poll 0" pair did not run: nothing is said of it
    }


def test_a_server_line_written_after_the_client_exits_still_times_the_transfer(transfer, tmp_path, monkeypatch):
    # The server logs a session when it ends, which may be after the client has exited: the benchmark
    # waits for the line instead of counting the transfer as failed.
    log = tmp_path / "server.jsonl"
    line = '{"ok": true, "duration_s": 1.25}'
    looks = iter([[], [], [line]])
    monkeypatch.setattr(transfer, "_log_lines", lambda path: next(looks))
    assert transfer.logged_transfer_time(log, 0) == 1.25
    monkeypatch.setattr(transfer, "_log_lines", lambda path: ['{"ok": false, "duration_s": 1.0}'])
    assert transfer.logged_transfer_time(log, 0) is None  # a failed session is still a failure
    monkeypatch.setattr(transfer, "_log_lines", lambda path: [])
    assert transfer.logged_transfer_time(log, 0, wait=0.05) is None  # and no line at all, once the wait is over


def test_startup_targets() -> None:
    with benchmark_module("startup") as startup:
        medians = {"python -c pass": 0.02, "tftpdiag --help": 0.099, "tftpdiag probe (closed port)": 0.150}
        assert [(name, met) for name, _, _, met in startup.targets(medians)] == [
            ("tftpdiag --help", True), ("tftpdiag probe (closed port)", False)]  # under the limit: 150 ms is not
        assert [name for name, *_ in startup.targets({"tftpdiag --help": 0.2})] == ["tftpdiag --help"]


def test_the_floor_says_whether_a_target_against_a_c_pair_is_within_reach_of_python(transfer) -> None:
    configs = [c for c in transfer.CONFIGS if c.blksize == 1468]
    medians = {(LOCK_STEP, "tftpd-hpa+curl"): 0.6, (LOCK_STEP, "python floor --spin"): 0.54,
               (LOCK_STEP, "python floor"): 0.78, (WINDOWED, "python floor"): 0.2, (WINDOWED, "atftpd+atftp"): 0.25}
    quiet = transfer.floor_verdicts(medians, configs, 0)
    assert [(text, round(over, 3), limit, within) for text, over, limit, within in quiet] == [
        (f"{LOCK_STEP}: python floor vs tftpd-hpa+curl", 0.9, 0.6, False),  # the faster floor, not the first
        (f"{WINDOWED}: python floor vs atftpd+atftp", 0.8, 1.0, True)]
    loaded = transfer.floor_verdicts(medians, configs, 1)  # (windowed, loaded: the target is against pytftp)
    assert [(round(over, 3), limit, within) for _, over, limit, within in loaded] == [(0.9, 2.5, True)]
    del medians[(LOCK_STEP, "tftpd-hpa+curl")], medians[(WINDOWED, "atftpd+atftp")]
    assert transfer.floor_verdicts(medians, configs, 0) == []  # nothing to judge against


@pytest.mark.parametrize("blksize, windowsize, spin, size", [
    (8, None, False, 8 * 70_000 + 3),  # past block 65535: the number rolls over to 0
    (1468, 16, True, 1468 * 16 * 40),  # a multiple of the block size: an empty last DATA ends it
    (512, None, True, 100_000),
])
def test_the_floor_pair_downloads_a_file_whole(transfer, tmp_path, blksize, windowsize, spin, size) -> None:
    """benchmarks/floor.py is a real TFTP pair (a floor that skipped work would measure nothing): the file
    arrives whole, lock-step and windowed, spinning and blocking."""
    import os
    import subprocess

    from tests.support.findings_kit import wait_for

    root = tmp_path / "root"
    root.mkdir()
    content = os.urandom(size)
    (root / "f.bin").write_bytes(content)
    port = transfer.free_port()
    server = subprocess.Popen([transfer.PY, transfer.FLOOR, "serve", str(root), "--port", str(port)]
                              + (["--spin"] if spin else []))
    try:
        wait_for(lambda: transfer.udp_bound(port), 10.0, "the floor server's port")
        out = tmp_path / "out.bin"
        argv = [transfer.PY, transfer.FLOOR, "get", "127.0.0.1", str(port), "f.bin", str(out),
                "--blksize", str(blksize)]
        argv += (["--windowsize", str(windowsize)] if windowsize else []) + (["--spin"] if spin else [])
        assert subprocess.run(argv, timeout=60).returncode == 0
        assert out.read_bytes() == content
        missing = subprocess.run(argv[:5] + ["nothing.bin"] + argv[6:], timeout=60)
        assert missing.returncode == 1  # the ERROR ends it
    finally:
        server.kill()
        server.wait()



def test_no_pair_always_runs_just_after_the_same_one(transfer) -> None:
    """Each round and config shuffles the pairs: over the rounds of a run, every pair follows several others."""
    pairs = transfer.PAIRS
    before: dict[str, set[str]] = {p.name: set() for p in pairs}
    for r in range(7):
        for config in range(2):
            order = transfer.round_order(pairs, r, config)
            assert sorted(p.name for p in order) == sorted(p.name for p in pairs)
            for a, b in zip(order, order[1:], strict=False):
                before[b.name].add(a.name)
    assert all(len(names) >= 3 for names in before.values()), before
    assert transfer.round_order(pairs, 2, 1) == transfer.round_order(pairs, 2, 1)  # seeded: runs compare


def test_the_view_does_not_always_run_just_after_its_headless_twin(transfer) -> None:
    """--tui: each round's headless and view runs come in a shuffled (seeded) order."""
    orders = [tuple(transfer.view_order(r, config)) for r in range(9) for config in range(2)]
    assert all(sorted(order) == [False, True] for order in orders)
    assert {(False, True), (True, False)} <= set(orders)
    assert sum(order[0] for order in orders) >= 4 and sum(not order[0] for order in orders) >= 4
    assert transfer.view_order(3, 1) == transfer.view_order(3, 1)


def test_the_view_s_rounds_are_compared_pair_by_pair(transfer) -> None:
    """The view's time over the headless time of the same round; a round where either failed is left out."""
    assert transfer.paired_ratios([0.2, None, 0.3, 0.5], [0.1, 0.1, None, 0.25]) == [2.0, 2.0]


def test_a_ratio_near_its_limit_is_also_given_round_by_round(transfer) -> None:
    """Loaded, ours against spinning off is a few percent either way: the rounds' ratios and their spread
    say whether that is more than noise."""
    ours = [1.02, 1.10, None, 0.99, 1.04, 1.00]
    off = [1.00, 1.00, 1.00, 1.00, 1.00, None]
    assert transfer.round_by_round(ours, off) == "round by round 1.03x (middle half 1.00-1.08x, 4 rounds)"
    assert transfer.round_by_round(ours[:3], off[:3]) is None  # too few rounds to give a spread
    # From 6 rounds, a 95% interval for the rounds' median too: with 6, the least and the most.
    ours, off = [1.02, 1.10, 0.97, 0.99, 1.04, 1.00], [1.0] * 6
    assert transfer.round_by_round(ours, off) == (
        "round by round 1.01x (middle half 0.98-1.06x, 6 rounds; their median within 0.97-1.10x at 95%)")


def test_the_interval_of_a_median_is_the_order_statistics_the_binomial_allows(transfer) -> None:
    """k-th smallest to k-th largest, k the most with P(Binomial(n, 1/2) < k) <= 2.5%: k = 1 for n = 6-8
    (2/64 = 3.1% outside at n = 6), 2 for 9-11, 3 for 12, 10 for 30; fewer than 6 values have none."""
    assert transfer.median_interval([1.0] * 5) is None
    values = [float(v) for v in range(1, 31)]  # 1..30, in any order
    assert transfer.median_interval(values[::-1]) == (10.0, 21.0)
    assert transfer.median_interval(values[:9]) == (2.0, 8.0)
    assert transfer.median_interval(values[:8]) == (1.0, 8.0)
    assert transfer.median_interval(values[:6]) == (1.0, 6.0)


def test_a_line_the_server_is_still_writing_is_not_read(transfer, tmp_path) -> None:
    """Read half-written, a session's line ended a run of the view's benchmark on a JSON error."""
    log = tmp_path / "server.jsonl"
    assert transfer._log_lines(log) == []  # no log yet
    log.write_text('{"ok": true, "duration_s": 1.25}\n{"ok": true, "dura')
    assert transfer._log_lines(log) == ['{"ok": true, "duration_s": 1.25}']
    assert transfer.logged_transfer_time(log, 1, wait=0.05) is None  # the second: not written yet
    log.write_text('{"ok": true, "duration_s": 1.25}\n{"ok": true, "duration_s": 0.5}\n')
    assert transfer.logged_transfer_time(log, 1) == 0.5


def test_a_ratio_beside_its_limit_gets_a_third_decimal(transfer) -> None:
    """1.004 against "at most 1x" is NOT met: shown as 1.00x the verdict contradicted the figure."""
    assert transfer.ratio_text(1.004, 1.0) == "1.004"
    assert transfer.ratio_text(0.998, 1.0) == "0.998"
    assert transfer.ratio_text(1.2, 2.5) == "1.20" and transfer.ratio_text(0.57, 1.0) == "0.57"


def test_never_slower_than_spinning_off_is_judged_by_the_rounds_interval(transfer) -> None:
    """At parity, the medians' ratio falls either side of 1 by chance (the same build against itself read
    1.02x): the verdict is the rounds' 95% interval. Met when it reaches 1 and stays within 3% of it; NOT
    met when it lies above 1 (shown slower) or spreads beyond 1.03x (the run cannot tell a 3% gap)."""
    off = [1.0] * 12
    at_parity = [1.02, 0.99, 1.01, 1.00, 0.98, 1.02, 1.01, 0.995, 1.005, 1.03, 0.99, 1.01]
    assert transfer.parity_verdict(at_parity, off) == (True, "not shown slower, resolved to within 3%")
    slower = [r + 0.03 for r in at_parity]  # the interval (1.02-1.05x) lies above 1
    assert transfer.parity_verdict(slower, off) == (False, "shown slower (the interval is above 1)")
    spread = [0.9, 1.1, 0.95, 1.05, 0.92, 1.08, 1.0, 1.0, 0.97, 1.03, 0.99, 1.01]  # 0.95-1.05x
    met, why = transfer.parity_verdict(spread, off)
    assert not met and why.startswith("not resolved: the interval reaches 1.05x")
    assert transfer.parity_verdict(at_parity[:5], off[:5]) is None  # too few rounds for an interval

    # targets() takes it from the rounds where they were given: the medians' 1.005x alone is NOT met.
    configs = [c for c in transfer.CONFIGS if c.blksize == 1468 and c.windowsize]
    medians = {(WINDOWED, "ours"): 0.2010, (WINDOWED, "ours --busy-poll 0"): 0.2000}
    rounds = {(WINDOWED, "ours"): [0.2 * r for r in at_parity], (WINDOWED, "ours --busy-poll 0"): [0.2] * 12}
    key = f"{WINDOWED}: ours vs ours --busy-poll 0"
    assert {t[0]: t[3] for t in transfer.targets(medians, configs, 1)}[key] is False
    assert {t[0]: t[3] for t in transfer.targets(medians, configs, 1, rounds)}[key] is True
    rounds[(WINDOWED, "ours")] = [0.2 * r for r in slower]
    assert {t[0]: t[3] for t in transfer.targets(medians, configs, 1, rounds)}[key] is False


def test_the_control_pair_is_the_same_build_as_ours(transfer, tmp_path) -> None:
    """"ours again" runs what "ours" runs, server and client, with nothing added: its difference from
    ours is the run's own noise."""
    pairs = {p.name: p for p in transfer.PAIRS}
    ours, again = pairs["ours"], pairs[transfer.AGAIN]
    assert again.server(tmp_path, 6969) == ours.server(tmp_path, 6969)
    config = next(c for c in transfer.CONFIGS if c.windowsize)
    assert again.client(6969, "big.bin", config, tmp_path / "o") == ours.client(6969, "big.bin", config, tmp_path / "o")
