"""A server left running, as a user runs it (real `tftpdiag serve` processes, real clients on loopback):
the time on every line, --log and its rotation, --metrics scraped, and the same sinks under the TUI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.serving import serve, wait_for
from tftpdiag.history import Filter, open_store

pytestmark = pytest.mark.timeout(90)

ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "small.bin").write_bytes(os.urandom(3000))
    (served / "big.bin").write_bytes(os.urandom(200_000))
    return served


def _when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_every_plain_line_starts_with_the_time_it_happened(root: Path, tmp_path: Path) -> None:
    before = time.time()
    with serve(root, "--no-tui", tmp=tmp_path) as server:
        assert server.get("small.bin").ok
        assert not server.get("missing.bin").ok  # a refusal, with a finding line under it
        wait_for(lambda: len(server.stdout().splitlines()) >= 3, 10, "three lines")
        assert server.stop() == 0
    # Taken once the server has stopped: what it says as it stops (a device judged then) is stamped
    # when it is said, after the transfers.
    after = time.time()
    lines = server.stdout().splitlines()
    assert any("small.bin" in text for text in lines) and any("missing.bin" in text for text in lines)
    assert any("⚠" in text for text in lines)  # the finding's own line is stamped too
    for text in lines:
        stamp = ISO.match(text)
        assert stamp, text
        assert before - 0.01 <= _when(stamp[1]) <= after + 0.01


def test_json_sessions_say_when_they_started_and_ended(root: Path, tmp_path: Path) -> None:
    before = time.time()
    with serve(root, "--json", tmp=tmp_path) as server:
        assert server.get("big.bin", blksize=512).ok
        assert not server.get("../etc/passwd").ok
        wait_for(lambda: len(server.stdout().splitlines()) >= 2, 10, "two objects")
        after = time.time()
        server.stop()
    objects = [json.loads(text) for text in server.stdout().splitlines()]
    objects = [o for o in objects if o["event"] != "device"]  # judged when the server stops
    assert {o["event"] for o in objects} == {"session", "refused"}
    for obj in objects:
        started, ended = _when(obj["started"]), _when(obj["ended"])
        assert before - 0.01 <= started <= ended <= after + 0.01
    session = next(o for o in objects if o["event"] == "session")
    # 391 lock-step blocks take a moment: the two times are the transfer's, not one time twice.
    assert _when(session["ended"]) - _when(session["started"]) == pytest.approx(session["duration_s"], abs=0.01)
    assert session["duration_s"] > 0


def test_log_survives_a_rotation(root: Path, tmp_path: Path) -> None:
    """logrotate's way: the file is renamed, SIGHUP is sent, and the next lines go to a new file."""
    log = tmp_path / "serve.jsonl"
    log.write_text('{"event": "earlier"}\n')  # appended to, never truncated
    with serve(root, "--no-tui", "--log", str(log), tmp=tmp_path) as server:
        assert server.get("small.bin").ok
        wait_for(lambda: len(log.read_text().splitlines()) == 2, 10, "the first session in the log")
        rotated = tmp_path / "serve.jsonl.1"
        log.rename(rotated)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(log.exists, 10, "the log to be opened anew")
        assert server.get("big.bin").ok
        assert not server.get("missing.bin").ok
        wait_for(lambda: len(log.read_text().splitlines()) == 2, 10, "two sessions in the new log")
        assert server.proc.poll() is None  # SIGHUP did not end it
        assert server.stop() == 0
    old = [json.loads(text) for text in rotated.read_text().splitlines()]
    new = [json.loads(text) for text in log.read_text().splitlines()]
    assert [o.get("file") for o in old] == [None, "small.bin"]
    assert [o["file"] for o in new] == ["big.bin", "missing.bin"]
    assert [o["event"] for o in new] == ["session", "refused"] and new[0]["bytes"] == 200_000
    assert all("started" in o and "ended" in o for o in old[1:] + new)
    assert server.stdout().count(" RRQ ") == 3  # the plain lines went to stdout all along


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_sessions_served(root: Path, tmp_path: Path) -> None:
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(5000))
    with serve(root, "--no-tui", "--allow-upload", "--metrics", "127.0.0.1:0", tmp=tmp_path) as server:
        assert server.metrics_port
        for name, blksize in (("small.bin", 512), ("big.bin", 1468), ("big.bin", 8192)):
            assert server.get(name, blksize=blksize).ok
        assert server.put("up-1.bin", upload).ok and server.put("up-2.bin", upload).ok
        assert not server.get("missing.bin").ok
        assert not server.get("../escape.bin").ok
        assert not server.put("up-1.bin", upload).ok  # exists, and overwriting is not allowed
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quitter:  # takes a block, then gives up
            quitter.settimeout(5)
            quitter.sendto(struct.pack("!H", 1) + b"big.bin\0octet\0", ("127.0.0.1", server.port))
            _, session_port = quitter.recvfrom(1024)
            quitter.sendto(struct.pack("!HH", 5, 0) + b"changed my mind\0", session_port)

        def counted() -> dict | None:
            samples = _scrape(server.metrics_port)
            done = sum(v for (n, _), v in samples.items() if n == "tftpdiag_sessions_total")
            refused = sum(v for (n, _), v in samples.items() if n == "tftpdiag_refused_total")
            return samples if (done, refused) == (6, 3) else None

        samples = wait_for(counted, 10, "six sessions and three refusals counted")
        assert _value(samples, "tftpdiag_sessions_total", direction="download", result="ok") == 3
        assert _value(samples, "tftpdiag_sessions_total", direction="upload", result="ok") == 2
        assert _value(samples, "tftpdiag_sessions_total", direction="download", result="failed") == 1
        # A failed session counts what it moved: one 512-byte block the quitter never acknowledged is
        # not counted as delivered.
        assert _value(samples, "tftpdiag_bytes_sent_total") == 3000 + 2 * 200_000
        assert _value(samples, "tftpdiag_bytes_received_total") == 2 * 5000
        assert _value(samples, "tftpdiag_refused_total", reason="not-found") == 1
        assert _value(samples, "tftpdiag_refused_total", reason="path-escape") == 1
        assert _value(samples, "tftpdiag_refused_total", reason="exists") == 1
        assert _value(samples, "tftpdiag_findings_total", id="file-not-found") == 1
        assert _value(samples, "tftpdiag_retransmits_total") == 0  # loopback loses nothing
        assert _value(samples, "tftpdiag_session_duration_seconds_count", direction="download") == 4
        assert _value(samples, "tftpdiag_session_duration_seconds_count", direction="upload") == 2
        assert _value(samples, "tftpdiag_active_sessions") == 0
        # A client that asks and never answers: a session running, until it gives up or the server stops.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.sendto(struct.pack("!H", 1) + b"big.bin\0octet\0", ("127.0.0.1", server.port))
            wait_for(lambda: _value(_scrape(server.metrics_port), "tftpdiag_active_sessions") == 1, 10,
                     "one session running")
            assert server.stop() == 0


def test_log_history_and_metrics_under_the_tui(root: Path, tmp_path: Path) -> None:
    """The TUI folds its own view; the sinks get the same sessions from a feed of their own."""
    log, db = tmp_path / "tui.jsonl", tmp_path / "tui.sqlite"
    with serve(root, "--log", str(log), "--history", str(db), "--metrics", "127.0.0.1:0", tmp=tmp_path,
               tty=True) as server:
        assert server.get("small.bin").ok
        assert not server.get("missing.bin").ok
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2, 15, "two sessions logged")
        samples = wait_for(lambda: (s := _scrape(server.metrics_port)) and
                           _value(s, "tftpdiag_sessions_total", direction="download", result="ok") == 1 and s,
                           10, "the download counted")
        assert _value(samples, "tftpdiag_refused_total", reason="not-found") == 1
        assert server.quit_tui() == 0
    store = open_store(str(db), create=False)
    try:
        rows = store.sessions(Filter())
    finally:
        store.close()
    assert [(r["file"], r["result"]) for r in rows] == [("small.bin", "ok"), ("missing.bin", "refused")]
    assert [json.loads(text)["file"] for text in log.read_text().splitlines()] == ["small.bin", "missing.bin"]


def test_sinks_that_cannot_start_are_one_line_and_exit_2(root: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1",
                               "--port", "0", "--no-tui", *flags], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        for flags, said in ((("--log", str(tmp_path / "no" / "such" / "dir" / "x.log")), "cannot open the log"),
                            (("--metrics", f"127.0.0.1:{busy.getsockname()[1]}"), "cannot serve metrics"),
                            (("--metrics", "nonsense"), "expected HOST:PORT"),
                            (("--history", str(root)), "cannot open the history")):
            result = run(*flags)
            assert result.returncode == 2, (flags, result.stderr)
            assert said in result.stderr and "Traceback" not in result.stderr
    finally:
        busy.close()
