"""User mistakes on the command line: each gets one line on stderr and exit 2, never a traceback, and is
caught before anything starts (a server, a storm's devices, a transfer)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tftpdiag.cli.parser import SERVE_EXAMPLES, TRACE_EXAMPLES, build_parser
from tftpdiag.cli.requests import asked_sizes, client_target, download_limit, requested_options, server_policy
from tftpdiag.cli.values import DEADLINE_MAX, UsageError
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.options import RequestedOptions

LONG = "a" * 600  # with its options the request passes RFC 2347's 512 bytes from about 490 characters


def one_usage_line(result: subprocess.CompletedProcess[str], *wanted: str) -> None:
    """Exit 2 and the words wanted, in one line; argparse's own errors come after its usage lines."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [text for text in result.stderr.splitlines() if not text.startswith(("usage:", " "))]
    assert len(errors) == 1, result.stderr
    for text in wanted:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("args", [
    ["probe", "127.0.0.1", LONG, "--no-tui"],
    ["probe", "127.0.0.1", LONG, "--sweep", "--no-tui"],
    ["probe", f"tftp://127.0.0.1/{LONG}", "--no-tui"],
    ["put", "127.0.0.1", "LOCAL", LONG, "-q"],
    ["storm", "127.0.0.1", LONG, "--clients", "2"],
], ids=["probe", "sweep", "url", "put", "storm"])
def test_a_file_name_too_long_for_one_request_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 1000)
    args = [str(local) if a == "LOCAL" else a for a in args]
    # Port 9 (discard): nothing may be sent at all, the name is refused first.
    one_usage_line(run(*args, "--port", "9", timeout=15), "file name too long: the request would take",
                   "bytes with its options; RFC 2347 allows 512")


def test_an_empty_file_name_is_a_usage_error() -> None:
    one_usage_line(run("storm", "127.0.0.1", "", "--port", "9", "--clients", "2", timeout=15),
                   "the file name is empty")


@pytest.mark.parametrize("flags", [["-o", "OUT"], ["--expect-sha256", "ab" * 32]], ids=["output", "sha256"])
def test_sweep_refuses_what_only_a_whole_download_can_do(flags: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    flags = [str(out) if f == "OUT" else f for f in flags]
    one_usage_line(run("probe", "127.0.0.1", "f", "--port", "9", "--sweep", "--no-tui", *flags, timeout=15),
                   "-o/--expect-sha256 do not apply to --sweep")
    assert not out.exists()


@pytest.mark.parametrize("command", ["probe", "put"])
def test_a_whole_transfer_deadline_may_be_hours_but_is_bounded(command: str) -> None:
    parser = build_parser(command)
    assert parser.parse_args([command, "127.0.0.1", "f", "--deadline", "7200"]).deadline == 7200
    assert parser.parse_args([command, "127.0.0.1", "f", "--deadline", str(DEADLINE_MAX)]).deadline == DEADLINE_MAX
    one_usage_line(run(command, "127.0.0.1", "f", "--deadline", str(DEADLINE_MAX * 10), timeout=15),
                   f"seconds must be between 0.01 and {DEADLINE_MAX}")


def test_serve_history_refuses_a_missing_directory_as_log_does(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    for flag, wanted in (("--log", "No such file or directory"), ("--history", f"no such directory {missing}")):
        result = run("serve", str(tmp_path), "--bind", "127.0.0.1", "--port", "0", "--no-tui", flag,
                     str(missing / "kept"), timeout=15)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{missing / 'kept'}: " in result.stderr and wanted in result.stderr, result.stderr
        assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("given, limit", [("0", None), ("64M", 64 << 20), (None, None)])
def test_serve_max_upload_zero_means_no_limit_as_max_size_zero_does(given: str | None, limit: int | None) -> None:
    words = ["serve", ".", "--allow-upload"] + (["--max-upload", given] if given is not None else [])
    assert server_policy(build_parser("serve").parse_args(words)).max_upload == limit
    probe = build_parser("probe").parse_args(["probe", "h", "f", "-o", "out", "--max-size", "0"])
    assert download_limit(probe) is None


@pytest.mark.parametrize("words, host, port", [
    (["[::1]:6971", "f"], "::1", 6971),
    (["127.0.0.1:6969", "f"], "127.0.0.1", 6969),
    (["boot-server:1069", "f"], "boot-server", 1069),
    (["[::1]", "f"], "::1", 69),
    (["::1", "f"], "::1", 69),
    (["fe80::1%eth0", "f"], "fe80::1%eth0", 69),
    (["tftp://[::1]:6971/f"], "::1", 6971),
    (["127.0.0.1:6969", "f", "--port", "6969"], "127.0.0.1", 6969),
    (["127.0.0.1", "f", "--port", "6970"], "127.0.0.1", 6970),
])
def test_host_may_name_its_port(words: list[str], host: str, port: int) -> None:
    target = client_target(build_parser("probe").parse_args(["probe", *words]), upload=False)
    assert (target.host, target.port, target.filename) == (host, port, "f")


@pytest.mark.parametrize("words, message", [
    (["[::1", "f"], "not a host: '[::1'"),
    (["::1]:6971", "f"], "not a host"),
    (["http://10.0.0.5/f"], "not a TFTP URL: 'http://10.0.0.5/f'"),
    (["-4", "::1", "f"], "::1 is an IPv6 address but -4 asks for IPv4"),
    (["-6", "127.0.0.1", "f"], "127.0.0.1 is an IPv4 address but -6 asks for IPv6"),
    (["-4", "tftp://[::1]/f"], "::1 is an IPv6 address but -4 asks for IPv4"),
    (["[::1]:70000", "f"], "port 70000 in '[::1]:70000' is out of range"),
])
def test_a_host_that_cannot_be_one_is_said_before_any_lookup(words: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        client_target(build_parser("probe").parse_args(["probe", *words]), upload=False)


@pytest.mark.parametrize("words", [["tftp://127.0.0.1:6969/f", "--port", "6970"],
                                   ["127.0.0.1:6969", "f", "--port", "69"]])
def test_port_given_twice_and_differently_is_refused(words: list[str]) -> None:
    with pytest.raises(UsageError, match="--port .* disagrees with port 6969"):
        client_target(build_parser("probe").parse_args(["probe", *words]), upload=False)


def test_storm_reads_its_host_as_probe_does() -> None:
    one_usage_line(run("storm", "127.0.0.1:6969", "f", "--port", "6970", "--clients", "2", timeout=15),
                   "--port 6970 disagrees with port 6969 in '127.0.0.1:6969'")
    one_usage_line(run("storm", "-4", "[::1]:6969", "f", "--clients", "2", timeout=15),
                   "::1 is an IPv6 address but -4 asks for IPv4")


def test_output_and_trace_on_one_file_is_refused(tmp_path: Path) -> None:
    same = tmp_path / "both.jsonl"
    (tmp_path / "link.jsonl").symlink_to(same)
    for trace in (same, tmp_path / "link.jsonl", tmp_path / "." / "both.jsonl"):
        one_usage_line(run("probe", "127.0.0.1", "f", "--port", "9", "--no-tui", "--trace", str(trace), "-o", str(same),
                           timeout=15), "-o and --trace name the same file")
    assert not same.exists()


def test_output_dash_writes_the_file_to_stdout_and_the_summary_to_stderr(tmp_path: Path) -> None:
    content = os.urandom(100_000)
    (tmp_path / "image.bin").write_bytes(content)
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        port = str(server.addresses[0][1])
        for flags in ([], ["-v"]):
            result = subprocess.run([sys.executable, "-m", "tftpdiag", "probe", "127.0.0.1", "image.bin", "--port",
                                     port, "-o", "-", *flags], capture_output=True, timeout=30, cwd=tmp_path,
                                    stdin=subprocess.DEVNULL)
            assert result.returncode == 0, result.stderr
            assert result.stdout == content  # the file alone: the summary (and -v's lines) went to stderr
            assert b"downloaded 'image.bin'" in result.stderr
            assert not (tmp_path / "-").exists()
    one_usage_line(run("probe", "127.0.0.1", "f", "--port", "9", "-o", "-", "--json", timeout=15),
                   "-o - puts the file on stdout, where --json would print too")


def test_demo_size_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    # Parsed here, not run: without the bound, a run would start writing a 1 TiB image.
    parser = build_parser("demo")
    assert parser.parse_args(["demo", "--size", "4G"]).size == 4 << 30
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["demo", "--size", "1T"])
    assert stopped.value.code == 2 and "can be at most 4 GiB, not 1T" in capsys.readouterr().err


def test_trace_says_a_serve_log_is_not_a_trace_and_the_help_never_offers_one(tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"
    log.write_text('{"event": "session", "started": "2026-12-05T06:25:24.934Z", "ended": "2026-12-05T06:25:25.122Z", '
                   '"schema": 1, "ok": true, "session": 1, "role": "server-read", "file": "boot.bin"}\n')
    one_usage_line(run("trace", str(log), "--no-tui", timeout=15),
                   "this is a serve --log file (one line per session); trace reads files written by --trace or "
                   "the s key")
    logs = set(re.findall(r"--log (\S+)", SERVE_EXAMPLES))
    traced = set(re.findall(r"tftpdiag trace (\S+)", TRACE_EXAMPLES))
    assert logs and traced and not logs & traced


@pytest.mark.parametrize("command", ["probe", "put", "storm"])
@pytest.mark.parametrize("flag", ["--blksize", "--windowsize"])
def test_no_options_refuses_an_option_it_would_drop(command: str, flag: str) -> None:
    args = build_parser(command).parse_args([command, "127.0.0.1", "f", "--no-options", flag, "512"])
    with pytest.raises(UsageError, match=f"--no-options sends a plain RFC 1350 request: it cannot ask {flag}"):
        asked_sizes(args)


def test_options_asked_by_default_with_no_options_and_for_each_timeout() -> None:
    parser = build_parser("probe")
    assert requested_options(parser.parse_args(["probe", "h", "f"])) == RequestedOptions(blksize=1468, tsize=True)
    plain = parser.parse_args(["probe", "h", "f", "--no-options", "--timeout", "3"])
    assert requested_options(plain) == RequestedOptions() and plain.timeout == 3  # the retransmit timeout still
    assert requested_options(parser.parse_args(["probe", "h", "f", "--timeout", "255"])).timeout == 255
    assert requested_options(parser.parse_args(["probe", "h", "f", "--timeout", "256"])).timeout is None
    assert "whole number from 1 to 255" in " ".join(run("probe", "--help").stdout.split())


@pytest.mark.parametrize("args, message", [
    (["pxe", "-i", "nosuchif", "--no-tui", "--no-probe"], "no network interface 'nosuchif' here"),
    (["storm", "no-such-host.invalid", "f", "--clients", "2"], "cannot resolve 'no-such-host.invalid'"),
], ids=["pxe", "storm"])
def test_a_set_up_error_is_not_announced_as_started_first(args: list[str], message: str) -> None:
    one_usage_line(run(*args, timeout=30), message)  # one line: no "asking ..." before it


@pytest.mark.parametrize("args", [["storm", "127.0.0.1", "f.bin", "--devices", "4"],
                                  ["probe", "127.0.0.1", "f.bin", "--bogus"],
                                  ["history", "--bogus"]])
def test_a_flag_no_command_knows_is_told_with_that_command_s_usage(args: list[str]) -> None:
    result = run(*args, timeout=15)
    one_usage_line(result, f"tftpdiag {args[0]}: error: unrecognized arguments: {' '.join(args[3:] or args[1:])}")
    assert result.stderr.startswith(f"usage: tftpdiag {args[0]} ["), result.stderr  # not `tftpdiag [-h] ...`
