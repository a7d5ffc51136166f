"""Real TFTP clients against our server (tftpdiag.engine.server) on loopback.

Clients: tftp-hpa (binary and ascii), curl (default, --tftp-blksize, --tftp-no-options), atftp
(windowsize, tsize, netascii), busybox tftp (-b) and tftpy's client, each getting and putting. Every
transfer is checked byte for byte, and against what our server says it negotiated and how the
session ended (its events on the bus). Then what a server must refuse (uploads without the switch,
overwrites, every way out of the root), what it must survive (malformed datagrams, clients that
vanish), that it leaks neither file descriptors nor threads, and that the clients get their file
through 20% loss with duplication and reordering (`serve --impair`) with the server's default timing.

One server per test, on a free port of 127.0.0.1 (or ::1); see tests/PEERS.md for each client's quirks.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import peers
from tests.support.interop import (
    EventLog,
    files_named,
    netascii_text,
    random_bytes,
    running_server,
)
from tests.support.peers import PeerResult
from tftpdiag.engine.client import ClientOutcome, ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    OptionsNegotiated,
    PacketReceived,
    Reason,
    RequestRefused,
    SocketError,
    TransferStarted,
)
from tftpdiag.protocol.options import Verdict
from tftpdiag.protocol.packets import Data
from tftpdiag.protocol.timer import Timing

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

LOCAL = "127.0.0.1"
SERVER_TIMING = Timing(initial_timeout=0.5, retries=3, dally=0.1)
CLIENT_TIMING = Timing(initial_timeout=0.5, retries=3, dally=0.05)
CLIENT_TIMEOUT = 8.0

FILES: dict[str, bytes] = {
    "small.bin": random_bytes(100_000, 11),
    "empty.bin": b"",
    "exact512.bin": random_bytes(512 * 40, 12),
    "text.txt": netascii_text(seed=13),
    "sub/inner.bin": random_bytes(3000, 14),
}
UPLOADS: dict[str, bytes] = {
    "upload": random_bytes(70_000 + 511, 15),
    "empty": b"",
    "exact512": random_bytes(512 * 30, 16),
}
ORIGINAL = b"the file that was there before\n"
SECRET = b"outside the root\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The served folder, and beside it (outside) a secret the server must never show."""
    served = tmp_path / "root"
    for name, data in FILES.items():
        path = served / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (served / "subdir").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.txt", served / "link-out")
    os.symlink(outside, served / "dirlink")
    os.symlink("small.bin", served / "link-in")  # a symlink that stays inside is fine
    os.mkfifo(served / "fifo")
    return served


def config(root: Path, **overrides: Any) -> ServerConfig:
    return replace(
        ServerConfig(root=root, bind=(LOCAL,), port=0, timing=SERVER_TIMING),
        **overrides,
    )  # type: ignore[arg-type]


# ----------------------------------------------------------------------- helpers


def ask(addr: tuple[str, int], raw: bytes, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]] | None:
    """Send one datagram from a fresh socket; the first reply (and who sent it), or None."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(raw, addr)
        try:
            data, sender = sock.recvfrom(65536)
        except TimeoutError:
            return None
        return data, (sender[0], sender[1])


def request(opcode: int, name: str | bytes, mode: bytes = b"octet", options: bytes = b"") -> bytes:
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    return struct.pack("!H", opcode) + name + b"\0" + mode + b"\0" + options


def error_code(reply: bytes) -> int | None:
    """The code of an ERROR packet, None for anything else."""
    opcode, code = struct.unpack("!HH", reply[:4])
    return code if opcode == 5 else None


def our_get(host: str, port: int, name: str, output: Path | None = None, deadline: float = 5.0) -> ClientOutcome:
    req = ClientRequest(host, name, port=port, timing=CLIENT_TIMING, output=output, deadline=deadline)
    return ClientTransfer(req).run()


def server_session(log: EventLog, timeout: float = 5.0) -> tuple[Completed | Failed, OptionsNegotiated | None]:
    """How the (only) transfer of this server ended, and what it negotiated."""
    end = log.wait_end(timeout=timeout)
    negotiated = log.of(OptionsNegotiated, end.session)
    return end, negotiated[-1] if negotiated else None


def granted(negotiated: OptionsNegotiated | None) -> dict[str, str | None]:
    return {} if negotiated is None else {o.name: o.granted for o in negotiated.outcomes}


def failed_text(result: PeerResult) -> str:
    return f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def no_partial_files(root: Path) -> None:
    assert files_named(root, ".part") == [], "a temporary upload file was left in the root"


SIZE = "<size>"  # stands for the file's size in expected option values
ANY = "<any>"  # any value granted (curl derives its timeout from --max-time)


@dataclass(frozen=True)
class Client:
    get: Callable[[str, int, str, Path], PeerResult]
    put: Callable[[str, int, Path, str], PeerResult] | None
    options: dict[str, str]  # what our server grants: option -> value (SIZE: the file's size)
    put_options: dict[str, str] | None = None  # for a put, when not the same
    empty_get: bool = True  # curl with options cannot download an empty file (PEERS.md)
    ipv6: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)


T = CLIENT_TIMEOUT
CLIENTS: dict[str, Client] = {
    "curl": Client(
        lambda h, p, r, o: peers.curl_get(h, p, r, o, timeout=T),
        lambda h, p, local, r: peers.curl_put(h, p, local, r, timeout=T),
        {"tsize": SIZE, "blksize": "512", "timeout": ANY}, empty_get=False),
    "curl-blksize1468": Client(
        lambda h, p, r, o: peers.curl_get(h, p, r, o, blksize=1468, timeout=T),
        lambda h, p, local, r: peers.curl_put(h, p, local, r, blksize=1468, timeout=T),
        {"tsize": SIZE, "blksize": "1468", "timeout": ANY}, empty_get=False),
    "curl-no-options": Client(
        lambda h, p, r, o: peers.curl_get(h, p, r, o, no_options=True, timeout=T),
        lambda h, p, local, r: peers.curl_put(h, p, local, r, no_options=True, timeout=T),
        {}),
    "tftp-hpa": Client(
        lambda h, p, r, o: peers.tftp_hpa_get(h, p, r, o, timeout=T),
        lambda h, p, local, r: peers.tftp_hpa_put(h, p, local, r, timeout=T),
        {}),
    "atftp": Client(
        lambda h, p, r, o: peers.atftp_get(h, p, r, o, timeout=T),
        lambda h, p, local, r: peers.atftp_put(h, p, local, r, timeout=T),
        {}),
    "atftp-windowsize16-tsize-blksize1468": Client(
        lambda h, p, r, o: peers.atftp_get(h, p, r, o, {"windowsize": 16, "tsize": 0, "blksize": 1468}, timeout=T),
        None,
        {"windowsize": "16", "tsize": SIZE, "blksize": "1468"}, ipv6=False),
    "atftp-windowsize8-tsize": Client(
        lambda h, p, r, o: peers.atftp_get(h, p, r, o, {"windowsize": 8, "tsize": 0}, timeout=T),
        lambda h, p, local, r: peers.atftp_put(h, p, local, r, {"windowsize": 8, "tsize": 0}, timeout=T),
        {"windowsize": "8", "tsize": SIZE}, ipv6=False),
    "busybox": Client(
        lambda h, p, r, o: peers.busybox_get(h, p, r, o, timeout=T),
        lambda h, p, local, r: peers.busybox_put(h, p, local, r, timeout=T),
        {"tsize": SIZE}),
    "busybox-b1468": Client(
        lambda h, p, r, o: peers.busybox_get(h, p, r, o, blksize=1468, timeout=T),
        lambda h, p, local, r: peers.busybox_put(h, p, local, r, blksize=1468, timeout=T),
        {"blksize": "1468", "tsize": SIZE}, ipv6=False),
    "busybox-b65464": Client(
        lambda h, p, r, o: peers.busybox_get(h, p, r, o, blksize=65464, timeout=T),
        None,
        {"blksize": "65464", "tsize": SIZE}, ipv6=False),
    "tftpy": Client(
        lambda h, p, r, o: peers.tftpy_get(h, p, r, o, timeout=T),
        lambda h, p, local, r: peers.tftpy_put(h, p, local, r, timeout=T),
        {}, ipv6=False),
    "tftpy-blksize1428-tsize": Client(
        lambda h, p, r, o: peers.tftpy_get(h, p, r, o, {"blksize": 1428, "tsize": 0}, timeout=T),
        lambda h, p, local, r: peers.tftpy_put(h, p, local, r, {"blksize": 1428, "tsize": 0}, timeout=T),
        # tftpy sends the options as given: tsize=0 in its WRQ too, and we echo that
        {"blksize": "1428", "tsize": SIZE}, put_options={"blksize": "1428", "tsize": "0"}, ipv6=False),
}  # fmt: skip

GET_CASES = [
    pytest.param(client, name, id=f"{client}-{name}")
    for client, spec in CLIENTS.items()
    for name in ("small.bin", "empty.bin", "exact512.bin")
    if spec.empty_get or name != "empty.bin"
]
PUT_CASES = [
    pytest.param(client, case, id=f"{client}-{case}")
    for client, spec in CLIENTS.items()
    if spec.put is not None
    for case in UPLOADS
]


def expect_options(negotiated: OptionsNegotiated | None, expected: dict[str, str], size: int) -> None:
    got = granted(negotiated)
    want = {name: (str(size) if value == SIZE else got.get(name) if value == ANY else value)
            for name, value in expected.items()}  # fmt: skip
    assert got == want
    assert negotiated is not None
    if not expected:
        assert negotiated.negotiated.oack is None, "no option asked: plain RFC 1350, no OACK"
    for outcome in negotiated.outcomes:
        assert outcome.verdict is Verdict.ACCEPTED, outcome


# ----------------------------------------------------------------------- the matrix: gets and puts


@pytest.mark.parametrize(("client", "name"), GET_CASES)
def test_peer_get(root: Path, tmp_path: Path, client: str, name: str) -> None:
    spec = CLIENTS[client]
    out = tmp_path / "got"
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = spec.get(host, port, name, out)
        assert not peers.transfer_failed(result), failed_text(result)
        end, negotiated = server_session(log)
    assert out.read_bytes() == FILES[name]
    assert isinstance(end, Completed), end
    assert end.stats.bytes == len(FILES[name])
    expect_options(negotiated, spec.options, len(FILES[name]))


@pytest.mark.parametrize(("client", "case"), PUT_CASES)
def test_peer_put(root: Path, tmp_path: Path, client: str, case: str) -> None:
    spec = CLIENTS[client]
    assert spec.put is not None
    data = UPLOADS[case]
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with running_server(config(root, allow_upload=True)) as (server, log):
        host, port = server.addresses[0]
        result = spec.put(host, port, source, "uploaded.bin")
        assert not peers.transfer_failed(result), failed_text(result)
        end, negotiated = server_session(log)
        assert isinstance(end, Completed), end
        peers.wait_for_content(root / "uploaded.bin", data)
    assert end.stats.bytes == len(data)
    expect_options(
        negotiated,
        spec.put_options if spec.put_options is not None else spec.options,
        len(data),
    )
    no_partial_files(root)


GETTERS = {
    name: spec.get for name, spec in CLIENTS.items() if name in ("curl", "tftp-hpa", "atftp", "busybox", "tftpy")
}


@pytest.mark.parametrize("client", GETTERS)
def test_peer_get_missing(root: Path, tmp_path: Path, client: str) -> None:
    """ERROR 1 for a name not there, and the refusal names the file the client probably meant."""
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = GETTERS[client](host, port, "SMALL.BIN", tmp_path / "got")
        assert peers.transfer_failed(result), failed_text(result)
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert isinstance(refused, RequestRefused)
    assert (refused.code, refused.why, refused.suggestion) == (1, "not-found", "small.bin")
    if client == "curl":
        assert result.returncode == 68  # CURLE_TFTP_NOTFOUND


ASCII_GETS: dict[str, Callable[[str, int, str, Path], PeerResult]] = {
    "tftp-hpa": lambda h, p, r, o: peers.tftp_hpa_get(h, p, r, o, mode="ascii", timeout=T),
    "atftp": lambda h, p, r, o: peers.atftp_get(h, p, r, o, {"mode": "netascii"}, timeout=T),
}
ASCII_PUTS: dict[str, Callable[[str, int, Path, str], PeerResult]] = {
    "tftp-hpa": lambda h, p, local, r: peers.tftp_hpa_put(h, p, local, r, mode="ascii", timeout=T),
    "atftp": lambda h, p, local, r: peers.atftp_put(h, p, local, r, {"mode": "netascii"}, timeout=T),
}


@pytest.mark.parametrize("client", ASCII_GETS)
def test_peer_get_netascii(root: Path, tmp_path: Path, client: str) -> None:
    """Text with every CR/LF edge case comes back exact: we encode RFC 764, the client decodes it."""
    out = tmp_path / "got.txt"
    text = FILES["text.txt"]
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = ASCII_GETS[client](host, port, "text.txt", out)
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
        started = log.of(TransferStarted)
    assert isinstance(end, Completed)
    assert started[0].mode == "netascii"
    assert out.read_bytes() == text
    assert end.stats.bytes == len(text) + text.count(b"\r") + text.count(b"\n"), "bytes counted on the wire"


@pytest.mark.parametrize("client", ASCII_PUTS)
def test_peer_put_netascii(root: Path, tmp_path: Path, client: str) -> None:
    text = FILES["text.txt"]
    source = tmp_path / "source.txt"
    source.write_bytes(text)
    with running_server(config(root, allow_upload=True)) as (server, log):
        host, port = server.addresses[0]
        result = ASCII_PUTS[client](host, port, source, "up.txt")
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
        assert isinstance(end, Completed), end
        peers.wait_for_content(root / "up.txt", text)
    no_partial_files(root)


def test_option_caps_and_refusals(root: Path, tmp_path: Path) -> None:
    """A capped blksize is granted reduced; a refused option is left out of the OACK, and the
    clients carry on without it."""
    from tftpdiag.protocol.options import ServerPolicy

    policy = ServerPolicy(max_blksize=1468, refuse=frozenset({"windowsize"}))
    with running_server(config(root, policy=policy)) as (server, log):
        host, port = server.addresses[0]
        result = peers.busybox_get(host, port, "small.bin", tmp_path / "a", blksize=65464, timeout=T)
        assert result.ok, failed_text(result)
        end, negotiated = server_session(log)
        assert isinstance(end, Completed)
        assert negotiated is not None
        assert {o.name: (o.granted, o.verdict) for o in negotiated.outcomes} == {
            "blksize": ("1468", Verdict.REDUCED),
            "tsize": ("100000", Verdict.ACCEPTED),
        }
        log.events.clear()
        result = peers.atftp_get(
            host,
            port,
            "small.bin",
            tmp_path / "b",
            {"windowsize": 16, "blksize": 1468},
            timeout=T,
        )
        assert result.ok, failed_text(result)
        end, negotiated = server_session(log)
        assert isinstance(end, Completed)
        assert negotiated is not None
        assert {o.name: (o.granted, o.verdict) for o in negotiated.outcomes} == {
            "windowsize": (None, Verdict.IGNORED),
            "blksize": ("1468", Verdict.ACCEPTED),
        }
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == FILES["small.bin"]


needs_ipv6 = pytest.mark.skipif(not peers.has_ipv6_loopback(), reason="no IPv6 loopback here")


@needs_ipv6
@pytest.mark.parametrize("client", [name for name, spec in CLIENTS.items() if spec.ipv6 and spec.put])
def test_ipv6_get_and_put(root: Path, tmp_path: Path, client: str) -> None:
    spec = CLIENTS[client]
    assert spec.put is not None
    source = tmp_path / "source.bin"
    source.write_bytes(UPLOADS["upload"])
    with running_server(config(root, bind=("::1",), allow_upload=True)) as (
        server,
        log,
    ):
        host, port = server.addresses[0]
        assert host == "::1"
        result = spec.get(host, port, "small.bin", tmp_path / "got")
        assert not peers.transfer_failed(result), failed_text(result)
        end, negotiated = server_session(log)
        assert isinstance(end, Completed), end
        assert log.of(TransferStarted)[0].peer[0] == "::1"
        expect_options(negotiated, spec.options, len(FILES["small.bin"]))
        log.events.clear()
        result = spec.put(host, port, source, "uploaded.bin")
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
        assert isinstance(end, Completed), end
        peers.wait_for_content(root / "uploaded.bin", UPLOADS["upload"])
    assert (tmp_path / "got").read_bytes() == FILES["small.bin"]


# ----------------------------------------------------------------------- what uploads may not do


PUTTERS = {
    name: spec.put for name, spec in CLIENTS.items() if name in ("curl", "tftp-hpa", "atftp", "busybox", "tftpy")
}


@pytest.mark.parametrize("client", PUTTERS)
def test_upload_refused_when_read_only(root: Path, tmp_path: Path, client: str) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(UPLOADS["upload"])
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        put = PUTTERS[client]
        assert put is not None
        result = put(host, port, source, "new.bin")
        assert peers.transfer_failed(result), failed_text(result)
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert isinstance(refused, RequestRefused)
    assert (refused.code, refused.why, refused.filename, refused.is_read) == (
        2,
        "read-only",
        "new.bin",
        False,
    )
    assert not (root / "new.bin").exists()
    no_partial_files(root)


@pytest.mark.parametrize("client", PUTTERS)
def test_overwrite_refused(root: Path, tmp_path: Path, client: str) -> None:
    """Uploads on but overwriting off: ERROR 6, and the file that was there is untouched."""
    (root / "exists.bin").write_bytes(ORIGINAL)
    source = tmp_path / "source.bin"
    source.write_bytes(UPLOADS["upload"])
    with running_server(config(root, allow_upload=True)) as (server, log):
        host, port = server.addresses[0]
        put = PUTTERS[client]
        assert put is not None
        result = put(host, port, source, "exists.bin")
        assert peers.transfer_failed(result), failed_text(result)
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert isinstance(refused, RequestRefused)
    assert (refused.code, refused.why) == (6, "exists")
    assert (root / "exists.bin").read_bytes() == ORIGINAL
    no_partial_files(root)
    if client == "curl":
        assert result.returncode == 73  # CURLE_REMOTE_FILE_EXISTS: curl understood ERROR 6
    if client == "tftp-hpa":
        assert "Error code 6" in result.stdout


def test_overwrite_allowed(root: Path, tmp_path: Path) -> None:
    (root / "exists.bin").write_bytes(ORIGINAL)
    source = tmp_path / "source.bin"
    source.write_bytes(UPLOADS["upload"])
    with running_server(config(root, allow_upload=True, allow_overwrite=True)) as (
        server,
        log,
    ):
        host, port = server.addresses[0]
        result = peers.tftp_hpa_put(host, port, source, "exists.bin", timeout=T)
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
        assert isinstance(end, Completed)
        peers.wait_for_content(root / "exists.bin", UPLOADS["upload"])
    no_partial_files(root)


@pytest.fixture
def big(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "big.bin"
    path.write_bytes(random_bytes(16 << 20, 17))  # 32k blocks of 512: far from done when killed
    yield path
    path.unlink()  # pytest keeps the last runs' tmp dirs


@pytest.mark.parametrize("target", ["existing", "new"])
def test_aborted_upload_leaves_no_trace(root: Path, big: Path, target: str) -> None:
    """busybox killed in the middle of a put: no partial target, the old file intact, no temp file,
    and the server goes on serving."""
    remote = "victim.bin" if target == "existing" else "fresh.bin"
    (root / "victim.bin").write_bytes(ORIGINAL)
    with running_server(config(root, allow_upload=True, allow_overwrite=True)) as (
        server,
        log,
    ):
        host, port = server.addresses[0]
        with peers.spawn_peer(peers.busybox_argv(True, host, port, remote, big)) as proc:
            started = log.wait(lambda e: isinstance(e, TransferStarted), what="the upload to start")
            log.wait(lambda e: isinstance(e, PacketReceived) and isinstance(e.packet, Data) and e.packet.block >= 50,
                     what="50 blocks of the upload")  # fmt: skip
            peers.kill_peer(proc)
        end = log.wait_end(started.session, timeout=6)
        assert isinstance(end, Failed), end
        assert end.stats.bytes < big.stat().st_size
        assert (root / "victim.bin").read_bytes() == ORIGINAL
        assert not (root / "fresh.bin").exists()
        no_partial_files(root)
        outcome = our_get(host, port, "small.bin")
        assert outcome.ok, f"the server no longer serves after an aborted upload: {outcome.result!r}"


def test_concurrent_uploads_of_one_new_name(root: Path, tmp_path: Path) -> None:
    """Two clients put the same new name at once, overwriting off. Only one file can land; the
    other client is told so with ERROR 6 instead of a final ACK, and the server reports it Failed.

    Our own client uploads here: busybox does not wait for the final ACK, so its exit status would
    say nothing about what the server answered."""
    sources = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for seed, source in enumerate(sources, 21):
        source.write_bytes(random_bytes(2 << 20, seed))
    with running_server(config(root, allow_upload=True)) as (server, log):
        host, port = server.addresses[0]
        transfers = [ClientTransfer(ClientRequest(host, "same.bin", port=port, upload=True, source=source)).start()
                     for source in sources]
        outcomes = [t.wait(30) for t in transfers]
        peers.wait_until(lambda: len(log.of(Completed)) + len(log.of(Failed)) >= 2, 5, "both sessions to end")
        completed, failed = log.of(Completed), log.of(Failed)
        started = log.of(TransferStarted)
        found = analyze(log.pull())
    assert len(started) == 2, "both requests were accepted: the name did not exist yet"
    assert all(o is not None for o in outcomes)
    winners = [source for source, o in zip(sources, outcomes, strict=True) if o is not None and o.ok]
    losers = [o for o in outcomes if o is not None and not o.ok]
    assert len(winners) == 1 and len(losers) == 1
    assert getattr(losers[0].result, "code", None) == 6
    assert (root / "same.bin").read_bytes() == winners[0].read_bytes()
    assert len(completed) == 1 and len(failed) == 1 and failed[0].code == 6
    no_partial_files(root)
    # What the server's finding advises is about the race, not about its disk.
    (lost,) = [f for f in found if f.id == "local-error"]
    assert "same name" in lost.suggestion and "disk" not in lost.suggestion, lost.suggestion


# Names that must be refused with ERROR 2, and the reason the RequestRefused event gives.
ESCAPES: dict[str, tuple[str, str]] = {
    "dotdot": ("../outside/secret.txt", "path-escape"),
    "etc-passwd": ("../etc/passwd", "path-escape"),
    "slash-dotdot": ("/../../etc/passwd", "path-escape"),
    "backslash-dotdot": ("..\\..\\etc\\passwd", "path-escape"),
    "subdir-dotdot": ("sub/../../outside/secret.txt", "path-escape"),
    "dotdot-back-inside": ("sub/../small.bin", "bad-name"),  # refused as tftpd-hpa does; it leads nowhere out
    "symlink-out": ("link-out", "path-escape"),
    "dirlink-out": ("dirlink/secret.txt", "path-escape"),
    "directory": ("sub", "not-a-file"),
    "root-itself": ("/", "bad-name"),
    "fifo": ("fifo", "not-a-file"),
    "newline": ("small\n.bin", "bad-name"),
    "del": ("small\x7f.bin", "bad-name"),
    "escape-sequence": ("\x1b[31msmall.bin", "bad-name"),
}
PRINTABLE_ESCAPES = [case for case, (name, _) in ESCAPES.items() if name.isprintable()]


@pytest.mark.parametrize("case", ESCAPES)
def test_read_escape_refused(root: Path, case: str) -> None:
    """Every escape in an RRQ: ERROR 2 from the listening port, a RequestRefused, nothing shown."""
    name, why = ESCAPES[case]
    with running_server(config(root)) as (server, log):
        addr = server.addresses[0]
        reply = ask(addr, request(1, name))
        assert reply is not None, "no answer"
        data, sender = reply
        assert error_code(data) == 2, data
        assert sender == addr, "a refusal comes from the port the request went to"
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
        assert not log.of(TransferStarted)
    assert isinstance(refused, RequestRefused)
    assert (refused.code, refused.why, refused.filename, refused.is_read) == (
        2,
        why,
        name,
        True,
    )
    assert SECRET not in data


@pytest.mark.parametrize("case", ESCAPES)
def test_write_escape_refused(root: Path, case: str) -> None:
    """The same names in a WRQ, with uploads and overwrites allowed: nothing written anywhere."""
    name, why = ESCAPES[case]
    before = {p: p.read_bytes() for p in root.parent.rglob("*") if p.is_file() and not p.is_symlink()}
    with running_server(config(root, allow_upload=True, allow_overwrite=True)) as (
        server,
        log,
    ):
        addr = server.addresses[0]
        reply = ask(addr, request(2, name))
        assert reply is not None, "no answer"
        assert error_code(reply[0]) == 2, reply
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert isinstance(refused, RequestRefused)
    assert (refused.code, refused.why, refused.is_read) == (2, why, False)
    after = {p: p.read_bytes() for p in root.parent.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before
    assert (root.parent / "outside" / "secret.txt").read_bytes() == SECRET


@pytest.mark.parametrize("case", PRINTABLE_ESCAPES)
def test_escape_refused_tftp_hpa(root: Path, tmp_path: Path, case: str) -> None:
    """The same through a real client (tftp-hpa sends the name as given with -l)."""
    name, why = ESCAPES[case]
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = peers.tftp_hpa_get(host, port, name, tmp_path / "got", timeout=T)
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert "Error code 2" in result.stdout, failed_text(result)
    assert isinstance(refused, RequestRefused) and refused.why == why
    got = tmp_path / "got"
    assert not got.exists() or got.read_bytes() == b"", "tftp-hpa leaves an empty file on failure, nothing more"


def test_escape_refused_curl(root: Path, tmp_path: Path) -> None:
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = peers.curl_get(host, port, "../outside/secret.txt", tmp_path / "got", timeout=T,
                                extra=["--path-as-is"])  # fmt: skip
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
    assert result.returncode == 69, failed_text(result)  # CURLE_TFTP_PERM: access violation
    assert isinstance(refused, RequestRefused) and refused.why == "path-escape"


INSIDE: dict[str, tuple[str, str]] = {
    "leading-slash": ("/small.bin", "small.bin"),
    "double-slash": ("//small.bin", "small.bin"),
    "leading-backslash": ("\\small.bin", "small.bin"),
    "slash-subdir": ("/sub/inner.bin", "sub/inner.bin"),
    "backslash-subdir": ("sub\\inner.bin", "sub/inner.bin"),
    "dot-segments": ("./sub/./inner.bin", "sub/inner.bin"),
    "symlink-inside": ("link-in", "small.bin"),
}


@pytest.mark.parametrize("case", INSIDE)
def test_names_that_stay_inside(root: Path, tmp_path: Path, case: str) -> None:
    """A leading '/' is taken relative to the root (as PXE clients expect); '\\' is a separator."""
    name, real = INSIDE[case]
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = peers.tftp_hpa_get(host, port, name, tmp_path / "got", timeout=T)
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
    assert isinstance(end, Completed)
    assert (tmp_path / "got").read_bytes() == FILES[real]


def test_non_utf8_name_served(root: Path, tmp_path: Path) -> None:
    """A name that is not UTF-8 (firmware sends Latin-1) reaches the file of exactly those bytes."""
    raw_name = b"\xff\xfeboot-\xe9.bin"
    (root / os.fsdecode(raw_name)).write_bytes(FILES["sub/inner.bin"])
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = peers.tftp_hpa_get(host, port, os.fsdecode(raw_name), tmp_path / "got", timeout=T)
        assert not peers.transfer_failed(result), failed_text(result)
        end, _ = server_session(log)
    assert isinstance(end, Completed)
    assert (tmp_path / "got").read_bytes() == FILES["sub/inner.bin"]


# ----------------------------------------------------------------------- robustness


def _many_options(count: int) -> bytes:
    return b"".join(b"opt%d\x00%d\x00" % (i, i) for i in range(count))


CRASHERS: dict[str, tuple[bytes, int | None, str]] = {
    # datagram, the ERROR code expected back (None: silence), the RequestRefused reason
    "one-byte": (b"\x01", 4, "malformed"),
    "request-600-bytes": (request(1, "a" * 591), 4, "malformed"),
    "request-200-options": (
        request(1, "small.bin", options=_many_options(200)),
        4,
        "malformed",
    ),
    "non-utf8-name": (request(1, b"\xff\xfe\x80.bin"), 1, "not-found"),
    "error-to-port-69": (
        struct.pack("!HH", 5, 0) + b"go away\0",
        None,
        "not-a-request",
    ),
    # Not answered either: an ERROR 5 would reach a client that may be waiting on its next request.
    "ack-to-port-69": (struct.pack("!HH", 4, 1), None, "not-a-request"),
}
assert len(CRASHERS["request-600-bytes"][0]) == 600


@pytest.mark.parametrize("case", CRASHERS)
def test_server_survives_crasher(root: Path, tmp_path: Path, case: str) -> None:
    """The field guide's crashers: each answered per RFC (ERROR, or silence for an ERROR: RFC 1350
    never answers an ERROR), logged as a refusal, and the server serves normally afterwards."""
    raw, code, why = CRASHERS[case]
    with running_server(config(root)) as (server, log):
        addr = server.addresses[0]
        reply = ask(addr, raw, timeout=0.5)
        if code is None:
            assert reply is None, f"an ERROR was answered: {reply!r}"
        else:
            assert reply is not None, "no answer"
            assert error_code(reply[0]) == code, reply
        refused = log.wait(lambda e: isinstance(e, RequestRefused), what="RequestRefused")
        assert isinstance(refused, RequestRefused) and refused.why == why
        assert not log.of(TransferStarted)
        host, port = addr
        result = peers.tftp_hpa_get(host, port, "small.bin", tmp_path / "got", timeout=T)
        assert not peers.transfer_failed(result), failed_text(result)
        assert server._thread is not None and server._thread.is_alive()
    assert (tmp_path / "got").read_bytes() == FILES["small.bin"]


def test_server_survives_all_crashers_in_a_row(root: Path, tmp_path: Path) -> None:
    with running_server(config(root)) as (server, _log):
        addr = server.addresses[0]
        for raw, code, _ in CRASHERS.values():
            reply = ask(addr, raw, timeout=0.3 if code is None else 1.0)
            assert (None if reply is None else error_code(reply[0])) == code
        outcome = our_get(addr[0], addr[1], "small.bin", tmp_path / "got")
        assert outcome.ok, outcome.result
    assert (tmp_path / "got").read_bytes() == FILES["small.bin"]


def test_client_vanishing_midway_does_not_stall_the_server(root: Path, tmp_path: Path) -> None:
    """A client that disappears in the middle of a download (killed, crashed, unplugged): our next
    retransmit draws ICMP port unreachable. The server must end that session and go on serving."""
    with running_server(config(root)) as (server, log):
        addr = server.addresses[0]
        reply = ask(addr, request(1, "small.bin"))  # takes DATA 1, then its socket is closed
        assert reply is not None and reply[0][:4] == b"\x00\x03\x00\x01"
        end = log.wait_end(timeout=5)
        assert isinstance(end, Failed) and end.reason is Reason.UNREACHABLE, end
        # A loop still reading the socket it closed would never answer this download.
        host, port = addr
        assert our_get(host, port, "small.bin").ok, "the server stopped serving after the client vanished"
        spurious = [e for e in log.of(SocketError) if e.session == 0]
        assert len(spurious) < 5, (
            f"{len(spurious)} SocketError events for no session after the session's end, "
            f"e.g. {spurious[0]!r}: the server loop keeps calling recvfrom on the socket it just closed"
        )
        outcome = our_get(addr[0], addr[1], "small.bin", tmp_path / "got", deadline=3.0)
        assert outcome.ok, outcome.result
    assert (tmp_path / "got").read_bytes() == FILES["small.bin"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/task"))


@pytest.mark.timeout(90)
def test_no_descriptor_or_thread_leak(root: Path) -> None:
    """300 sessions one after the other, two in three served, one in three not found: afterwards
    the process holds no more file descriptors or threads than before."""
    timing = Timing(initial_timeout=0.5, retries=3, dally=0.0)

    def session(server: TftpServer, i: int) -> ClientOutcome:
        host, port = server.addresses[0]
        name = f"missing-{i}.bin" if i % 3 == 0 else "exact512.bin"
        return ClientTransfer(ClientRequest(host, name, port=port, timing=timing, deadline=5.0)).run()

    with running_server(config(root)) as (server, log):
        for i in range(30):  # warm up: lazily created objects, caches
            session(server, i)
        peers.wait_until(lambda: server.active_sessions == 0, 5, "the warm-up sessions to end")
        log.pull()
        log.events.clear()
        fds, threads = _open_fds(), _threads()
        outcomes = [session(server, i) for i in range(300)]
        peers.wait_until(lambda: server.active_sessions == 0, 5, "all sessions to end")
        assert sum(o.ok for o in outcomes) == 200
        assert all(isinstance(o.result, Failed) and o.result.code == 1 for o in outcomes[::3])
        ended = log.of(Failed)
        assert len(log.of(Completed)) == 200, ended  # the server's sessions (our clients have their own buses)
        assert len([e for e in log.of(RequestRefused) if e.why == "not-found"]) == 100
        log.events.clear()
        assert _open_fds() <= fds, f"file descriptors: {fds} before, {_open_fds()} after 300 sessions"
        assert _threads() == threads


def test_tftp_hpa_session_goes_on_after_a_refusal(root: Path, tmp_path: Path) -> None:
    """tftp-hpa's interactive client ACKs the ERROR that refused its request; answering that ACK made
    its next get read a stale ERROR 5 and fail. One session: a refused get, then a good one."""
    with running_server(config(root)) as (server, log):
        host, port = server.addresses[0]
        result = peers.tftp_hpa_script(host, port, ["binary", "get ../outside/secret.txt /dev/null",
                                                    f"get small.bin {tmp_path / 'got'}"], timeout=T)
        log.wait(lambda e: isinstance(e, Completed), what="the second get to complete")
    assert (tmp_path / "got").read_bytes() == FILES["small.bin"], failed_text(result)


# ----------------------------------------------------------------------- served under loss

LOSSY = "loss=20%,dup=5%,reorder=5%"  # both directions, as `serve --impair` takes it


@dataclass(frozen=True)
class LossCase:
    get: Callable[[str, int, str, Path], PeerResult]
    size: int  # small enough that each client's own waits keep the run to seconds
    seed: int  # fixed, so a run repeats (each drawn fate follows the datagrams in the order they pass)
    refuse: frozenset[str] = frozenset()
    # A run of losses as 20% each way brings every few hundred blocks, made certain: DATA 5 and its next
    # five copies lost, 6.3 s of backed-off retransmits on a fast link. Counting six tries, the server
    # gave up there (and the client with it); counting time, its seventh copy gets through.
    extra: str = ",drop=data:5x6"


LOSS_T = 50.0  # each client's own limit: far above what a run takes, below the test's timeout
LOSS_CASES: dict[str, LossCase] = {
    "tftp-hpa": LossCase(lambda h, p, r, o: peers.tftp_hpa_get(h, p, r, o, timeout=LOSS_T), 24 << 10, 5),
    "curl-no-options": LossCase(
        lambda h, p, r, o: peers.curl_get(h, p, r, o, no_options=True, timeout=LOSS_T), 24 << 10, 5),
    # curl with options asks for the RFC 2349 timeout, 5 s (it follows --max-time): a server keeping to
    # it waits 5 s for every loss. Refused, the server keeps its own adaptive timer.
    "curl-blksize1468": LossCase(
        lambda h, p, r, o: peers.curl_get(h, p, r, o, blksize=1468, timeout=LOSS_T), 64 << 10, 3,
        frozenset({"timeout"})),
    "busybox-b1468": LossCase(
        lambda h, p, r, o: peers.busybox_get(h, p, r, o, blksize=1468, timeout=LOSS_T), 64 << 10, 2),
    # atftp aborts on a second OACK ("unexpected OACK"), which a server rightly resends when the ACK 0
    # is lost: the seed lets the first exchange through; the rest of the transfer sees the loss.
    "atftp-windowsize8": LossCase(
        lambda h, p, r, o: peers.atftp_get(h, p, r, o, {"windowsize": 8, "blksize": 1024, "tsize": 0},
                                           extra=["--tftp-timeout", "1"], timeout=LOSS_T), 200 << 10, 8, extra=""),
}  # fmt: skip


@pytest.mark.parametrize("client", LOSS_CASES)
def test_peer_get_through_loss(tmp_path: Path, client: str) -> None:
    """`serve --impair loss=20%,dup=5%,reorder=5%` with the server's default timing: the client gets
    the file byte for byte. The server waits for a silent client as long as the client keeps trying,
    so a run of losses costs time, never the transfer."""
    from tftpdiag.engine.impair import parse_impair
    from tftpdiag.protocol.events import Impaired
    from tftpdiag.protocol.options import ServerPolicy

    case = LOSS_CASES[client]
    served = tmp_path / "root"
    served.mkdir()
    data = random_bytes(case.size, case.seed)
    (served / "image.bin").write_bytes(data)
    out = tmp_path / "got"
    cfg = ServerConfig(root=served, bind=(LOCAL,), port=0, impair=parse_impair(f"{LOSSY},seed={case.seed}{case.extra}"),
                       policy=ServerPolicy(refuse=case.refuse))
    assert cfg.timing.give_up >= 30, "the default timing, as `serve` runs"
    with running_server(cfg) as (server, log):
        host, port = server.addresses[0]
        result = case.get(host, port, "image.bin", out)
        assert result.returncode is not None, f"{client} did not finish within {LOSS_T} s"
        assert out.exists() and out.read_bytes() == data, failed_text(result)
        end = log.wait_end(timeout=10)
        fates = {(e.direction, e.action) for e in log.of(Impaired)}
    # A lost final ACK leaves the server resending the last block to a client that has closed its port.
    assert isinstance(end, Completed) or end.reason is Reason.UNREACHABLE, end
    assert {("in", "dropped"), ("out", "dropped")} <= fates, fates
    assert fates & {("in", "duplicated"), ("out", "duplicated"), ("in", "reordered"), ("out", "reordered")}


def test_tftp_hpa_acking_our_error_is_not_a_refusal_of_its_own(tmp_path: Path) -> None:
    """tftp-hpa's client ACKs the ERROR that refused its request, to the listening port: the end of
    that refusal, recorded with it, never listed as another refused request (a stray ACK still is)."""
    from tests.support.interop import EventLog, headless_server
    from tftpdiag.protocol.events import RequestRefused

    (tmp_path / "here.bin").write_bytes(os.urandom(3000))
    with headless_server(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0)) as hs:
        log = EventLog(hs.server.bus)
        result = peers.tftp_hpa_get("127.0.0.1", hs.port, "missing.bin", tmp_path / "got.bin")
        assert peers.transfer_failed(result)
        log.wait(lambda e: isinstance(e, RequestRefused) and e.why == "error-acked", what="tftp-hpa's ACK")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
            stray.sendto(b"\x00\x04\x00\x07", ("127.0.0.1", hs.port))  # an ACK nobody was refused before
            log.wait(lambda e: isinstance(e, RequestRefused) and e.why == "not-a-request", what="the stray ACK")
        assert not peers.transfer_failed(peers.tftp_hpa_get("127.0.0.1", hs.port, "here.bin", tmp_path / "ok.bin"))
        # Each line starts with the time; a finding's lines are indented after it.
        lines = [line for line in hs.lines(5) if not line.split(" ", 1)[1].startswith(" ")]
    assert len(lines) == 3, lines
    assert "'missing.bin'" in lines[0] and "refused" in lines[0]
    assert "sent ACK 7 to the listening port" in lines[1]
    assert "'here.bin'" in lines[2] and lines[2].endswith("ok")
