"""User mistakes on the command line: each gets one line on stderr and exit 2, never a traceback, and is
caught before anything starts (a server, a storm's devices, a transfer)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tftpdiag.cli.parser import build_parser
from tftpdiag.cli.requests import download_limit, server_policy
from tftpdiag.cli.values import DEADLINE_MAX

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
