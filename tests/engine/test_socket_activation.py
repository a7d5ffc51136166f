"""Port 69 without full root: `serve` takes the sockets systemd binds (socket activation, run here by
systemd-socket-activate, which speaks the same LISTEN_FDS protocol), and says what to do when it may
not bind a privileged port itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.interop import random_bytes
from tests.support.peers import _kill_group, curl_get, free_udp_port, has_ipv6_loopback, port_free, require, wait_until
from tftpdiag.engine.activation import ActivationError, activated_sockets

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
IMAGE = random_bytes(300_000, 31)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "image.bin").write_bytes(IMAGE)
    return served


@contextmanager
def activated_serve(root: Path, listen: list[str], *extra: str,
                    datagram: bool = True) -> Iterator[subprocess.Popen[str]]:
    """systemd-socket-activate binding ``listen`` and starting `tftpdiag serve` on the first datagram."""
    exe = require("systemd-socket-activate")
    argv = [exe, *(["--datagram"] if datagram else [])]
    for address in listen:
        argv += ["-l", address]
    argv += ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "tftpdiag", "serve", str(root), "--no-tui", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        _kill_group(proc)  # type: ignore[arg-type]


def _listening(port: int) -> bool:
    """Whether the activator has bound the port yet."""
    return not port_free("127.0.0.1", port)


def get_with_curl(host: str, port: int, out: Path) -> bytes:
    result = curl_get(host, port, "image.bin", out)
    assert result.ok, result
    return out.read_bytes()


def test_serve_takes_an_ipv4_socket_from_systemd(root: Path, tmp_path: Path) -> None:
    port = free_udp_port()
    with activated_serve(root, [f"127.0.0.1:{port}"], "--port", "1") as proc:
        wait_until(lambda: _listening(port), 10, "systemd-socket-activate to bind")
        # The first request starts serve, which finds it waiting on the socket it was handed.
        assert get_with_curl("127.0.0.1", port, tmp_path / "a.bin") == IMAGE
        assert get_with_curl("127.0.0.1", port, tmp_path / "b.bin") == IMAGE
        _kill_group(proc)  # type: ignore[arg-type]
        err = proc.stderr.read() if proc.stderr else ""
    # --port 1 was not bound (that would need root and fail): the handed-over socket was used.
    assert f"on 127.0.0.1:{port}" in err and "sockets from systemd socket activation" in err, err


@pytest.mark.parametrize("single_port", [False, True], ids=["port-per-session", "single-port"])
def test_a_dual_stack_socket_serves_ipv4_and_ipv6_clients(root: Path, tmp_path: Path, single_port: bool) -> None:
    """`-l PORT` makes one [::] socket that takes IPv4 too (as ListenDatagram=69 does): IPv4 clients
    are answered (from their own family's socket, or from the listening socket) and shown as IPv4."""
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    port = free_udp_port()
    extra = ["--single-port"] if single_port else []
    with activated_serve(root, [str(port)], "--json", *extra) as proc:
        wait_until(lambda: _listening(port), 10, "systemd-socket-activate to bind")
        assert get_with_curl("127.0.0.1", port, tmp_path / "v4.bin") == IMAGE
        assert get_with_curl("::1", port, tmp_path / "v6.bin") == IMAGE
        missing = curl_get("127.0.0.1", port, "missing.bin", tmp_path / "m.bin")
        assert not missing.ok  # the refusal went back over the dual-stack socket
        _kill_group(proc)  # type: ignore[arg-type]
        out = proc.stdout.read() if proc.stdout else ""
    assert '"address": "127.0.0.1"' in out and '"address": "::1"' in out
    assert "::ffff:" not in out
    assert '"why": "not-found"' in out or "not found" in out


def test_two_sockets_one_per_family(root: Path, tmp_path: Path) -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    port = free_udp_port()
    with activated_serve(root, [f"127.0.0.1:{port}", f"[::1]:{port}"]):
        wait_until(lambda: _listening(port), 10, "systemd-socket-activate to bind")
        assert get_with_curl("::1", port, tmp_path / "v6.bin") == IMAGE
        assert get_with_curl("127.0.0.1", port, tmp_path / "v4.bin") == IMAGE


def test_a_stream_socket_is_refused_in_one_line(root: Path) -> None:
    """A .socket unit with ListenStream= by mistake: exit 2 and one line saying what to use."""
    port = free_udp_port()
    with activated_serve(root, [f"127.0.0.1:{port}"], datagram=False) as proc:
        def connected() -> bool:
            with socket.socket() as conn:
                return conn.connect_ex(("127.0.0.1", port)) == 0
        wait_until(connected, 10, "systemd-socket-activate to listen")
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == ("tftpdiag serve: file descriptor 3 from systemd is not a UDP socket: "
                                           "TFTP needs ListenDatagram= in the .socket unit"), err


def test_listen_fds_for_another_process_are_left_alone() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1)}
    assert activated_sockets(env) == []
    assert env["LISTEN_FDS"] == "1"  # not ours: not touched either
    assert activated_sockets({}) == []
    with pytest.raises(ActivationError, match="not a number"):
        activated_sockets({"LISTEN_FDS": "x", "LISTEN_PID": str(os.getpid())})
    with pytest.raises(ActivationError, match="out of range"):
        activated_sockets({"LISTEN_FDS": "100000", "LISTEN_PID": str(os.getpid())})


def test_the_permission_error_names_every_way_to_port_69(root: Path) -> None:
    """As a user without CAP_NET_BIND_SERVICE (root with the capability dropped, which the kernel treats
    the same): exit 2 and a few lines naming socket activation, AmbientCapabilities, setcap and the
    sysctl. It runs in a network namespace of its own (unshare), where the sysctl has its default, 1024,
    whatever this machine set (containers often set 0). Needs root to make it and drop the capability."""
    if os.geteuid() != 0:
        pytest.skip("a network namespace of its own and dropping CAP_NET_BIND_SERVICE need root")
    unshare, setpriv = require("unshare"), require("setpriv")
    proc = subprocess.run([unshare, "--net", setpriv, "--bounding-set", "-net_bind_service", "--inh-caps",
                           "-net_bind_service", "env", f"PYTHONPATH={REPO}", sys.executable, "-m", "tftpdiag",
                           "serve", str(root), "--bind", "0.0.0.0", "--port", "69", "--no-tui"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("tftpdiag serve: cannot bind 0.0.0.0:69: permission denied")
    assert 4 <= len(lines) <= 8
    text = proc.stderr
    for needed in ("socket activation", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "setcap cap_net_bind_service+ep",
                   "net.ipv4.ip_unprivileged_port_start", "contrib/systemd/tftpdiag.socket"):
        assert needed in text, needed
    assert "Traceback" not in text


def test_the_sample_units_name_what_the_error_promises() -> None:
    socket_unit = (REPO / "contrib/systemd/tftpdiag.socket").read_text()
    service = (REPO / "contrib/systemd/tftpdiag.service").read_text()
    assert "ListenDatagram=0.0.0.0:69" in socket_unit and "ListenDatagram=[::]:69" in socket_unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in service
    assert "tftpdiag serve" in service
    analyze = subprocess.run(["sh", "-c", "command -v systemd-analyze"], capture_output=True, text=True)
    if analyze.returncode == 0:
        checked = subprocess.run([analyze.stdout.strip(), "verify", str(REPO / "contrib/systemd/tftpdiag.socket")],
                                 capture_output=True, text=True, timeout=30)
        # The service's ExecStart names an installed tftpdiag, which this machine may lack; the
        # socket unit's own syntax must be clean.
        assert "Unknown key" not in checked.stderr and "Invalid" not in checked.stderr, checked.stderr

