"""`tftpdiag trace`: reopen our own traces and foreign captures, headless.

Round trips run real `python -m tftpdiag probe/put --trace` processes against our server on loopback
and check that the trace gives the same per-transfer summary as the command's own JSON. Captures of
real peers talking to each other are made with tcpdump on loopback (marked ``peers``; see PEERS.md).
No capture is committed: every one is made by the test that reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import peers
from tests.support.simnet import Impairment, run_transfer
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.trace.load import TraceError, load_trace
from tftpdiag.trace.pcap import PcapWriter, read_datagrams
from tftpdiag.trace.recorder import TraceRecorder

TIMEOUT = 60

# Summary fields a trace must reproduce exactly; durations and rates are compared to the microsecond
# that pcap timestamps keep.
SAME = ("ok", "session", "role", "direction", "file", "mode", "local", "peer", "replied_from", "bytes", "total",
        "options", "packets", "error", "findings")


def run(*args: str | Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def trace_json(path: Path) -> dict[str, Any]:
    result = run("trace", path, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)  # exactly one JSON object


def assert_same_transfer(live: dict[str, Any], traced: dict[str, Any], exact: bool = False) -> None:
    diff = {k: (live[k], traced[k]) for k in SAME if live[k] != traced[k]}
    assert not diff, diff
    if exact:
        assert traced == {k: v for k, v in live.items() if k in traced}
    else:
        assert traced["duration_s"] == pytest.approx(live["duration_s"], abs=3e-6)


@pytest.fixture(params=[False, True], ids=["tid-port", "single-port"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(os.urandom(300_000))
    (root / "exact.bin").write_bytes(os.urandom(1468 * 20))  # ends with an empty block
    (root / "notes.txt").write_bytes(b"line one\nline two\r\nbare cr\r end\n" * 50)
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, allow_upload=True, single_port=request.param)
    with TftpServer(config, EventBus()) as server:
        yield root, server.addresses[0][1]


CASES = {
    "download": ("probe", "image.bin"),
    "window": ("probe", "image.bin", "--windowsize", "8", "--blksize", "1024"),
    "no-options": ("probe", "exact.bin", "--no-options"),
    "empty-final-block": ("probe", "exact.bin"),
    "netascii": ("probe", "notes.txt", "--mode", "netascii"),
    "not-found": ("probe", "missing.bin"),
    "upload": ("put",),
}


@pytest.mark.peers
@pytest.mark.parametrize("suffix", [".pcap", ".jsonl"])
def test_round_trip_of_a_probe_that_asked_again(tmp_path: Path, suffix: str) -> None:
    """tftpd-hpa refuses tsize in netascii; the probe asks again without options. Its pcap and its
    jsonl both reopen as the one transfer the probe reported, refusal included."""
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o755)
    (root / "notes.txt").write_bytes(b"line one\nline two\n" * 50)
    (root / "notes.txt").chmod(0o644)
    trace = tmp_path / f"run{suffix}"
    port = peers.free_udp_port()
    with peers.tftpd_hpa(root, port):
        result = run("probe", "127.0.0.1", "notes.txt", "--mode", "netascii", "--port", str(port), "--json",
                     "--trace", trace)
    assert result.returncode == 0, result.stderr
    live = json.loads(result.stdout)
    assert live["retried"] is not None
    (traced,) = trace_json(trace)["transfers"]
    assert_same_transfer(live, traced, exact=suffix == ".jsonl")
    assert traced["retried"] == live["retried"]


@pytest.mark.parametrize("suffix", [".pcap", ".jsonl"])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_the_commands_own_summary(served: tuple[Path, int], tmp_path: Path, case: str,
                                                   suffix: str) -> None:
    _, port = served
    trace = tmp_path / f"run{suffix}"
    command, *rest = CASES[case]
    if command == "put":
        local = tmp_path / "upload.bin"
        local.write_bytes(os.urandom(100_000))
        args: tuple[str | Path, ...] = ("put", "127.0.0.1", local, f"up-{suffix[1:]}.bin")
    else:
        args = ("probe", "127.0.0.1", *rest)
    result = run(*args, "--port", str(port), "--json", "--trace", trace)
    assert result.returncode == (1 if case == "not-found" else 0), result.stderr
    live = json.loads(result.stdout)
    out = trace_json(trace)
    assert out["file"] == str(trace) and out["warning"] is None
    (traced,) = out["transfers"]
    assert_same_transfer(live, traced, exact=suffix == ".jsonl")
    if case == "not-found":
        assert traced["error"]["code"] == 1 and traced["error"]["raised_by"] == "peer"
    elif case == "upload":
        assert traced["direction"] == "upload" and traced["bytes"] == 100_000
    elif case == "empty-final-block":
        assert traced["bytes"] == 1468 * 20


def test_round_trip_over_ipv6(tmp_path: Path) -> None:
    if not peers.has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    root = tmp_path / "root"
    root.mkdir()
    (root / "six.bin").write_bytes(os.urandom(40_000))
    trace = tmp_path / "six.pcap"
    with TftpServer(ServerConfig(root=root, bind=("::1",), port=0), EventBus()) as server:
        result = run("probe", "::1", "six.bin", "--port", str(server.addresses[0][1]), "--json", "--trace", trace)
    assert result.returncode == 0, result.stderr
    (traced,) = trace_json(trace)["transfers"]
    assert_same_transfer(json.loads(result.stdout), traced)
    assert traced["local"]["address"] == "::1"


def test_plain_output_names_each_transfer(tmp_path: Path) -> None:
    trace = tmp_path / "two.pcap"
    recorder_bus = EventBus()
    # One capture holding two probes: written by our server's side with a recorder of its own.
    root = tmp_path / "root2"
    root.mkdir()
    (root / "a.bin").write_bytes(b"a" * 5000)
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0), recorder_bus) as server:
        recorder = TraceRecorder.open(trace, recorder_bus)
        try:
            server_port = server.addresses[0][1]
            assert run("probe", "127.0.0.1", "a.bin", "--port", str(server_port), "--json").returncode == 0
            assert run("probe", "127.0.0.1", "b.bin", "--port", str(server_port), "--json").returncode == 1
        finally:
            recorder.close()
    result = run("trace", trace, "--no-tui")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    datagrams = sum(1 for _ in read_datagrams(trace))
    assert lines[0] == f"{trace}: pcap, {datagrams} UDP datagrams, 2 transfers"
    heads = [line for line in lines if line.startswith("#")]
    assert heads[0].startswith("#1") and "'a.bin'" in heads[0] and heads[0].endswith("ok")
    assert heads[1].startswith("#2") and "'b.bin'" in heads[1] and "ERROR 1" in heads[1]
    assert any(line.strip().startswith(f"server 127.0.0.1:{server_port}") for line in lines)
    out = trace_json(trace)
    assert [t["session"] for t in out["transfers"]] == [1, 2]
    assert [t["ok"] for t in out["transfers"]] == [True, False]


@pytest.mark.parametrize("suffix", [".jsonl", ".pcap"])
def test_demo_trace_holds_one_transfer(tmp_path: Path, suffix: str) -> None:
    """A demo's jsonl holds the client's and the server's view of one transfer: it is shown once."""
    trace = tmp_path / f"demo{suffix}"
    result = run("demo", "--size", "200k", "--json", "--trace", trace)
    assert result.returncode == 0, result.stderr
    live = json.loads(result.stdout)
    (traced,) = trace_json(trace)["transfers"]
    assert_same_transfer(live, traced, exact=suffix == ".jsonl")


# -- damaged, truncated, unreadable --------------------------------------------------------------------


def simulated_capture(path: Path, transfers: int = 3) -> list[int]:
    """A pcap of several simulated downloads one after the other; returns where each one starts."""
    starts = []
    with open(path, "wb") as f, PcapWriter(f) as writer:
        for i in range(transfers):
            res = run_transfer("read", bytes([i]) * 50_000, filename=f"file{i}",
                               options=RequestedOptions(blksize=1024, tsize=True), impairment=Impairment(seed=i))
            f.flush()
            starts.append(f.tell())
            for e in res.events:
                if isinstance(e, PacketSent) and e.session == 1:
                    writer.write(1e9 + 10 * i + e.time, (f"10.0.0.{i + 1}", 40000), e.peer, e.raw)
                elif isinstance(e, PacketReceived) and e.session == 1:
                    writer.write(1e9 + 10 * i + e.time, e.peer, (f"10.0.0.{i + 1}", 40000), e.raw)
    return starts


def test_truncated_capture_shows_the_transfers_before_the_cut(tmp_path: Path) -> None:
    full = tmp_path / "full.pcap"
    starts = simulated_capture(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: starts[1] + (starts[2] - starts[1]) // 2 + 7])  # mid-record in the second transfer
    assert [t["ok"] for t in trace_json(full)["transfers"]] == [True, True, True]
    out = trace_json(cut)
    assert "truncated" in out["warning"] and "showing what was read before it" in out["warning"]
    first, second = out["transfers"]
    assert first["ok"] and first["bytes"] == 50_000 and first["file"] == "file0"
    assert not second["ok"] and 0 < second["bytes"] < 50_000
    assert "the capture ends before the transfer does" in second["error"]["message"]
    plain = run("trace", cut, "--no-tui")
    assert plain.returncode == 0 and "warning: capture truncated" in plain.stdout


def test_truncated_jsonl_trace(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    trace = tmp_path / "run.jsonl"
    assert run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--json", "--trace", trace).returncode == 0
    text = trace.read_text()
    trace.write_text(text[: len(text) * 2 // 3])
    out = trace_json(trace)
    assert "is not JSON (the file may be truncated)" in out["warning"]
    (transfer,) = out["transfers"]
    # Unfinished as far as the record goes: no outcome, the packets that were recorded.
    assert not transfer["ok"] and transfer["error"] is None and transfer["packets"]["received"] > 0


def test_capture_without_tftp(tmp_path: Path) -> None:
    path = tmp_path / "dns.pcap"
    with PcapWriter(path) as writer:
        for i in range(20):
            writer.write(1e9 + i, ("192.0.2.1", 5353), ("192.0.2.53", 53), b"\x00\x03\x01\x00" + b"x" * 30)
    out = trace_json(path)
    assert out["transfers"] == [] and out["warning"] == "no TFTP transfer found among 20 UDP datagrams"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot open"),
        (b"", "is empty"),
        (b"GIF89a not a capture at all", "not a pcap or pcapng file"),
        (b'{"hello": "world"}\n', "not a tftpdiag jsonl trace"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated"),
        ("dir", "cannot open"),
    ],
    ids=["missing", "empty", "garbage", "other-json", "header-only", "directory"],
)
def test_unreadable_files_exit_2_with_one_line(tmp_path: Path, content: bytes | str | None, message: str) -> None:
    path = tmp_path / "trace.pcap"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    for flags in ((), ("--json",), ("--no-tui",)):
        result = run("trace", path, *flags)
        assert result.returncode == 2
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("tftpdiag trace: ") and message in result.stderr
    with pytest.raises(TraceError):
        load_trace(path)


def test_interactive_uses_the_trace_app_or_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tftpdiag import commands
    from tftpdiag.cli.parser import build_parser
    from tftpdiag.tui import launch

    path = tmp_path / "sim.pcap"
    simulated_capture(path, transfers=1)
    args = build_parser().parse_args(["trace", str(path)])
    monkeypatch.setattr(commands, "interactive", lambda a: True)
    monkeypatch.delattr(launch, "run_trace_app", raising=False)
    assert commands.run_trace(args) == 0
    assert "1 transfer" in capsys.readouterr().out  # no trace view yet: plain output
    calls = []
    monkeypatch.setattr(launch, "run_trace_app", lambda *a: calls.append(a) or 7, raising=False)
    assert commands.run_trace(args) == 7
    (given,) = calls
    assert given[0] == path and isinstance(given[1], list) and given[1] and given[2] is None


# -- captures of real peers ------------------------------------------------------------------------------


def peer_transfers(capture: Path, server_port: int) -> list[dict[str, Any]]:
    """The transfers in a capture that went to our peer server (lo carries other tests' traffic too)."""
    out = trace_json(capture)
    return [t for t in out["transfers"] if t["peer"]["port"] == server_port]


@pytest.fixture
def tftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "srv"
    root.mkdir()
    root.chmod(0o755)
    return root


@pytest.mark.peers
def test_curl_downloading_from_tftpd_hpa(tftp_root: Path, tmp_path: Path) -> None:
    image = os.urandom(200_000)
    (tftp_root / "image.bin").write_bytes(image)
    (tftp_root / "image.bin").chmod(0o644)
    port = peers.free_udp_port()
    capture = tmp_path / "curl.pcap"
    with peers.tftpd_hpa(tftp_root, port), peers.tcpdump_capture(capture):
        result = peers.curl_get("127.0.0.1", port, "image.bin", tmp_path / "got.bin", blksize=1468)
        assert result.ok, result.stderr
    (t,) = peer_transfers(capture, port)
    assert t["ok"] and t["bytes"] == len(image) and t["total"] == len(image)
    assert t["direction"] == "download" and t["file"] == "image.bin" and t["mode"] == "octet"
    assert t["options"]["requested"] == {"tsize": "0", "blksize": "1468", "timeout": "3"}
    assert t["options"]["granted"]["blksize"] == "1468" and t["options"]["granted"]["tsize"] == str(len(image))
    assert t["replied_from"]["port"] != port  # tftpd-hpa answers from a new port
    assert t["packets"]["received"] == 1 + len(image) // 1468 + 1  # OACK + DATA blocks
    # The same capture as pcapng (Wireshark's format) reads the same.
    pcapng = tmp_path / "curl.pcapng"
    converted = peers.run_peer([peers.require("tshark"), "-r", str(capture), "-F", "pcapng", "-w", str(pcapng)])
    assert converted.ok, converted.stderr
    assert pcapng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert peer_transfers(pcapng, port) == [t]


@pytest.mark.peers
def test_atftp_windowsize_16_from_atftpd(tftp_root: Path, tmp_path: Path) -> None:
    image = os.urandom(150_000)
    (tftp_root / "win.bin").write_bytes(image)
    port = peers.free_udp_port()
    capture = tmp_path / "atftp.pcap"
    with peers.atftpd(tftp_root, port), peers.tcpdump_capture(capture):
        result = peers.atftp_get("127.0.0.1", port, "win.bin", tmp_path / "got.bin",
                                 options={"windowsize": 16, "blksize": 1024, "tsize": 0})
        assert result.ok, result.stderr
    (t,) = peer_transfers(capture, port)
    assert t["ok"] and t["bytes"] == len(image) and t["total"] == len(image)
    assert t["options"]["granted"]["windowsize"] == "16"
    assert t["options"]["effective"]["windowsize"] == 16 and t["options"]["effective"]["blksize"] == 1024
    blocks = len(image) // 1024 + 1
    assert t["packets"]["received"] == 1 + blocks  # OACK, then every block once
    assert t["packets"]["sent"] < blocks // 8  # one ACK per window of 16 (and the request and ACK 0)


@pytest.mark.peers
def test_failed_request_and_an_upload(tftp_root: Path, tmp_path: Path) -> None:
    port = peers.free_udp_port()
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(70_000))
    capture = tmp_path / "mixed.pcap"
    with peers.tftpd_hpa(tftp_root, port, "-c"), peers.tcpdump_capture(capture):
        missing = peers.tftp_hpa_get("127.0.0.1", port, "nothing-here.bin", tmp_path / "x")
        assert peers.transfer_failed(missing)
        put = peers.curl_put("127.0.0.1", port, upload, "up.bin")
        assert put.ok, put.stderr
    failed, uploaded = peer_transfers(capture, port)
    assert failed["file"] == "nothing-here.bin" and not failed["ok"]
    assert failed["error"]["code"] == 1 and failed["error"]["raised_by"] == "peer"
    assert failed["options"]["requested"] == {} and failed["bytes"] == 0
    assert uploaded["direction"] == "upload" and uploaded["role"] == "client-write" and uploaded["ok"]
    assert uploaded["bytes"] == 70_000 and uploaded["total"] == 70_000
    assert uploaded["options"]["granted"]["tsize"] == "70000"
    assert failed["session"] < uploaded["session"]
