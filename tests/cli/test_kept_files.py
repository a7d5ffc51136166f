"""Files a user relies on: what probe -o and serve --allow-upload leave on disk (modes under the umask,
nothing after a failed check, no more than announced or allowed), and the temporary files a killed
tftpdiag leaves behind, removed by the next start and only those.

The commands run as a user runs them (`python -m tftpdiag` processes, on loopback); hostile servers
are hand-written on raw sockets and bounded in what they send.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.findings_kit import LOOP, FakeServer, recv, send, udp, wait_for
from tftpdiag.cli.parser import build_parser
from tftpdiag.cli.requests import DEFAULT_MAX_SIZE, download_limit
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Opcode, Request

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30
CONTENT = os.urandom(300_000)


def run(*args: str, umask: int | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    preexec = (lambda: os.umask(umask)) if umask is not None else None  # noqa: E731 - the child's umask only
    return subprocess.run([sys.executable, "-m", "tftpdiag", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=preexec)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def problems(summary: dict) -> list[str]:
    """The ids of the findings above info."""
    return [f["id"] for f in summary["findings"] if f["severity"] != "info"]


def parts(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".part"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(CONTENT)
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0), EventBus()) as server:
        yield root, server.addresses[0][1]


@contextmanager
def serve_process(root: Path, *extra: str,
                  umask: int | None = None) -> Iterator[tuple[subprocess.Popen[str], int, str]]:
    """`tftpdiag serve ROOT` as a process: (process, port, what it wrote to stderr before serving)."""
    preexec = (lambda: os.umask(umask)) if umask is not None else None  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", LOOP, "--port", "0",
                             "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, preexec_fn=preexec)
    try:
        before = ""
        while "serving" not in (line := proc.stderr.readline()):  # type: ignore[union-attr]
            assert line, f"the server ended before serving: {before}"
            before += line
        yield proc, int(line.split(f"{LOOP}:")[1].split()[0]), before
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            stream.close()  # type: ignore[union-attr]


def upload(port: int, local: Path, remote: str) -> None:
    request = ClientRequest(LOOP, remote, port=port, upload=True, source=local,
                            options=RequestedOptions(blksize=1468, tsize=True), deadline=20)
    outcome = ClientTransfer(request).run()
    assert outcome.ok, outcome.result


# -- modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_probe_output_follows_the_umask_and_a_replaced_file_keeps_its_mode(
        served: tuple[Path, int], tmp_path: Path, umask: int) -> None:
    _, port = served
    new, old = tmp_path / "new.bin", tmp_path / "old.bin"
    old.write_bytes(b"previous")
    old.chmod(0o640 if umask == 0o022 else 0o604)  # a mode the umask would not give
    for out in (new, old):
        result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(out), umask=umask)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == CONTENT
    assert mode(new) == 0o666 & ~umask
    assert mode(old) == (0o640 if umask == 0o022 else 0o604)
    assert parts(tmp_path) == []


def test_probe_output_onto_a_symlink_writes_through_it_as_cp_does(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target, link = elsewhere / "image.bin", tmp_path / "link.bin"
    target.write_bytes(b"previous")
    target.chmod(0o640)
    link.symlink_to(target)
    result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays a link
    assert target.read_bytes() == CONTENT and mode(target) == 0o640  # its file got the content, kept its mode
    assert json.loads(result.stdout)["output"] == str(link)
    assert parts(tmp_path) == [] and parts(elsewhere) == []


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_uploads_follow_the_umask_and_a_replaced_file_keeps_its_mode(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.bin").write_bytes(b"previous")
    (root / "old.bin").chmod(0o640 if umask == 0o022 else 0o604)
    local = tmp_path / "local.bin"
    local.write_bytes(CONTENT)
    local.chmod(0o600)  # the uploaded file's mode comes from the server's side, not from here
    with serve_process(root, "--allow-overwrite", umask=umask) as (_, port, _):
        upload(port, local, "new.bin")
        upload(port, local, "old.bin")
    assert (root / "new.bin").read_bytes() == CONTENT == (root / "old.bin").read_bytes()
    assert mode(root / "new.bin") == 0o666 & ~umask
    assert mode(root / "old.bin") == (0o640 if umask == 0o022 else 0o604)
    assert parts(root) == []


@pytest.mark.parametrize("announced, blocks", [(len(CONTENT), [b"s" * 100]),  # ends short of its tsize
                                               (100, [b"o" * 512, b"o" * 88])])  # runs past it
def test_an_upload_of_another_size_than_its_tsize_fails_and_the_old_file_stays(
        tmp_path: Path, announced: int, blocks: list[bytes]) -> None:
    """A raw client announces tsize ``announced`` and sends ``blocks``: the server answers ERROR (at the
    first block past the size, or in place of the last ACK), keeps nothing and says why."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.bin").write_bytes(CONTENT)
    with serve_process(root, "--allow-overwrite") as (proc, port, _):
        sock = udp()
        try:
            send(sock, Request(Opcode.WRQ, "good.bin", "octet", (("tsize", str(announced)), ("blksize", "512"))),
                 (LOOP, port))
            got = recv(sock, 5.0)
            assert got is not None and isinstance(got[0], OAck), got
            for number, block in enumerate(blocks, 1):
                send(sock, Data(number, block), got[1])
                got = recv(sock, 5.0)
                assert got is not None, f"no answer to DATA {number}"
                if isinstance(got[0], Error):
                    break
            assert isinstance(got[0], Error) and "announced tsize of" in got[0].message, got
        finally:
            sock.close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert (root / "good.bin").read_bytes() == CONTENT
    assert parts(root) == []
    session = next(record for record in map(json.loads, out.splitlines()) if record["event"] == "session")
    assert session["ok"] is False and "announced tsize of" in session["error"]["message"], session
    assert problems(session) == ["tsize-short" if len(blocks) == 1 else "tsize-overrun"], session["findings"]

def test_tftpd_hpa_serves_what_was_uploaded_to_us(tmp_path: Path) -> None:
    """The report that started this: tftpd-hpa serves only world-readable files."""
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o755)
    local = tmp_path / "local.bin"
    local.write_bytes(CONTENT)
    with serve_process(root, "--allow-upload", umask=0o022) as (_, port, _):
        upload(port, local, "firmware.bin")
    hpa_port = peers.free_udp_port()
    with peers.tftpd_hpa(root, hpa_port):
        outcome = ClientTransfer(ClientRequest(LOOP, "firmware.bin", port=hpa_port, deadline=20)).run()
    assert outcome.ok, outcome.result
    assert outcome.sha256 == hashlib.sha256(CONTENT).hexdigest()


# -- a download that fails its check is never kept ----------------------------------------------------


def test_sha256_mismatch_leaves_no_file_and_an_old_one_untouched(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    fresh, existing = tmp_path / "fresh.bin", tmp_path / "existing.bin"
    existing.write_bytes(b"the good old copy")
    os.utime(existing, (1_000_000_000, 1_000_000_000))
    for out in (fresh, existing):
        result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(out),
                     "--expect-sha256", "0" * 64)
        assert result.returncode == 1, result.stderr
        summary = json.loads(result.stdout)
        assert summary["ok"] is False and summary["sha256_match"] is False
        assert summary["expected_sha256"] == "0" * 64 and summary["output"] is None
        assert f"nothing was written to {out}" in summary["failure"]
    assert not fresh.exists()
    assert existing.read_bytes() == b"the good old copy" and existing.stat().st_mtime == 1_000_000_000
    assert parts(tmp_path) == []
    good = hashlib.sha256(CONTENT).hexdigest()
    result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(existing),
                 "--expect-sha256", good)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sha256_match"] is True and existing.read_bytes() == CONTENT


# -- no more than announced, no more than allowed ------------------------------------------------------


class Overrun:
    """A hostile server: announces tsize ``announce`` (if asked), then sends full 512-byte blocks, at most
    ``blocks`` of them, until the client says stop."""

    def __init__(self, announce: int, blocks: int = 40) -> None:
        self.announce = announce
        self.blocks = blocks
        self.sent = 0
        self.error: Error | None = None

    def __call__(self, sock, request: Request, client) -> None:
        tid = udp()
        try:
            if any(name == "tsize" for name, _ in request.options):
                send(tid, OAck((("tsize", str(self.announce)),)), client)
                got = recv(tid, 5.0)
                assert got is not None and got[0] == Ack(0), got
            for n in range(1, self.blocks + 1):
                send(tid, Data(n, bytes([n]) * 512), client)
                self.sent = n
                got = recv(tid, 5.0)
                if got is None:
                    return
                if isinstance(got[0], Error):
                    self.error = got[0]
                    return
        finally:
            tid.close()


def test_a_server_running_past_its_tsize_is_stopped(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep me")
    hostile = Overrun(announce=1000)
    with FakeServer(hostile) as fake:
        result = run("probe", LOOP, "a.bin", "--port", str(fake.port), "--json", "-o", str(out))
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["output"] is None
    assert summary["error"]["code"] == 3 and summary["error"]["raised_by"] == "local"
    assert "announced tsize of 1000 bytes" in summary["error"]["message"]
    assert problems(summary) == ["tsize-overrun"], summary["findings"]
    finding = summary["findings"][0]
    assert finding["severity"] == "error" and "announced tsize 1,000 bytes" in finding["summary"]
    assert hostile.sent == 2 and hostile.error is not None and hostile.error.code == 3
    assert out.read_bytes() == b"keep me" and parts(tmp_path) == []


def test_a_server_ending_short_of_its_tsize_leaves_the_old_file(tmp_path: Path) -> None:
    """tsize 2000, then 612 bytes and a short block: the end of a cut file, not a good copy."""
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep me")
    answer: list[object] = []

    def short(sock, request: Request, client) -> None:
        tid = udp()
        try:
            send(tid, OAck((("tsize", "2000"),)), client)
            assert (got := recv(tid, 5.0)) is not None and got[0] == Ack(0), got
            send(tid, Data(1, bytes(512)), client)
            assert (got := recv(tid, 5.0)) is not None and got[0] == Ack(1), got
            send(tid, Data(2, bytes(100)), client)
            answer.append(got[0] if (got := recv(tid, 5.0)) is not None else None)
        finally:
            tid.close()

    with FakeServer(short) as fake:
        result = run("probe", LOOP, "a.bin", "--port", str(fake.port), "--json", "-o", str(out))
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["output"] is None
    assert problems(summary) == ["tsize-short"], summary["findings"]
    assert isinstance(answer[0], Error), answer  # the server hears an ERROR, not the last ACK
    assert out.read_bytes() == b"keep me" and parts(tmp_path) == []


def test_a_download_over_max_size_is_stopped(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    out = tmp_path / "out.bin"
    # --no-tsize: the server does not say the size, so the limit is met in the middle of the transfer.
    result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(out), "--max-size", "100K",
                 "--no-tsize")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["output"] is None
    assert summary["error"] == {"code": 3, "message": "download exceeds the limit of 102400 bytes",
                                "raised_by": "local", "sent_by": "client", "reason": "local"}
    assert problems(summary) == ["size-limit"], summary["findings"]
    found = summary["findings"][0]["summary"]
    assert "went over the size limit of 100.0 KiB (102,400 bytes) and was stopped after" in found
    assert summary["bytes"] <= 102_400 + 1468
    assert not out.exists() and parts(tmp_path) == []


def test_a_download_announced_over_max_size_is_refused_before_any_data(
        served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    out = tmp_path / "out.bin"
    result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(out), "--max-size", "100K")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["bytes"] == 0 and summary["error"]["code"] == 3
    assert problems(summary) == ["size-limit"], summary["findings"]
    found = summary["findings"][0]["summary"]
    assert "the server announced 300,000 bytes (tsize), more than the size limit of 100.0 KiB" in found
    assert not out.exists() and parts(tmp_path) == []


def test_a_hash_only_probe_past_its_max_size_is_stopped_too() -> None:
    hostile = Overrun(announce=0, blocks=40)
    with FakeServer(hostile) as fake:
        result = run("probe", LOOP, "a.bin", "--port", str(fake.port), "--json", "--no-tsize", "--max-size", "2k")
    assert result.returncode == 1
    found = problems(json.loads(result.stdout))
    assert found[0] == "size-limit" and "local-error" not in found, found  # options-ignored: no OACK came
    assert hostile.sent == 5 and hostile.error is not None and hostile.error.code == 3


def test_max_size_defaults() -> None:
    parser = build_parser()
    assert download_limit(parser.parse_args(["probe", "h", "f", "-o", "x"])) == DEFAULT_MAX_SIZE == 4 << 30
    assert download_limit(parser.parse_args(["probe", "h", "f"])) is None  # only hashed: nothing fills up
    assert download_limit(parser.parse_args(["probe", "h", "f", "-o", "x", "--max-size", "0"])) is None
    assert download_limit(parser.parse_args(["probe", "h", "f", "--max-size", "1.5M"])) == 1_572_864


# -- temporary files of a killed tftpdiag ---------------------------------------------------------------


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def hang_after_one_block(sock, request: Request, client) -> None:
    """Upload or download, it takes (or sends) one block and then goes quiet."""
    tid = udp()
    try:
        if request.opcode is Opcode.RRQ:
            send(tid, Data(1, b"x" * 512), client)
        time.sleep(4)  # the client under test is killed meanwhile
    finally:
        tid.close()


def start_upload_and_stall(port: int, name: str) -> None:
    """A raw client that sends a WRQ and one DATA block, then never another: the server keeps the
    upload's temporary file open."""
    sock = udp()
    try:
        send(sock, Request(Opcode.WRQ, name, "octet", ()), (LOOP, port))
        got = recv(sock, 5.0)
        assert got is not None and got[0] == Ack(0), got
        send(sock, Data(1, b"y" * 512), got[1])
        got = recv(sock, 5.0)
        assert got is not None and got[0] == Ack(1), got
    finally:
        sock.close()


def test_a_new_server_removes_the_temporary_uploads_a_killed_one_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    with serve_process(root, "--allow-upload") as (proc, port, _):
        start_upload_and_stall(port, "big.bin")
        start_upload_and_stall(port, "sub/deep.bin")
        wait_for(lambda: len(parts(root)) == 1 and len(parts(root / "sub")) == 1, what="the temporary uploads")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    left = [root / parts(root)[0], root / "sub" / parts(root / "sub")[0]]
    assert all(".tftpdiag-" in p.name for p in left)
    # Look-alikes that are not a killed tftpdiag's on this machine: all stay.
    name = left[0].name
    host = name.split(".tftpdiag-")[1].split("-")[0]
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    keep = [
        root / name.replace(f"-{host}-", f"-{other_host}-"),  # another machine sharing the directory
        root / f".big.bin.tftpdiag-{host}-{os.getpid()}-0badc0de.part",  # a process that still runs
        root / ".big.bin.1a2b3c4d.part",  # an older tftpdiag's, or someone else's
        root / f"big.bin.tftpdiag-{host}-{dead_pid()}-0badc0de.part",  # no leading dot
        root / f".big.bin.tftpdiag-{host}-{dead_pid()}-0badc0de.part.bak",
        root / "notes.part",
    ]
    for path in keep:
        path.write_bytes(b"not ours to remove")
    linked = root / f".x.tftpdiag-{host}-{dead_pid()}-00000000.part"
    linked.symlink_to(root / "notes.part")  # a symlink is never followed, nor removed
    folder = root / f".y.tftpdiag-{host}-{dead_pid()}-00000000.part"
    folder.mkdir()
    with serve_process(root, "--allow-upload") as (_, _, before):
        pass
    assert not any(p.exists() for p in left), before
    assert all(p.exists() for p in keep) and linked.is_symlink() and folder.is_dir()
    for path in left:
        assert f"removed '{path}', left by an earlier upload that was killed" in before


def test_a_new_download_removes_what_a_killed_one_left_for_the_same_output(
        served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    out = tmp_path / "out.bin"
    with FakeServer(hang_after_one_block) as fake:
        proc = subprocess.Popen([sys.executable, "-m", "tftpdiag", "probe", LOOP, "a.bin", "--port", str(fake.port),
                                 "--json", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: parts(tmp_path) != [],
                     what="the download's temporary file")
        finally:
            proc.kill()
            proc.wait(10)
    stale = tmp_path / parts(tmp_path)[0]
    other = tmp_path / stale.name.replace(".out.bin.", ".other.bin.")  # another output's: not this run's
    other.write_bytes(b"x")
    result = run("probe", LOOP, "image.bin", "--port", str(port), "--json", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and other.exists() and out.read_bytes() == CONTENT
    assert f"removed '{stale}', left by an earlier download that was killed" in result.stderr


def test_a_capture_of_the_overrun_shows_the_same_finding(tmp_path: Path) -> None:
    """The finding rests on what a capture holds too (the announced size, the bytes, our ERROR)."""
    capture = tmp_path / "overrun.pcap"
    with FakeServer(Overrun(announce=1000)) as fake:
        probe = run("probe", LOOP, "a.bin", "--port", str(fake.port), "--json", "--trace", str(capture))
    assert probe.returncode == 1
    result = run("trace", str(capture), "--json")
    assert result.returncode == 0, result.stderr
    [transfer] = json.loads(result.stdout)["transfers"]
    assert problems(transfer) == ["tsize-overrun"], transfer["findings"]


# -- a disk that refuses the data ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [100_000, len(CONTENT) - 1], ids=["mid-transfer", "last-block"])
@pytest.mark.parametrize("window", ["1", "16"])
def test_a_disk_that_refuses_the_data_fails_the_download(served: tuple[Path, int], tmp_path: Path, limit: int,
                                                        window: str) -> None:
    """RLIMIT_FSIZE stands in for a full disk (writes past it fail with EFBIG). Even the last block's
    refusal reaches the server as an ERROR instead of the final ACK, and nothing is kept."""
    import resource

    _, port = served
    out = tmp_path / "out.bin"

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "tftpdiag", "probe", LOOP, "image.bin", "--port", str(port),
                             "--json", "-o", str(out), "--windowsize", window], capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL, preexec_fn=small_disk)
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is False and summary["output"] is None
    assert summary["error"] == {"code": 3, "message": "disk full: File too large", "raised_by": "local",
                                "sent_by": "client", "reason": "local"}
    assert problems(summary) == ["local-error"], summary["findings"]
    assert not out.exists() and parts(tmp_path) == []


def test_an_output_directory_that_cannot_be_written_is_a_usage_error() -> None:
    # /proc/1 refuses new files even to root, for whom access() is otherwise always yes.
    result = run("probe", LOOP, "image.bin", "--port", "9", "--json", "-o", "/proc/1/out.bin", timeout=10)
    assert result.returncode == 2
    assert result.stderr.strip() == "tftpdiag probe: cannot write /proc/1/out.bin: /proc/1 is not writable"


# -- outputs that are not regular files ---------------------------------------------------------------


def test_a_download_into_a_pipe_is_written_into_it_and_the_pipe_stays(served: tuple[Path, int],
                                                                        tmp_path: Path) -> None:
    """-o naming a device or a pipe (/dev/null most often) is written straight into: put in place from a
    temporary file, as a regular file is, the download replaced /dev/null for the whole machine (as root,
    /dev is writable). A FIFO stands in for the device here, so that a failure cannot break this one."""
    import threading

    _, port = served
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def drain() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    request = ClientRequest(LOOP, "image.bin", port=port, output=fifo, options=RequestedOptions(blksize=1468),
                            deadline=20)
    outcome = ClientTransfer(request).run()
    reader.join(TIMEOUT)
    assert outcome.ok and outcome.output == fifo, outcome.result
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the pipe was replaced by a file"
    assert got == [CONTENT] and parts(tmp_path) == []


def test_an_output_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run("probe", LOOP, "image.bin", "--port", "9", "--json", "-o", str(tmp_path), timeout=10)
    assert result.returncode == 2
    assert result.stderr.strip() == f"tftpdiag probe: cannot write {tmp_path}: it is a directory (name a file in it)"
