"""Block numbers past 65535 on real transfers, both wraps, both directions."""

from __future__ import annotations

import pytest

from tests.support.machines import (
    CLIENT,
    TID,
    client_read,
    client_write,
    fed,
    pump,
    server_write,
)
from tftpdiag.protocol.events import (
    Completed,
)
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import (
    encode,
)
from tftpdiag.protocol.server import ServerRead
from tftpdiag.protocol.timer import Timing

# == block-number rollover ==========================================================================

ROLL_BLOCKS = 65_540


def rollover_pair(timing: Timing, *, direction: str, window: int = 1):
    content = bytes((i * 7) & 0xFF for i in range(ROLL_BLOCKS * 8 + 3))
    options = RequestedOptions(blksize=8, windowsize=window if window > 1 else None)
    if direction == "read":
        client, sink = client_read(options=options)
        req = client.request
        server = fed(ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0,
                                file_size=len(content), timing=timing), content)
        receiver_sink = sink
    else:
        client = client_write(content, options=options, timing=timing)
        server, receiver_sink = server_write(*client.request.options)
    return content, client, server, receiver_sink


@pytest.mark.parametrize(("rollover", "direction"), [(0, "read"), (1, "write")])
def test_rollover(rollover, direction):
    content, client, server, sink = rollover_pair(Timing(rollover=rollover), direction=direction)
    seen: list[int] = []

    def watch(raw, src, dst):
        if raw[:2] == b"\x00\x03":
            seen.append(int.from_bytes(raw[2:4], "big"))
        return False

    pump(client, server, on_datagram=watch)
    total = ROLL_BLOCKS + 1
    if rollover == 0:
        expected = [n % 65536 for n in range(1, total + 1)]
    else:
        expected = [n if n <= 65535 else (n - 1) % 65535 + 1 for n in range(1, total + 1)]
    assert seen == expected
    assert seen[65533:] == ([65534, 65535, 0, 1, 2, 3, 4, 5] if rollover == 0 else [65534, 65535, 1, 2, 3, 4, 5, 6])
    assert sink.getvalue() == content
    assert isinstance(client.result, Completed) and isinstance(server.result, Completed)
    assert client.result.stats.blocks == server.result.stats.blocks == ROLL_BLOCKS + 1
