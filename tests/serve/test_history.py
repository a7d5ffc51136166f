"""serve --history in SQLite and the `history` command that answers from it, as a user runs them: real
`tftpdiag serve` processes, real clients on loopback (from 127.0.0.1 and 127.0.0.2, two devices)."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.serving import serve, wait_for
from tftpdiag.history import Filter, open_store
from tftpdiag.history.schema import COLUMNS, LATEST, MIGRATIONS

pytestmark = pytest.mark.timeout(120)


def history(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", "history", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, env=env)


def rows_in(db: Path) -> list[dict]:
    store = open_store(str(db), create=False)
    try:
        return store.sessions(Filter())
    finally:
        store.close()


def ask_from(host: str, port: int, raw_name: bytes) -> None:
    """One RRQ from ``host`` (another device, on loopback), answered or not."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(5)
        sock.sendto(struct.pack("!H", 1) + raw_name + b"\0octet\0", ("127.0.0.1", port))
        sock.recvfrom(1024)  # the ERROR that refuses it


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "phone.bin").write_bytes(os.urandom(100_000))
    (served / "phone.cfg").write_bytes(b"cfg" * 100)
    return served


def test_history_records_sessions_and_answers_questions(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    upload = tmp_path / "log.txt"
    upload.write_bytes(b"x" * 2000)
    start = time.time()
    with serve(root, "--no-tui", "--allow-upload", "--history", str(db), tmp=tmp_path) as server:
        assert "recording sessions in" in server.stderr
        assert server.get("phone.bin", blksize=1024).ok
        assert server.get("phone.cfg").ok
        assert server.put("log.txt", upload).ok
        ask_from("127.0.0.2", server.port, b"phone-old.bin")  # a second device, refused
        ask_from("127.0.0.2", server.port, b"bad\x1b[2J\xff.bin")  # a hostile name
        wait_for(lambda: db.exists() and len(rows_in(db)) == 5, 10, "five rows")
        assert server.stop() == 0
    rows = rows_in(db)
    assert [r["file"] for r in rows] == ["phone.bin", "phone.cfg", "log.txt", "phone-old.bin",
                                         "bad\x1b[2J\udcff.bin"]  # read back as it came, bounded
    download = rows[0]
    assert download["kind"] == "session" and download["result"] == "ok" and download["direction"] == "download"
    assert download["client_address"] == "127.0.0.1" and download["client_port"] > 0
    assert download["bytes"] == 100_000 and download["duration_s"] > 0 and download["retransmits"] == 0
    assert json.loads(download["options_asked"])["blksize"] == "1024"
    assert json.loads(download["options_granted"])["blksize"] == "1024"
    assert start <= download["started"] <= download["ended"] <= time.time()
    assert rows[2]["direction"] == "upload" and rows[2]["bytes"] == 2000
    refused = rows[3]
    assert (refused["kind"], refused["result"], refused["error_code"], refused["reason"]) == \
        ("refused", "refused", 1, "not-found")
    assert json.loads(refused["findings"]) == ["file-not-found"]

    everything = history(str(db))
    assert everything.returncode == 0, everything.stderr
    lines = everything.stdout.splitlines()
    assert len(lines) == 5 and "phone.bin" in lines[0] and lines[0].endswith("ok")
    assert "\x1b" not in everything.stdout and "'bad\\x1b[2J\\xff.bin'" in lines[4]  # escaped where it is shown

    failed = json.loads(history(str(db), "--failed", "--json").stdout)
    assert [(s["file"], s["client"]["address"], s["error"]["reason"]) for s in failed] == \
        [("phone-old.bin", "127.0.0.2", "not-found"), ("bad\x1b[2J\\xff.bin", "127.0.0.2", "bad-name")]
    assert all(s["started"].endswith("Z") for s in failed) and failed[0]["findings"] == ["file-not-found"]

    mine = json.loads(history(str(db), "--client", "127.0.0.1", "--file", "phone.*", "--json").stdout)
    assert [s["file"] for s in mine] == ["phone.bin", "phone.cfg"]
    assert mine[0]["bytes"] == 100_000 and mine[0]["options"]["granted"]["blksize"] == "1024"
    assert json.loads(history(str(db), "--file", "phone_bin", "--json").stdout) == []  # _ is no wildcard
    assert json.loads(history(str(db), "--since", "1h", "--json").stdout) != []
    assert json.loads(history(str(db), "--since", "2099-01-01", "--json").stdout) == []

    devices = json.loads(history(str(db), "--devices", "--json").stdout)
    assert [(d["client"], d["sessions"], d["failures"], d["last"]["file"]) for d in devices] == \
        [("127.0.0.1", 3, 0, "log.txt"), ("127.0.0.2", 2, 2, "bad\x1b[2J\\xff.bin")]
    plain = history(str(db), "--devices").stdout.splitlines()
    assert len(plain) == 2 and "2 sessions, 2 failed" in plain[1] and "\x1b" not in plain[1]


def test_the_default_history_is_in_the_users_state_directory(root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    absent = history(env=env)
    assert absent.returncode == 2 and "no history at" in absent.stderr and "Traceback" not in absent.stderr
    os.environ["XDG_STATE_HOME"], saved = str(tmp_path / "state"), os.environ.get("XDG_STATE_HOME")
    try:
        with serve(root, "--no-tui", "--history", tmp=tmp_path) as server:
            assert server.get("phone.cfg").ok
            default = tmp_path / "state" / "tftpdiag" / "history.sqlite"
            wait_for(lambda: default.exists() and rows_in(default), 10, "a row in the default history")
            server.stop()
    finally:
        if saved is None:
            del os.environ["XDG_STATE_HOME"]
        else:
            os.environ["XDG_STATE_HOME"] = saved
    shown = history(env=env)
    assert shown.returncode == 0 and "phone.cfg" in shown.stdout


def _v1_database(path: Path) -> None:
    """A history as the first version of the schema wrote it."""
    conn = sqlite3.connect(path)
    types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "int": "INTEGER"}
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[1]:
        conn.execute(statement.format(**types))
    conn.execute("INSERT INTO schema_version VALUES (1)")
    v1 = [c for c in COLUMNS if c not in ("server", "retransmits", "received")]
    conn.execute(f"INSERT INTO sessions ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
                 (1764600000.0, 1764600002.5, "session", "failed", "10.0.4.17", 3001, "10.0.0.1", 40000,
                  "pxe\\x86\\phone.bin", "download", "octet", '{"blksize": "1468"}', None, 4096, 2.5, None,
                  "timed out waiting for the client", "timeout", "[]"))
    conn.commit()
    conn.close()


def test_a_version_1_history_is_migrated_forward_and_kept(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    _v1_database(db)
    assert LATEST > 1
    with serve(root, "--no-tui", "--history", str(db), tmp=tmp_path) as server:
        assert server.get("phone.cfg").ok
        wait_for(lambda: len(rows_in(db)) == 2, 10, "the new row beside the old")
        server.stop()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST,)]
    conn.close()
    old, new = rows_in(db)
    assert (old["file"], old["client_address"], old["result"], old["server"], old["retransmits"]) == \
        ("pxe\\x86\\phone.bin", "10.0.4.17", "failed", None, None)  # its backslashes read as they were
    assert new["file"] == "phone.cfg" and new["server"] == socket.gethostname() and new["retransmits"] == 0
    failed = json.loads(history(str(db), "--failed", "--json").stdout)
    assert [(s["client"]["address"], s["error"]["reason"]) for s in failed] == [("10.0.4.17", "timeout")]


def test_garbage_at_the_listening_port_is_shown_for_what_it_was_and_a_mode_refusal_as_its_request(
        root: Path, tmp_path: Path) -> None:
    """No ``RRQ ''`` for what was no request: a stray ERROR, undecodable bytes; a request refused for its
    mode is a request, with its file."""
    db = tmp_path / "h.sqlite"
    with serve(root, "--no-tui", "--history", str(db), tmp=tmp_path) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        for junk in (b"\x00\x09junk", b"\x01", b"\x00\x01phone.cfg\x00binary\x00"):
            sock.sendto(junk, ("127.0.0.1", server.port))
            sock.recvfrom(1024)  # the ERROR 4 that refuses it
        sock.sendto(b"\x00\x05\x00\x00late\x00", ("127.0.0.1", server.port))  # only logged
        wait_for(lambda: len(rows_in(db)) == 4, 10, "the four rows")
        assert server.stop() == 0
    lines = history(str(db)).stdout.splitlines()
    asked = [" ".join(text.split()[2:5]) for text in lines]
    assert asked == ["6 undecodable bytes", "1 undecodable byte", "RRQ 'phone.cfg' 0", "stray ERROR 0"], lines
    assert "refused: ERROR 4: transfer mode 'binary' is not supported" in lines[2], lines
    sessions = json.loads(history(str(db), "--json").stdout)
    assert [(s["file"], s["mode"], s["received"]) for s in sessions] == [
        ("", None, "6 undecodable bytes"), ("", None, "1 undecodable byte"), ("phone.cfg", "binary", None),
        ("", None, "ERROR")], sessions
    (device,) = history(str(db), "--devices").stdout.splitlines()
    assert "stray ERROR refused: ERROR 5: not a request; 4 sessions, 4 failed" in device, device


def test_a_history_from_a_newer_tftpdiag_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite"
    _v1_database(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = ?", (LATEST + 1,))
    conn.commit()
    conn.close()
    result = history(str(db))
    assert result.returncode == 2 and "newer tftpdiag" in result.stderr and "Traceback" not in result.stderr


def test_a_database_that_cannot_be_written_never_stops_or_slows_the_server(root: Path, tmp_path: Path) -> None:
    """Another program holds the SQLite file locked: transfers go on at full speed, the error is said
    once, and once the lock goes every session queued meanwhile is written."""
    db = tmp_path / "locked.sqlite"
    with serve(root, "--no-tui", "--history", str(db), tmp=tmp_path) as server:
        assert server.get("phone.cfg").ok
        wait_for(lambda: len(rows_in(db)) == 1, 10, "the first row")
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            # A question asked meanwhile is answered at once: a query takes no write lock.
            began = time.monotonic()
            asked = history(str(db), "--json")
            assert asked.returncode == 0 and len(json.loads(asked.stdout)) == 1, asked.stderr
            assert time.monotonic() - began < 4
            began = time.monotonic()
            for _ in range(4):
                assert server.get("phone.bin").ok
            assert time.monotonic() - began < 4  # the writer waits on the lock, not the transfers
            wait_for(lambda: "cannot write to" in server.stderr, 20, "the error, said")
            assert server.get("phone.cfg").ok
            wait_for(lambda: server.stdout().count(" ok") == 6, 10, "six sessions served")
            assert server.stderr.count("cannot write to") == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(lambda: re.search(r"history: writing to \S+ again", server.stderr), 20, "writing again")
        assert server.proc.poll() is None
        assert server.stop() == 0
    assert [r["file"] for r in rows_in(db)] == ["phone.cfg"] + ["phone.bin"] * 4 + ["phone.cfg"]


def test_what_a_client_sends_is_stored_bounded(root: Path, tmp_path: Path) -> None:
    """A request is at most 512 bytes, but a client's ERROR may fill a datagram: its message is kept
    raw (a terminal escape and all) up to a bound, and shown escaped."""
    from tftpdiag.history.schema import TEXT_CHARS, storable

    db = tmp_path / "long.sqlite"
    message = "\x1b]0;owned\x07" + "m" * 20_000
    with serve(root, "--no-tui", "--history", str(db), tmp=tmp_path) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quitter:
            quitter.settimeout(5)
            quitter.sendto(struct.pack("!H", 1) + b"phone.bin\0octet\0", ("127.0.0.1", server.port))
            _, session_port = quitter.recvfrom(1024)
            quitter.sendto(struct.pack("!HH", 5, 0) + message.encode() + b"\0", session_port)
        wait_for(lambda: db.exists() and rows_in(db), 10, "the failure recorded")
        server.stop()
    (row,) = rows_in(db)
    assert row["result"] == "failed" and row["error"] == message[:TEXT_CHARS]
    shown = history(str(db)).stdout
    assert "\x1b" not in shown and "\x07" not in shown and "\\x1b]0;owned\\x07" in shown
    assert len(shown) < 2500  # the line is cut where it is shown, too
    assert storable("a\udcffb\0" + "z" * 5000, 100) == "a\\xffb\\x00" + "z" * 96  # what a database holds


def test_a_limit_says_how_many_newest_sessions_it_shows_in_words_for_one(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    store = open_store(str(db))
    row = dict.fromkeys(COLUMNS)
    row.update(started=1_700_000_000.0, ended=1_700_000_001.0, kind="session", result="ok", file="a.bin",
               direction="download")
    store.add([tuple(row.values()), tuple({**row, "started": 1_700_000_002.0}.values())])
    store.close()
    assert history(str(db), "--limit", "1").stderr == "tftpdiag: the newest session shown; --limit 0 shows all\n"
    assert history(str(db), "--limit", "2").stderr == "tftpdiag: the newest 2 sessions shown; --limit 0 shows all\n"


def test_a_transfer_under_ten_milliseconds_reads_in_milliseconds_not_zero() -> None:
    from tftpdiag.history.query import session_line

    row = {"started": 1_700_000_000.0, "client_address": "127.0.0.1", "client_port": 4000, "direction": "download",
           "file": "small.bin", "bytes": 512, "duration_s": 0.0012, "result": "ok", "error_code": None,
           "error": None, "reason": None, "findings": None, "received": None}
    fast = session_line(row)
    assert "1.20 ms" in fast and "0.001 s" not in fast and fast.endswith("  ok")
    assert "0.736 s" in session_line({**row, "duration_s": 0.736})  # a second's figure as before
