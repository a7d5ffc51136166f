"""A transfer stopped by what nothing expected (a bug of ours, a local error no check foresaw), on either
side (engine/broken.py). A client's ends with an outcome that says so, tells the server and leaves no
file behind: before, its thread ended with a traceback and no outcome, and every caller waiting for one
(the headless loop, the view) waited for ever, the headless loop at 100% CPU. A server's session ends
alone, its client told, while the others go on: before, the server's thread ended, and with it every
session, while `serve` went on running without serving, then exited 0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.support.findings_kit import wait_for
from tftpdiag.engine import files
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.findings import analyze
from tftpdiag.protocol.events import Event, Failed, Reason, RequestRefused
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.report import explain_failure
from tftpdiag.sessions import SessionTable

SIZE = 512 * 400


def test_a_bug_mid_transfer_fails_it_tells_the_server_and_keeps_nothing(tmp_path, monkeypatch) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir(), out.mkdir()
    (root / "fw.bin").write_bytes(os.urandom(SIZE))
    stored = files.HashingSink.store
    calls = []

    def store(self, chunks) -> None:  # the second store raises, as a bug would
        calls.append(1)
        if len(calls) == 2:
            raise ZeroDivisionError("division by zero")
        stored(self, chunks)

    monkeypatch.setattr(files.HashingSink, "store", store)
    server_bus, bus = EventBus(), EventBus()
    server_log, client_log = server_bus.subscribe(), bus.subscribe()
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0), server_bus) as server:
        request = ClientRequest("127.0.0.1", "fw.bin", port=server.addresses[0][1], output=out / "fw.bin",
                                options=RequestedOptions(blksize=512), busy_poll=0.0)
        transfer = ClientTransfer(request, bus).start()
        outcome = transfer.wait(10)
        assert outcome is not None, "no outcome: the caller would wait for ever"
        assert not outcome.ok and outcome.output is None
        result = outcome.result
        assert isinstance(result, Failed) and result.reason is Reason.INTERNAL
        assert "ZeroDivisionError at test_broken.py:" in result.message
        assert "please report it" in result.message
        assert 0 < result.stats.bytes < SIZE  # it had begun
        heard: list[Event] = []
        wait_for(lambda: any(isinstance(e, Failed) for e in heard) or bool(heard.extend(expand(server_log.drain()))),
                 10, "the server's failed session")
    told = next(e for e in heard if isinstance(e, Failed))
    assert told.reason is Reason.PEER_ERROR and told.code == 0
    assert told.message == "the client stopped on an error of its own"  # nothing of this machine's files
    transfer.join(5)
    assert os.listdir(out) == []  # neither the file nor its part file
    events = list(expand(client_log.drain()))
    ended = [e for e in events if isinstance(e, Failed)]
    assert [e.message for e in ended] == [result.message]  # the record hears it once, in the same words
    finding = next(f for f in analyze(events) if f.id == "local-error")  # what the user is told to do
    assert finding.summary.startswith("tftpdiag ended the transfer: tftpdiag failed inside (ZeroDivisionError")
    assert finding.suggestion.startswith("A bug in tftpdiag, not in the network or the device: please report it")


def test_a_local_error_keeping_the_download_is_its_outcome(tmp_path, monkeypatch) -> None:
    (tmp_path / "fw.bin").write_bytes(os.urandom(SIZE))
    out = tmp_path / "out"
    out.mkdir()

    def refuse(src, dst) -> None:  # as when the directory is made read-only mid-transfer
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr("tftpdiag.engine.client.os.replace", refuse)
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        request = ClientRequest("127.0.0.1", "fw.bin", port=server.addresses[0][1], output=out / "fw.bin")
        outcome = ClientTransfer(request, EventBus()).start().wait(10)
    assert outcome is not None and not outcome.ok
    assert isinstance(outcome.result, Failed)
    assert outcome.result.message == f"a local error stopped the transfer: Permission denied ({out / 'fw.bin'})"
    assert outcome.result.reason is Reason.LOCAL  # the machine's, not a bug: its hint is the disk's
    assert os.listdir(out) == []


def main_with(imported: str, method: str, error: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """tftpdiag's main(argv) run in a new interpreter, where ``method`` of the class ``imported`` names
    broken_class raises ``error`` (line 3 of the code run: what the reason's location says). It must
    end within a minute: waiting for ever is what it used to do."""
    code = (
        f"import sys\n{imported}"
        f"def broken(self, *args): raise {error}('injected')\n"
        f"broken_class.{method} = broken\n"
        "from tftpdiag.cli.main import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"tftpdiag {argv[0]} never ended") from None


def test_the_headless_probe_reports_it_and_exits(tmp_path) -> None:
    (tmp_path / "fw.bin").write_bytes(os.urandom(SIZE))
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        done = main_with("from tftpdiag.engine.client_loop import ClientLoop as broken_class\n",
                         "run", "KeyError", ["probe", "127.0.0.1", "fw.bin", "--port", str(server.addresses[0][1]),
                                             "--no-tui"])
    assert done.returncode not in (0, 2), done
    said = done.stdout + done.stderr
    assert "tftpdiag failed inside (KeyError at <string>:3): a bug, please report it" in said, said
    assert "Traceback" not in said


def served(server: TftpServer, name: str, **options) -> object:
    request = ClientRequest("127.0.0.1", name, port=server.addresses[0][1], busy_poll=0.0, **options)
    return ClientTransfer(request, EventBus()).run()


def test_a_bug_in_one_server_session_ends_it_alone(tmp_path, monkeypatch) -> None:
    good, bad = os.urandom(SIZE), os.urandom(SIZE + 1)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "bad.bin").write_bytes(bad)
    read = files.FileSource.read

    def failing(self, size=-1) -> bytes:  # bad.bin's second read raises, as a bug would
        if os.fstat(self.file.fileno()).st_size == SIZE + 1 and self.file.tell() > 0:
            raise KeyError("injected")
        return read(self, size)

    monkeypatch.setattr(files.FileSource, "read", failing)
    bus = EventBus()
    log = bus.subscribe()
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
        # Another session under way meanwhile: started first, it is still running when bad.bin breaks.
        slow = ClientRequest("127.0.0.1", "good.bin", port=server.addresses[0][1], busy_poll=0.0,
                             options=RequestedOptions(blksize=8), output=tmp_path / "meanwhile.bin")
        meanwhile = ClientTransfer(slow, EventBus()).start()
        outcome = served(server, "bad.bin", options=RequestedOptions(blksize=512))
        assert not outcome.ok and isinstance(outcome.result, Failed)
        assert outcome.result.reason is Reason.PEER_ERROR and outcome.result.code == 0
        assert outcome.result.message == "the server stopped on an error of its own"
        assert meanwhile.wait(0) is None, "the other session ended before the bug: no test of it"
        after = served(server, "good.bin", output=tmp_path / "after.bin")
        assert after.ok, (after.result, server.crashed)  # the server serves on
        done = meanwhile.wait(60)
        assert done is not None and done.ok, done
        assert server.crashed is None
    assert (tmp_path / "meanwhile.bin").read_bytes() == good and (tmp_path / "after.bin").read_bytes() == good
    events = list(expand(log.drain()))
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1 and failed[0].reason is Reason.INTERNAL
    assert failed[0].message.startswith("tftpdiag failed inside (KeyError at test_broken.py:")
    table = SessionTable()
    table.apply(events)
    record = table.sessions[failed[0].session]
    # In the view's and the log's words: the whole reason, and what the client was told (not those words).
    assert explain_failure(record) == failed[0].message + " (the client was sent ERROR 0)"


def test_a_bug_handling_a_request_refuses_it_alone(tmp_path, monkeypatch) -> None:
    (tmp_path / "good.bin").write_bytes(b"x" * 1000)
    (tmp_path / "bad.bin").write_bytes(b"y" * 1000)
    from tftpdiag.engine.server_requests import ServerRequests

    start = ServerRequests._start_read

    def failing(self, listener, listen, session_id, raw, packet, client, dest) -> None:
        if packet.filename == "bad.bin":
            raise AttributeError("injected")
        start(self, listener, listen, session_id, raw, packet, client, dest)

    monkeypatch.setattr(ServerRequests, "_start_read", failing)
    bus = EventBus()
    log = bus.subscribe()
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), bus) as server:
        outcome = served(server, "bad.bin")
        assert not outcome.ok and isinstance(outcome.result, Failed)
        assert outcome.result.message == "the server stopped on an error of its own"
        assert served(server, "good.bin").ok
    refused = [e for e in log.drain() if isinstance(e, RequestRefused)]
    assert [(r.why, r.filename, r.code) for r in refused] == [("internal-error", "bad.bin", 0)]
    assert refused[0].message.startswith("tftpdiag failed inside (AttributeError at test_broken.py:")


def test_serve_stopped_by_its_own_error_says_so_and_exits_1(tmp_path) -> None:
    done = main_with("from tftpdiag.engine.server import TftpServer as broken_class\n", "_check_timers",
                     "RuntimeError", ["serve", str(tmp_path), "--bind", "127.0.0.1", "--port", "0", "--no-tui"])
    assert done.returncode == 1, done
    assert ("tftpdiag serve: the server stopped on its own: tftpdiag failed inside (RuntimeError at <string>:3):"
            " a bug, please report it") in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "server stopped\n" not in done.stderr


def test_a_bug_on_a_session_s_timeout_ends_it_alone(tmp_path, monkeypatch) -> None:
    from tftpdiag.protocol.packets import Error, Request, decode, encode
    from tftpdiag.protocol.server import ServerRead
    from tftpdiag.protocol.timer import Timing

    (tmp_path / "fw.bin").write_bytes(b"z" * 2000)

    def failing(self, now) -> None:
        raise IndexError("injected")

    monkeypatch.setattr(ServerRead, "handle_timeout", failing)
    config = ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0, timing=Timing(initial_timeout=0.1))
    with TftpServer(config, EventBus()) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.settimeout(10)
        mute.sendto(encode(Request(True, "fw.bin", "octet", ())), ("127.0.0.1", server.addresses[0][1]))
        mute.recvfrom(2048)  # DATA 1, never acknowledged: its timeout falls due
        answer = decode(mute.recvfrom(2048)[0])
        assert answer == Error(0, "the server stopped on an error of its own")
        assert served(server, "fw.bin").ok and server.crashed is None


def test_no_socket_for_the_transfer_is_its_outcome_and_its_record_says_what_was_asked(monkeypatch) -> None:
    from tftpdiag.protocol.events import TransferStarted

    def no_socket(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("tftpdiag.engine.client.udp_socket", no_socket)
    bus = EventBus()
    log = bus.subscribe()
    outcome = ClientTransfer(ClientRequest("127.0.0.1", "fw.bin", port=6969), bus).start().wait(10)
    assert outcome is not None and isinstance(outcome.result, Failed)
    assert outcome.result.message == "a local error stopped the transfer: Too many open files"
    started, failed = log.drain()
    assert isinstance(started, TransferStarted) and (started.filename, started.peer) == ("fw.bin", ("127.0.0.1", 6969))
    assert failed == outcome.result
