"""A client transfer stopped by what nothing expected (a bug of ours, a local error no check foresaw)
ends with an outcome that says so, tells the server, and leaves no file behind. Before, its thread ended
with a traceback and no outcome, and every caller waiting for one (the headless loop, the view) waited
for ever: the headless loop at 100% CPU."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.findings_kit import wait_for
from tftpdiag.engine import files
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Event, Failed, Reason
from tftpdiag.protocol.options import RequestedOptions

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
        assert isinstance(result, Failed) and result.reason is Reason.LOCAL
        assert "ZeroDivisionError at test_client_broken.py:" in result.message
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
    ended = [e for e in expand(client_log.drain()) if isinstance(e, Failed)]
    assert [e.message for e in ended] == [result.message]  # the record hears it once, in the same words


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
    assert os.listdir(out) == []


def test_the_headless_probe_reports_it_and_exits(tmp_path) -> None:
    (tmp_path / "fw.bin").write_bytes(os.urandom(SIZE))
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        code = (
            "import sys\n"
            "from tftpdiag.engine import client_loop\n"
            "def broken(self, now): raise KeyError('x')\n"
            "client_loop.ClientLoop.run = broken\n"
            "from tftpdiag.cli.main import main\n"
            f"sys.exit(main(['probe', '127.0.0.1', 'fw.bin', '--port', '{server.addresses[0][1]}', '--no-tui']))\n"
        )
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the probe never ended") from None
    assert done.returncode not in (0, 2), done
    said = done.stdout + done.stderr
    assert "tftpdiag failed inside (KeyError at <string>:3): a bug, please report it" in said, said
    assert "Traceback" not in said
