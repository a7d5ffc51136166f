"""The packet events are made complete and never changed: a machine assigns each field once, when the
event is built (records are frozen for the type checker, not at run time: see tftpdiag/records.py)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tests.support.machines import CLIENT, TID, client_read, client_write, fed, pump, server_write
from tftpdiag.protocol.events import Completed, PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import encode
from tftpdiag.protocol.server import ServerRead


@pytest.mark.parametrize("direction", ["read", "write"])
@pytest.mark.parametrize("window", [1, 4])
def test_no_packet_event_field_is_assigned_twice(monkeypatch, direction, window):
    assigned: Counter[tuple[int, str]] = Counter()
    made: list[object] = []

    def spy(cls):
        plain = cls.__setattr__

        def setattr_(self, name, value):
            if not assigned[(id(self), "seen")]:
                assigned[(id(self), "seen")] = 1
                made.append(self)  # kept alive, so no id is reused
            assigned[(id(self), name)] += 1
            plain(self, name, value)
        monkeypatch.setattr(cls, "__setattr__", setattr_)

    spy(PacketSent)
    spy(PacketReceived)
    content = bytes(range(256)) * 9 + b"end"
    options = RequestedOptions(blksize=512, windowsize=window if window > 1 else None)
    if direction == "read":
        client, _ = client_read(options=options)
        req = client.request
        server = ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=0.0,
                            file_size=len(content))
        sender = fed(server, content)
    else:
        client = client_write(content, options=options)
        server, _ = server_write(*client.request.options)
        sender = client
    pump(client, server, after_step=lambda now: sender.prefetch())
    assert isinstance(client.result, Completed) and isinstance(server.result, Completed)
    fields = {f.name for f in dataclasses.fields(PacketReceived)} | {f.name for f in dataclasses.fields(PacketSent)}
    twice = [(key, n) for key, n in assigned.items() if key[1] in fields and n > 1]
    assert len(made) > 10 and not twice
