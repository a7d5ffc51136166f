"""The command line as a user runs it: real `python -m tftpdiag` processes against servers on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fresh import fresh_python
from tftpdiag.cli.parser import build_parser
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, ServerSetupError, TftpServer

TIMEOUT = 30


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(os.urandom(300_000))
    (root / "notes.txt").write_bytes(b"line one\nline two\r\nbare cr\r end\n")
    config = ServerConfig(root=root, bind=("127.0.0.1", "::1"), port=0, allow_upload=True)
    with TftpServer(config, EventBus()) as server:
        yield root, server.addresses[0][1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- probe -------------------------------------------------------------------------------------------

def test_probe_json_reports_the_transfer(served: tuple[Path, int]) -> None:
    root, port = served
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert summary["ok"] is True and summary["error"] is None
    assert summary["bytes"] == 300_000 and summary["sha256"] == sha(root / "image.bin")
    assert summary["duration_s"] > 0 and summary["rate_bps"] > 0
    assert summary["options"]["requested"] == {"blksize": "1468", "tsize": "0"}
    assert summary["options"]["granted"] == {"blksize": "1468", "tsize": "300000"}
    assert [o["verdict"] for o in summary["options"]["outcomes"]] == ["accepted", "accepted"]
    assert summary["retransmits"] == 0 and summary["timeouts"] == 0 and summary["findings"] == []


def test_probe_without_busy_polling(served: tuple[Path, int]) -> None:
    root, port = served
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--json", "--busy-poll", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sha256"] == sha(root / "image.bin")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("offload", [[], ["--no-offload"]])
def test_probe_windowed_with_and_without_offload(tmp_path: Path, host: str, offload: list[str]) -> None:
    content = os.urandom(300_000)
    (tmp_path / "image.bin").write_bytes(content)
    out = tmp_path / "copy.bin"
    config = ServerConfig(root=tmp_path, bind=(host,), port=0, offload=not offload)
    with TftpServer(config, EventBus()) as server:
        result = run("probe", host, "image.bin", "--port", str(server.addresses[0][1]), "--json", "--windowsize",
                     "16", "-o", str(out), *offload)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == content
    summary = json.loads(result.stdout)
    assert summary["packets"]["received"] == 300_000 // 1468 + 2  # every DATA counted, and the OACK


def test_offload_switch_on_every_command_that_moves_data() -> None:
    parser = build_parser()
    for argv in (["probe", "h", "f"], ["put", "h", "f"], ["serve", "."]):
        assert parser.parse_args(argv).offload is True
        assert parser.parse_args([*argv, "--no-offload"]).offload is False


def test_an_address_bound_twice_is_one_listener(tmp_path: Path) -> None:
    from tftpdiag.commands import server_config

    args = build_parser().parse_args(["serve", str(tmp_path), "--bind", "127.0.0.1", "--bind", "[::1]",
                                      "--bind", "127.0.0.1", "--bind", "0:0::1"])
    assert server_config(args).bind == ("127.0.0.1", "::1")  # was "address already in use" for the second


def test_serve_gives_up_on_time_by_default_and_the_flags_change_it(tmp_path: Path) -> None:
    """serve's sessions keep a silent client a minute (at least 5 retransmits); --give-up and
    --retries set the two, and --help shows both defaults."""
    from tftpdiag.commands import server_config

    parser = build_parser()
    default = server_config(parser.parse_args(["serve", str(tmp_path)])).timing
    assert (default.give_up, default.retries) == (60.0, 5)
    assert ServerConfig(root=tmp_path).timing.give_up == 60.0
    chosen = server_config(parser.parse_args(["serve", str(tmp_path), "--give-up", "30", "--retries", "8"])).timing
    assert (chosen.give_up, chosen.retries) == (30.0, 8)
    text = run("serve", "--help").stdout
    assert "--give-up" in text
    assert "default 60" in " ".join(text.split()) and "default 5" in " ".join(text.split())
    bad = run("serve", str(tmp_path), "--give-up", "soon")
    assert bad.returncode == 2 and "--give-up" in bad.stderr and "Traceback" not in bad.stderr


def test_probe_plain_summary_and_output_file(served: tuple[Path, int], tmp_path: Path) -> None:
    root, port = served
    out = tmp_path / "copy.bin"
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--no-tui", "-o", str(out),
                 "--windowsize", "8")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (root / "image.bin").read_bytes()
    assert "downloaded" in result.stdout and sha(out) in result.stdout
    assert "windowsize" in result.stdout and "8 blocks per ACK" in result.stdout


def test_probe_url_form_with_netascii(served: tuple[Path, int], tmp_path: Path) -> None:
    root, port = served
    out = tmp_path / "notes.txt"
    result = run("probe", f"tftp://127.0.0.1:{port}/notes.txt;mode=netascii", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "netascii"
    assert out.read_bytes() == (root / "notes.txt").read_bytes()


def test_probe_ipv6(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 5000)
    with TftpServer(ServerConfig(root=tmp_path, bind=("::1",), port=0), EventBus()) as server:
        result = run("probe", "-6", "::1", "f.bin", "--port", str(server.addresses[0][1]), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["bytes"] == 5000 and summary["peer"]["address"] == "::1"


def test_missing_file_exits_1_with_the_servers_error(served: tuple[Path, int]) -> None:
    _, port = served
    result = run("probe", "127.0.0.1", "nope.bin", "--port", str(port), "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["ok"] is False
    assert summary["error"]["code"] == 1 and summary["error"]["raised_by"] == "peer"


def test_plain_output_to_a_pipe_is_never_wrapped(served: tuple[Path, int]) -> None:
    """A grep for the server's error must find it on the line that names the file."""
    _, port = served
    name = "firmware/" + "long-directory-name/" * 4 + "missing-image.bin"
    result = run("probe", "127.0.0.1", name, "--port", str(port))
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("✘")]
    assert name in line and line.rstrip().endswith("not found"), result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 100


@pytest.mark.parametrize("json_out", [True, False], ids=["json", "plain"])
def test_ctrl_c_prints_what_was_done_so_far_and_exits_130(tmp_path: Path, json_out: bool) -> None:
    from tests.support.interop import EventLog
    from tftpdiag.engine.impair import parse_impair
    from tftpdiag.protocol.events import Progress

    (tmp_path / "slow.bin").write_bytes(os.urandom(2 << 20))
    bus = EventBus()
    log = EventLog(bus)
    config = ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0, impair=parse_impair("delay=20ms,seed=1"))
    with TftpServer(config, bus) as server:
        port = server.addresses[0][1]
        proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", "slow.bin", "--port",
                                 str(port), *(["--json"] if json_out else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            log.wait(lambda e: isinstance(e, Progress) and e.bytes > 10_000, timeout=20, what="some bytes sent")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    if json_out:
        summary = json.loads(out)  # one object, whole
        assert summary["ok"] is False and summary["bytes"] > 0
        assert summary["error"]["reason"] == "cancelled" and summary["error"]["raised_by"] == "local"
    else:
        assert out.startswith("✘ 'slow.bin' from 127.0.0.1") and "cancelled by the user" in out
        assert "packets sent" in out


@pytest.mark.parametrize("sig, command", [(signal.SIGTERM, "probe"), (signal.SIGHUP, "probe"),
                                          (signal.SIGTERM, "put")])
def test_sigterm_and_sighup_cancel_like_ctrl_c(tmp_path: Path, sig: signal.Signals, command: str) -> None:
    """`timeout` sends SIGTERM, a closed terminal SIGHUP: the transfer is cancelled as on Ctrl-C (the
    server is sent an ERROR, the download's temporary file goes), one line says so, exit 128 + signal."""
    from tests.support.interop import EventLog
    from tftpdiag.engine.impair import parse_impair
    from tftpdiag.protocol.events import PacketReceived, Progress
    from tftpdiag.protocol.packets import Error

    root, out_dir = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out_dir.mkdir()
    (root if command == "probe" else tmp_path).joinpath("slow.bin").write_bytes(os.urandom(2 << 20))
    args = (["slow.bin", "-o", str(out_dir / "fw.bin")] if command == "probe"
            else [str(tmp_path / "slow.bin"), "up.bin"])
    bus = EventBus()
    log = EventLog(bus)
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, allow_upload=True,
                          impair=parse_impair("delay=20ms,seed=1"))
    with TftpServer(config, bus) as server:
        port = server.addresses[0][1]
        proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", command, "127.0.0.1", *args, "--port", str(port),
                                 "--no-tui"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            log.wait(lambda e: isinstance(e, Progress) and e.bytes > 10_000, timeout=20, what="some bytes moved")
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=TIMEOUT)
            told = log.wait(lambda e: isinstance(e, PacketReceived) and isinstance(e.packet, Error), timeout=20,
                            what="the client's ERROR")
        finally:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.splitlines()[-1] == f"tftpdiag: stopped by {sig.name}", err
    assert told.packet.message == f"cancelled by {sig.name}"
    assert f"cancelled by {sig.name}" in out
    assert os.listdir(out_dir) == [] and os.listdir(root) == ([] if command == "put" else ["slow.bin"])

def test_expect_sha256_mismatch_fails(served: tuple[Path, int]) -> None:
    _, port = served
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--json", "--expect-sha256", "0" * 64)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["sha256_match"] is False and "mismatch" in summary["failure"]


def test_nothing_listening_fails_fast_with_port_unreachable() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # the port is now closed: the kernel answers with ICMP port unreachable
    result = run("probe", "127.0.0.1", "x", "--port", str(port), "--json", timeout=10)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["error"]["reason"] == "unreachable" and "nothing listens" in summary["error"]["message"]


# -- put ---------------------------------------------------------------------------------------------

def test_put_uploads_and_reports(served: tuple[Path, int], tmp_path: Path) -> None:
    root, port = served
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(70_000))
    result = run("put", "127.0.0.1", str(local), "up/loaded.bin", "--port", str(port), "--json")
    assert result.returncode == 1  # no such directory 'up' on the server: refused
    assert json.loads(result.stdout)["error"]["code"] == 2
    (root / "up").mkdir()
    result = run("put", "127.0.0.1", str(local), "up/loaded.bin", "--port", str(port), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["direction"] == "upload" and summary["sha256"] == sha(local)
    assert (root / "up" / "loaded.bin").read_bytes() == local.read_bytes()


# -- user mistakes: exit 2, one clear line, no traceback -----------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["probe", "127.0.0.1", "f", "--blksize", "4"], "blksize must be between 8 and 65464"),
    (["probe", "127.0.0.1", "f", "--windowsize", "zero"], "windowsize must be a whole number"),
    (["probe", "127.0.0.1", "f", "--port", "70000"], "port must be between 1 and 65535"),
    (["probe", "127.0.0.1"], "which file?"),
    (["probe", "tftp://127.0.0.1/f", "g"], "either a tftp:// URL or HOST FILE"),
    (["probe", "tftp://host/f;mode=mail"], "unknown mode"),
    (["probe", "no-such-host.invalid", "f"], "cannot resolve"),
    (["probe", "a..b.invalid", "f"], "cannot resolve 'a..b.invalid'"),
    (["probe", "b\u00fc..x", "f"], "not a valid host name"),
    (["probe", "127.0.0.1", "f", "--expect-sha256", "abc"], "64 hexadecimal digits"),
    (["probe", "127.0.0.1", "f", "-o", "/no/such/dir/out.bin"], "no such directory"),
    (["probe", "127.0.0.1", "f", "--trace", "/tmp/trace.txt"], "name it .pcap"),
    (["put", "127.0.0.1", "/no/such/file.bin"], "cannot read /no/such/file.bin"),
    (["serve", "/no/such/dir", "--port", "0"], "does not exist"),
    (["serve", ".", "--refuse", "colour"], "unknown option 'colour'"),
    (["serve", ".", "--max-upload", "lots"], "expected a size"),
    (["serve", ".", "--bind", "not-an-ip", "--port", "0"], "is not an IP address"),
    (["probe", "127.0.0.1", "f", "--busy-poll", "200000"], "microseconds must be between 0 and 100000"),
    (["serve", ".", "--busy-poll", "fast"], "expected whole microseconds"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes_get_one_clear_line(args: list[str], message: str) -> None:
    result = run(*args, timeout=15)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_busy_port_says_so(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        result = run("serve", str(tmp_path), "--bind", "127.0.0.1", "--port", str(sock.getsockname()[1]))
    finally:
        sock.close()
    assert result.returncode == 2 and "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_privileged_port_denied_explains_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> socket.socket:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tftpdiag.engine.server.udp_socket", denied)
    server = TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=69))
    with pytest.raises(ServerSetupError, match=r"permission denied \(port 69 is privileged\)") as raised:
        server.bind()
    text = str(raised.value)
    for way in ("socket activation", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "setcap cap_net_bind_service+ep",
                "net.ipv4.ip_unprivileged_port_start=69", "--port 6969"):
        assert way in text


def test_help_everywhere_has_examples() -> None:
    for command in ("probe", "put", "serve"):
        result = run(command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("tftpdiag ")


# -- serve ---------------------------------------------------------------------------------------------

def test_serve_headless_lines_and_clean_sigterm(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"a" * 3000)
    proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "serve", str(tmp_path), "--bind", "127.0.0.1",
                             "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()  # type: ignore[union-attr]
        assert "serving" in banner
        port = int(banner.split("127.0.0.1:")[1].split()[0])
        ok = run("probe", "127.0.0.1", "a.bin", "--port", str(port), "--json")
        bad = run("probe", "127.0.0.1", "../etc/passwd", "--port", str(port), "--json")
        assert ok.returncode == 0 and bad.returncode == 1
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    by_kind = {line["event"]: line for line in lines}
    assert by_kind["session"]["ok"] is True and by_kind["session"]["bytes"] == 3000
    assert by_kind["refused"]["error"]["reason"] == "path-escape" and by_kind["refused"]["error"]["code"] == 2
    assert "server stopped" in proc.stderr.read()  # type: ignore[union-attr]


def test_serve_stop_leaves_no_threads_or_sockets(tmp_path: Path) -> None:
    from tests.support.interop import headless_server
    from tftpdiag.engine.client import ClientRequest, ClientTransfer

    (tmp_path / "f").write_bytes(b"z" * 10000)
    before = set(threading.enumerate())
    fds_before = len(os.listdir("/proc/self/fd"))
    with headless_server(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0)) as served:
        for _ in range(5):
            assert ClientTransfer(ClientRequest("127.0.0.1", "f", port=served.port)).run().ok
        lines = served.lines(5)
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (set(threading.enumerate()) - before)
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert len(lines) == 5 and all(" ok" in line for line in lines)


# -- import hygiene ---------------------------------------------------------------------------------------

def probe_in_a_fresh_interpreter(port: int, *flags: str, package: str,
                                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A headless probe of image.bin run by main() in a new interpreter, which then prints "LOADED" and
    the modules of ``package`` it had imported, after what the probe printed."""
    code = (
        "import sys\n"
        "from tftpdiag.cli.main import main\n"
        f"rc = main(['probe', '127.0.0.1', 'image.bin', '--port', '{port}', '--no-tui', *{list(flags)!r}])\n"
        "assert rc == 0, rc\n"
        f"print('LOADED', sorted(m for m in sys.modules if m == {package!r} or m.startswith({package + '.'!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_headless_path_never_imports_textual(served: tuple[Path, int]) -> None:
    _, port = served
    assert "LOADED []" in probe_in_a_fresh_interpreter(port, "--json", package="textual").stdout


def test_a_scripted_summary_does_not_import_rich_and_forced_colour_still_styles(served: tuple[Path, int]) -> None:
    # Start-up: importing rich's Console cost a probe 34 ms when stdout was a pipe, where rich writes the
    # text unstyled anyway (a probe of a closed port 230 -> 188 ms). The summary is now written plainly
    # there (the same text, checked against rich's for a download, a missing file and a closed port), and
    # rich styles it for a terminal or when FORCE_COLOR asks.
    _, port = served
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    plain = probe_in_a_fresh_interpreter(port, package="rich", env=env).stdout
    assert "LOADED []" in plain
    lines = plain.splitlines()
    assert lines[0] == f"✔ downloaded 'image.bin' from 127.0.0.1:{port}"
    assert any(line.startswith("  packets sent ") for line in lines) and "\x1b[" not in plain
    coloured = probe_in_a_fresh_interpreter(port, package="rich", env={**env, "FORCE_COLOR": "1"}).stdout
    assert "\x1b[" in coloured and "'rich.console'" in coloured


def test_probe_sweep_reports_what_the_server_supports(served: tuple[Path, int]) -> None:
    _, port = served
    result = run("probe", "127.0.0.1", "image.bin", "--port", str(port), "--sweep", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {p["probe"]: p for p in report["probes"]}
    assert by_name["blksize 1468"]["granted"] == {"blksize": "1468"}
    assert by_name["windowsize 16"]["granted"]["windowsize"] == "16"
    assert report["supports"]["windowsize"] == 64 and report["supports"]["tsize"] is True
    assert report["recommended"]["windowsize"] == 64 and report["stopped"] is None


def test_probe_sweep_stops_early_on_a_missing_file(served: tuple[Path, int]) -> None:
    _, port = served
    result = run("probe", "127.0.0.1", "nothing.bin", "--port", str(port), "--sweep", "--json", timeout=60)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["stopped"] and "not found" in report["stopped"]
    assert [p["probe"] for p in report["probes"] if p["outcome"] != "skipped"] == ["no options"]


def test_trace_snaplen_keeps_every_packet_but_cuts_payloads(served: tuple[Path, int], tmp_path: Path) -> None:
    from tftpdiag.trace.pcap import read_datagrams

    root, port = served
    name = "firmware-" + "x" * 60 + ".bin"  # a request longer than the snap length: kept whole
    (root / name).write_bytes((root / "image.bin").read_bytes())
    trace = tmp_path / "small.pcap"
    result = run("probe", "127.0.0.1", name, "--port", str(port), "--json", "--trace", str(trace),
                 "--trace-snaplen", "64")
    assert result.returncode == 0, result.stderr
    datagrams = list(read_datagrams(trace))
    data = [d for d in datagrams if d.payload[:2] == b"\x00\x03"]
    assert len(data) == -(-300_000 // 1468) and all(len(d.payload) <= 64 - 28 for d in data)
    assert sum(d.orig_len - 4 for d in data) == 300_000
    others = [d for d in datagrams if d.payload[:2] != b"\x00\x03"]
    assert others[0].payload.startswith(b"\x00\x01" + name.encode() + b"\x00")
    assert all(len(d.payload) == d.orig_len for d in others)  # request, OACK, ACKs whole
    assert trace.stat().st_size < 40_000  # the file holds 300 kB of data only by reference
    replay = run("trace", str(trace), "--json")
    assert replay.returncode == 0, replay.stderr
    transfer = json.loads(replay.stdout)["transfers"][0]
    assert (transfer["bytes"], transfer["file"]) == (300_000, name)


def test_default_bind_serves_ipv4_when_ipv6_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tftpdiag.engine.server as server_module

    real = server_module.udp_socket

    def no_ipv6(family: int, bind: object = None, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, bind, **kwargs)

    monkeypatch.setattr(server_module, "udp_socket", no_ipv6)
    server = TftpServer(ServerConfig(root=tmp_path, port=0))
    server.bind()
    try:
        assert [a[0] for a in server.addresses] == ["0.0.0.0"] and server.skipped_ipv6
    finally:
        server._close_listeners()
    with pytest.raises(ServerSetupError, match="not available"):
        TftpServer(ServerConfig(root=tmp_path, bind=("::1",), port=0)).bind()


@pytest.mark.peers
def test_probe_and_put_ask_again_when_a_server_refuses_options(tmp_path: Path) -> None:
    """tftpd-hpa refuses tsize in netascii, atftpd an OACK that cannot fit in blksize 8: each command
    asks again without the options, completes, and names the refusal."""
    from tests.support import peers

    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o755)
    (root / "notes.txt").write_bytes(b"line one\nline two\n" * 100)
    (root / "notes.txt").chmod(0o644)
    port = peers.free_udp_port()
    with peers.tftpd_hpa(root, port):
        probe = run("probe", "127.0.0.1", "notes.txt", "--port", str(port), "--mode", "netascii", "--json")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    obj = json.loads(probe.stdout)
    assert obj["ok"] and obj["retried"] == {"code": 8, "message": "Unsupported option(s) requested",
                                            "asked": {"blksize": "1468", "tsize": "0"}, "requested": {}}
    assert [(o["name"], o["verdict"]) for o in obj["options"]["outcomes"]] == [
        ("blksize", "dropped"), ("tsize", "dropped")]
    assert [(f["id"], f["severity"]) for f in obj["findings"]] == [("option-refused", "warning")]

    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(5000))
    with peers.atftpd(root, port):
        put = run("put", "127.0.0.1", str(local), "up.bin", "--port", str(port), "--blksize", "8",
                  "--windowsize", "16", "--no-tui")
    assert put.returncode == 0, put.stdout + put.stderr
    assert "refused the options with ERROR 8" in put.stdout and "asked again without options" in put.stdout
    assert (root / "up.bin").read_bytes() == local.read_bytes()


def test_help_does_not_load_the_protocol_machines() -> None:
    # Start-up: `tftpdiag --help` took 114 ms when the parser imported protocol/server.py for one
    # constant (which loads every event class and machine); the numbers live in protocol/limits.py.
    code = (
        "import sys, contextlib, io\n"
        "from tftpdiag.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('tftpdiag.protocol.', 'tftpdiag.engine', 'rich')) "
        "and m != 'tftpdiag.protocol.limits')\n"
        "print('LOADED', heavy)\n"
    )
    out = fresh_python(code)
    assert "LOADED []" in out, out


def test_a_run_naming_no_command_builds_no_commands_parser() -> None:
    # Start-up: `tftpdiag --help` built all ten commands' parsers (and loaded the dataclasses behind their
    # values) to print their names and one line each: 115 ms, 74 ms without. Such a run (--help, no
    # command, a mistyped one) is answered from cli/listing.py, exactly as the whole parser answers it.
    code = (
        "import argparse, sys, contextlib, io\n"
        "made = []\n"
        "original = argparse.ArgumentParser.__init__\n"
        "def counting(self, *args, **kwargs):\n"
        "    made.append(kwargs.get('prog'))\n"
        "    original(self, *args, **kwargs)\n"
        "argparse.ArgumentParser.__init__ = counting\n"
        "from tftpdiag.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print('PARSERS', made)\n"
        "print('LOADED', sorted(m for m in ('dataclasses', 'tftpdiag.records') if m in sys.modules))\n"
    )
    out = fresh_python(code)
    assert "PARSERS ['tftpdiag']" in out and "LOADED []" in out, out
    whole = "import sys\nfrom tftpdiag.cli.parser import build_parser\np = build_parser()\n" \
            "p.parse_args(sys.argv[1:])\np.print_help()\nsys.exit(2)\n"
    for argv in (["--help"], ["bogus"], ["-x"], [], ["--version"]):
        got = run(*argv)
        expected = subprocess.run([sys.executable, "-c", whole, *argv], capture_output=True, text=True,
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        assert (got.returncode, got.stdout, got.stderr) == (expected.returncode, expected.stdout,
                                                            expected.stderr), argv


def test_a_command_builds_only_its_own_parser() -> None:
    # Start-up: every run built all ten commands' flags, importing storm, pxe and the DHCP tables for
    # a probe; main() now builds the parser of the command it runs, with the same --help.
    code = (
        "import sys, contextlib, io\n"
        "from tftpdiag.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['probe', '--help'])\n"
        "others = ('tftpdiag.storm', 'tftpdiag.pxe.args', 'tftpdiag.dhcp.arch')\n"
        "print('LOADED', sorted(m for m in sys.modules if m in others))\n"
        "print('HELP', out.getvalue())\n"
    )
    out = fresh_python(code)
    assert "LOADED []" in out, out
    whole = subprocess.run([sys.executable, "-c", "from tftpdiag.cli.parser import build_parser\n"
                            "build_parser().parse_args(['probe', '--help'])"], capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert out.split("HELP ", 1)[1].strip() == whole.stdout.strip()  # the same help either way
    # And every other way in still finds every command.
    for argv in (["--help"], ["bogus"]):
        listed = run(*argv)
        assert all(name in listed.stdout + listed.stderr for name in ("storm", "pxe", "history", "completion"))


def test_a_signal_inside_the_stop_flags_own_wait_does_not_hang() -> None:
    # serve hung on Ctrl-C: the handler's Event.set() waited for the lock that the Event.wait() it
    # interrupted held (a plain Lock: the same thread cannot take it again). Here the signal lands while
    # that lock is held, as it did then; in a process of its own, so that a hang fails by the timeout.
    code = (
        "import signal\n"
        "from tftpdiag.commands import StopFlag, _stop_on_signals\n"
        "stop = StopFlag()\n"
        "with _stop_on_signals(stop):\n"
        "    with stop._cond:  # what wait() holds while it looks at the flag\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "print('STOPPED', stop.is_set(), stop.wait(0))\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the signal handler hung on the stop flag's lock")
    assert result.returncode == 0, result.stderr
    assert "STOPPED True True" in result.stdout


_START = """
import sys
sys.argv = ["tftpdiag", "probe", "127.0.0.1", "x.bin", "--port", sys.argv[1], "--no-tui", *sys.argv[2:]]
from tftpdiag.cli.main import main
try:
    main()
except SystemExit:
    pass
unwanted = ("encodings.idna", "tftpdiag.engine.impair", "random", "secrets", "tempfile", "datetime")
print(" ".join(m for m in unwanted + (() if "--json" in sys.argv else ("json",)) if m in sys.modules))
"""


@pytest.mark.parametrize("flags", [["--json"], []], ids=["json", "plain"])
def test_a_probes_start_loads_only_what_it_needs(flags: list[str]) -> None:
    """A probe's start is part of every transfer's time (issue 16): an address resolved without the
    IDNA codec (2 ms), the fault injector and the random module only for --impair, no secrets (2.5 ms)
    for a temporary file's name, no tempfile outside the demo, no datetime where no time is printed and
    no json without --json (1.5 ms each). Run without site-packages (-S) so that only tftpdiag's own
    imports count, as on a machine whose site loads nothing."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-S", "-c", _START, str(port), *flags], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert "port unreachable" in result.stdout  # it ran: the summary says why it failed
    assert result.stdout.splitlines()[-1] == ""  # none of them loaded


def test_the_plain_summary_writes_what_rich_writes_to_a_file() -> None:
    # The summary skips rich where stdout is no terminal (headless._summary_console): its lines must be
    # the ones rich wrote there, peer text escaped alike (a tab, an escape, a long line not wrapped).
    import io

    from rich.console import Console

    from tftpdiag.headless import PlainConsole, _say

    lines = [(("✔", "green"), " downloaded ", ("boot\tfile\x1b[2J.bin", "bold"), " from 10.0.0.1:69"),
             ("  " + "x" * 300,), (("  ✘ refused", "bold red"), ": ", ("Access violation", "red"))]
    plain, styled = io.StringIO(), io.StringIO()
    rich_console = Console(file=styled, highlight=False, soft_wrap=True)
    for parts in lines:
        _say(PlainConsole(plain), *parts)
        _say(rich_console, *parts)
    assert plain.getvalue() == styled.getvalue()
    assert plain.getvalue().count("\n") == 3 and "\x1b" not in plain.getvalue()


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": ""}, {"TTY_COMPATIBLE": "0"},
                                 {"TTY_COMPATIBLE": "1"}, {"TTY_COMPATIBLE": "0", "FORCE_COLOR": "1"},
                                 {"TTY_COMPATIBLE": "x", "FORCE_COLOR": "1"}])
@pytest.mark.parametrize("tty", [False, True])
def test_the_summary_skips_rich_exactly_where_rich_would_not_style(monkeypatch, env: dict[str, str],
                                                                   tty: bool) -> None:
    import io

    from rich.console import Console

    from tftpdiag.headless import _terminal

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = Stream()
    assert _terminal(stream) == Console(file=stream).is_terminal
