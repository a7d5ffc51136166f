"""What `serve` logs for datagrams on its listening port that are no request: a real `tftpdiag serve`,
raw datagrams from loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.serving import serve

pytestmark = pytest.mark.timeout(120)


def test_undecodable_bytes_are_logged_as_answered_and_a_stray_ack_as_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with serve(root, "--no-tui", tmp=tmp_path) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\x00\x04\x00\x01", ("127.0.0.1", server.port))  # an ACK nobody asked for
        sock.sendto(b"\x00\x09junk", ("127.0.0.1", server.port))
        answer, _ = sock.recvfrom(1024)  # (one socket, in order: the ACK was handled before)
        assert answer.startswith(b"\x00\x05\x00\x04")  # ERROR 4
        assert server.stop() == 0
    ack, junk = [text for text in server.stdout().splitlines() if "listening port" in text]
    assert "sent 6 undecodable bytes to the listening port, which takes only requests (answered with ERROR 4 " \
           "unknown opcode 9)" in junk, junk
    assert "sent ACK 1 to the listening port, which takes only requests (ignored)" in ack, ack


def test_the_json_of_a_turned_away_datagram_says_whether_it_was_answered(tmp_path: Path) -> None:
    import json

    root = tmp_path / "root"
    root.mkdir()
    with serve(root, "--json", tmp=tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\x00\x04\x00\x01", ("127.0.0.1", server.port))  # a stray ACK: only logged
        sock.sendto(b"\x00\x01nothere.bin\x00octet\x00", ("127.0.0.1", server.port))  # refused with ERROR 1
        answer, _ = sock.recvfrom(1024)
        assert answer.startswith(b"\x00\x05\x00\x01")
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
    errors = [o["error"] for o in lines if o["event"] == "refused"]
    assert [(e["reason"], e["answered"]) for e in errors] == [("not-a-request", False), ("not-found", True)], errors
    # The stray ACK is no step of the device's boot: its sequence holds the request alone.
    (device,) = [o for o in lines if o["event"] == "device"]
    assert [f["name"] for f in device["files"]] == ["nothere.bin"], device


def test_a_request_in_a_mode_the_server_does_not_take_is_a_request_refused_for_its_mode(tmp_path: Path) -> None:
    """A well-formed RRQ in another mode is no undecodable datagram: its name, its mode as sent (escaped,
    not lower-cased) and its options reach the line, the JSON and the device's boot sequence."""
    import json

    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(b"x" * 100)
    with serve(root, "--json", tmp=tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\x00\x01pxelinux.0\x00BiNary\x00blksize\x001468\x00", ("127.0.0.1", server.port))
        answer, _ = sock.recvfrom(1024)
        assert answer == b"\x00\x05\x00\x04transfer mode 'BiNary' is not supported\x00"
        sock.sendto(b"\x00\x01pxelinux.0\x00\x1b[2Jocte\x00", ("127.0.0.1", server.port))
        answer, _ = sock.recvfrom(1024)
        assert answer == b"\x00\x05\x00\x04transfer mode '\\x1b[2Jocte' is not supported\x00"
        assert server.stop() == 0
    lines = [json.loads(line) for line in server.stdout().splitlines() if line.startswith("{")]
    refused = [o for o in lines if o["event"] == "refused"]
    assert [(o["file"], o["mode"], o["options"]["requested"], o["error"]["reason"], o["received"])
            for o in refused] == [("pxelinux.0", "BiNary", {"blksize": "1468"}, "unsupported-mode", None),
                                  ("pxelinux.0", "\x1b[2Jocte", {}, "unsupported-mode", None)], refused
    assert refused[0]["findings"][0]["summary"] == (
        f"Client 127.0.0.1:{refused[0]['peer']['port']} asked for 'pxelinux.0' in transfer mode 'BiNary', which "
        f"the server does not take: refused")
    (device,) = [o for o in lines if o["event"] == "device"]
    assert [(f["name"], f["outcome"]) for f in device["files"]] == [("pxelinux.0", "refused")] * 2, device


def test_the_line_of_a_request_refused_for_its_mode_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with serve(root, "--no-tui", tmp=tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"\x00\x01pxelinux.0\x00binary\x00", ("127.0.0.1", server.port))
        sock.recvfrom(1024)
        assert server.stop() == 0
    (refused,) = [text for text in server.stdout().splitlines() if "not supported" in text and "RRQ" in text]
    assert "RRQ 'pxelinux.0'" in refused and "undecodable" not in refused, refused
    assert refused.endswith("refused: ERROR 4 (illegal TFTP operation): transfer mode 'binary' is not supported")
