"""The JSON error object's ``sent_by``: the side that sent the ERROR by its role, the same for a live
probe (whose own side is the client), a live serve session (whose own side is the server) and a trace of
a capture between two other programs (whose "local" side is the client's, not tftpdiag's). ``raised_by``
stays as schema 1 has it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.peers import wait_until
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Address
from tftpdiag.protocol.packets import Error, OAck, Opcode, Request, encode, encode_ack, encode_data
from tftpdiag.trace.load import load_trace
from tftpdiag.trace.pcap import PcapWriter
from tftpdiag.trace.summary import trace_json

TIMEOUT = 30
LOOP = "127.0.0.1"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def probe_error(port: int, *args: str) -> dict[str, Any]:
    result = run("probe", LOOP, *args, "--port", str(port), "--json")
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["error"]
    assert isinstance(error, dict)
    return error


def test_a_probes_error_names_the_side_that_sent_it(tmp_path: Path) -> None:
    (tmp_path / "image.bin").write_bytes(os.urandom(300_000))
    with TftpServer(ServerConfig(root=tmp_path, bind=(LOOP,), port=0), EventBus()) as server:
        port = server.addresses[0][1]
        missing = probe_error(port, "nope.bin")
        # --no-tsize: the limit is met mid-transfer, and the probe (the client) tells the server with ERROR 3.
        stopped = probe_error(port, "image.bin", "--max-size", "100K", "--no-tsize")
    assert (missing["code"], missing["raised_by"], missing["sent_by"]) == (1, "peer", "server")
    assert (stopped["code"], stopped["raised_by"], stopped["sent_by"]) == (3, "local", "client")


def test_a_serve_sessions_error_names_the_side_that_sent_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(os.urandom(300_000))
    out = tmp_path / "serve.jsonl"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", LOOP, "--port", "0",
                                 "--json"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    try:
        banner = proc.stderr.readline()  # type: ignore[union-attr]
        port = int(banner.split(f"{LOOP}:")[1].split()[0])
        probe_error(port, "nope.bin")
        probe_error(port, "image.bin", "--max-size", "100K", "--no-tsize")  # the client's ERROR 3
        wait_until(lambda: len(out.read_text().splitlines()) >= 2, TIMEOUT, "serve's two JSON lines")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
    by_kind = {line["event"]: line for line in map(json.loads, out.read_text().splitlines())}
    refused, session = by_kind["refused"]["error"], by_kind["session"]["error"]
    assert (refused["code"], refused["raised_by"], refused["sent_by"]) == (1, "server", "server")
    assert (session["code"], session["raised_by"], session["sent_by"]) == (3, "peer", "client")


# -- a capture between a client and a server that are not tftpdiag ---------------------------------------

C: Address = ("192.0.2.10", 40123)
S: Address = ("192.0.2.1", 69)
TID: Address = ("192.0.2.1", 51000)


def rrq(name: str, *options: tuple[str, str]) -> bytes:
    return encode(Request(Opcode.RRQ, name, "octet", options))


def traced(tmp_path: Path, datagrams: list[tuple[float, Address, Address, bytes]]) -> dict[str, Any]:
    """The one transfer `trace --json` reads from a capture of ``datagrams``."""
    path = tmp_path / "capture.pcap"
    with PcapWriter(path) as writer:
        for t, src, dst, raw in datagrams:
            writer.write(1.7e9 + t, src, dst, raw)
    (transfer,) = trace_json(load_trace(path))["transfers"]
    assert isinstance(transfer, dict)
    return transfer


def test_a_captured_clients_error_is_sent_by_the_client(tmp_path: Path) -> None:
    """curl or tftp-hpa ending a download: the capture's "local" side is the client's."""
    aborted = traced(tmp_path, [
        (0.0, C, S, rrq("big.img")),
        (0.001, TID, C, encode_data(1, b"x" * 512)),
        (0.0015, C, TID, encode_ack(1)),
        (0.002, TID, C, encode_data(2, b"x" * 512)),
        (0.0025, C, TID, encode(Error(0, "Interrupted by user"))),
    ])
    error = aborted["error"]
    assert (error["code"], error["raised_by"], error["sent_by"]) == (0, "local", "client")
    (found,) = [f for f in aborted["findings"] if f["id"] == "client-aborted"]
    assert found["summary"].startswith(f"Client {C[0]}:{C[1]} ended the transfer with ERROR 0")


def test_a_captured_oack_refusal_is_the_clients_not_tftpdiags(tmp_path: Path) -> None:
    """busybox tftp refusing an OACK: the JSON and the finding both name the client."""
    refused = traced(tmp_path, [
        (0.0, C, S, rrq("f", ("blksize", "1024"))),
        (0.001, TID, C, encode(OAck((("blksize", "4096"),)))),
        (0.002, C, TID, encode(Error(8, "blksize 4096 exceeds the 1024 asked"))),
    ])
    error = refused["error"]
    assert (error["code"], error["raised_by"], error["sent_by"]) == (8, "local", "client")
    (found,) = [f for f in refused["findings"] if f["id"] == "bad-oack"]
    assert f"the client {C[0]}:{C[1]} refused it with ERROR 8" in found["summary"], found["summary"]
    assert "tftpdiag" not in found["summary"]


def test_a_captured_servers_error_is_sent_by_the_server(tmp_path: Path) -> None:
    missing = traced(tmp_path, [(0.0, C, S, rrq("nope.bin")), (0.001, TID, C, encode(Error(1, "File not found")))])
    error = missing["error"]
    assert (error["code"], error["raised_by"], error["sent_by"]) == (1, "peer", "server")


def test_a_capture_that_just_stops_has_no_sender(tmp_path: Path) -> None:
    """No ERROR went: a timeout names no side."""
    stopped = traced(tmp_path, [(0.0, C, S, rrq("f")), (0.001, TID, C, encode_data(1, b"x" * 512)),
                                (0.0015, C, TID, encode_ack(1)), (30.0, C, TID, encode_ack(1))])
    assert stopped["error"]["reason"] == "timeout" and stopped["error"]["sent_by"] is None


# -- the failure line says the same: its words take the sender from the same rule (error_sender) --------

def test_a_probes_failure_line_reads_as_before(tmp_path: Path) -> None:
    """Live, the probe's own side is tftpdiag: the server's ERROR is the server's, the probe's is tftpdiag's."""
    (tmp_path / "image.bin").write_bytes(os.urandom(300_000))
    with TftpServer(ServerConfig(root=tmp_path, bind=(LOOP,), port=0), EventBus()) as server:
        port = server.addresses[0][1]
        missing = run("probe", LOOP, "nope.bin", "--port", str(port), "-q")
        stopped = run("probe", LOOP, "image.bin", "--port", str(port), "-q", "--max-size", "100K", "--no-tsize")
    assert missing.returncode == stopped.returncode == 1, (missing.stderr, stopped.stderr)
    assert f"'nope.bin' from {LOOP}:{port}: the server sent ERROR 1 (file not found): " in missing.stderr, \
        missing.stderr
    assert f"'image.bin' from {LOOP}:{port}: tftpdiag sent ERROR 3 (disk full or allocation exceeded): " in \
        stopped.stderr, stopped.stderr


def test_a_captures_failure_line_names_the_client_that_ended_it(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    with PcapWriter(path) as writer:
        for t, src, dst, raw in [(0.0, C, S, rrq("big.img")), (0.001, TID, C, encode_data(1, b"x" * 512)),
                                 (0.0015, C, TID, encode(Error(0, "Interrupted by user")))]:
            writer.write(1.7e9 + t, src, dst, raw)
    shown = run("trace", str(path))
    assert shown.returncode == 0, shown.stderr
    assert f"failed: the client {C[0]}:{C[1]} sent ERROR 0 (not defined): Interrupted by user" in shown.stdout, \
        shown.stdout
    assert "tftpdiag sent" not in shown.stdout
