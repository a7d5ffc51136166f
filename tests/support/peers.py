"""Start and drive real TFTP peer programs on loopback, for interop tests.

Servers are context managers yielding a :class:`ServerProc`; each runs as its own
process group (under ``timeout`` as a safety net), is ready only once its UDP port
is really bound by that process group, and is always killed on exit.

Clients run to completion within a timeout and return a :class:`PeerResult`
``(returncode, stdout, stderr)``; ``returncode`` is ``None`` when the client was
killed for running over its timeout.

Binaries come from ``.ci/install-peers.sh``; see ``tests/PEERS.md`` for the quirks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import quote

import pytest

ATFTPD = "/opt/tftpdiag-peers/atftpd/usr/sbin/atftpd"
READY_TIMEOUT = 5.0  # seconds for a server to bind its port
CLIENT_TIMEOUT = 10.0  # seconds for a client run
MAX_LIFETIME = 900  # seconds; servers and captures die by `timeout` even if pytest does
TFTPY = "tftpy"  # pseudo tool name for require(): the Python package

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # in case PATH lacks them

Mode = Literal["binary", "ascii"]


# --------------------------------------------------------------------------- misc


def require(tool: str) -> str:
    """Return the path of a peer program (or ``"tftpy"``), else skip the test.

    With ``CI=true`` a missing peer is a failure: CI must never silently skip
    interop tests.
    """
    if tool == TFTPY:
        try:
            import tftpy  # noqa: F401
        except ImportError:
            _missing("python package tftpy is not installed")
        return tool
    path = tool if os.path.isabs(tool) else shutil.which(tool) or shutil.which(tool, path=SBIN)
    if path is None or not os.access(path, os.X_OK):
        _missing(f"peer program {tool!r} not found (run .ci/install-peers.sh)")
    assert path is not None
    return path


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Can UDP ``host:port`` be bound right now (nothing, not even a wildcard socket, holds it)?"""
    try:
        with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
            if ":" in host:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False


def free_loopback_address(port: int = 69, first: int = 2) -> str:
    """The first of 127.0.0.<first>, 127.0.0.<first+1>, ... where UDP ``port`` is free.

    dnsmasq serves TFTP on port 69 only, so concurrent instances need their own addresses;
    all of 127/8 answers on ``lo`` without any set-up.
    """
    for last in range(first, 255):
        host = f"127.0.0.{last}"
        if port_free(host, port):
            return host
    raise RuntimeError(f"UDP port {port} is taken on every 127.0.0.x address")


def has_ipv6_loopback() -> bool:
    """Is ``::1`` usable here (containers sometimes run without IPv6)?"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------ port-bound polling


def _group_socket_inodes(pgid: int) -> set[str]:
    """Socket inodes held open by any process in process group ``pgid``."""
    inodes: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # field 5 (pgrp) comes after the ")" closing the command name
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    return inodes


def _proc_addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "little":  # /proc prints each 32-bit word in host order
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def udp_bound(host: str, port: int, inodes: set[str] | None = None) -> bool:
    """Is UDP ``host:port`` bound (optionally: by one of these socket inodes)?

    A socket bound to the wildcard address of the same family also counts.
    """
    table = "/proc/net/udp6" if ":" in host else "/proc/net/udp"
    want = socket.inet_pton(_family(host), host)
    wildcard = bytes(len(want))
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        cols = line.split()
        addr, _, hexport = cols[1].partition(":")
        if int(hexport, 16) != port:
            continue
        local = socket.inet_pton(_family(host), _proc_addr(addr))
        if local in (want, wildcard) and (inodes is None or cols[9] in inodes):
            return True
    return False


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` every 10 ms until true; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 3.0) -> None:
    """Signal a process group, escalate to SIGKILL after ``grace``, reap the leader."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # the leader is gone; make sure no forked child of it survives either
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------- servers


@dataclass
class ServerProc:
    """A running peer server. ``log()`` returns its output so far (stdout+stderr)."""

    name: str
    host: str
    port: int
    root: Path
    argv: list[str]
    proc: subprocess.Popen[bytes]  # the `timeout` wrapper: leader of the server's process group
    log_path: Path
    _final_log: str | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 3.0) -> str:
        """Wait until ``text`` shows in the log (servers log a transfer after the client is done)."""
        wait_until(lambda: text in self.log(), timeout, f"{self.name} to log {text!r}")
        return self.log()


def wait_for_content(path: Path, expected: bytes, timeout: float = 3.0) -> None:
    """Wait until an uploaded file holds ``expected``: the client may exit before the
    server has written and closed it, and stopping the server then truncates it."""

    def landed() -> bool:
        try:
            return path.read_bytes() == expected
        except OSError:
            return False

    wait_until(landed, timeout, f"{path} to hold the {len(expected)} bytes uploaded")


@contextmanager
def _serve(
    name: str, argv: Sequence[str], host: str, port: int, root: Path, ready_timeout: float,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[ServerProc]:  # fmt: skip
    fd, log_name = tempfile.mkstemp(prefix=f"tftpdiag-{name}-", suffix=".log")
    log_path = Path(log_name)
    full = ["timeout", "--kill-after=5", str(MAX_LIFETIME), *argv]
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = ServerProc(name, host, port, root, list(argv), proc, log_path)
    try:
        try:
            wait_until(
                lambda: not server.alive or udp_bound(host, port, _group_socket_inodes(proc.pid)),
                ready_timeout,
                f"{name} to bind UDP {_host_port(host, port)}",
            )
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\ncommand: {argv}\nlog:\n{server.log()}") from None
        if not server.alive:
            raise RuntimeError(
                f"{name} exited with {proc.returncode} before binding {_host_port(host, port)}\n"
                f"command: {argv}\nlog:\n{server.log()}"
            )
        yield server
    finally:
        _kill_group(proc, stop_signal)
        server._final_log = server.log()
        log_path.unlink(missing_ok=True)


@contextmanager
def tftpd_hpa(
    root: Path, port: int, *args: str, host: str = "127.0.0.1", ready_timeout: float = READY_TIMEOUT
) -> Iterator[ServerProc]:
    """in.tftpd (tftpd-hpa) in the foreground, chrooted (``-s``) to ``root``, as root.

    Extra ``args`` go before the directory, e.g. ``"-c"`` (allow creating files on
    upload), ``"-r", "blksize"`` (refuse an option), ``"-B", "1468"`` (max blksize),
    ``"-T", "200000"`` (retransmit timeout in µs), ``"-p"`` (permissive), ``"-U", "022"``.
    It logs to syslog only: ``log()`` holds just start-up errors.
    """
    exe = require("in.tftpd")
    fam = "-6" if ":" in host else "-4"
    # -u root: the default user (nobody) can neither write to root-owned dirs nor,
    # without -s, traverse pytest's 0700 /tmp/pytest-of-root.
    argv = [exe, "-L", fam, "-s", "-u", "root", "-v", "--address", _host_port(host, port), *args, str(root)]
    with _serve("tftpd-hpa", argv, host, port, root, ready_timeout) as server:
        yield server


@contextmanager
def atftpd(
    root: Path, port: int, *args: str, host: str = "127.0.0.1", ready_timeout: float = READY_TIMEOUT
) -> Iterator[ServerProc]:
    """atftpd 0.8.0 standalone in the foreground (``--daemon --no-fork``), logging to stdout.

    Serves ``root`` read/write (uploads may create files). Useful ``args``:
    ``"--trace"``, ``"--prevent-sas"``, ``"--no-windowsize"``, ``"--no-blksize"``,
    ``"--no-tsize"``, ``"--no-timeout"``, ``"--retry-timeout", "1"``.
    """
    exe = require(ATFTPD)
    argv = [
        exe, "--daemon", "--no-fork", "--logfile", "-", "--verbose=7",
        "--user", "root", "--group", "root",
        "--bind-address", host, "--port", str(port), *args, str(root),
    ]  # fmt: skip
    # SIGKILL: atftpd sometimes ignores SIGTERM (it lands on a worker thread and the
    # main select() is never interrupted); it logs unbuffered, so nothing is lost.
    with _serve("atftpd", argv, host, port, root, ready_timeout, signal.SIGKILL) as server:
        yield server


@contextmanager
def dnsmasq_tftp(
    root: Path, address: str = "127.0.0.2", *args: str, ready_timeout: float = READY_TIMEOUT
) -> Iterator[ServerProc]:
    """dnsmasq's read-only TFTP server on ``address`` port 69 (it cannot use another port).

    DNS is off (``--port=0``), no config file, logs to stderr. Useful ``args``:
    ``"--tftp-no-blocksize"``, ``"--tftp-mtu=576"``, ``"--tftp-single-port"``,
    ``"--tftp-lowercase"``, ``"--tftp-max=N"``. Port 69 on ``address`` must be free, so
    use one address per concurrent dnsmasq (127.0.0.2, 127.0.0.3, ... or ::1).
    """
    exe = require("dnsmasq")
    argv = [
        exe, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--pid-file=",
        "--user=root", "--group=root", "--log-facility=-",
        "--bind-interfaces", f"--listen-address={address}",
        "--enable-tftp", f"--tftp-root={root}", *args,
    ]  # fmt: skip
    with _serve("dnsmasq", argv, address, 69, root, ready_timeout) as server:
        yield server


_TFTPY_SERVER = """
import logging, sys, tftpy
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
tftpy.TftpServer(sys.argv[1]).listen(sys.argv[2], int(sys.argv[3]))
"""


@contextmanager
def tftpy_server(
    root: Path, port: int, host: str = "127.0.0.1", ready_timeout: float = READY_TIMEOUT
) -> Iterator[ServerProc]:
    """tftpy's server in a subprocess (IPv4 only; octet only; no windowsize). Uploads allowed."""
    require(TFTPY)
    argv = [sys.executable, "-u", "-c", _TFTPY_SERVER, str(root), host, str(port)]
    with _serve("tftpy", argv, host, port, root, ready_timeout) as server:
        yield server


# ----------------------------------------------------------------------- clients


class PeerResult(NamedTuple):
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_peer(argv: Sequence[str], timeout: float = CLIENT_TIMEOUT, stdin: bytes | None = None) -> PeerResult:
    """Run a client in its own process group; kill the group if it overruns ``timeout``."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL, grace=2.0)
        out, err = proc.communicate()
        code = None
    return PeerResult(code, out.decode(errors="replace"), err.decode(errors="replace"))


@contextmanager
def spawn_peer(argv: Sequence[str], max_lifetime: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start a client in its own process group and leave it running while the block runs
    (to kill it midway with :func:`kill_peer`); it is killed on exit in any case."""
    proc = subprocess.Popen(
        ["timeout", "--kill-after=2", str(max_lifetime), *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        _kill_group(proc, signal.SIGKILL, grace=2.0)


def kill_peer(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a spawned client's whole process group: it sends nothing more (no ERROR)."""
    _kill_group(proc, signal.SIGKILL, grace=2.0)


def busybox_argv(put: bool, host: str, port: int, remote: str, local: Path, blksize: int | None = None) -> list[str]:
    """The argv of a busybox tftp get or put, for :func:`spawn_peer`."""
    argv = [require("busybox"), "tftp", "-p" if put else "-g", "-r", remote, "-l", str(local)]
    if blksize is not None:
        argv += ["-b", str(blksize)]
    return [*argv, host, str(port)]


def _tftp_url(host: str, port: int, remote: str) -> str:
    return f"tftp://{_host_port(host, port)}/{quote(remote)}"


def _curl_opts(blksize: int | None, no_options: bool, timeout: float, extra: Sequence[str]) -> list[str]:
    opts = [require("curl"), "-sS", "--max-time", str(timeout), *extra]
    if blksize is not None:
        opts += ["--tftp-blksize", str(blksize)]
    if no_options:
        opts.append("--tftp-no-options")
    return opts


def curl_get(
    host: str, port: int, remote: str, out: Path, blksize: int | None = None,
    no_options: bool = False, timeout: float = CLIENT_TIMEOUT, extra: Sequence[str] = (),
) -> PeerResult:  # fmt: skip
    """curl RRQ (octet only; IPv4 and IPv6). Sends tsize=0, blksize (512 unless given)
    and timeout unless ``no_options``. ``extra`` e.g. ``["--path-as-is"]`` (else curl
    drops ``../`` from the name). Exit 68 not found, 69 access violation, 71 other
    TFTP errors (also for a zero-length file when options are on), 28 timeout."""
    opts = _curl_opts(blksize, no_options, timeout, extra)
    return run_peer([*opts, "-o", str(out), _tftp_url(host, port, remote)], timeout + 2)


def curl_put(
    host: str, port: int, local: Path, remote: str, blksize: int | None = None,
    no_options: bool = False, timeout: float = CLIENT_TIMEOUT, extra: Sequence[str] = (),
) -> PeerResult:  # fmt: skip
    """curl WRQ (octet; IPv4 and IPv6); sends tsize=<size>, blksize, timeout. See :func:`curl_get`."""
    opts = _curl_opts(blksize, no_options, timeout, extra)
    return run_peer([*opts, "-T", str(local), _tftp_url(host, port, remote)], timeout + 2)


def _tftp_hpa(host: str, port: int, mode: Mode, command: Sequence[str], timeout: float) -> PeerResult:
    fam = "-6" if ":" in host else "-4"
    # -v: report errors/bytes on stdout; -l: literal (no host:file parsing of names)
    return run_peer([require("tftp"), fam, "-v", "-l", "-m", mode, host, str(port), "-c", *command], timeout)


def tftp_hpa_get(
    host: str, port: int, remote: str, out: Path, mode: Mode = "binary", timeout: float = CLIENT_TIMEOUT
) -> PeerResult:
    """tftp-hpa RRQ (no options sent; IPv4 and IPv6). Exit code is 0 even on a TFTP
    error: check ``transfer_failed(result)``."""
    return _tftp_hpa(host, port, mode, ["get", remote, str(out)], timeout)


def tftp_hpa_put(
    host: str, port: int, local: Path, remote: str, mode: Mode = "binary", timeout: float = CLIENT_TIMEOUT
) -> PeerResult:
    """tftp-hpa WRQ (no options; IPv4 and IPv6); see :func:`tftp_hpa_get`."""
    return _tftp_hpa(host, port, mode, ["put", str(local), remote], timeout)


def tftp_hpa_script(host: str, port: int, commands: Sequence[str], timeout: float = CLIENT_TIMEOUT) -> PeerResult:
    """Drive tftp-hpa interactively, e.g. ``["binary", "rexmt 1", "timeout 3", "get a /tmp/a"]``.

    Its retransmit (5 s) and total (25 s) timeouts can only be changed this way.
    """
    fam = "-6" if ":" in host else "-4"
    script = "\n".join(["verbose", "literal", *commands, "quit", ""]).encode()
    return run_peer([require("tftp"), fam, host, str(port)], timeout, stdin=script)


def transfer_failed(result: PeerResult) -> bool:
    """True when a peer reported a TFTP error or failure whatever its exit code."""
    text = result.stdout + result.stderr
    return not result.ok or "Error code" in text or "Transfer timed out" in text


def _atftp_opts(options: dict[str, int | str] | None, extra: Sequence[str]) -> list[str]:
    argv = [require("atftp")]
    for name, value in (options or {}).items():
        argv += ["--option", f"{name} {value}"]
    return [*argv, *extra]


def atftp_get(
    host: str, port: int, remote: str, out: Path, options: dict[str, int | str] | None = None,
    extra: Sequence[str] = (), timeout: float = CLIENT_TIMEOUT,
) -> PeerResult:  # fmt: skip
    """atftp RRQ (IPv4 and IPv6). Exit 255 on a TFTP error (leaves an empty ``out``).

    ``options`` e.g. ``{"windowsize": 16, "tsize": 0, "blksize": 1468, "timeout": 1}``
    (each becomes ``--option "name value"``; ``"disable"`` turns one off);
    ``{"mode": "netascii"}`` switches the transfer mode (default octet).
    ``extra`` e.g. ``["--trace", "--verbose", "--prevent-sas", "--tftp-timeout", "1"]``.
    """
    argv = _atftp_opts(options, extra)
    return run_peer([*argv, "-g", "-r", remote, "-l", str(out), host, str(port)], timeout)


def atftp_put(
    host: str, port: int, local: Path, remote: str, options: dict[str, int | str] | None = None,
    extra: Sequence[str] = (), timeout: float = CLIENT_TIMEOUT,
) -> PeerResult:  # fmt: skip
    """atftp WRQ; see :func:`atftp_get`."""
    argv = _atftp_opts(options, extra)
    return run_peer([*argv, "-p", "-l", str(local), "-r", remote, host, str(port)], timeout)


def _busybox(
    flag: str, host: str, port: int, remote: str, local: Path, blksize: int | None, timeout: float
) -> PeerResult:
    return run_peer(busybox_argv(flag == "-p", host, port, remote, local, blksize), timeout)


def busybox_get(
    host: str, port: int, remote: str, out: Path, blksize: int | None = None, timeout: float = CLIENT_TIMEOUT
) -> PeerResult:
    """busybox tftp RRQ (octet; IPv4 and IPv6; ``-b`` sends blksize)."""
    return _busybox("-g", host, port, remote, out, blksize, timeout)


def busybox_put(
    host: str, port: int, local: Path, remote: str, blksize: int | None = None, timeout: float = CLIENT_TIMEOUT
) -> PeerResult:
    """busybox tftp WRQ; see :func:`busybox_get`."""
    return _busybox("-p", host, port, remote, local, blksize, timeout)


_TFTPY_CLIENT = """
import json, logging, sys, tftpy
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
op, host, port, remote, local, options = sys.argv[1:7]
client = tftpy.TftpClient(host, int(port), options=json.loads(options))
try:
    if op == "get":
        client.download(remote, local, timeout=2, retries=3)
    else:
        client.upload(remote, local, timeout=2, retries=3)
except Exception as exc:
    print(f"tftpy error: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def _tftpy(
    op: str, host: str, port: int, remote: str, local: Path, options: dict[str, int] | None, timeout: float
) -> PeerResult:
    require(TFTPY)
    argv = [sys.executable, "-c", _TFTPY_CLIENT, op, host, str(port), remote, str(local), json.dumps(options or {})]
    return run_peer(argv, timeout)


def tftpy_get(
    host: str, port: int, remote: str, out: Path, options: dict[str, int] | None = None, timeout: float = CLIENT_TIMEOUT
) -> PeerResult:
    """tftpy client RRQ in a subprocess (IPv4 only, octet). ``options`` e.g. ``{"blksize": 1428, "tsize": 0}``."""
    return _tftpy("get", host, port, remote, out, options, timeout)


def tftpy_put(
    host: str,
    port: int,
    local: Path,
    remote: str,
    options: dict[str, int] | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> PeerResult:
    """tftpy client WRQ in a subprocess (IPv4 only, octet)."""
    return _tftpy("put", host, port, remote, local, options, timeout)


# ----------------------------------------------------------------------- capture


CAPTURE_SNAPLEN = 65535  # whole loopback TFTP packets (blksize up to 65464)
CAPTURE_BUFFER_KIB = 65536  # ring of ~1000 snaplen slots: no kernel drops at loopback speed


@contextmanager
def tcpdump_capture(
    path: Path, iface: str = "lo", filter: str = "udp", ready_timeout: float = READY_TIMEOUT
) -> Iterator[Path]:
    """Capture packets to ``path`` (pcap) while the block runs.

    Ready once tcpdump says "listening on". On exit (on ``lo`` or ``any``) a marker
    datagram is sent to 127.0.0.1 and we wait until it is in the file, so every packet
    before it is written; then SIGINT stops tcpdump, we wait for it to exit and strip
    the marker from the file. Raises RuntimeError if the kernel dropped packets.
    """
    exe = require("tcpdump")
    marker = _Marker() if iface in ("lo", "any") else None
    expr = filter
    if marker is not None and filter.strip():
        expr = f"({filter}) or (udp and dst host 127.0.0.1 and dst port {marker.port})"
    fd, err_name = tempfile.mkstemp(prefix="tftpdiag-tcpdump-", suffix=".err")
    err_path = Path(err_name)
    # -U: write each packet at once; --immediate-mode: no ring-block batching (a block
    # is handed over only when full or after 1 s); -Z root: keep writing into pytest's
    # 0700 tmp dirs; -B: a ring big enough not to drop packets at loopback speed.
    argv = [
        exe, "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root",
        "-s", str(CAPTURE_SNAPLEN), "-B", str(CAPTURE_BUFFER_KIB), "-w", str(path), *expr.split(),
    ]  # fmt: skip
    with os.fdopen(fd, "wb") as err:
        proc = subprocess.Popen(
            ["timeout", "--kill-after=5", str(MAX_LIFETIME), *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip

    def stderr_text() -> str:
        return err_path.read_text(errors="replace")

    try:
        wait_until(lambda: proc.poll() is not None or "listening on" in stderr_text(), ready_timeout, "tcpdump")
        if proc.poll() is not None:
            raise RuntimeError(f"tcpdump exited with {proc.returncode}: {stderr_text()}")
        yield path
        if marker is not None:
            marker.send_and_wait(path, ready_timeout)
    finally:
        _kill_group(proc, signal.SIGINT, grace=5.0)
        report = stderr_text()
        err_path.unlink(missing_ok=True)
        if marker is not None:
            marker.close()
    if marker is not None:
        _strip_pcap_records(path, marker.token)
    dropped = [line for line in report.splitlines() if "dropped by kernel" in line and not line.startswith("0 ")]
    if dropped:
        raise RuntimeError(f"tcpdump lost packets, the capture {path} is incomplete: {dropped[0]}")


class _Marker:
    """A unique datagram sent to ourselves to prove that tcpdump has written everything."""

    def __init__(self) -> None:
        self.token = b"tftpdiag-capture-end-" + os.urandom(8).hex().encode()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))  # receives it, so no ICMP unreachable follows
        self.port = int(self.sock.getsockname()[1])

    def send_and_wait(self, pcap: Path, timeout: float) -> None:
        self.sock.sendto(self.token, ("127.0.0.1", self.port))

        def written() -> bool:
            with pcap.open("rb") as f:
                f.seek(max(0, pcap.stat().st_size - 4096))
                return self.token in f.read()

        wait_until(written, timeout, "tcpdump to write the end marker")

    def close(self) -> None:
        self.sock.close()


def _strip_pcap_records(pcap: Path, token: bytes) -> None:
    """Rewrite a classic pcap file without the records that contain ``token``."""
    data = pcap.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    kept, pos = [data[:24]], 24
    while pos + 16 <= len(data):
        (incl_len,) = struct.unpack_from(order + "I", data, pos + 8)
        record = data[pos : pos + 16 + incl_len]
        if token not in record:
            kept.append(record)
        pos += 16 + incl_len
    pcap.write_bytes(b"".join(kept))


def tshark_summary(pcap: Path, tftp_ports: Sequence[int] = (), timeout: float = CLIENT_TIMEOUT) -> list[str]:
    """One line per packet: ``"SRCPORT DSTPORT INFO"`` as tshark decodes it.

    tshark only knows TFTP on port 69 (and follows those transfers); name any other
    server port in ``tftp_ports`` so it is decoded as TFTP too.
    """
    fields = ["-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "_ws.col.Info"]
    argv = [require("tshark"), "-n", "-r", str(pcap), *fields]
    for port in tftp_ports:
        argv += ["-d", f"udp.port=={port},tftp"]
    result = run_peer(argv, timeout)
    if not result.ok:
        raise RuntimeError(f"tshark failed ({result.returncode}): {result.stderr}")
    return [" ".join(line.split("\t")) for line in result.stdout.splitlines() if line]
