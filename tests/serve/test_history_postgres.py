"""serve --history postgresql://...: the same history in a real PostgreSQL server that this test starts
itself (Debian's postgresql package: initdb and pg_ctl, as an unprivileged user, in a temporary
directory, on a free loopback port), shared by two servers."""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serving import serve, wait_for
from tftpdiag.history.schema import LATEST, MIGRATIONS

pytestmark = pytest.mark.timeout(180)

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the test extra: pip install -e '.[test]'")


def _unavailable(reason: str) -> None:
    """Skip where PostgreSQL cannot be installed; in CI (which installs it) that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it with .ci/install-peers.sh)")
    pytest.skip(reason)


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        _unavailable("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
    return Path(initdb).parent  # type: ignore[arg-type]


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """initdb'd once; started and stopped with pg_ctl (a test may stop it to play a database outage)."""

    def __init__(self, bin_dir: Path, work: Path, prefix: list[str]) -> None:
        self.bin_dir, self.work, self.prefix = bin_dir, work, prefix
        self.data, self.port = work / "data", _free_tcp_port()
        self.url = f"postgresql://tftpdiag@127.0.0.1:{self.port}/postgres"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.work)}
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=60, env=env,
                              cwd=self.work)

    def init(self) -> None:
        done = self.run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "tftpdiag", "-E",
                        "UTF8", "--no-sync")
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.work} -c fsync=off "
                   "-c full_page_writes=off")
        done = self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.work / "log"), "-w", "-t",
                        "60", "-o", options, "start")
        assert done.returncode == 0, done.stderr + (self.work / "log").read_text(errors="replace")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of its own. PostgreSQL will not run as root: as root the server runs as the
    'postgres' user (or 'nobody')."""
    bin_dir = _bin_dir()
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                owner = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if owner is None:
            _unavailable("no unprivileged user to run PostgreSQL as")
        prefix = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups", "--"]
    work = Path(tempfile.mkdtemp(prefix="tftpdiag-pg-"))
    if owner is not None:
        os.chown(work, owner.pw_uid, owner.pw_gid)
    server = PgServer(bin_dir, work, prefix)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def postgres(pg: PgServer) -> str:
    return pg.url


def _database(url: str, name: str) -> str:
    """A fresh database on the same server; its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def history(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", "history", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "phone.bin").write_bytes(os.urandom(50_000))
    return served


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]


def test_two_servers_share_one_history_in_postgresql(postgres: str, root: Path, tmp_path: Path) -> None:
    url = _database(postgres, "shared")
    with serve(root, "--no-tui", "--history", url, tmp=tmp_path) as one, \
            serve(root, "--no-tui", "--history", url, tmp=tmp_path) as two:
        assert "recording sessions in postgresql://" in one.stderr
        assert one.get("phone.bin", blksize=1024).ok
        assert two.get("phone.bin").ok
        assert not two.get("missing.bin").ok
        wait_for(lambda: _count(url) == 3, 15, "three rows")
        assert one.stop() == 0 and two.stop() == 0
    shown = history(url, "--json")
    assert shown.returncode == 0, shown.stderr
    sessions = json.loads(shown.stdout)
    assert [(s["file"], s["result"]) for s in sessions] == \
        [("phone.bin", "ok"), ("phone.bin", "ok"), ("missing.bin", "refused")]
    assert sessions[0]["bytes"] == 50_000 and sessions[0]["options"]["granted"]["blksize"] == "1024"
    assert {s["local"]["port"] for s in sessions[:2]} and sessions[2]["error"]["reason"] == "not-found"
    failed = json.loads(history(url, "--failed", "--json").stdout)
    assert [s["file"] for s in failed] == ["missing.bin"]
    devices = json.loads(history(url, "--devices", "--json").stdout)
    assert [(d["client"], d["sessions"], d["failures"]) for d in devices] == [("127.0.0.1", 3, 1)]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST,)]


def test_a_version_1_history_in_postgresql_is_migrated(postgres: str) -> None:
    url = _database(postgres, "old")
    types = {"id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "int": "BIGINT"}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[1]:
            conn.execute(statement.format(**types))
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO sessions (started, ended, kind, result, client_address, client_port, file, "
                     "direction, bytes, duration_s, error, reason, findings) VALUES (1764600000, 1764600060, "
                     "'session', 'failed', '10.0.4.17', 3001, 'pxe\\x86\\phone.bin', 'download', 0, 60, "
                     "'timed out', 'timeout', '[]')")
    shown = history(url, "--json")
    assert shown.returncode == 0, shown.stderr
    (old,) = json.loads(shown.stdout)
    assert (old["client"]["address"], old["error"]["reason"], old["server_name"]) == ("10.0.4.17", "timeout", None)
    assert old["file"] == "pxe\\x86\\phone.bin"  # its backslashes read as they were written
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST,)]
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = 'sessions'")}
    assert {"server", "retransmits"} <= columns


def test_a_postgresql_that_cannot_be_reached_is_one_line_without_the_password(root: Path, tmp_path: Path) -> None:
    url = f"postgresql://tftp:s3cret@127.0.0.1:{_free_tcp_port()}/none"
    result = subprocess.run([sys.executable, "-m", "tftpdiag", "serve", str(root), "--bind", "127.0.0.1",
                             "--port", "0", "--no-tui", "--history", url], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "cannot connect to postgresql://tftp:***@127.0.0.1" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_postgresql_restart_costs_no_session(pg: PgServer, root: Path, tmp_path: Path) -> None:
    """The database goes away while the server runs: transfers go on, the error is said once, and the
    sessions served meanwhile are written once it is back (on a new connection)."""
    url = _database(pg.url, "outage")
    with serve(root, "--no-tui", "--history", url, tmp=tmp_path) as server:
        assert server.get("phone.bin").ok
        wait_for(lambda: _count(url) == 1, 15, "the first row")
        pg.stop()
        try:
            for _ in range(3):
                assert server.get("phone.bin").ok
            wait_for(lambda: "cannot write to" in server.stderr, 20, "the error, said")
        finally:
            pg.start()
        wait_for(lambda: re.search(r"history: writing to \S+ again", server.stderr), 30, "writing again")
        assert server.stderr.count("cannot write to") == 1
        assert server.stop() == 0
    assert _count(url) == 4
