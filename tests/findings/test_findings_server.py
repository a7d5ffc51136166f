"""Findings of our server, each from a real client on raw sockets that behaves like the devices of the
field guide: a UEFI size probe, a client behind a NAT that never answers from the new port, firmware
that sends odd names, clients that ignore the OACK, a path traversal, a client that ACKs twice."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from tests.support.findings_kit import (
    LOOP,
    SERVER_FAST,
    Ack,
    Data,
    Error,
    OAck,
    our_server,
    recv,
    rrq,
    send,
    server_findings,
    show,
    udp,
    wrq,
)
from tftpdiag.findings import Finding

pytestmark = pytest.mark.timeout(30)

IMAGE = random.Random(7).randbytes(12 * 512 + 99)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("findings-server-root")
    (root / "bootx64.efi").write_bytes(IMAGE)
    (root / "pxelinux.0").write_bytes(IMAGE[:2000])
    return root


@pytest.fixture()
def client() -> socket.socket:
    sock = udp()
    yield sock
    sock.close()


def download(sock: socket.socket, server: tuple[str, int], first: object, ack_twice: bool = False) -> bytes:
    """Lock-step receive until the short block; ``first`` is the DATA 1 (or OACK) already received."""
    out = b""
    got = first
    while got is not None:
        packet, addr = got
        if isinstance(packet, OAck):
            send(sock, Ack(0), addr)
        elif isinstance(packet, Data):
            out += packet.payload
            send(sock, Ack(packet.block), addr)
            if ack_twice:
                send(sock, Ack(packet.block), addr)
            if len(packet.payload) < 512:
                return out
        got = recv(sock, 1.0)
    return out


def only(findings: list[Finding], finding_id: str) -> Finding:
    assert [f.id for f in findings] == [finding_id], show(findings)
    return findings[0]


def test_size_probe_then_download(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        server = (LOOP, port)
        send(client, rrq("bootx64.efi", ("tsize", "0"), ("blksize", "1468")), server)
        oack, tid = recv(client)
        assert isinstance(oack, OAck) and oack.option("tsize") == str(len(IMAGE))
        send(client, Error(8, "tsize only"), tid)  # what UEFI firmware does
        send(client, rrq("bootx64.efi"), server)  # and then the real download
        assert download(client, server, recv(client)) == IMAGE
        findings = server_findings(log, sessions=2)
    assert [f.id for f in findings] == ["size-probe"], show(findings)
    f = findings[0]
    assert f.severity == "info" and "UEFI" in f.summary and f"{len(IMAGE):,} B" in f.summary
    assert any("asked again without options (session 2)" in line for line in f.evidence), f.evidence


def test_client_stopped_acking_behind_a_nat(root: Path, client: socket.socket) -> None:
    with our_server(root, timing=SERVER_FAST) as (_, log, port):
        server = (LOOP, port)
        send(client, rrq("pxelinux.0"), server)
        first = recv(client)
        assert first is not None and isinstance(first[0], Data)
        # As behind a NAT that drops the new port: never ACK; resend the request to port 69 instead.
        send(client, rrq("pxelinux.0"), server)
        send(client, rrq("pxelinux.0"), server)
        f = only(server_findings(log), "client-stopped-acking")
    assert f.severity == "error"
    assert "never answered our DATA 1" in f.summary and "repeated its request 2 times" in f.summary
    assert "NAT" in f.summary and "single-port" in f.suggestion


def test_client_never_answers_the_oack(root: Path, client: socket.socket) -> None:
    with our_server(root, timing=SERVER_FAST) as (_, log, port):
        send(client, rrq("pxelinux.0", ("blksize", "1024")), (LOOP, port))
        f = only(server_findings(log), "client-stopped-acking")
    assert "never answered our OACK" in f.summary and "3 times" in f.summary


@pytest.mark.parametrize("name, expect", [
    ("PXELINUX.0", "asked for 'PXELINUX.0', with letters in another case than the existing 'pxelinux.0': not served"),
    ("pxelinux.0\udcff", "odd bytes (\\xff)"),
    ("\\pxelinux.1", "backslashes"),
    ("pxe\x01linux.0", "odd bytes (\\x01)"),
])
def test_odd_filename(root: Path, client: socket.socket, name: str, expect: str) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq(name), (LOOP, port))
        reply = recv(client)
        assert reply is not None and isinstance(reply[0], Error)
        f = only(server_findings(log), "odd-filename")
    assert f.severity == "warning" and expect in f.summary
    if name != "pxe\x01linux.0":
        assert "the nearest existing file is 'pxelinux.0'" in f.summary


def test_plain_not_found_on_the_server(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq("missing.img"), (LOOP, port))
        f = only(server_findings(log), "file-not-found")
    assert f.severity == "warning" and "'missing.img'" in f.summary


def test_client_answers_the_oack_with_an_error(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq("pxelinux.0", ("blksize", "1024")), (LOOP, port))
        oack, tid = recv(client)
        assert isinstance(oack, OAck)
        send(client, Error(4, "illegal opcode 6"), tid)
        f = only(server_findings(log), "client-ignored-oack")
    assert f.severity == "warning" and "ERROR 4" in f.summary and "does not take an OACK" in f.summary


def test_client_uploads_ignoring_the_oack(root: Path, client: socket.socket, tmp_path: Path) -> None:
    upload_root = tmp_path / "up"
    upload_root.mkdir()
    with our_server(upload_root, allow_upload=True) as (_, log, port):
        send(client, wrq("new.bin", ("blksize", "1024"), ("tsize", "1500")), (LOOP, port))
        oack, tid = recv(client)
        assert isinstance(oack, OAck) and oack.option("blksize") == "1024"
        send(client, Data(1, IMAGE[:512]), tid)  # 512-byte blocks, as if there had been no OACK
        assert recv(client) is not None  # the server's ACK 1 ends the upload: 512 < 1024
        send(client, Data(2, IMAGE[512:1024]), tid)
        findings = server_findings(log)
    # The upload ended 988 bytes short of its tsize, so it was failed and not kept: tsize-short says so.
    assert sorted(f.id for f in findings) == ["client-ignored-oack", "tsize-short"], show(findings)
    assert not (upload_root / "new.bin").exists()
    f = next(f for f in findings if f.id == "client-ignored-oack")
    assert f.severity == "error" and "ignored the OACK" in f.summary and "after 512 bytes" in f.summary


def test_path_escape(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq("../../../etc/passwd"), (LOOP, port))
        f = only(server_findings(log), "path-escape")
    assert f.severity == "warning" and "'../../../etc/passwd'" in f.summary and "traversal" in f.suggestion


def test_duplicate_acks_from_the_client(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        server = (LOOP, port)
        send(client, rrq("bootx64.efi"), server)
        assert download(client, server, recv(client), ack_twice=True) == IMAGE
        findings = server_findings(log)
    assert [f.id for f in findings] == ["duplicates"], show(findings)
    f = findings[0]
    # 13 blocks, each ACKed twice; the server ends on the first ACK of the last block.
    assert "12 ACK" in f.summary and "from the client" in f.summary


def test_stray_packet_to_the_listening_port(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, Ack(1), (LOOP, port))  # e.g. a late ACK of a transfer that had ended
        f = only(server_findings(log), "stray-packets")
    assert f.severity == "info" and "sent ACK 1 to the TFTP port outside any transfer" in f.summary


def test_a_stray_oack_to_the_listening_port_is_a_stray_packet_not_a_bad_oack(root: Path,
                                                                             client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, OAck((("blksize", "1468"),)), (LOOP, port))
        f = only(server_findings(log), "stray-packets")  # not "- sent a bad OACK"
    assert "sent OACK" in f.summary and "outside any transfer" in f.summary, f.summary


def test_a_dot_dot_that_stays_inside_is_refused_without_saying_it_leads_outside(root: Path,
                                                                              client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq("sub/../pxelinux.0"), (LOOP, port))
        f = only(server_findings(log), "odd-filename")
    assert "a '..' part" in f.summary and "outside" not in f.summary, f.summary


def test_an_upload_name_too_long_for_the_file_system_is_a_bad_name_not_a_server_limit(
        tmp_path: Path, client: socket.socket) -> None:
    name = "fw-" + "x" * 300 + ".bin"
    with our_server(tmp_path, allow_upload=True) as (_, log, port):
        send(client, wrq(name), (LOOP, port))
        f = only(server_findings(log), "odd-filename")
    assert "a part longer than 255 bytes" in f.summary and "File name too long" in f.summary, f.summary
    assert "session limits" not in f.suggestion
    # The uploader chose the name: no boot-download advice (DHCP option 67), but a shorter name.
    assert "asked to upload" in f.summary and "DHCP" not in f.suggestion, f.suggestion
    assert "uploading client" in f.suggestion and "255 bytes" in f.suggestion, f.suggestion


def test_a_read_name_too_long_for_the_file_system_is_a_bad_name(root: Path, client: socket.socket) -> None:
    with our_server(root) as (_, log, port):
        send(client, rrq("y" * 300), (LOOP, port))
        f = only(server_findings(log), "odd-filename")
    assert "a part longer than 255 bytes" in f.summary, f.summary


def test_an_upload_past_its_tsize_gets_advice_for_the_uploading_client(tmp_path: Path,
                                                                      client: socket.socket) -> None:
    """Our server stopped the upload: the advice is the client's (drop its tsize, serve --max-upload),
    not a probe's (probe --no-tsize, --max-size), which are for downloads."""
    with our_server(tmp_path, allow_upload=True, allow_overwrite=True) as (_, log, port):
        send(client, wrq("up.bin", ("tsize", "100")), (LOOP, port))
        oack, tid = recv(client)
        assert isinstance(oack, OAck)
        send(client, Data(1, IMAGE[:512]), tid)
        reply = recv(client)
        assert reply is not None and isinstance(reply[0], Error), reply
        f = only(server_findings(log), "tsize-overrun")
    assert "upload was stopped" in f.summary, f.summary
    assert "--no-tsize" not in f.suggestion and "--max-size" not in f.suggestion, f.suggestion
    assert "--max-upload" in f.suggestion, f.suggestion
    assert not (tmp_path / "up.bin").exists()
