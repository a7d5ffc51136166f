"""Bytes from a client that are not clean text, on their way to JSON, the log and the history.

A name and an ERROR message may hold bytes that are not UTF-8 and literal backslashes. What is written
must be valid UTF-8 (a lone surrogate is not: jq turns it into U+FFFD, Python refuses to encode it), and
the original must be recoverable: the one rule of :func:`tftpdiag.fmt.storable` writes each such byte as
``\\xNN`` and doubles the backslashes, in every destination alike. Real `tftpdiag serve` processes, a
client on loopback.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.json_text import assert_valid_text
from tests.support.serving import serve, wait_for
from tftpdiag.fmt import clean, json_line, json_restored, quote, storable, unstored

pytestmark = pytest.mark.timeout(120)

NAME = b"a\\x\xff\xfe\xc3(bad.bin"  # a literal backslash and x, then bytes that are not UTF-8
NAME_WRITTEN = "a\\\\x\\xff\\xfe\\xc3(bad.bin"  # the backslash doubled, each odd byte as \xNN
MESSAGE = b"gave up \\ ok\xff"
MESSAGE_WRITTEN = "gave up \\\\ ok\\xff"
# Windows Deployment Services boot names are clean text with backslashes ("\x86" is four characters): the
# same characters as the byte 0x86 written by the rule. JSON must say which of the two a name is.
WDS_CLEAN = b"boot\\x86\\wdsnbp.com"
WDS_BYTE = b"boot\x86\\wdsnbp.com"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "image.bin").write_bytes(bytes(5000))
    return served


def hostile_client(port: int, host: str = "127.0.0.1") -> None:
    """A request for NAME (refused: not there), then a transfer the client aborts with MESSAGE."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(struct.pack("!H", 1) + NAME + b"\0octet\0", (host, port))
        sock.recvfrom(1024)  # the ERROR that refuses it
        sock.sendto(struct.pack("!H", 1) + b"image.bin\0octet\0", (host, port))
        _, session = sock.recvfrom(1024)
        sock.sendto(struct.pack("!HH", 5, 0) + MESSAGE + b"\0", session)


def sessions_in(text: str) -> list[dict[str, Any]]:
    objects = [json.loads(row) for row in text.splitlines()]
    assert_valid_text(objects)
    return [o for o in objects if o.get("event") != "device"]  # judged at the stop: read or not yet


def assert_written_by_the_rule(objects: list[dict[str, Any]]) -> None:
    refused, aborted = objects
    assert refused["file"] == NAME_WRITTEN and unstored(refused["file"]).encode("utf-8", "surrogateescape") == NAME
    assert aborted["file"] == "image.bin"  # clean text is written as it is
    assert aborted["error"]["message"] == MESSAGE_WRITTEN
    assert unstored(aborted["error"]["message"]).encode("utf-8", "surrogateescape") == MESSAGE
    # Each says which of its strings were rewritten, so that a reader unescapes those and no others.
    assert refused["escaped"] == ["/file"] and aborted["escaped"] == ["/error/message"]
    assert json_restored(refused)["file"].encode("utf-8", "surrogateescape") == NAME


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as the codec keeps a name


def test_json_says_which_strings_it_rewrote_so_a_clean_name_reads_as_it_is() -> None:
    clean_line, byte_line = (json_line({"file": text(name), "mode": "octet"}) for name in (WDS_CLEAN, WDS_BYTE))
    clean_obj, byte_obj = json.loads(clean_line), json.loads(byte_line)
    assert clean_obj == {"file": "boot\\x86\\wdsnbp.com", "mode": "octet"}  # as it is: nothing listed
    assert byte_obj == {"file": "boot\\x86\\\\wdsnbp.com", "mode": "octet", "escaped": ["/file"]}
    # The documented rule: unescape exactly the strings listed, and nothing else.
    assert json_restored(clean_obj)["file"].encode("utf-8", "surrogateescape") == WDS_CLEAN
    assert json_restored(byte_obj)["file"].encode("utf-8", "surrogateescape") == WDS_BYTE


def test_json_lists_rewritten_strings_in_nested_objects_lists_and_option_names() -> None:
    odd, name = text(b"a/b~\xff.bin"), text(b"blk/~\xfesize")  # "/" and "~" spelled ~1 and ~0 in a pointer
    session = {"file": odd, "error": {"message": text(MESSAGE)},
               "options": {"requested": {name: text(b"14\xfd68"), "x": text(WDS_CLEAN)}, "granted": None},
               "findings": [{"summary": "ok"}, {"evidence": [text(WDS_CLEAN), odd]}]}
    obj = json.loads(json_line({"sessions": [session, {"file": text(WDS_CLEAN)}], "n": 1}))
    assert_valid_text(obj)
    assert sorted(obj["escaped"]) == sorted(["/sessions/0/file", "/sessions/0/error/message",
                                             "/sessions/0/options/requested/blk~1~0\\xfesize",
                                             "/sessions/0/findings/1/evidence/1"])
    assert obj["escaped_names"] == ["/sessions/0/options/requested/blk~1~0\\xfesize"]
    assert obj["sessions"][0]["options"]["requested"]["x"] == "boot\\x86\\wdsnbp.com"  # not listed: as it is
    assert json_restored(obj) == {"sessions": [session, {"file": text(WDS_CLEAN)}], "n": 1}
    # A member's name rewritten inside another whose name was too, beside several in one object: every
    # pointer is found before any name is put back (a deeper one spells the names above it as written).
    nested = {odd: {name: odd, "x": 1, text(b"k\xfc"): 2}, "n": [{name: 3}]}
    assert json_restored(json.loads(json_line(nested))) == nested
    # Written without ensure_ascii too (the text holds the characters themselves): the same rule.
    unicode = json_line({"file": odd, "x": "é🙂"}, ensure_ascii=False)
    assert "é🙂" in unicode and json_restored(json.loads(unicode.encode("utf-8"))) == {"file": odd, "x": "é🙂"}
    # An array of objects (history --json): each object lists its own.
    listed = json.loads(json_line([{"file": odd}, {"file": text(WDS_CLEAN)}]))
    assert listed[0]["escaped"] == ["/file"] and "escaped" not in listed[1]
    assert json_restored(listed) == [{"file": odd}, {"file": text(WDS_CLEAN)}]


def test_the_rule_gives_the_original_back() -> None:
    for text in ["plain", "a\\b", "a\\xffb", "a\udcffb\\\udcfe", "\0\\x00", "\ud800 \udc7f", "é漢字🙂\\u1234"]:
        written = storable(text)
        written.encode("utf-8")
        assert "\0" not in written and unstored(written) == text
    assert storable("plain") == "plain" and storable("a\\b") == "a\\\\b" and storable("x\udcff") == "x\\xff"


def test_serve_json_and_log_write_bytes_that_are_not_utf8_by_the_one_rule(root: Path, tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"
    with serve(root, "--json", "--log", str(log), tmp=tmp_path) as server:
        hostile_client(server.port)
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2, 20, "two sessions logged")
        wait_for(lambda: len(sessions_in(server.stdout())) == 2, 20, "two sessions printed")
        assert server.stop() == 0
        printed = server.stdout_path.read_bytes().decode("utf-8")
    assert_written_by_the_rule(sessions_in(log.read_bytes().decode("utf-8")))
    assert_written_by_the_rule(sessions_in(printed))


def test_serve_json_tells_a_clean_wds_name_from_one_with_the_byte_0x86(root: Path, tmp_path: Path) -> None:
    with serve(root, "--json", tmp=tmp_path) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10)
            for name in (WDS_CLEAN, WDS_BYTE):
                sock.sendto(struct.pack("!H", 1) + name + b"\0octet\0", ("127.0.0.1", server.port))
                sock.recvfrom(1024)  # the ERROR that refuses it: not there
        wait_for(lambda: len(sessions_in(server.stdout())) == 2, 20, "two refusals printed")
        assert server.stop() == 0
        printed = server.stdout_path.read_bytes().decode("utf-8")
    clean_obj, byte_obj = sessions_in(printed)
    assert clean_obj["file"] == "boot\\x86\\wdsnbp.com" and "escaped" not in clean_obj  # as it is
    assert byte_obj["escaped"] == ["/file"]
    assert json_restored(clean_obj)["file"].encode("utf-8", "surrogateescape") == WDS_CLEAN
    assert json_restored(byte_obj)["file"].encode("utf-8", "surrogateescape") == WDS_BYTE


def test_history_stores_by_the_rule_and_shows_what_the_live_line_showed(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    with serve(root, "--no-tui", "--history", str(db), tmp=tmp_path) as server:
        hostile_client(server.port)
        wait_for(lambda: db.exists() and len(history(str(db)).stdout.splitlines()) == 2, 20, "two sessions recorded")
        assert server.stop() == 0
        live = server.stdout_path.read_bytes().decode("utf-8")
    name, message = quote(NAME.decode("utf-8", "surrogateescape")), clean(MESSAGE.decode("utf-8", "surrogateescape"))
    assert name == "'a\\\\x\\xff\\xfe\\xc3(bad.bin'" and message == "gave up \\ ok\\xff"
    shown = history(str(db)).stdout
    for text in (live, shown):
        assert name in text and message in text, text
    # The database holds valid UTF-8, by the same rule as the JSON; and --json says what serve --json says.
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT file, error FROM sessions ORDER BY id").fetchall() == [
            (NAME_WRITTEN, "file not found"), ("image.bin", MESSAGE_WRITTEN)]
    finally:
        conn.close()
    recorded = json.loads(history(str(db), "--json").stdout)
    assert_valid_text(recorded)
    assert_written_by_the_rule(recorded)
    # --file NAME finds it as the client sent it, backslash, odd bytes and all; so does a pattern.
    for pattern in (NAME.decode("utf-8", "surrogateescape"), "a\\x*"):
        (found,) = json.loads(history(str(db), "--file", pattern, "--json").stdout)
        assert found["file"] == NAME_WRITTEN


def history(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tftpdiag", "history", *args], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
