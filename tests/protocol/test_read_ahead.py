"""The sender's read-ahead: prefetch never changes what is sent or recorded; read errors."""

from __future__ import annotations

import io

import pytest

from tests.support.machines import (
    CLIENT,
    TID,
    ack,
    client_read,
    client_write,
    pump,
    sent_packets,
    server_write,
)
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
        if direction == "read":
            client, sink = client_read(options=options, mode=mode)
            req = client.request
            server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                                source=io.BytesIO(content), now=0.0, file_size=len(content))
            sender = server
        else:
            client = client_write(content, options=options, mode=mode)
            server, sink = server_write(*client.request.options, mode=mode)
            sender = client
        wire: list[tuple[bytes, tuple, tuple]] = []

        def log(raw, src, dst):
            wire.append((raw, src, dst))
            return False

        pump(client, server, on_datagram=log, after_step=sender.prefetch if prefetch else None)
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
        server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                            source=io.BytesIO(content), now=0.0, file_size=len(content))
        seen: list = []
        take = server.events
        server.events = lambda: seen.extend(take()) or []  # type: ignore[method-assign]
        pump(client, server, after_step=server.prefetch if prefetch else None)
        assert isinstance(server.result, Completed)
        return seen

    plain, ahead = run(False), run(True)
    assert ahead == plain
    assert len({e.time for e in ahead if isinstance(e, PacketSent)}) > 1


class FlakySource:
    """Short reads (like a pipe), and one I/O error right after a short read."""

    def __init__(self, content: bytes, fail_on_call: int) -> None:
        self.buf, self.calls, self.fail_on_call = io.BytesIO(content), 0, fail_on_call

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise StorageError(ErrorCode.NOT_DEFINED, "local I/O error: Input/output error")
        return self.buf.read(min(size, 300))


@pytest.mark.parametrize("prefetch", [False, True])
def test_read_error_ends_the_transfer_and_never_shifts_bytes(prefetch):
    content = bytes(range(256)) * 8
    client, sink = client_read()
    req = client.request
    server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID,
                        source=FlakySource(content, fail_on_call=4), now=0.0)
    pump(client, server, after_step=server.prefetch if prefetch else None)
    assert isinstance(server.result, Failed)
    assert (server.result.reason, server.result.code) == (Reason.LOCAL, 0)
    assert "Input/output error" in server.result.message
    assert isinstance(client.result, Failed) and client.result.raised_by is Side.PEER
    received = sink.getvalue()
    assert content.startswith(received) and len(received) < len(content)


def test_prefetch_before_negotiation_reads_nothing():
    source = io.BytesIO(bytes(5000))
    req = Request(Opcode.RRQ, "f", "octet", (("blksize", "1024"),))
    m = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, source=source, now=0.0,
                   file_size=5000)
    m.prefetch()
    assert source.tell() == 0  # the block size is not settled until the client answers the OACK
    m.receive(ack(0), CLIENT, 0.01)
    assert sent_packets(m)[-1] == Data(1, bytes(1024))
