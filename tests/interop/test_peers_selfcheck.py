"""Self-checks of tests/support/peers.py: real peer programs talking to each other on loopback.

These prove the helpers (start, readiness, clean-up, client runs, capture) before any
test uses them against our own client and server.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.peers import PeerResult

pytestmark = [pytest.mark.peers, pytest.mark.timeout(30)]

LOCAL = "127.0.0.1"
PAYLOAD_SIZE = 70_000  # 136 blocks of 512 and a short last one; 47+1 blocks of 1468


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A served folder under pytest's 0700 tmp dir, with a random file and an empty one."""
    served = tmp_path / "root"
    served.mkdir()
    (served / "image.bin").write_bytes(os.urandom(PAYLOAD_SIZE))
    (served / "empty.bin").write_bytes(b"")
    return served


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(os.urandom(PAYLOAD_SIZE + 511))
    return path


@pytest.fixture
def hpa(root: Path) -> Iterator[peers.ServerProc]:
    with peers.tftpd_hpa(root, peers.free_udp_port(), "-c") as server:
        yield server


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")

Getter = Callable[[str, int, str, Path], PeerResult]
GETTERS: dict[str, Getter] = {
    "curl": peers.curl_get,
    "curl-blksize": lambda h, p, r, o: peers.curl_get(h, p, r, o, blksize=1468),
    "curl-no-options": lambda h, p, r, o: peers.curl_get(h, p, r, o, no_options=True),
    "tftp-hpa": peers.tftp_hpa_get,
    "atftp": peers.atftp_get,
    "atftp-options": lambda h, p, r, o: peers.atftp_get(h, p, r, o, {"tsize": 0, "blksize": 1468}),
    "busybox": peers.busybox_get,
    "busybox-blksize": lambda h, p, r, o: peers.busybox_get(h, p, r, o, blksize=1468),
    "tftpy": peers.tftpy_get,
}
Putter = Callable[[str, int, Path, str], PeerResult]
PUTTERS: dict[str, Putter] = {
    "curl": peers.curl_put,
    "tftp-hpa": peers.tftp_hpa_put,
    "atftp": peers.atftp_put,
    "busybox": peers.busybox_put,
    "tftpy": peers.tftpy_put,
}
IPV6_GETTERS = ["curl", "tftp-hpa", "atftp", "busybox"]  # tftpy has no IPv6


# ------------------------------------------------------------------ helpers alone


def test_require_skips_normally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        peers.require("no-such-tftp-peer")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        peers.require("no-such-tftp-peer")
    assert peers.require("curl").endswith("curl")


def test_free_udp_port_is_bindable() -> None:
    port = peers.free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, port))
        assert peers.udp_bound(LOCAL, port)
    assert not peers.udp_bound(LOCAL, port)


def test_client_overrunning_its_timeout_is_killed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCAL, 0))
        start = time.monotonic()
        result = peers.tftp_hpa_get(LOCAL, silent.getsockname()[1], "x", Path("/dev/null"), timeout=1.0)
    assert result.returncode is None and peers.transfer_failed(result)
    assert time.monotonic() - start < 4


def test_server_is_cleaned_up(root: Path) -> None:
    port = peers.free_udp_port()
    with peers.tftpd_hpa(root, port) as server:
        assert server.alive and peers.udp_bound(LOCAL, port)
        pgid = server.proc.pid
    assert not server.alive
    assert not peers.udp_bound(LOCAL, port)
    assert peers._group_socket_inodes(pgid) == set()


def test_server_that_cannot_bind_raises(root: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCAL, 0))
        with pytest.raises(RuntimeError, match="tftpd-hpa exited"), peers.tftpd_hpa(root, taken.getsockname()[1]):
            pass  # pragma: no cover


# ----------------------------------------------------------------------- tftpd-hpa


@pytest.mark.parametrize("client", GETTERS)
def test_download_from_tftpd_hpa(client: str, hpa: peers.ServerProc, root: Path, tmp_path: Path) -> None:
    out = tmp_path / "got.bin"
    result = GETTERS[client](LOCAL, hpa.port, "image.bin", out)
    assert result.ok and not peers.transfer_failed(result), result
    assert sha256(out) == sha256(root / "image.bin")


@pytest.mark.parametrize("client", PUTTERS)
def test_upload_to_tftpd_hpa(client: str, hpa: peers.ServerProc, root: Path, upload: Path) -> None:
    result = PUTTERS[client](LOCAL, hpa.port, upload, f"up-{client}.bin")
    assert result.ok and not peers.transfer_failed(result), result
    peers.wait_for_content(root / f"up-{client}.bin", upload.read_bytes())


@pytest.mark.parametrize("client", ["curl", "tftp-hpa", "atftp", "busybox", "tftpy"])
def test_file_not_found_is_reported(client: str, hpa: peers.ServerProc, tmp_path: Path) -> None:
    result = GETTERS[client](LOCAL, hpa.port, "no-such-file", tmp_path / "x")
    assert result.returncode is not None, "should fail fast, not time out"
    assert peers.transfer_failed(result)
    if client == "tftp-hpa":
        assert result.returncode == 0 and "Error code 1: File not found" in result.stdout


def test_netascii_round_trip_tftp_hpa(hpa: peers.ServerProc, root: Path, tmp_path: Path) -> None:
    text = b"line1\nline2\r\nlone\rcr\n"
    (root / "text.txt").write_bytes(text)
    got = tmp_path / "text.txt"
    result = peers.tftp_hpa_get(LOCAL, hpa.port, "text.txt", got, mode="ascii")
    assert "[netascii]" in result.stdout and "Received 26 bytes" in result.stdout, result
    assert got.read_bytes() == text
    result = peers.tftp_hpa_put(LOCAL, hpa.port, got, "back.txt", mode="ascii")
    assert "Sent 26 bytes" in result.stdout, result
    peers.wait_for_content(root / "back.txt", text)


def test_tftp_hpa_script_sets_short_timeouts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOCAL, 0))
        script = ["binary", "rexmt 1", "timeout 1", f"get x {tmp_path / 'x'}"]
        result = peers.tftp_hpa_script(LOCAL, silent.getsockname()[1], script, timeout=5)
    assert result.returncode == 0 and "Transfer timed out." in result.stdout, result
    assert peers.transfer_failed(result)


def test_atftp_netascii_mode(hpa: peers.ServerProc, root: Path, tmp_path: Path) -> None:
    (root / "text.txt").write_bytes(b"a\nb\n")
    result = peers.atftp_get(LOCAL, hpa.port, "text.txt", tmp_path / "t.txt", {"mode": "netascii"})
    assert result.ok, result
    assert "Option mode = netascii" in result.stderr
    assert (tmp_path / "t.txt").read_bytes() == b"a\nb\n"


def test_curl_cannot_download_empty_file_with_options(hpa: peers.ServerProc, tmp_path: Path) -> None:
    """Known curl quirk: OACK tsize=0 makes it give up (exit 71); without options it works."""
    assert peers.curl_get(LOCAL, hpa.port, "empty.bin", tmp_path / "a").returncode == 71
    result = peers.curl_get(LOCAL, hpa.port, "empty.bin", tmp_path / "b", no_options=True)
    assert result.ok and (tmp_path / "b").read_bytes() == b""


def test_tftpd_hpa_refuses_blksize_with_r(root: Path, tmp_path: Path) -> None:
    port = peers.free_udp_port()
    pcap = tmp_path / "refuse.pcap"
    with peers.tcpdump_capture(pcap, filter="udp"), peers.tftpd_hpa(root, port, "-r", "blksize") as server:
        result = peers.curl_get(LOCAL, server.port, "image.bin", tmp_path / "got.bin", blksize=1468)
    assert result.ok, result
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")
    oacks = [line for line in peers.tshark_summary(pcap, [port]) if "Option Acknowledgement" in line]
    assert oacks and "blksize" not in oacks[0] and "tsize=70000" in oacks[0]


@needs_ipv6
@pytest.mark.parametrize("client", IPV6_GETTERS)
def test_ipv6_download_from_tftpd_hpa(client: str, root: Path, tmp_path: Path) -> None:
    port = peers.free_udp_port("::1")
    with peers.tftpd_hpa(root, port, host="::1") as server:
        result = GETTERS[client]("::1", server.port, "image.bin", tmp_path / "got.bin")
    assert result.ok and not peers.transfer_failed(result), result
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")


# -------------------------------------------------------------------------- atftpd


def test_atftp_windowsize_16_download_from_atftpd(root: Path, tmp_path: Path) -> None:
    with peers.atftpd(root, peers.free_udp_port()) as server:
        options: dict[str, int | str] = {"windowsize": 16, "tsize": 0, "blksize": 1468}
        result = peers.atftp_get(LOCAL, server.port, "image.bin", tmp_path / "got.bin", options)
        assert result.ok, result
        log = server.wait_log("End of transfer")
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")
    assert "windowsize option -> 16" in log and "blksize option -> 1468" in log, log


@pytest.mark.parametrize("client", ["atftp-windowsize", "curl", "busybox", "tftpy"])
def test_upload_to_atftpd(client: str, root: Path, upload: Path) -> None:
    with peers.atftpd(root, peers.free_udp_port()) as server:
        if client == "atftp-windowsize":
            result = peers.atftp_put(LOCAL, server.port, upload, "up.bin", {"windowsize": 8, "blksize": 1024})
        else:
            result = PUTTERS[client](LOCAL, server.port, upload, "up.bin")
        assert result.ok and not peers.transfer_failed(result), result
        peers.wait_for_content(root / "up.bin", upload.read_bytes())


# ------------------------------------------------------------------------- dnsmasq


@pytest.mark.parametrize("client", ["curl", "curl-blksize", "busybox-blksize", "atftp-options"])
def test_download_from_dnsmasq(client: str, root: Path, tmp_path: Path) -> None:
    with peers.dnsmasq_tftp(root, "127.0.0.2") as server:
        result = GETTERS[client](server.host, 69, "image.bin", tmp_path / "got.bin")
        assert result.ok, result
        server.wait_log(f"sent {root}/image.bin to 127.0.0.1")
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")


def test_dnsmasq_refuses_uploads(root: Path, upload: Path) -> None:
    with peers.dnsmasq_tftp(root, "127.0.0.2") as server:
        result = peers.atftp_put(server.host, 69, upload, "up.bin")
    assert peers.transfer_failed(result) and "unsupported request" in result.stderr, result
    assert not (root / "up.bin").exists()


@needs_ipv6
def test_ipv6_download_from_dnsmasq(root: Path, tmp_path: Path) -> None:
    with peers.dnsmasq_tftp(root, "::1"):
        result = peers.curl_get("::1", 69, "image.bin", tmp_path / "got.bin")
    assert result.ok, result
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")


# --------------------------------------------------------------------------- tftpy


def test_tftpy_client_and_server(root: Path, upload: Path, tmp_path: Path) -> None:
    with peers.tftpy_server(root, peers.free_udp_port()) as server:
        got = peers.tftpy_get(LOCAL, server.port, "image.bin", tmp_path / "got.bin", {"blksize": 1468})
        put = peers.tftpy_put(LOCAL, server.port, upload, "up.bin")
        assert got.ok and put.ok, (got, put)
        peers.wait_for_content(root / "up.bin", upload.read_bytes())
    assert sha256(tmp_path / "got.bin") == sha256(root / "image.bin")


# ------------------------------------------------------------------------- capture


def test_tcpdump_capture_sees_the_transfer(hpa: peers.ServerProc, tmp_path: Path) -> None:
    pcap = tmp_path / "cap.pcap"
    with peers.tcpdump_capture(pcap, filter="udp"):
        result = peers.curl_get(LOCAL, hpa.port, "image.bin", tmp_path / "got.bin", blksize=1024)
        assert result.ok, result
    lines = peers.tshark_summary(pcap, [hpa.port])
    rrq = [line for line in lines if "Read Request, File: image.bin" in line and "blksize=1024" in line]
    assert len(rrq) == 1, lines[:5]
    client_port = rrq[0].split()[0]  # other traffic on lo may be captured too: keep ours
    data = [line for line in lines if "Data Packet" in line and line.split()[1] == client_port]
    assert len(data) == PAYLOAD_SIZE // 1024 + 1
    assert not any("tftpdiag-capture-end" in line for line in lines)
