"""Findings of our client against real TFTP servers (tests/PEERS.md): clean runs find nothing above
info, and servers configured to misbehave are named for what they do."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.findings_kit import FAST, above_info, client_run
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.timer import Timing

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

DATA = random.Random(21).randbytes(100_000)
OK_TIMING = Timing(initial_timeout=1.0, min_timeout=0.5, retries=4, dally=0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("findings-peers")
    root.chmod(0o755)
    (root / "small.bin").write_bytes(DATA)
    (root / "notes.txt").write_bytes(b"line one\nline two\n" * 200)
    for path in root.iterdir():
        path.chmod(0o644)  # tftpd-hpa serves only world-readable files
    return root


@contextmanager
def peer(name: str, root: Path, *args: str) -> Iterator[tuple[str, int]]:
    if name == "tftpd-hpa":
        port = peers.free_udp_port()
        with peers.tftpd_hpa(root, port, *args):
            yield "127.0.0.1", port
    elif name == "atftpd":
        port = peers.free_udp_port()
        with peers.atftpd(root, port, *args):
            yield "127.0.0.1", port
    elif name == "dnsmasq":
        host = peers.free_loopback_address(69)
        with peers.dnsmasq_tftp(root, host, *args):
            yield host, 69
    elif name == "tftpy":
        port = peers.free_udp_port()
        with peers.tftpy_server(root, port):
            yield "127.0.0.1", port
    else:  # pragma: no cover
        raise ValueError(name)


CLEAN_OPTIONS = {
    "plain": RequestedOptions(),
    "blksize-tsize": RequestedOptions(blksize=1468, tsize=True),
    "windowed": RequestedOptions(blksize=1468, windowsize=16, tsize=True),
}


@pytest.mark.parametrize("name", ["tftpd-hpa", "atftpd", "dnsmasq"])
def test_clean_runs_find_nothing_above_info(served: Path, name: str) -> None:
    with peer(name, served) as (host, port):
        for label, options in CLEAN_OPTIONS.items():
            run = client_run(port, "small.bin", host=host, options=options, timing=OK_TIMING)
            assert run.outcome.ok, (label, run.outcome.result)
            assert not above_info(run.findings), f"{name} {label}:\n{run.describe()}"
            if label != "windowed" or name == "atftpd":
                assert run.findings == [], f"{name} {label}:\n{run.describe()}"
            else:  # tftpd-hpa and dnsmasq leave windowsize out of their OACK: said, as info
                assert run.ids == {"options-ignored"} and "windowsize=16" in run.findings[0].summary


def test_tftpd_hpa_refusing_blksize(served: Path) -> None:
    with peer("tftpd-hpa", served, "-r", "blksize") as (host, port):
        run = client_run(port, "small.bin", host=host, options=RequestedOptions(blksize=1468), timing=OK_TIMING)
    assert run.outcome.ok
    assert run.ids == {"options-ignored"}, run.describe()
    f = run.get("options-ignored")
    assert f.severity == "warning" and "without an OACK" in f.summary


def test_dnsmasq_without_blocksize(served: Path) -> None:
    with peer("dnsmasq", served, "--tftp-no-blocksize") as (host, port):
        run = client_run(port, "small.bin", host=host, options=RequestedOptions(blksize=1468, tsize=True),
                         timing=OK_TIMING)
    assert run.outcome.ok
    assert run.ids == {"options-ignored"}, run.describe()
    assert "blksize=1468" in run.get("options-ignored").summary


def test_dnsmasq_mtu_reduces_blksize(served: Path) -> None:
    with peer("dnsmasq", served, "--tftp-mtu=600") as (host, port):
        run = client_run(port, "small.bin", host=host, options=RequestedOptions(blksize=1468), timing=OK_TIMING)
    assert run.outcome.ok
    assert run.ids == {"option-reduced"}, run.describe()
    assert "blksize 568 of the 1468 asked" in run.get("option-reduced").summary


def test_tftpd_hpa_refuses_tsize_in_netascii(served: Path) -> None:
    """The probe asks again without options and completes; the refusal is a finding of its own."""
    with peer("tftpd-hpa", served) as (host, port):
        run = client_run(port, "notes.txt", host=host, mode="netascii", options=RequestedOptions(tsize=True))
    assert run.outcome.ok, run.describe()
    assert run.ids == {"option-refused"}, run.describe()
    f = run.get("option-refused")
    assert f.severity == "warning" and "Unsupported option" in f.summary and "netascii" in f.suggestion
    assert "asked again without options" in f.summary and "completed" in f.summary


def test_a_retried_transfer_is_judged_on_what_the_retry_showed(served: Path) -> None:
    """netascii asked of a binary image: refused first (tsize), then the retry shows the binary content."""
    with peer("tftpd-hpa", served) as (host, port):
        run = client_run(port, "small.bin", host=host, mode="netascii", options=RequestedOptions(tsize=True),
                         timing=OK_TIMING)
    assert run.outcome.ok, run.describe()
    assert run.ids == {"option-refused", "netascii-binary"}, run.describe()


def test_tftpy_oacks_an_option_never_asked(served: Path) -> None:
    with peer("tftpy", served) as (host, port):
        run = client_run(port, "small.bin", host=host, options=RequestedOptions(tsize=True), timing=OK_TIMING)
    assert run.ids == {"bad-oack"}, run.describe()
    assert "blksize=512, which was not asked for" in run.get("bad-oack").summary


def test_dnsmasq_takes_no_uploads(served: Path, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 1000)
    with peer("dnsmasq", served) as (host, port):
        run = client_run(port, "up.bin", host=host, upload=True, source=source)
    assert run.ids == {"server-error"}, run.describe()
    f = run.get("server-error")
    assert "ERROR 4 (illegal TFTP operation)" in f.summary and "read-only" in f.suggestion


def test_tftpd_hpa_file_not_found_with_case(served: Path) -> None:
    with peer("tftpd-hpa", served) as (host, port):
        run = client_run(port, "Small.bin", host=host)
    assert run.ids == {"file-not-found"}, run.describe()
    f = run.get("file-not-found")
    assert "'Small.bin'" in f.summary and "'small.bin'" in f.suggestion


def test_tftpd_hpa_refuses_to_create_without_c(served: Path, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 1000)
    with peer("tftpd-hpa", served) as (host, port):
        run = client_run(port, "new-upload.bin", host=host, upload=True, source=source)
    assert run.ids == {"file-not-found"}, run.describe()
    f = run.get("file-not-found")
    assert "refused the upload" in f.summary and "-c" in f.suggestion


def test_tftpd_hpa_large_blocks_over_a_small_mtu(served: Path) -> None:
    with peer("tftpd-hpa", served) as (host, port):
        run = client_run(port, "small.bin", host=host, options=RequestedOptions(blksize=1468), impair="mtu=1400",
                         timing=FAST)
    assert run.ids == {"large-block-loss"}, run.describe()
    assert "no DATA ever came" in run.get("large-block-loss").summary
