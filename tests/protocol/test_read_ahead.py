"""The sender's read-ahead: being fed by the caller as it asks (the engine's feed_sender, which lets it
prefetch) never changes what is sent or recorded; waiting for bytes not fed yet; read errors."""

from __future__ import annotations

import io

import pytest

from tests.support.machines import (
    CLIENT,
    SERVER,
    TID,
    ack,
    client_read,
    fed,
    pump,
    sent_packets,
    server_write,
)
from tftpdiag.engine.files import feed_sender
from tftpdiag.protocol.client import ClientWrite
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    PacketSent,
    Reason,
    Side,
)
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import (
    Data,
    ErrorCode,
    Opcode,
    Request,
    encode,
)
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.session import StorageError

# == read-ahead =====================================================================================

@pytest.mark.parametrize("window", [1, 4])
@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_prefetch_never_changes_what_is_sent(direction, mode, window):
    content = (b"line\r\nwith\rbare\nends " * 200)[:4093]  # ends mid-block
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None)

    def run(prefetch: bool):
        # Without prefetch the sender holds the whole file from the start; with it, the engine's
        # feed_sender gives it the file as it asks, after every step.
        if direction == "read":
            client, sink = client_read(options=options, mode=mode)
            req = client.request
            sender = server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0,
                                         file_size=len(content))
        else:
            sender = client = ClientWrite(1, filename="up.bin", server=SERVER, local=CLIENT, now=0.0, mode=mode,
                                          options=options)
            server, sink = server_write(*client.request.options, mode=mode)
        source = io.BytesIO(content)
        if not prefetch:
            fed(sender, content)
        wire: list[tuple[bytes, tuple, tuple]] = []

        def log(raw, src, dst):
            wire.append((raw, src, dst))
            return False

        pump(client, server, on_datagram=log,
             after_step=lambda now: feed_sender(sender, source, now) if prefetch else None)
        assert isinstance(client.result, Completed) and isinstance(server.result, Completed)
        return wire, sink.getvalue()

    plain, plain_bytes = run(False)
    ahead, ahead_bytes = run(True)
    assert ahead == plain
    assert ahead_bytes == plain_bytes == content


@pytest.mark.parametrize("window", [1, 4])
def test_prefetch_never_changes_the_events(window):
    # A prepared block's PacketSent is made while the sender waits; it must still say when it was sent.
    content = bytes(range(256)) * 20 + b"tail"
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None)

    def run(prefetch: bool) -> list:
        client, _ = client_read(options=options)
        req = client.request
        server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0,
                            file_size=len(content))
        source = io.BytesIO(content)
        if not prefetch:
            fed(server, content)
        seen: list = []
        take = server.events
        server.events = lambda: seen.extend(take()) or []  # type: ignore[method-assign]
        pump(client, server, after_step=lambda now: feed_sender(server, source, now) if prefetch else None)
        assert isinstance(server.result, Completed)
        return seen

    plain, ahead = run(False), run(True)
    assert ahead == plain
    assert len({e.time for e in ahead if isinstance(e, PacketSent)}) > 1


class FlakySource:
    """A file read at most ``most`` bytes at a time (like a pipe), whose ``fail_on_call``-th read fails
    with an I/O error."""

    def __init__(self, content: bytes, fail_on_call: int, most: int | None = None) -> None:
        self.buf, self.calls, self.fail_on_call, self.most = io.BytesIO(content), 0, fail_on_call, most

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise StorageError(ErrorCode.NOT_DEFINED, "local I/O error: Input/output error")
        return self.buf.read(size if self.most is None else min(size, self.most))


# The sender asks for 64 KiB at a time. With reads of 1,000 bytes the first 64 KiB take 66 reads, and
# the 70th fails three reads into the next 64 KiB: those 3,000 bytes must not be sent.
@pytest.mark.parametrize(("window", "most", "fail_on_call", "sent"),
                         [(1, None, 1, 0), (1, None, 3, 2 << 16), (4, None, 3, 2 << 16), (1, 1000, 70, 1 << 16)])
def test_read_error_ends_the_transfer_and_never_shifts_bytes(window, most, fail_on_call, sent):
    content = bytes(range(251)) * 1000  # about four reads of 64 KiB
    client, sink = client_read(options=RequestedOptions(windowsize=window if window > 1 else None))
    req = client.request
    server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0)
    source = FlakySource(content, fail_on_call, most)
    pump(client, server, after_step=lambda now: feed_sender(server, source, now))
    assert isinstance(server.result, Failed)
    assert (server.result.reason, server.result.code) == (Reason.LOCAL, 0)
    assert "Input/output error" in server.result.message
    assert isinstance(client.result, Failed) and client.result.raised_by is Side.PEER
    # Every block read before the failure went; nothing after it, and nothing shifted.
    assert sink.getvalue() == content[:sent]


def test_a_sender_waits_for_bytes_not_fed_yet():
    m = ServerRead(2, request=Request(Opcode.RRQ, "f", "octet", ()), raw=b"", client=CLIENT, local=TID, now=0.0)
    assert sent_packets(m) == []  # DATA 1 is due, but nothing was fed
    assert m.prefetch() > 512
    assert m.feed(bytes(100), 0.0) is False and sent_packets(m) == []  # not a whole block, nor the end
    assert m.feed(bytes(412), 0.0) is True and sent_packets(m) == [Data(1, bytes(512))]
    m.receive(ack(1), CLIENT, 0.01)
    assert sent_packets(m) == []
    assert m.feed(b"end", 0.02, eof=True) is True and sent_packets(m) == [Data(2, b"end")]
    assert m.prefetch() == 0  # the file has ended
    m.receive(ack(2), CLIENT, 0.03)
    assert isinstance(m.result, Completed)


def test_prefetch_before_negotiation_cuts_no_block():
    req = Request(Opcode.RRQ, "f", "octet", (("blksize", "1024"),))
    m = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0, file_size=5000)
    assert m.prefetch() > 0  # bytes are welcome at once
    m.feed(bytes(5000), 0.0, eof=True)
    m.prefetch()
    assert not m._ahead  # the block size is not settled until the client answers the OACK
    m.receive(ack(0), CLIENT, 0.01)
    assert sent_packets(m)[-1] == Data(1, bytes(1024))


def test_a_sender_holds_a_read_s_worth_of_blocks_prepared_not_the_file():
    # Blocks are cut a read's worth at a time (64 KiB, or a window if larger), so that answering an ACK
    # only hands the next one out; a caller feeding the whole file at once must not double its memory.
    m = ServerRead(2, request=Request(Opcode.RRQ, "f", "octet", ()), raw=b"", client=CLIENT, local=TID, now=0.0)
    fed(m, bytes(1 << 20))
    assert sent_packets(m) == [Data(1, bytes(512))]
    assert len(m._ahead) == (1 << 16) // 512
    for block in range(1, 2049):
        m.receive(ack(block), CLIENT, block / 1000)
        assert sent_packets(m)[-1].block == block + 1
        assert len(m._ahead) <= (1 << 16) // 512 + 1
    m.receive(ack(2049), CLIENT, 3.0)
    assert isinstance(m.result, Completed) and (m.result.stats.bytes, m.result.stats.blocks) == (1 << 20, 2049)


@pytest.mark.parametrize("direction", ["read", "write"])
def test_both_ends_attributes_fit_cpython_s_shared_keys(direction):
    # CPython 3.11 shares up to 30 attribute names among a class's instances; past that each instance gets
    # a dict of its own and every method call on it costs a lookup (Sender and Receiver keep their own
    # state in slots). The receivers here are the tests' storing subclasses, one attribute (sink) more.
    content = bytes(3000)
    options = RequestedOptions(blksize=1024, windowsize=4)
    if direction == "read":
        client, _ = client_read(options=options)
        req = client.request
        sender = server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0,
                                     file_size=len(content))
    else:
        sender = client = ClientWrite(1, filename="up.bin", server=SERVER, local=CLIENT, now=0.0, options=options)
        server, _ = server_write(*client.request.options)
    source = io.BytesIO(content)
    pump(client, server, after_step=lambda now: feed_sender(sender, source, now))
    assert isinstance(sender.result, Completed)
    for machine in (client, server):
        assert len(vars(machine)) <= 30, (type(machine).__name__, sorted(vars(machine)))
