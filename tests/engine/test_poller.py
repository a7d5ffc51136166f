"""engine/poller.py, the one poller of the server, the storm and the capture: the data of each ready
descriptor, none for an unregistered one, and a timeout that returns empty."""

from __future__ import annotations

import socket
import time

from tftpdiag.engine.poller import Poller


def test_poll_reports_the_data_of_ready_sockets_only() -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Poller[str]() as poller:
        poller.register(socks[0], "a")
        poller.register(socks[1].fileno(), "b")  # a descriptor number serves as well (the capture's ring)
        poller.register(socks[2], "c")
        assert len(poller) == 3
        started = time.monotonic()
        assert poller.poll(0.05) == []  # nothing ready: empty after the timeout
        assert time.monotonic() - started >= 0.04
        sender.sendto(b"x", socks[1].getsockname())
        sender.sendto(b"y", socks[2].getsockname())
        assert sorted(poller.poll(1.0)) == ["b", "c"]
        assert sorted(poller.poll(0)) == ["b", "c"]  # level-triggered: still unread, still ready
        socks[1].recv(10)
        poller.unregister(socks[2])
        poller.unregister(socks[2])  # twice is harmless (a session ended twice over)
        assert poller.poll(0) == [] and len(poller) == 2
    for sock in [*socks, sender]:
        sock.close()
