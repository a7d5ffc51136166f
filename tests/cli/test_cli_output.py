"""What the commands print, as scripts read it: the JSON schema fields (schema, bytes_per_s and its old
name rate_bps, sha256 null for an incomplete transfer, impair), -q (the exit status and errors only),
-v (a tcpdump-like line per packet) and the binary units of the progress bar."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import TIMEOUT, run, served, sha  # noqa: F401 - served is a fixture
from tests.support.peers import free_udp_port, udp_bound, wait_until
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.protocol.netascii import netascii_size
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.report import SCHEMA
from tftpdiag.sweep import DEFAULT_PROBES, ProbeResult, SweepReport

# 14:10:49.123456 #1 127.0.0.1:40000 > 127.0.0.1:69: DATA 1, 1472 bytes
PACKET = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} #\d+ (\S+) > (\S+): "
                    r"(RRQ|WRQ|DATA|ACK|OACK|ERROR)\b(.*), (\d+) bytes(, .*)?$")
BLOCKS = 300_000 // 1468 + 1  # image.bin in 1468-byte blocks


def probe(port: int, *args: str, name: str = "image.bin") -> subprocess.CompletedProcess[str]:
    return run("probe", "127.0.0.1", name, "--port", str(port), *args)


def start_serve(root: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """``tftpdiag serve ROOT`` on a free loopback port, once it is listening (-q prints no banner)."""
    port = free_udp_port()
    proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1",
                             "--port", str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: udp_bound("127.0.0.1", port) or proc.poll() is not None, TIMEOUT, "the server to listen")
    except BaseException:
        proc.kill()
        raise
    assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
    return proc, port


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM a server; all it printed (read from the same file objects as any readline before, whose
    buffers communicate() would skip)."""
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    proc.wait(10)
    return out, err


def packets(text: str) -> list[re.Match[str]]:
    return [m for m in map(PACKET.match, text.splitlines()) if m]


# -- JSON ---------------------------------------------------------------------------------------------

def test_probe_json_has_the_schema_fields(served: tuple[Path, int]) -> None:
    root, port = served
    result = probe(port, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["schema"] == SCHEMA == 1
    assert summary["bytes_per_s"] > 0 and summary["rate_bps"] == summary["bytes_per_s"]
    assert summary["bytes_per_s"] == pytest.approx(300_000 / summary["duration_s"], rel=0.01)
    assert summary["sha256"] == sha(root / "image.bin") and summary["impair"] is None


@pytest.mark.parametrize("how", [["--max-size", "10k", "--no-tsize"], ["--expect-sha256", "0" * 64, "-o", "kept.bin"]])
def test_sha256_is_null_unless_the_whole_file_came(served: tuple[Path, int], tmp_path: Path, how: list[str]) -> None:
    """A download stopped part-way has no digest; one that completed but did not match keeps its digest
    (it says what did arrive)."""
    root, port = served
    how = [str(tmp_path / a) if a == "kept.bin" else a for a in how]
    summary = json.loads(probe(port, "--json", *how).stdout)
    assert summary["ok"] is False and summary["schema"] == SCHEMA
    if how[0] == "--max-size":
        assert summary["bytes"] > 0 and summary["sha256"] is None
    else:
        assert summary["bytes"] == 300_000 and summary["sha256"] == sha(root / "image.bin")
    missing = json.loads(probe(port, "--json", name="missing.bin").stdout)
    assert missing["ok"] is False and missing["bytes"] == 0 and missing["sha256"] is None


def test_impaired_run_records_its_spec_and_seed(served: tuple[Path, int]) -> None:
    _, port = served
    given = json.loads(probe(port, "--json", "--impair", "delay=1ms,seed=7").stdout)
    assert given["impair"] == {"spec": "delay=1ms,seed=7", "seed": 7}
    result = probe(port, "--json", "--impair", "dup=1%")
    chosen = json.loads(result.stdout)["impair"]
    assert isinstance(chosen["seed"], int) and chosen["spec"] == f"dup=1%,seed={chosen['seed']}"
    assert f"seed={chosen['seed']}" in result.stderr  # the same seed the run told the user


def test_serve_and_trace_json_carry_the_schema(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 3000)
    trace = tmp_path / "serve.jsonl"
    proc, port = start_serve(tmp_path, "--json", "--impair", "delay=1ms,seed=3", "--trace", str(trace))
    try:
        assert probe(port, "--retries", "20", name="a.bin").returncode == 0
        line = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        stop(proc)
    finally:
        proc.kill()
    assert line["schema"] == SCHEMA and line["event"] == "session" and line["bytes"] == 3000
    assert line["bytes_per_s"] == line["rate_bps"] > 0
    assert line["impair"] == {"spec": "delay=1ms,seed=3", "seed": 3}
    traced = json.loads(run("trace", str(trace), "--json").stdout)
    assert traced["schema"] == SCHEMA
    assert [t["schema"] for t in traced["transfers"]] == [SCHEMA]
    assert traced["transfers"][0]["bytes_per_s"] == traced["transfers"][0]["rate_bps"] > 0


def test_sweep_json_carries_the_schema() -> None:
    result = ProbeResult(DEFAULT_PROBES[0], "completed", bytes=2048, duration=0.5)
    report = SweepReport("127.0.0.1", 69, "f", max_bytes=2 << 20, results=[result])
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == SCHEMA
    assert data["probes"][0]["bytes_per_s"] == data["probes"][0]["rate_bps"] == 4096.0
    assert data["fastest"]["bytes_per_s"] == 4096.0


# -- -q ------------------------------------------------------------------------------------------------

def test_quiet_prints_nothing_on_success_and_one_line_on_failure(served: tuple[Path, int]) -> None:
    _, port = served
    ok = probe(port, "-q", "--impair", "delay=1ms")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    failed = probe(port, "--quiet", name="missing.bin")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1
    assert "missing.bin" in failed.stderr and "ERROR 1 (file not found)" in failed.stderr
    as_json = probe(port, "-q", "--json")
    assert json.loads(as_json.stdout)["ok"] is True and as_json.stderr == ""


def test_quiet_serve_reports_only_what_failed(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 3000)
    proc, port = start_serve(tmp_path, "-q", "--no-tui")
    try:
        assert probe(port, "--retries", "20", name="a.bin").returncode == 0
        assert probe(port, "--retries", "20", name="nope.bin").returncode == 1
        first = proc.stdout.readline()  # type: ignore[union-attr]
        out, err = stop(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "nope.bin" in first and "a.bin" not in first + out  # the completed session is not reported
    assert err == ""  # no banner, no goodbye


def test_quiet_trace_prints_nothing(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    trace = tmp_path / "t.jsonl"
    assert probe(port, "-q", "--trace", str(trace)).returncode == 0
    result = run("trace", str(trace), "-q")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- -v ------------------------------------------------------------------------------------------------

def test_verbose_prints_every_packet_then_the_summary(served: tuple[Path, int]) -> None:
    _, port = served
    result = probe(port, "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    seen = packets(result.stdout)
    rrq = seen[0]
    assert rrq.group(3) == "RRQ" and rrq.group(2) == f"127.0.0.1:{port}"
    assert rrq.group(4) == " 'image.bin' octet blksize=1468 tsize=0"
    assert seen[1].group(3) == "OACK" and "tsize=300000" in seen[1].group(4)
    data = {int(m.group(4)) for m in seen if m.group(3) == "DATA"}
    assert data == set(range(1, BLOCKS + 1))
    assert {int(m.group(5)) for m in seen if m.group(3) == "DATA" and int(m.group(4)) < BLOCKS} == {1472}
    server = seen[1].group(1)  # the transfer ID the server answered from
    assert all(m.group(1) == server for m in seen if m.group(3) == "DATA")
    # Every packet line comes before the summary, which is unchanged.
    assert lines.index(rrq.group(0)) == 0 and lines[len(seen)].startswith("✔ downloaded 'image.bin'")


def test_verbose_with_json_keeps_stdout_one_document(served: tuple[Path, int]) -> None:
    _, port = served
    result = probe(port, "-v", "--json", "--impair", "drop=ack:2,seed=1")
    assert json.loads(result.stdout)["ok"] is True
    assert {int(m.group(4)) for m in packets(result.stderr) if m.group(3) == "DATA"} == set(range(1, BLOCKS + 1))
    assert re.search(r"#\d+ impair out: dropped ACK 2 \(drop=ack:2\)$", result.stderr, re.MULTILINE)
    # The server, without ACK 2, sends DATA 2 again: a duplicate here, answered again.
    notes = {(m.group(3), m.group(4).strip(), m.group(6)) for m in packets(result.stderr) if m.group(6)}
    assert ("DATA", "2", ", duplicate") in notes


def test_verbose_lines_escape_what_the_peer_chose(served: tuple[Path, int]) -> None:
    _, port = served
    result = probe(port, "-v", name="evil\x1b[2J\u202ename")
    assert result.returncode == 1
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "'evil\\x1b[2J\\u202ename'" in packets(result.stdout)[0].group(4)
    error = next(m for m in packets(result.stdout) if m.group(3) == "ERROR")
    assert error.group(4) == " 2 access violation: file name holds control characters"


def test_verbose_serve_and_trace(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 3000)
    trace = tmp_path / "serve.jsonl"
    proc, port = start_serve(tmp_path, "-v", "--no-tui", "--trace", str(trace))
    try:
        assert probe(port, "--retries", "20", "--blksize", "512", name="a.bin").returncode == 0
        text, _ = stop(proc)  # what the server has not printed yet it prints as it stops
    finally:
        proc.kill()
    seen = packets(text)
    assert {int(m.group(4)) for m in seen if m.group(3) == "DATA"} == set(range(1, 7))  # 3000 B in 512 B blocks
    assert all(m.group(2) != f"127.0.0.1:{port}" for m in seen if m.group(3) == "DATA")  # from the session's port
    recorded = sum(1 for row in trace.read_text().splitlines() if '"event":"packet-' in row.replace(" ", ""))
    replayed = run("trace", str(trace), "-v", "--no-tui")
    assert replayed.returncode == 0
    assert len(packets(replayed.stdout)) == recorded == len(seen)
    assert "1 transfer" in replayed.stdout.splitlines()[recorded]  # then the usual summary


def test_verbose_sweep_is_a_usage_error() -> None:
    result = run("probe", "127.0.0.1", "f", "--sweep", "-v")
    assert result.returncode == 2 and "--sweep" in result.stderr and result.stderr.count("\n") == 1


def test_quiet_and_verbose_together_are_refused() -> None:
    result = run("probe", "127.0.0.1", "f", "-q", "-v")
    assert result.returncode == 2 and "not allowed with" in result.stderr


@pytest.mark.parametrize("extra", [["--blksize", "512", "-v"], ["-o", "-"]], ids=["lines", "file"])
def test_a_reader_that_goes_away_ends_the_run_quietly(tmp_path: Path, extra: list[str]) -> None:
    """``probe -v | head`` (more lines than a pipe holds) and ``probe -o - | head -c 10`` (the file on
    stdout): the reader closes the pipe; exit 141, nothing said (not a "local I/O error" about disks)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * (2 << 20))
    server, port = start_serve(root, "-q", "--no-tui")
    client = None
    try:
        client = subprocess.Popen([sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", "big.bin", "--port",
                                   str(port), *extra], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if "-v" in extra:
            assert PACKET.match(client.stdout.readline().decode())  # type: ignore[union-attr]
        else:
            assert client.stdout.read(10) == b"x" * 10  # type: ignore[union-attr]
        client.stdout.close()  # type: ignore[union-attr]
        assert client.wait(TIMEOUT) == 141
        assert client.stderr.read() == b""  # type: ignore[union-attr]
    finally:
        if client is not None:
            client.kill()
        stop(server)


# -- units -----------------------------------------------------------------------------------------


def test_progress_bar_counts_in_binary_units() -> None:
    from rich.console import Console

    from tftpdiag.progressbar import transfer_bar

    bar = transfer_bar("fw.bin", upload=False)
    task = bar.add_task("t", total=8 << 20)
    bar.update(task, completed=3 << 20)
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(bar.make_tasks_table(bar.tasks))
    shown = console.export_text()
    assert "3.0 MiB / 8.0 MiB" in shown and "MB" not in shown.replace("MiB", "")
    speed = bar.columns[3].render(_Task(speed=1.5 * 1024 * 1024))  # type: ignore[arg-type]
    assert speed.plain == "1.5 MiB/s"


class _Task:
    def __init__(self, speed: float) -> None:
        self.finished_speed, self.speed = None, speed


def test_verbose_watch_prints_the_packets_it_captured(tmp_path: Path) -> None:
    """watch -v: a line per datagram the capture saw between a real client and server, then the line
    of the session, as serve -v prints them."""
    from tests.support import peers
    from tests.support.watch import private_loopback
    from tests.watch.test_watch import IMAGE, _watch_cli

    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(IMAGE)
    host = private_loopback(9)
    port = peers.free_udp_port(host)
    with peers.tftpd_hpa(root, port, host=host):
        proc = _watch_cli("-i", "lo", "--port", str(port), "--host", host, "-v", "--no-tui", "--idle", "2")
        try:
            assert "watching TFTP on lo" in proc.stderr.readline()  # type: ignore[union-attr]
            assert peers.curl_get(host, port, "image.bin", tmp_path / "out.bin", blksize=1468).ok
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    seen = packets(out)
    assert seen[0].group(3) == "RRQ" and seen[0].group(2) == f"{host}:{port}"
    blocks = len(IMAGE) // 1468 + 1
    assert {int(m.group(4)) for m in seen if m.group(3) == "DATA"} == set(range(1, blocks + 1))
    session = [text for text in out.splitlines() if " RRQ to " in text and not PACKET.match(text)]
    assert len(session) == 1 and "ok" in session[0]


# -- netascii: the file and the wire differ (line ends travel as CR LF), so a size alone is wrong for one
# of them; the summaries say both, labelled: the file's (what its SHA-256 covers) and the wire's (the rate's)

NOTES = b"line one\nline two\r\nbare cr\r end\n"  # the served fixture's notes.txt


def test_netascii_download_says_the_files_size_and_the_wires(served: tuple[Path, int], tmp_path: Path) -> None:
    root, port = served
    assert (root / "notes.txt").read_bytes() == NOTES
    out = tmp_path / "notes.txt"
    result = run("probe", "127.0.0.1", "notes.txt", "--port", str(port), "--mode", "netascii", "--json",
                 "-o", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    wire = netascii_size(out.read_bytes())
    assert wire > out.stat().st_size  # the case
    assert summary["file_bytes"] == out.stat().st_size and summary["sha256"] == sha(out)
    assert summary["bytes"] == wire
    plain = run("probe", "127.0.0.1", "notes.txt", "--port", str(port), "--mode", "netascii", "--no-tui")
    assert plain.returncode == 0, plain.stderr
    assert f"{wire} B on the wire in" in plain.stdout, plain.stdout
    assert f"file {out.stat().st_size} B ({out.stat().st_size:,} bytes; {wire:,} on the wire)" in plain.stdout


def test_netascii_upload_says_the_files_size_and_the_wires(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    local = tmp_path / "up.txt"
    local.write_bytes(b"one\ntwo\nthree\n")
    result = run("put", "127.0.0.1", str(local), "up.txt", "--port", str(port), "--mode", "netascii", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["file_bytes"] == 14 and summary["sha256"] == sha(local)
    assert summary["bytes"] == netascii_size(local.read_bytes()) == 17


def test_octet_sizes_agree_and_are_said_once(served: tuple[Path, int]) -> None:
    _, port = served
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--json")
    summary = json.loads(result.stdout)
    assert summary["file_bytes"] == summary["bytes"] == 300_000
    plain = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--no-tui")
    assert "on the wire" not in plain.stdout and "file " not in plain.stdout.split("sha256")[0]


def test_the_views_summary_line_says_the_files_size_too(served: tuple[Path, int]) -> None:
    _, port = served
    bus = EventBus()
    request = ClientRequest("127.0.0.1", "notes.txt", port=port, mode="netascii", options=RequestedOptions())
    from tftpdiag.tui.launch import ClientProbe  # (the view's module: only this test needs it)

    probe = ClientProbe(ClientTransfer(request, bus), bus, extra=lambda outcome: {})
    probe.start()
    assert probe.transfer.wait(10) is not None
    text = probe.summary_line()
    assert f"file {len(NOTES)} B ({len(NOTES)} bytes; {netascii_size(NOTES)} on the wire)" in text, text


def test_a_duration_under_10_ms_is_given_in_milliseconds_not_as_zero_seconds() -> None:
    from tftpdiag.fmt import duration

    assert [duration(s) for s in (0.736, 0.01, 0.00999, 0.00035, 0.0)] == [
        "0.736 s", "0.010 s", "9.99 ms", "0.35 ms", "0.00 ms"]
