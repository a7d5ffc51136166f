"""`watch`: live capture of other programs' TFTP on loopback, judged per transfer and per device.

Needs root (or CAP_NET_RAW) for the capture: CI runs as root. Each test limits the capture to a
loopback address of its own, so other tests' traffic never reaches it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.watch import ScriptedClient, private_loopback, sha256, watching
from tftpdiag.devices import DeviceBook
from tftpdiag.protocol.events import Completed, Failed, Reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root or CAP_NET_RAW (CI runs as root)")

IMAGE = bytes(range(256)) * 4000 + b"tail"  # 1,024,004 bytes: not a multiple of any block size


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(IMAGE)
    (root / "SEPDefault.cnf.xml").write_bytes(b"<device><image>image.bin</image></device>\n" * 40)
    return root


def _by_file(records):
    out = {}
    for r in records:
        out.setdefault(r.filename, []).append(r)
    return out


def test_watch_follows_real_clients_against_tftpd_hpa(served: Path, tmp_path: Path) -> None:
    host = private_loopback(1)
    port = peers.free_udp_port(host)
    with peers.tftpd_hpa(served, port, host=host), watching((host,), (port,)) as w:
        got = {}
        for name, run in {
            "curl": lambda out: peers.curl_get(host, port, "image.bin", out, blksize=1468),
            "tftp-hpa": lambda out: peers.tftp_hpa_get(host, port, "image.bin", out),
            "busybox": lambda out: peers.busybox_get(host, port, "image.bin", out, blksize=1024),
        }.items():
            out = tmp_path / f"{name}.bin"
            result = run(out)
            assert result.ok, (name, result)
            got[name] = out.read_bytes()
        records = w.wait_finished(3)
    assert all(data == IMAGE for data in got.values())
    assert len(records) == 3
    for r in records:
        assert r.filename == "image.bin" and r.result is not None
        assert r.bytes == len(IMAGE), (r.session, r.bytes)
        assert r.peer == (host, port)
        assert r.sha256 == sha256(IMAGE)  # what the capture saw reach the client, byte for byte
    sizes = sorted(r.negotiated.blksize for r in records if r.negotiated)
    assert sizes == [512, 1024, 1468]


def test_watch_follows_windowed_atftp_against_atftpd(served: Path, tmp_path: Path) -> None:
    host = private_loopback(2)
    port = peers.free_udp_port(host)
    out = tmp_path / "atftp.bin"
    with peers.atftpd(served, port, host=host), watching((host,), (port,)) as w:
        result = peers.atftp_get(host, port, "image.bin", out, options={"windowsize": 8, "blksize": 1428})
        assert result.ok, result
        (record,) = w.wait_finished(1)
    assert out.read_bytes() == IMAGE
    assert record.bytes == len(IMAGE) and record.negotiated is not None
    assert record.sha256 == sha256(IMAGE)
    assert record.negotiated.windowsize == 8 and record.negotiated.blksize == 1428
    assert w.watcher.stats().dropped == 0


def test_watch_judges_devices_uefi_phone_and_stuck(served: Path) -> None:
    host = private_loopback(3)
    port = peers.free_udp_port(host)
    uefi, phone, stuck = (private_loopback(4), private_loopback(5), private_loopback(6))
    with peers.tftpd_hpa(served, port, host=host), watching((host,), (port,)) as w:
        board = ScriptedClient(uefi, (host, port))
        assert board.size_probe("image.bin") == len(IMAGE)
        assert board.get("image.bin", {"blksize": "1468"}) == IMAGE
        handset = ScriptedClient(phone, (host, port))
        assert handset.get("SEP0011223344AA.cnf.xml") is None  # per-MAC file: not there, on purpose
        assert handset.get("SEPDefault.cnf.xml") is not None
        assert handset.get("image.bin", {"blksize": "1468"}) == IMAGE
        lost = ScriptedClient(stuck, (host, port))
        for _ in range(4):
            assert lost.get("missing.bin") is None
        records = w.wait_finished(2 + 3 + 4)
    for c in (board, handset, lost):
        c.close()
    book = DeviceBook().add_all(records)
    devices = {d.address: d for d in book.judge(time.time() + 60, quiet=3.0)}
    assert devices[uefi].verdict == "booted"
    assert [(a.name, a.outcome, a.normal.split(":")[0]) for a in devices[uefi].attempts] == [
        ("image.bin", "aborted-after-oack", "size probe"), ("image.bin", "done", "")]
    assert devices[phone].verdict == "booted"
    assert [a.outcome for a in devices[phone].attempts] == ["missing", "done", "done"]
    assert devices[phone].attempts[0].normal.startswith("optional")
    assert devices[stuck].verdict == "stuck"
    (finding,) = [f for f in devices[stuck].findings if f.id == "device-missing-file"]
    assert "missing.bin" in finding.summary and "4 times" in finding.summary
    for address in (uefi, phone):
        assert not [f for f in devices[address].findings if f.severity != "info"], devices[address].findings


def _ask(source: str, server: tuple[str, int], raw: bytes) -> bytes:
    """Send one request as it is and follow the server's answer lock-step to its end; the first reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(3.0)
        sock.sendto(raw, server)
        first = reply = sock.recvfrom(65536)
        blksize = 512
        while reply[0][:2] in (b"\0\3", b"\0\6"):
            data, tid = reply
            if data[:2] == b"\0\6":
                fields = data[2:].split(b"\0")
                blksize = int(dict(zip(fields[::2], fields[1::2], strict=False)).get(b"blksize", b"512"))
                sock.sendto(b"\0\4\0\0", tid)
            else:
                sock.sendto(b"\0\4" + data[2:4], tid)
                if len(data) - 4 < blksize:
                    break
            reply = sock.recvfrom(65536)
        return first[0]


def test_watch_shows_requests_a_real_server_refused_or_took_as_sent(served: Path) -> None:
    """tftpd-hpa answers requests our own codec would refuse (over 512 bytes, an unknown mode, an option
    value that is not ASCII or no number): watch shows each, as sent, with that answer."""
    (served / "pxelinux.cfg").mkdir()
    (served / "pxelinux.cfg" / "default").write_bytes(b"DEFAULT linux\n")
    host = private_loopback(7)
    port = peers.free_udp_port(host)
    device = private_loopback(8)
    asked = [b"\0\1" + b"B" * 600 + b"\0octet\0", b"\0\1pxelinux.cfg/default\0binary\0",
             b"\0\1pxelinux.cfg/default\0octet\0blksize\0\xff\xfe\0",
             b"\0\1pxelinux.cfg/default\0octet\0blksize\0abc\0"]
    with peers.tftpd_hpa(served, port, host=host), watching((host,), (port,)) as w:
        replies = [_ask(device, (host, port), raw) for raw in asked]
        records = w.wait_finished(len(asked))
    assert [r[:2] for r in replies[:2]] == [b"\0\5", b"\0\5"]
    records.sort(key=lambda r: r.started)
    assert {(r.client[0], r.peer) for r in records} == {(device, (host, port))}
    assert [(r.filename, r.mode) for r in records] == [("B" * 600, "octet"), ("pxelinux.cfg/default", "binary"),
                                                       ("pxelinux.cfg/default", "octet"),
                                                       ("pxelinux.cfg/default", "octet")]
    assert [r.requested for r in records[2:]] == [(("blksize", "\udcff\udcfe"),), (("blksize", "abc"),)]
    for record in records[:2]:
        assert isinstance(record.result, Failed) and record.result.reason is Reason.PEER_ERROR
        assert record.error_sender == "server" and record.replied_from is not None
    for record, reply in zip(records[2:], replies[2:], strict=True):
        # Whatever tftpd-hpa made of the option, its answer belongs to the request, not to a transfer of its own.
        assert record.replied_from is not None and record.replied_from[0] == host
        if reply[:2] == b"\0\5":
            assert isinstance(record.result, Failed) and record.result.reason is Reason.PEER_ERROR
        else:
            assert isinstance(record.result, Completed), record.result


def _watch_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tftpdiag", "watch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _read_json_lines(proc: subprocess.Popen[str], count: int, timeout: float = 20.0) -> list[dict]:
    """The first ``count`` JSON lines the process prints, as they come. Read a line at a time from the
    descriptor itself: a buffered reader can take two lines at once and leave select() waiting."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[dict] = []
    pending = b""
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        if b"\n" in pending:
            text, pending = pending.split(b"\n", 1)
            lines.append(json.loads(text))
            continue
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise TimeoutError(f"watch printed {len(lines)} of {count} JSON lines: {lines}")
        chunk = os.read(fd, 1)  # one byte at a time: what follows the lines wanted stays in the pipe
        if not chunk:
            raise AssertionError(f"watch ended early: {proc.stderr.read() if proc.stderr else ''}")
        pending += chunk
    return lines


def test_watch_cli_json_sessions_devices_and_capture(served: Path, tmp_path: Path) -> None:
    host = private_loopback(7)
    port = peers.free_udp_port(host)
    trace = tmp_path / "seen.pcap"
    with peers.tftpd_hpa(served, port, host=host):
        proc = _watch_cli("-i", "lo", "--port", str(port), "--host", host, "--json", "--idle", "2",
                          "--trace", str(trace))
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            assert "watching TFTP on lo" in banner
            result = peers.curl_get(host, port, "image.bin", tmp_path / "out.bin", blksize=1468)
            assert result.ok
            assert peers.curl_get(host, port, "nope.bin", tmp_path / "nope.bin").returncode != 0
            try:
                seen = _read_json_lines(proc, 2)
            except TimeoutError as exc:  # what the capture holds tells a capture problem from a rebuild one
                debug = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(trace), "--no-tui"],
                                       capture_output=True, text=True)
                raise AssertionError(f"{exc}\n{debug.stdout[-3000:]}") from None
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    objects = seen + [json.loads(text) for text in out.splitlines()]
    sessions = [o for o in objects if o["event"] == "session"]
    assert [(s["file"], s["ok"], s["bytes"]) for s in sessions] == [("image.bin", True, len(IMAGE)),
                                                                   ("nope.bin", False, 0)]
    assert all(s["server"] == f"{host}:{port}" for s in sessions)
    assert sessions[0]["sha256"] == sha256(IMAGE) and sessions[1]["sha256"] is None
    (device,) = [o for o in objects if o["event"] == "device"]
    assert device["address"] == "127.0.0.1" and device["mac"] is None
    assert [(f["name"], f["outcome"]) for f in device["files"]] == [("image.bin", "done"), ("nope.bin", "missing")]
    assert objects[-1]["event"] == "capture" and objects[-1]["kernel_dropped"] == 0 and objects[-1]["packets"] > 0
    # The pcap kept reopens as the same transfers.
    traced = subprocess.run([sys.executable, "-m", "tftpdiag", "trace", str(trace), "--json"],
                            capture_output=True, text=True, timeout=60)
    transfers = json.loads(traced.stdout)["transfers"]
    assert [(t["file"], t["bytes"]) for t in transfers] == [("image.bin", len(IMAGE)), ("nope.bin", 0)]


def test_watch_json_writes_bytes_that_are_not_utf8_by_the_one_rule(served: Path) -> None:
    """A name and an ERROR message with bytes that are not UTF-8, seen on the wire: valid UTF-8 in the
    JSON, written as serve --json writes them (tests/serve/test_untrusted_bytes.py)."""
    from tests.serve.test_untrusted_bytes import assert_written_by_the_rule, hostile_client
    from tests.support.json_text import assert_valid_text

    host = private_loopback(10)
    port = peers.free_udp_port(host)
    with peers.tftpd_hpa(served, port, host=host):
        proc = _watch_cli("-i", "lo", "--port", str(port), "--host", host, "--json", "--idle", "2")
        try:
            assert proc.stderr is not None and "watching TFTP on lo" in proc.stderr.readline()
            hostile_client(port, host)
            seen = _read_json_lines(proc, 2)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=20)
    assert_valid_text(seen)
    assert_written_by_the_rule(seen)


def test_watch_unknown_interface_is_one_line_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "tftpdiag", "watch", "-i", "nope0", "--no-tui"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no interface named 'nope0'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watch_without_capture_privilege_says_what_to_run() -> None:
    # Root without CAP_NET_RAW in its bounding set: what an unprivileged user gets.
    proc = subprocess.run(["setpriv", "--bounding-set", "-net_raw,-net_admin", "--inh-caps", "-all",
                           sys.executable, "-m", "tftpdiag", "watch", "-i", "lo", "--no-tui"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "CAP_NET_RAW" in proc.stderr and "sudo" in proc.stderr and "setcap" in proc.stderr
    assert "Traceback" not in proc.stderr


def _raw_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet (link type RAW) carrying ``payload`` over UDP; checksums are not checked."""
    import ipaddress
    import struct

    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ":" in src:
        return (struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + ipaddress.ip_address(src).packed
                + ipaddress.ip_address(dst).packed + udp)
    return (struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0)
            + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + udp)


@pytest.mark.parametrize("family", ["4", "6"])
def test_capture_filter_keeps_tftp_and_drops_the_rest(family: str) -> None:
    pcapy = pytest.importorskip("pcapy")
    from tftpdiag.engine.capture import capture_filter

    a, b = ("10.0.0.1", "10.0.0.2") if family == "4" else ("fd00::1", "fd00::2")
    program = pcapy.compile(pcapy.DLT_RAW, 65535, capture_filter((69, 1069)), 1, 0)

    def kept(packet: bytes) -> bool:
        return program.filter(packet) != 0

    assert kept(_raw_udp(a, b, 40000, 69, b"\0\1file\0octet\0"))  # a request to a watched port
    assert kept(_raw_udp(a, b, 40000, 1069, b"\0\2file\0octet\0"))
    assert not kept(_raw_udp(a, b, 40000, 7000, b"\0\1file\0octet\0"))  # a request elsewhere
    for opcode in (3, 4, 5, 6):  # the transfer itself, on ports nobody names in advance
        assert kept(_raw_udp(a, b, 51000, 52000, bytes([0, opcode]) + b"\0\1data"))
    assert not kept(_raw_udp(a, b, 51000, 52000, b"\0\7xx"))  # not TFTP-shaped
    assert not kept(_raw_udp(a, b, 51000, 53, b"\x12\x34\1\0"))  # DNS
    only = pcapy.compile(pcapy.DLT_RAW, 65535, capture_filter((69,), (b,)), 1, 0)
    assert only.filter(_raw_udp(a, b, 51000, 52000, b"\0\3\0\1x"))
    assert not only.filter(_raw_udp(a, a, 51000, 52000, b"\0\3\0\1x"))


async def test_watch_view_shows_a_live_transfer_and_its_device(served: Path, tmp_path: Path) -> None:
    """The full-screen view, driven as a user would: a real download appears in the sessions table while
    watch captures it, and `d` shows its device."""
    import asyncio
    import threading

    from tests.tui.test_tui_views import screen_text
    from tftpdiag.engine.bus import EventBus
    from tftpdiag.engine.watch import WatchConfig, Watcher
    from tftpdiag.tui.launch import watch_app

    host = private_loopback(8)
    port = peers.free_udp_port(host)
    with peers.tftpd_hpa(served, port, host=host):
        bus = EventBus()
        watcher = Watcher(WatchConfig("lo", (port,), (host,), 2.0), bus)
        app, spool = watch_app(watcher, bus)
        engine = threading.Thread(target=watcher.serve, daemon=True)
        try:
            async with app.run_test(size=(120, 36)) as pilot:
                engine.start()
                result = await asyncio.to_thread(peers.curl_get, host, port, "image.bin", tmp_path / "o.bin", 1468)
                assert result.ok
                deadline = time.monotonic() + 20
                while "1 done" not in screen_text(app) and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                text = screen_text(app)
                assert "image.bin" in text and "● done" in text and "1 done" in text, text
                assert "none lost" in text
                await pilot.press("d")
                await pilot.pause()
                text = screen_text(app)
                assert "127.0.0.1" in text and "image.bin ✔" in text, text
        finally:
            watcher.stop()
            engine.join(10)
            spool.close()


def test_watch_on_a_real_lan_groups_devices_by_mac(tmp_path: Path) -> None:
    """On an Ethernet interface (a veth in a namespace LAN), devices carry the MAC their requests came from."""
    from tests.support import netns

    root = tmp_path / "root"
    root.mkdir()
    (root / "image.bin").write_bytes(IMAGE)
    macs = {"10.79.0.21": "02:00:00:00:00:21", "10.79.0.22": "02:00:00:00:00:22"}
    with netns.Lan() as lan:
        server = lan.host("srv", "10.79.0.1/24")
        clients = [lan.host(f"c{n}", f"{ip}/24", mac) for n, (ip, mac) in enumerate(macs.items())]
        tftpd = server.start([peers.require("in.tftpd"), "-L", "-4", "-s", "-u", "root", "--address", "10.79.0.1:69",
                              str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watch = server.start([sys.executable, "-m", "tftpdiag", "watch", "-i", "eth0", "--json", "--idle", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
        try:
            assert "watching TFTP on eth0" in watch.stderr.readline()
            for n, client in enumerate(clients):
                name = "image.bin" if n == 0 else "none.bin"
                client.run(["curl", "-s", "--max-time", "10", "-o", str(tmp_path / f"o{n}"),
                            f"tftp://10.79.0.1/{name}"], timeout=20)
            seen = _read_json_lines(watch, 2)
        finally:
            watch.send_signal(signal.SIGINT)
            out, err = watch.communicate(timeout=20)
            tftpd.kill()
    assert (tmp_path / "o0").read_bytes() == IMAGE
    assert [(s["file"], s["ok"]) for s in seen] == [("image.bin", True), ("none.bin", False)]
    devices = {d["address"]: d for d in map(json.loads, out.splitlines()) if d["event"] == "device"}
    assert {address: d["mac"] for address, d in devices.items()} == macs


def test_a_capture_that_lost_packets_says_so_and_blames_the_capture() -> None:
    from tftpdiag.engine.capture import CaptureStats
    from tftpdiag.watching import capture_object, capture_words

    said, lost = capture_words(CaptureStats(1000, 0, 0), 900)
    assert not lost and said == "captured 900 packets, none lost"
    said, lost = capture_words(CaptureStats(1000, 37, 3), 900)
    assert lost and "lost 40" in said and "kernel dropped 37" in said and "the capture's, not the network's" in said
    obj = capture_object(CaptureStats(1000, 37, 3), 900, "eth0")
    assert obj == {"schema": 1, "event": "capture", "interface": "eth0", "packets": 900, "kernel_dropped": 37,
                   "interface_dropped": 3, "complete": False}


def test_watch_on_every_interface_at_once(served: Path, tmp_path: Path) -> None:
    """`-i any` (libpcap's every interface, Linux cooked frames), as `tcpdump -i any`: a transfer on
    loopback is followed as on lo (it crosses one interface: each packet seen once)."""
    host = private_loopback(11)
    port = peers.free_udp_port(host)
    with peers.tftpd_hpa(served, port, host=host):
        proc = _watch_cli("-i", "any", "--port", str(port), "--host", host, "--json", "--idle", "2")
        try:
            assert proc.stderr is not None and "watching TFTP on any" in proc.stderr.readline()
            assert peers.curl_get(host, port, "image.bin", tmp_path / "out.bin", blksize=1468).ok
            seen = _read_json_lines(proc, 1)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=20)
    (session,) = [o for o in seen if o["event"] == "session"]
    assert (session["file"], session["ok"], session["bytes"]) == ("image.bin", True, len(IMAGE))
    assert session["sha256"] == sha256(IMAGE) and session["retransmits"] == 0
