"""A receiving machine stops a transfer that runs past the size the sender announced (tsize) or past
the receiver's own limit, with an ERROR to the peer, and never hands the excess to its sink."""

from __future__ import annotations

import io

import pytest

from tests.support.machines import (
    CLIENT,
    SERVER,
    TID,
    StoringClientRead,
    data,
    oack,
    sent_packets,
    server_write,
)
from tftpdiag.protocol.client import ClientRead
from tftpdiag.protocol.events import Completed, Failed, Reason, Side
from tftpdiag.protocol.netascii import encode as netascii_encode
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import Ack, Error
from tftpdiag.protocol.timer import Timing

BLOCK = bytes(range(256)) * 2  # 512 bytes


def reader(*, mode: str = "octet", max_bytes: int | None = None, windowsize: int | None = None,
           tsize: bool = True, enough: int | None = None) -> tuple[ClientRead, io.BytesIO]:
    machine = StoringClientRead(1, filename="boot.img", server=SERVER, local=CLIENT, now=0.0, mode=mode,
                                options=RequestedOptions(tsize=tsize, windowsize=windowsize), timing=Timing(),
                                max_bytes=max_bytes, enough=enough)
    machine.datagrams_to_send()
    return machine, machine.sink


def result(machine: ClientRead) -> Completed | Failed:
    ends = [e for e in machine.events() if isinstance(e, (Completed, Failed))]
    assert len(ends) == 1, ends
    return ends[0]


def granted(machine: ClientRead, *options: tuple[str, str]) -> None:
    machine.receive(oack(*options), TID, 0.01)
    assert sent_packets(machine) == [Ack(0)]


def test_data_past_the_announced_tsize_fails_with_error_3():
    m, sink = reader()
    granted(m, ("tsize", "1000"))
    m.receive(data(1, BLOCK), TID, 0.02)
    assert sent_packets(m) == [Ack(1)]
    m.receive(data(2, BLOCK), TID, 0.03)  # 1024 bytes: past the 1000 announced
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3
    assert "announced tsize of 1000 bytes" in out[0].message
    failed = result(m)
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.PROTOCOL, Side.LOCAL, 3)
    assert failed.stats.bytes == 1024
    assert sink.getvalue() == BLOCK, "the block past the announced size was handed to the sink"
    assert m.closed


def test_a_window_past_the_announced_tsize_stops_at_the_first_block_over_it():
    # Several blocks in one run take the receiver's fast path: it must stop there too.
    m, sink = reader(windowsize=8)
    granted(m, ("tsize", "1100"), ("windowsize", "8"))
    m.receive_many([data(n, BLOCK) for n in range(1, 9)], TID, 0.02)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3
    failed = result(m)
    assert isinstance(failed, Failed) and failed.stats.bytes == 3 * 512
    assert sink.getvalue() == BLOCK * 2


@pytest.mark.parametrize("size", [1000, 1024, 0, 16 * 512])
def test_data_exactly_the_announced_tsize_completes(size: int):
    m, sink = reader(windowsize=4)
    granted(m, ("tsize", str(size)), ("windowsize", "4"))
    payload = (BLOCK * 17)[:size]
    blocks = [payload[i:i + 512] for i in range(0, size + 1, 512)]
    m.receive_many([data(n, b) for n, b in enumerate(blocks, start=1)], TID, 0.02)
    assert isinstance(result(m), Completed)
    assert sink.getvalue() == payload


def test_netascii_is_not_held_to_the_announced_size():
    # Servers announce the file's size, the wire's, or 0 (atftpd) in netascii, then send the file.
    text = b"line\n" * 300
    wire = netascii_encode(text)
    m, sink = reader(mode="netascii")
    granted(m, ("tsize", "0"))
    blocks = [wire[i:i + 512] for i in range(0, len(wire) + 1, 512)]
    for n, block in enumerate(blocks, start=1):
        m.receive(data(n, block), TID, 0.01 * n)
    assert isinstance(result(m), Completed)
    assert sink.getvalue() == text


def test_netascii_still_has_the_limit():
    m, _ = reader(mode="netascii", max_bytes=600)
    granted(m, ("tsize", "0"))
    m.receive(data(1, b"a" * 512), TID, 0.02)
    m.receive(data(2, b"a" * 100), TID, 0.03)  # 612 > 600
    failed = result(m)
    assert isinstance(failed, Failed) and failed.code == 3
    assert failed.message == "download exceeds the limit of 600 bytes"


def test_download_over_the_limit_fails_with_error_3():
    m, sink = reader(max_bytes=1000, tsize=False)
    m.receive(data(1, BLOCK), TID, 0.02)
    assert sent_packets(m) == [Ack(1)]
    m.receive(data(2, BLOCK), TID, 0.03)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3
    failed = result(m)
    assert isinstance(failed, Failed)
    assert (failed.reason, failed.raised_by, failed.code) == (Reason.LOCAL, Side.LOCAL, 3)
    assert failed.message == "download exceeds the limit of 1000 bytes"
    assert sink.getvalue() == BLOCK


def test_a_window_over_the_limit_stops_in_the_fast_path_too():
    m, sink = reader(max_bytes=2000, windowsize=8)
    granted(m, ("windowsize", "8"))
    m.receive_many([data(n, BLOCK) for n in range(1, 9)], TID, 0.02)
    failed = result(m)
    assert isinstance(failed, Failed) and failed.stats.bytes == 4 * 512 and "limit of 2000" in failed.message
    assert sink.getvalue() == BLOCK * 3


def test_download_exactly_at_the_limit_completes():
    m, sink = reader(max_bytes=1024, tsize=False)
    for n, payload in enumerate([BLOCK, BLOCK, b""], start=1):
        m.receive(data(n, payload), TID, 0.01 * n)
    assert isinstance(result(m), Completed)
    assert sink.getvalue() == BLOCK * 2


def test_an_announced_size_over_the_limit_is_refused_at_the_oack():
    m, sink = reader(max_bytes=4000)
    m.receive(oack(("tsize", "5000")), TID, 0.01)
    out = sent_packets(m)
    assert len(out) == 1 and isinstance(out[0], Error) and out[0].code == 3, out
    failed = result(m)
    assert isinstance(failed, Failed) and failed.reason is Reason.LOCAL
    assert failed.message == "download of 5000 bytes (the announced tsize) exceeds the limit of 4000 bytes"
    assert sink.getvalue() == b""


def test_the_limit_follows_a_larger_negotiated_block_size():
    # The fast path's bound is counted in blocks: it must be recounted when the block size grows.
    m, sink = server_write(("blksize", "1468"), ("windowsize", "4"), policy=ServerPolicy(max_upload=2000))
    m.datagrams_to_send()
    big = bytes(1468)
    m.receive_many([data(n, big) for n in range(1, 5)], CLIENT, 0.02)
    failed = result(m)  # type: ignore[arg-type]
    assert isinstance(failed, Failed) and failed.stats.bytes == 2 * 1468
    assert sink.getvalue() == big


def test_server_upload_limit_holds_in_a_window():
    m, sink = server_write(("windowsize", "8"), policy=ServerPolicy(max_upload=1500))
    m.datagrams_to_send()
    m.receive_many([data(n, BLOCK) for n in range(1, 9)], CLIENT, 0.01)
    failed = result(m)  # type: ignore[arg-type]
    assert isinstance(failed, Failed) and failed.message == "upload exceeds the limit of 1500 bytes"
    assert sink.getvalue() == BLOCK * 2


@pytest.mark.parametrize("windowsize", [None, 8])
def test_a_download_past_enough_is_cancelled_at_the_first_block_over_it(windowsize: int | None):
    """``enough`` (the option sweep's cap): not a failure but a stop, ERROR 0 to the server, as each
    block arrives, in a window's run too."""
    m, sink = reader(enough=1100, windowsize=windowsize, tsize=False)
    if windowsize:
        granted(m, ("windowsize", str(windowsize)))
        m.receive_many([data(n, BLOCK) for n in range(1, 9)], TID, 0.02)
    else:
        for n in range(1, 4):
            m.receive(data(n, BLOCK), TID, 0.01 * n)
    out = sent_packets(m)
    assert isinstance(out[-1], Error) and out[-1].code == 0 and "enough" in out[-1].message, out
    stopped = result(m)
    assert isinstance(stopped, Failed) and (stopped.reason, stopped.raised_by) == (Reason.CANCELLED, Side.LOCAL)
    assert stopped.stats.bytes == 3 * 512 and m.closed


def test_a_download_that_ends_at_enough_completes():
    m, sink = reader(enough=1024, tsize=False)
    for n, payload in enumerate([BLOCK, BLOCK, b""], start=1):
        m.receive(data(n, payload), TID, 0.01 * n)
    assert isinstance(result(m), Completed)
