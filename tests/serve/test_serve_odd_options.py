"""A request holding an option the server cannot read (a name or a value that is not ASCII) is served:
the option is left out of the OACK as RFC 2347 has a server do with any option it does not know, and the
record says so. A request that is still malformed keeps its file name and mode in its refusal. A real
`tftpdiag serve`, raw datagrams from loopback."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.support.json_text import assert_valid_text
from tests.support.serving import serve
from tftpdiag.fmt import clean, json_restored

pytestmark = pytest.mark.timeout(120)

CONTENT = bytes(range(256)) * 12  # 3072 bytes: three blocks of 1024, then an empty one
ODD = {
    "value": b"x-odd\0\xff\0",  # an option no server knows, its value not ASCII
    "name": b"bl\xffk\x004\0",  # a name that is not ASCII: no option at all
    "known-value": b"timeout\0\xfe\0",  # a known option whose value is not ASCII: cannot be granted
}


def objects(text: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert_valid_text(found)
    return [o for o in found if o["event"] in ("session", "refused")]


def download(port: int, odd: bytes) -> tuple[bytes, bytes]:
    """RRQ t.txt with ``odd`` beside blksize 1024: the first answer, and the file as the DATA bring it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\0\1t.txt\0octet\0" + odd + b"blksize\x001024\0", ("127.0.0.1", port))
        first, session = sock.recvfrom(2048)
        if first[:2] != b"\0\6":
            return first, b""
        sock.sendto(struct.pack("!HH", 4, 0), session)
        got = b""
        while True:
            data, _ = sock.recvfrom(2048)
            assert data[:2] == b"\0\3", data
            block = struct.unpack("!H", data[2:4])[0]
            got += data[4:]
            sock.sendto(struct.pack("!HH", 4, block), session)
            if len(data) - 4 < 1024:
                return first, got


@pytest.mark.parametrize("which", list(ODD))
def test_an_option_the_server_cannot_read_is_left_out_and_the_file_served(tmp_path: Path, which: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "t.txt").write_bytes(CONTENT)
    with serve(root, "--json", tmp=tmp_path) as server:
        first, got = download(server.port, ODD[which])
        assert first == b"\0\6blksize\x001024\0", first  # the OACK: blksize granted, the odd option left out
        assert got == CONTENT
        assert server.stop() == 0
    (session,) = objects(server.stdout())
    assert session["ok"] and session["file"] == "t.txt" and session["error"] is None, session
    # The record names the option as the client sent it, escaped (and listed so), and why it was left out.
    restored = json_restored(json.loads(json.dumps(session)))
    odd_name, odd_value = (part.decode("utf-8", "surrogateescape") for part in ODD[which].split(b"\0")[:2])
    assert restored["options"]["requested"] == {odd_name: odd_value, "blksize": "1024"}, session
    assert session["options"]["granted"] == {"blksize": "1024"}
    (ignored,) = [o for o in restored["options"]["outcomes"] if o["verdict"] == "ignored"]
    assert (ignored["name"], ignored["asked"]) == (odd_name, odd_value)
    assert ("not ASCII" if which != "known-value" else "no number") in ignored["meaning"], ignored
    assert session["escaped"], session
    (finding,) = [f for f in session["findings"] if f["id"] == "options-ignored"]
    assert f"left {clean(odd_name)}={clean(odd_value)} out of our answer" in finding["summary"], finding


def test_a_request_still_malformed_keeps_its_name_and_mode_in_the_refusal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "t.txt").write_bytes(CONTENT)
    with serve(root, "--json", tmp=tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\0\1t.txt\0NetASCII\0blksize\0", ("127.0.0.1", server.port))  # an option without value
        answer, _ = sock.recvfrom(1024)
        assert answer[:4] == b"\0\5\0\10", answer  # ERROR 8, as before
        assert server.stop() == 0
    (refused,) = objects(server.stdout())
    assert (refused["event"], refused["file"], refused["mode"], refused["direction"]) == \
        ("refused", "t.txt", "netascii", "download"), refused
    assert (refused["error"]["reason"], refused["received"]) == ("malformed", None), refused
    assert refused["options"]["requested"] == {"blksize": ""}
