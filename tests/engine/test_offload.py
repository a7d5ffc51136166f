"""UDP segmentation offload: a window leaves in one system call (GSO) and arrives in one (GRO), and the
peer still receives the same datagrams, byte for byte; where the kernel refuses, datagrams go one by one."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import sys

import pytest

from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.offload import DatagramReader, DatagramWriter
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.events import Completed, PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO/GRO are Linux's")


def pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    return tx, rx


def window(count: int = 16, size: int = 1472, last: int | None = None) -> list[bytes]:
    out = [os.urandom(size) for _ in range(count - 1)]
    return out + [os.urandom(size if last is None else last)]


class Recorder:
    """A socket stand-in that records calls; sendmsg can be made to fail."""

    def __init__(self, sendmsg_error: int | None = None) -> None:
        self.calls: list[tuple[str, list[bytes], tuple]] = []
        self.sendmsg_error = sendmsg_error

    def sendto(self, raw: bytes, dest: tuple) -> int:
        self.calls.append(("sendto", [raw], dest))
        return len(raw)

    def sendmsg(self, buffers, ancillary, flags, dest) -> int:
        if self.sendmsg_error is not None:
            raise OSError(self.sendmsg_error, os.strerror(self.sendmsg_error))
        self.calls.append(("sendmsg", list(buffers), dest))
        return sum(map(len, buffers))


@linux
def test_a_window_leaves_in_one_call_and_arrives_as_the_same_datagrams() -> None:
    tx, rx = pair()
    with tx, rx:
        sent = window(last=100)
        recorder_calls = []
        writer = DatagramWriter(tx)
        original = writer._sendmsg

        def spy(*args):
            recorder_calls.append(args)
            return original(*args)

        writer._sendmsg = spy  # type: ignore[misc]
        errors: list = []
        writer.send([(raw, rx.getsockname()) for raw in sent], lambda dest, exc: errors.append(exc))
        assert not errors and len(recorder_calls) == 1  # one system call for the window
        got = [rx.recvfrom(65536)[0] for _ in sent]  # a socket without GRO gets them one by one
    assert got == sent


@linux
def test_a_reader_with_offload_takes_a_run_in_one_read_and_hands_out_its_datagrams() -> None:
    tx, rx = pair()
    with tx, rx:
        reader = DatagramReader(rx)
        assert reader.gro
        sent = window(count=8, size=516, last=7)
        DatagramWriter(tx).send([(raw, rx.getsockname()) for raw in sent], lambda *a: None)
        run, addr = reader.read()
        assert run == sent
        assert addr == tx.getsockname()
        # A lone datagram is a run of one.
        tx.sendto(b"\x00\x04\x00\x01", rx.getsockname())
        assert reader.read() == ([b"\x00\x04\x00\x01"], tx.getsockname())


def test_without_offload_every_datagram_has_its_own_call() -> None:
    sock = Recorder()
    writer = DatagramWriter(sock, offload=False)  # type: ignore[arg-type]
    sent = window(count=4, size=64)
    writer.send([(raw, ("127.0.0.1", 9)) for raw in sent], lambda *a: None)
    assert [c[0] for c in sock.calls] == ["sendto"] * 4
    assert [c[1][0] for c in sock.calls] == sent


@linux
def test_mixed_destinations_and_sizes_are_cut_into_runs_in_order() -> None:
    sock = Recorder()
    writer = DatagramWriter(sock)  # type: ignore[arg-type]
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    big, small = bytes(100), bytes(40)
    out = [(big, a), (big, a), (small, a), (big, a), (big, b), (big, b), (small, b), (small, b)]
    writer.send(out, lambda *x: None)
    # Runs: one size but for a shorter last one, one destination.
    assert [(kind, [len(r) for r in bufs], dest) for kind, bufs, dest in sock.calls] == [
        ("sendmsg", [100, 100, 40], a), ("sendto", [100], a), ("sendmsg", [100, 100, 40], b), ("sendto", [40], b)]
    assert [raw for _, bufs, _ in sock.calls for raw in bufs] == [raw for raw, _ in out]


@linux
@pytest.mark.parametrize("refusal", [errno.EIO, errno.EINVAL, errno.ENOPROTOOPT])
def test_a_kernel_that_refuses_gso_gets_each_datagram_and_is_not_asked_again(refusal: int) -> None:
    sock = Recorder(sendmsg_error=refusal)
    writer = DatagramWriter(sock)  # type: ignore[arg-type]
    sent = window(count=5, size=64)
    errors: list = []
    writer.send([(raw, ("127.0.0.1", 9)) for raw in sent], lambda dest, exc: errors.append(exc))
    writer.send([(raw, ("127.0.0.1", 9)) for raw in sent], lambda dest, exc: errors.append(exc))
    assert not errors and not writer.gso
    assert [c[0] for c in sock.calls] == ["sendto"] * 10
    assert [c[1][0] for c in sock.calls] == sent + sent


@linux
def test_a_real_send_error_is_reported_and_offload_stays_on() -> None:
    sock = Recorder(sendmsg_error=errno.ECONNREFUSED)
    writer = DatagramWriter(sock)  # type: ignore[arg-type]
    errors: list = []
    writer.send([(raw, ("127.0.0.1", 9)) for raw in window(count=3, size=64)],
                lambda dest, exc: errors.append((dest, exc.errno)))
    assert errors == [(("127.0.0.1", 9), errno.ECONNREFUSED)]
    assert writer.gso


@pytest.mark.parametrize("offload", [True, False])
def test_a_windowed_download_is_the_same_with_or_without_offload(tmp_path, offload: bool) -> None:
    content = os.urandom(1468 * 40 + 11)
    (tmp_path / "fw.bin").write_bytes(content)
    bus = EventBus()
    sub = bus.subscribe()
    runs: list[int] = []
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0, offload=offload), bus) as server:
        request = ClientRequest("127.0.0.1", "fw.bin", port=server.addresses[0][1], offload=offload,
                                options=RequestedOptions(blksize=1468, windowsize=16), busy_poll=0.0)
        transfer = ClientTransfer(request, bus)
        # What each read hands the client's machine: a run (receive_many) or one datagram (receive).
        receive_many, receive = ClientRead.receive_many, ClientRead.receive

        def counting_many(self, datagrams, addr, now):
            runs.append(len(datagrams))
            receive_many(self, datagrams, addr, now)

        def counting(self, datagram, addr, now):
            runs.append(1)
            receive(self, datagram, addr, now)

        ClientRead.receive_many, ClientRead.receive = counting_many, counting  # type: ignore[method-assign]
        try:
            outcome = transfer.run()
        finally:
            ClientRead.receive_many, ClientRead.receive = receive_many, receive  # type: ignore[method-assign]
    assert outcome.ok
    assert outcome.sha256 == hashlib.sha256(content).hexdigest()
    events = sub.drain()
    data_in = [e for e in events if isinstance(e, PacketReceived) and e.session == transfer.session_id
               and e.raw[:2] == b"\x00\x03"]
    assert [e.packet.block for e in data_in] == list(range(1, 42))  # every datagram has its own event
    data_out = [e for e in events if isinstance(e, PacketSent) and e.session != transfer.session_id
                and e.raw[:2] == b"\x00\x03"]
    assert [e.raw for e in data_out] == [e.raw for e in data_in]
    if offload and sys.platform.startswith("linux"):
        assert max(runs) > 1  # windows arrived coalesced
    else:
        assert max(runs) == 1


@linux
def test_a_loopback_capture_of_offloaded_windows_reads_back_datagram_by_datagram(tmp_path) -> None:
    # On loopback tcpdump sees each window as one datagram (the kernel cuts it apart after the capture
    # point); tftpdiag trace takes such windows apart again and says so.
    from tests.support.peers import tcpdump_capture
    from tftpdiag.sessions import SessionTable
    from tftpdiag.trace.load import load_trace

    content = os.urandom(1468 * 50 + 3)
    (tmp_path / "fw.bin").write_bytes(content)
    pcap = tmp_path / "lo.pcap"
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), EventBus()) as server:
        request = ClientRequest("127.0.0.1", "fw.bin", port=server.addresses[0][1],
                                options=RequestedOptions(blksize=1468, windowsize=16), busy_poll=0.0)
        with tcpdump_capture(pcap):
            assert ClientTransfer(request).run().ok
    loaded = load_trace(pcap)
    assert loaded.warning is not None and "captured as one datagram" in loaded.warning
    assert loaded.records < 51  # fewer datagrams in the file than DATA sent
    table = SessionTable()
    table.apply(loaded.events)
    (record,) = list(table)
    assert record.bytes == len(content) and isinstance(record.result, Completed)
    blocks = [e.packet.block for e in loaded.events if isinstance(e, PacketReceived) and e.raw[:2] == b"\x00\x03"]
    assert blocks == list(range(1, 52))
