"""Findings of our client, each from a real reproduction on loopback: our server refusing or limiting
options, fault injection (--impair) where the network must misbehave, and hand-written servers on raw
sockets where a server must. Every transfer that should be clean is checked for nothing above info."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.findings_kit import (
    CALM,
    FAST,
    LOOP,
    SERVER_FAST,
    FakeServer,
    above_info,
    client_run,
    live_analyzer,
    our_server,
    recv,
    send,
    serve_blocks,
    server_findings,
    show,
    udp,
    wait_for,
)
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.impair import parse_impair
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import Ack, Data, Error, OAck, Request
from tftpdiag.protocol.timer import Timing

pytestmark = pytest.mark.timeout(30)

SMALL = random.Random(1).randbytes(20 * 512 + 100)  # 21 blocks of 512
BINARY = random.Random(2).randbytes(6000)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("findings-root")
    (root / "small.bin").write_bytes(SMALL)
    (root / "binary.img").write_bytes(BINARY)
    (root / "pxelinux.0").write_bytes(SMALL[:3000])
    (root / "roll.bin").write_bytes(random.Random(3).randbytes(8 * 65_600 + 3))
    (root / "exists.bin").write_bytes(b"old")
    return root


@pytest.fixture(scope="module")
def server(root: Path):
    with our_server(root, allow_upload=True, timing=CALM) as running:
        yield running


# -- clean runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    RequestedOptions(),
    RequestedOptions(blksize=1468, tsize=True),
    RequestedOptions(blksize=1468, windowsize=16, tsize=True, timeout=2),
], ids=["plain", "blksize-tsize", "windowed"])
def test_clean_download_finds_nothing(server, options: RequestedOptions) -> None:
    _, _, port = server
    run = client_run(port, "small.bin", options=options, timing=CALM)
    assert run.outcome.ok
    assert run.findings == [], run.describe()


def test_clean_upload_finds_nothing(server, tmp_path: Path) -> None:
    _, _, port = server
    source = tmp_path / "up.bin"
    source.write_bytes(SMALL)
    run = client_run(port, f"up-{time.monotonic_ns()}.bin", upload=True, source=source,
                     options=RequestedOptions(blksize=1024, tsize=True), timing=CALM)
    assert run.outcome.ok
    assert run.findings == [], run.describe()


# -- reachability ------------------------------------------------------------------------------------


def test_no_reply_from_a_silent_port() -> None:
    hole = udp()  # bound, never read: no ICMP, no answer
    port = hole.getsockname()[1]
    try:
        run = client_run(port, "x.bin", timing=Timing(initial_timeout=0.1, retries=2))
    finally:
        hole.close()
    assert not run.outcome.ok
    assert run.ids == {"no-reply"}, run.describe()
    f = run.get("no-reply")
    assert f.severity == "error"
    assert f"127.0.0.1:{port}" in f.summary
    assert "3 requests" in f.summary and "no ICMP" in f.summary
    assert any("RRQ" in line for line in f.evidence)


def test_no_reply_shows_live_before_the_end() -> None:
    hole = udp()
    bus = EventBus()
    analyzer, pump = live_analyzer(bus, stall_after=0.15)
    port = hole.getsockname()[1]
    transfer = ClientTransfer(ClientRequest(host=LOOP, filename="x.bin", port=port,
                                            timing=Timing(initial_timeout=0.1, retries=3)), bus).start()
    try:
        seen: list = []
        wait_for(lambda: bool(seen.extend(pump()) or any(f.id == "no-reply" for f in seen)), 3, "a live no-reply")
        live = next(f for f in seen if f.id == "no-reply")
        assert live.severity == "warning" and live.summary.startswith("No reply yet")
        transfer.wait(5)
        transfer.join(5)
        pump()
        assert analyzer.findings()[0].severity == "error"
    finally:
        transfer.cancel()
        hole.close()


def test_port_unreachable_when_nothing_listens() -> None:
    probe = udp()
    port = probe.getsockname()[1]
    probe.close()  # the kernel now answers ICMP port unreachable
    run = client_run(port, "x.bin")
    assert run.ids == {"port-unreachable"}, run.describe()
    f = run.get("port-unreachable")
    assert f.severity == "error" and f"UDP port {port}" in f.summary and "nothing listens" in f.summary


def test_reply_from_other_address() -> None:
    def script(sock: socket.socket, request, client) -> None:
        other = udp("127.0.0.2")  # the answer comes from another address of this host
        try:
            serve_blocks(other, client, SMALL[:1500])
        finally:
            other.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin")
    assert run.outcome.ok
    assert run.ids == {"reply-from-other-address"}, run.describe()
    f = run.get("reply-from-other-address")
    assert f.severity == "warning" and "127.0.0.2" in f.summary and f"127.0.0.1:{fake.port}" in f.summary


# -- errors ------------------------------------------------------------------------------------------


def test_file_not_found_hints_at_the_name(server) -> None:
    _, _, port = server
    run = client_run(port, "Boot\\PXELINUX.0")
    assert run.ids == {"file-not-found"}, run.describe()
    f = run.get("file-not-found")
    assert f.severity == "error"
    assert "'Boot\\\\PXELINUX.0'" in f.summary  # shown escaped
    assert "backslashes" in f.suggestion and "case" in f.suggestion


def test_access_violation_on_a_read_only_server(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 100)
    with our_server(root) as (_, log, port):  # uploads off
        run = client_run(port, "new.bin", upload=True, source=source)
        server_side = server_findings(log)
    assert run.ids == {"access-violation"}, run.describe()
    assert "--allow-upload" in run.get("access-violation").suggestion
    assert {f.id for f in server_side} == {"access-violation"}, show(server_side)


def test_server_error_names_the_code(server, tmp_path: Path) -> None:
    _, _, port = server
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 100)
    run = client_run(port, "exists.bin", upload=True, source=source)
    assert run.ids == {"server-error"}, run.describe()
    f = run.get("server-error")
    assert "ERROR 6 (file already exists)" in f.summary and "overwrite" in f.suggestion


# -- options -----------------------------------------------------------------------------------------


def test_options_ignored_when_the_server_sends_no_oack(root: Path) -> None:
    with our_server(root, policy=ServerPolicy(refuse=frozenset({"blksize", "tsize"}))) as (_, _, port):
        run = client_run(port, "small.bin", options=RequestedOptions(blksize=1468, tsize=True))
    assert run.outcome.ok
    assert run.ids == {"options-ignored"}, run.describe()
    f = run.get("options-ignored")
    assert f.severity == "warning" and "without an OACK" in f.summary and "blksize=1468" in f.summary


def test_options_left_out_of_the_oack_is_info(root: Path) -> None:
    with our_server(root, policy=ServerPolicy(refuse=frozenset({"windowsize"}))) as (_, _, port):
        run = client_run(port, "small.bin", options=RequestedOptions(blksize=1468, windowsize=16))
    assert run.ids == {"options-ignored"}, run.describe()
    f = run.get("options-ignored")
    assert f.severity == "info" and "windowsize=16" in f.summary and "RFC 7440" in f.suggestion


def test_option_reduced(root: Path) -> None:
    with our_server(root, policy=ServerPolicy(max_blksize=1024, max_windowsize=8)) as (_, _, port):
        run = client_run(port, "small.bin", options=RequestedOptions(blksize=1468, windowsize=16))
    assert run.outcome.ok
    assert run.ids == {"option-reduced"}, run.describe()
    f = run.get("option-reduced")
    assert f.severity == "info"
    assert "blksize 1024 of the 1468 asked" in f.summary and "windowsize 8 of the 16 asked" in f.summary


def test_option_refused_with_error_8_then_refused_again() -> None:
    asked_again: list[Request] = []

    def script(sock, request, client) -> None:
        send(sock, Error(8, "Unsupported option(s) requested"), client)  # as tftpd-hpa for tsize in netascii
        got = recv(sock)
        assert got is not None and isinstance(got[0], Request)
        asked_again.append(got[0])
        send(sock, Error(8, "no options wanted either"), got[1])

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.txt", mode="netascii", options=RequestedOptions(tsize=True))
    assert [r.options for r in asked_again] == [()]
    assert not run.outcome.ok
    assert run.ids == {"option-refused"}, run.describe()
    f = run.get("option-refused")
    assert f.severity == "error" and "tsize=0" in f.summary and "failed too" in f.summary
    assert "netascii" in f.suggestion


def test_option_refused_with_error_8_then_served_without_options() -> None:
    def script(sock, request, client) -> None:
        send(sock, Error(8, "Unsupported option(s) requested"), client)
        got = recv(sock)
        assert got is not None and isinstance(got[0], Request) and got[0].options == ()
        tid = udp()
        try:
            serve_blocks(tid, got[1], b"text\r\n" * 300)
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.txt", mode="netascii", options=RequestedOptions(tsize=True))
    assert run.outcome.ok, run.describe()
    assert run.ids == {"option-refused"}, run.describe()
    f = run.get("option-refused")
    assert f.severity == "warning" and "asked again without options" in f.summary and "completed" in f.summary


def _oack_then_data(oacks: list[tuple[tuple[str, str], ...]], data: bytes = SMALL[:2000], blksize: int = 512):
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            for options in oacks:
                send(tid, OAck(options), client)
            got = recv(tid, 2.0)
            if got is None or not isinstance(got[0], Ack):
                return  # refused with ERROR 8
            while (extra := recv(tid, 0.05)) is not None and isinstance(extra[0], Ack):
                pass  # the client answers a repeated OACK with another ACK 0
            serve_blocks(tid, client, data, blksize)
        finally:
            tid.close()

    return script


def test_bad_oack_with_an_option_never_asked() -> None:
    # tftpy's server does this: it OACKs blksize=512 to a request holding only tsize.
    with FakeServer(_oack_then_data([(("tsize", "2000"), ("blksize", "512"))])) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(tsize=True))
    assert not run.outcome.ok
    assert run.ids == {"bad-oack"}, run.describe()
    f = run.get("bad-oack")
    assert f.severity == "error" and "blksize=512, which was not asked for" in f.summary and "ERROR 8" in f.summary


def test_bad_oack_with_a_value_above_the_request() -> None:
    with FakeServer(_oack_then_data([(("blksize", "2048"),)])) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(blksize=1024))
    assert run.ids == {"bad-oack"}, run.describe()
    assert "blksize=2048, above the 1024 asked" in run.get("bad-oack").summary


def test_bad_oack_sent_twice() -> None:
    oack = (("blksize", "1024"),)
    with FakeServer(_oack_then_data([oack, oack], blksize=1024)) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(blksize=1024))
    assert run.outcome.ok
    assert "bad-oack" in run.ids and not above_info([f for f in run.findings if f.id != "bad-oack"]), run.describe()
    f = run.get("bad-oack")
    assert f.severity == "warning" and "the OACK twice" in f.summary


# -- loss and the path -------------------------------------------------------------------------------


def test_large_block_loss_on_a_small_mtu(root: Path) -> None:
    with our_server(root, timing=SERVER_FAST) as (_, log, port):
        run = client_run(port, "small.bin", options=RequestedOptions(blksize=1468), impair="mtu=1400", timing=FAST)
        server_side = server_findings(log)
    assert not run.outcome.ok
    assert run.ids == {"large-block-loss"}, run.describe()
    f = run.get("large-block-loss")
    assert f.severity == "error" and "1,500 bytes" in f.summary and "ACK 0" in f.summary
    assert "a blksize below the path's MTU" in f.suggestion  # 1468 itself did not fit this path
    # Our server saw the same from its side: ACK 0 came, DATA 1 was never acknowledged.
    assert {x.id for x in server_side} == {"large-block-loss"}, show(server_side)
    assert "never acknowledged DATA 1 of 1,468 bytes" in server_side[0].summary


def test_large_block_loss_suggests_1468_for_larger_blocks(root: Path) -> None:
    with our_server(root) as (_, _, port):
        run = client_run(port, "small.bin", options=RequestedOptions(blksize=8192), impair="mtu=1500", timing=FAST)
    assert run.ids == {"large-block-loss"}, run.describe()
    assert "blksize 1468 or less" in run.get("large-block-loss").suggestion


def test_packet_loss_with_an_estimate(root: Path) -> None:
    timing = Timing(initial_timeout=0.1, min_timeout=0.05, retries=8, dally=0.05)
    with our_server(root, timing=timing) as (_, _, port):
        run = client_run(port, "small.bin", timing=timing, impair="loss=15%,seed=4")
    assert run.outcome.ok
    assert "packet-loss" in run.ids, run.describe()
    f = run.get("packet-loss")
    assert f.severity == "warning" and "% of packets lost" in f.summary
    pct = float(f.summary.split("About ")[1].split("%")[0])
    assert 3 <= pct <= 40
    assert run.ids <= {"packet-loss", "duplicates"}, run.describe()


def test_duplicates_from_the_network(server) -> None:
    _, _, port = server
    # The delay keeps each copy ahead of the next block; it also makes the transfer latency-bound (info).
    run = client_run(port, "small.bin", impair="dup=50%,delay=1ms,direction=in,seed=5")
    assert run.outcome.ok
    assert run.ids <= {"duplicates", "latency-bound"} and {f.id for f in above_info(run.findings)} == {"duplicates"}, \
        run.describe()
    f = run.get("duplicates")
    assert f.severity == "warning" and "duplicated on the way" in f.summary


def test_sorcerers_apprentice() -> None:
    data = SMALL

    def script(sock, request, client) -> None:
        # Resends DATA n+1 for every ACK n it gets, duplicates included (atftpd without --prevent-sas).
        tid = udp()
        blocks = [data[i:i + 512] for i in range(0, len(data) + 1, 512)]
        try:
            send(tid, Data(1, blocks[0]), client)
            send(tid, Data(1, blocks[0]), client)  # its timer fired once: from here on every block goes twice
            while (got := recv(tid, 0.5)) is not None:
                packet = got[0]
                if isinstance(packet, Ack) and packet.block < len(blocks):
                    send(tid, Data(packet.block + 1, blocks[packet.block]), client)
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin")
    assert run.outcome.ok
    assert "sorcerers-apprentice" in run.ids, run.describe()
    assert run.ids <= {"sorcerers-apprentice", "duplicates"}, run.describe()
    f = run.get("sorcerers-apprentice")
    assert f.severity == "warning" and "every duplicate ACK" in f.summary and "--prevent-sas" in f.suggestion


def test_window_overrun() -> None:
    blocks = [SMALL[i:i + 512] for i in range(0, len(SMALL) + 1, 512)]

    def script(sock, request, client) -> None:
        tid = udp()
        try:
            send(tid, OAck((("windowsize", "4"),)), client)
            recv(tid)  # ACK 0
            for n in (1, 2, 4):  # block 3 lost on the way
                send(tid, Data(n, blocks[n - 1]), client)
            recv(tid)  # the client's ACK 2 for the gap
            for n in (5, 6, 7, 8):  # ... which this sender does not go by (uftpd#44): it carries on
                send(tid, Data(n, blocks[n - 1]), client)
            nxt = 3  # then it recovers, and goes on correctly
            while nxt <= len(blocks):
                for n in range(nxt, min(nxt + 4, len(blocks) + 1)):
                    send(tid, Data(n, blocks[n - 1]), client)
                got = recv(tid, 1.0)
                if got is None or not isinstance(got[0], Ack):
                    return
                nxt = got[0].block + 1
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(windowsize=4))
    assert run.outcome.ok
    assert "window-overrun" in run.ids and run.ids <= {"window-overrun", "packet-loss", "duplicates"}, run.describe()
    f = run.get("window-overrun")
    assert f.severity == "warning" and "sent DATA 7 when our last ACK (2) allowed blocks up to 6" in f.summary


def test_latency_bound_lock_step(server) -> None:
    _, _, port = server
    run = client_run(port, "small.bin", impair="delay=8ms", timing=CALM)
    assert run.outcome.ok
    assert run.ids == {"latency-bound"}, run.describe()
    f = run.get("latency-bound")
    assert f.severity == "info" and "caps the rate at" in f.summary and "measured" in f.summary
    assert "windowsize" in f.suggestion
    rtt = float(f.summary.split("over a ")[1].split(" ms")[0])
    assert 14 <= rtt <= 100


def test_stray_packets_from_a_second_session() -> None:
    def script(sock, request, client) -> None:
        first, second = udp(), udp()
        try:
            send(first, Data(1, SMALL[:512]), client)
            send(second, Data(1, SMALL[:512]), client)  # a second session, as for a repeated request
            recv(first, 1.0)  # ACK 1
            serve_blocks(first, client, SMALL[512:1500], first_block=2)
            recv(second, 1.0)  # our client's ERROR 5
        finally:
            first.close()
            second.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin")
    assert run.outcome.ok
    assert run.ids == {"stray-packets"}, run.describe()
    f = run.get("stray-packets")
    assert f.severity == "info" and "second session" in f.summary and "ERROR 5" in f.summary


def test_server_stopped_after_its_oack() -> None:
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            send(tid, OAck((("blksize", "512"),)), client)
            while recv(tid, 0.5) is not None:  # takes our ACK 0 (and its repeats), sends nothing
                pass
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(blksize=512), timing=FAST)
    assert run.ids == {"server-stopped"}, run.describe()
    f = run.get("server-stopped")
    assert f.severity == "error" and "sent its OACK, then nothing more" in f.summary and "DATA 1" in f.summary


def test_server_stopped_mid_transfer() -> None:
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            for n in (1, 2, 3):
                send(tid, Data(n, SMALL[(n - 1) * 512:n * 512]), client)
                recv(tid, 1.0)
            while recv(tid, 0.5) is not None:
                pass
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin", timing=FAST)
    assert run.ids == {"server-stopped"}, run.describe()
    assert "stopped sending DATA after block 3 (1.5 KiB)" in run.get("server-stopped").summary


def test_upload_over_the_server_limit(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(SMALL)
    with our_server(tmp_path, allow_upload=True, policy=ServerPolicy(max_upload=1000)) as (_, log, port):
        run = client_run(port, "up2.bin", upload=True, source=source, options=RequestedOptions(tsize=True))
        server_side = server_findings(log)
    assert run.ids == {"server-error"}, run.describe()
    assert "ERROR 3 (disk full or allocation exceeded)" in run.get("server-error").summary
    assert [f.id for f in server_side] == ["local-error"], show(server_side)
    assert "exceeds the server's limit of 1000" in server_side[0].summary and "ERROR 3" in server_side[0].summary


def test_upload_to_a_directory_name_says_so_on_both_sides(tmp_path: Path) -> None:
    """Uploads are on, but the target name is a directory there: neither side blames uploads being off,
    and the server's advice is the uploader's, not a download's ("ask for a regular file")."""
    source = tmp_path / "upl.bin"
    source.write_bytes(SMALL[:1000])
    served = tmp_path / "root"
    (served / "adir").mkdir(parents=True)
    with our_server(served, allow_upload=True) as (_, log, port):
        run = client_run(port, "adir", upload=True, source=source)
        server_side = server_findings(log)
    assert run.ids == {"access-violation"}, run.describe()
    ours = run.get("access-violation")
    assert "refused the WRQ for 'adir'" in ours.summary, ours.summary
    assert "--allow-upload" not in ours.suggestion and "directory" in ours.suggestion, ours.suggestion
    assert [f.id for f in server_side] == ["access-violation"], show(server_side)
    theirs = server_side[0]
    assert "directory" in theirs.suggestion and "upload to a file's name" in theirs.suggestion, theirs.suggestion
    assert "ask for" not in theirs.suggestion, theirs.suggestion


def test_a_reader_of_the_output_that_goes_away_is_not_a_disk_problem(root: Path, tmp_path: Path) -> None:
    """-o FIFO (or -o - | head): the reader closes its end after a few bytes; the write's EPIPE is the
    reader going away, not the local disk or its permissions."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)

    def reader() -> None:
        with open(fifo, "rb") as f:  # (the download opens the other end: this waits for it)
            f.read(5)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    with our_server(root) as (_, _, port):
        run = client_run(port, "roll.bin", output=fifo)
    thread.join(10)
    assert run.ids == {"local-error"}, run.describe()
    f = run.get("local-error")
    assert "the reader of the output went away" in f.summary, f.summary
    assert "disk" not in f.suggestion and "| head" in f.suggestion, f.suggestion


def test_a_name_refused_for_its_control_bytes_gets_no_permission_advice(root: Path) -> None:
    """Our server refuses a name with control bytes (ERROR 2): the client's finding blames the name, not
    the file's mode (no chmod o+r)."""
    with our_server(root) as (_, _, port):
        run = client_run(port, "evil\x1b[31mred\x07.bin")
    assert run.ids == {"access-violation"}, run.describe()
    f = run.get("access-violation")
    assert "chmod" not in f.suggestion and "odd bytes (\\x1b, \\x07)" in f.suggestion, f.suggestion


def test_an_upload_name_refused_for_its_length_gets_upload_advice(tmp_path: Path) -> None:
    source = tmp_path / "upl.bin"
    source.write_bytes(SMALL[:1000])
    with our_server(tmp_path, allow_upload=True) as (_, _, port):
        run = client_run(port, "x" * 300, upload=True, source=source)
    assert run.ids == {"access-violation"}, run.describe()
    f = run.get("access-violation")
    assert "a part longer than 255 bytes" in f.suggestion and "uploading client" in f.suggestion, f.suggestion
    assert "--allow-upload" not in f.suggestion and "DHCP" not in f.suggestion, f.suggestion


def test_a_directory_name_answered_with_an_oack_then_an_error_is_not_called_refused() -> None:
    """What tftpd-hpa sends for a directory's name (seen with tcpdump): an OACK whose tsize is the
    directory's size, then, after ACK 0, ERROR 0 'Is a directory'. It took the request, then ended it."""
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            send(tid, OAck((("blksize", "1468"), ("tsize", "4096"))), client)
            got = recv(tid, 5.0)
            assert got is not None and got[0] == Ack(0), got
            send(tid, Error(0, "Is a directory"), client)
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "adir", options=RequestedOptions(blksize=1468, tsize=True))
    assert run.ids == {"access-violation"}, run.describe()
    f = run.get("access-violation")
    assert "accepted the RRQ for 'adir' (OACK), then ended it with ERROR 0 (not defined), 'Is a directory'" \
        in f.summary, f.summary
    assert "refused" not in f.summary and "access violation" not in f.summary, f.summary
    assert any("OACK blksize=1468 tsize=4096" in line for line in f.evidence), f.evidence
    assert "directory" in f.suggestion, f.suggestion


# -- content -----------------------------------------------------------------------------------------


def test_a_download_short_of_its_tsize_is_failed_and_not_kept() -> None:
    """(A capture of such a transfer, which tftpdiag did not run, still gets tsize-mismatch.)"""
    def script(sock, request, client) -> None:
        tid = udp()
        try:
            send(tid, OAck((("tsize", "5000"),)), client)
            if recv(tid, 2.0) is not None:
                serve_blocks(tid, client, SMALL[:3000])
        finally:
            tid.close()

    with FakeServer(script) as fake:
        run = client_run(fake.port, "a.bin", options=RequestedOptions(tsize=True))
    assert not run.outcome.ok
    assert run.ids == {"tsize-short"}, run.describe()
    assert ("announced tsize 5,000 bytes, then ended the download at 3,000 bytes: it was not kept"
            in run.get("tsize-short").summary)


def test_netascii_binary(root: Path) -> None:
    with our_server(root) as (_, log, port):
        run = client_run(port, "binary.img", mode="netascii")
        server_side = server_findings(log)
    assert run.outcome.ok
    assert run.ids == {"netascii-binary"}, run.describe()
    f = run.get("netascii-binary")
    assert f.severity == "warning" and "NUL bytes" in f.summary and "octet" in f.suggestion
    assert {x.id for x in server_side} == {"netascii-binary"}, show(server_side)
    assert "The client asked for netascii" in server_side[0].suggestion


# -- rollover ----------------------------------------------------------------------------------------


def test_rollover_risk_predicted_from_tsize(server) -> None:
    _, _, port = server
    run = client_run(port, "roll.bin", options=RequestedOptions(blksize=8, tsize=True), deadline=0.3)
    assert run.ids == {"rollover-risk"}, run.describe()
    f = run.get("rollover-risk")
    assert f.severity == "warning" and "65,601 blocks" in f.summary and "blksize 9 or more" in f.suggestion


# -- stalls (live) -----------------------------------------------------------------------------------


def _live(port: int, impair: str, timing: Timing, stall_after: float, stop_on: str | None):
    bus = EventBus()
    analyzer, pump = live_analyzer(bus, stall_after)
    request = ClientRequest(host=LOOP, filename="small.bin", port=port, timing=timing, impair=parse_impair(impair))
    transfer = ClientTransfer(request, bus).start()
    seen: list = []
    try:
        if stop_on is not None:
            wait_for(lambda: bool(seen.extend(pump()) or any(f.id == stop_on for f in seen)), 5, stop_on)
        transfer.wait(5)
        transfer.join(5)
        seen.extend(pump())
    finally:
        transfer.cancel()
        transfer.join(5)
    return analyzer, seen


def test_stalled_live(server) -> None:
    _, _, port = server
    _, seen = _live(port, "drop=data:5x*,direction=in", Timing(initial_timeout=0.2, retries=3, dally=0.05),
                    0.25, "stalled")
    f = next(x for x in seen if x.id == "stalled")
    assert f.severity == "warning" and "No progress for" in f.summary and "block 4" in f.summary
    assert "DATA 5" in f.summary


def test_stalled_then_resumed_turns_info(server) -> None:
    _, _, port = server
    analyzer, seen = _live(port, "drop=data:5x2,direction=in", Timing(initial_timeout=0.2, retries=4, dally=0.05),
                           0.15, "stalled")
    final = {f.id: f for f in analyzer.findings()}
    assert final["stalled"].severity == "info" and "then the transfer went on" in final["stalled"].summary
    assert next(f.severity for f in seen if f.id == "stalled") == "warning"  # it was a warning while it lasted
