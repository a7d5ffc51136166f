"""A client transfer asked for runs (what a transfer run apart for the view does: engine/apart.py)
publishes its DATA and ACK as PacketRun columns, every packet in its place, none held back at the end;
under --impair it publishes them one by one, in order with the Impaired events that explain them."""

from __future__ import annotations

import os
import socket

import pytest

from tests.support.findings_kit import wait_for
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.impair import ImpairSpec
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Completed, Event, PacketReceived, PacketRun, PacketSent, TimedOut
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Ack, Data, encode
from tftpdiag.protocol.timer import Timing


def download(tmp_path, options: RequestedOptions, *, runs: bool, impair: ImpairSpec | None = None,
             size: int = 1468 * 300 + 5) -> tuple[ClientTransfer, list[Event]]:
    content = os.urandom(size)
    (tmp_path / "fw.bin").write_bytes(content)
    server_bus, bus = EventBus(), EventBus()
    sub = bus.subscribe()
    with TftpServer(ServerConfig(root=tmp_path, bind=("127.0.0.1",), port=0), server_bus) as server:
        request = ClientRequest("127.0.0.1", "fw.bin", port=server.addresses[0][1], options=options,
                                busy_poll=0.0, impair=impair, output=tmp_path / "out.bin")
        transfer = ClientTransfer(request, bus, runs=runs)
        outcome = transfer.run()
    assert outcome.ok, outcome.result
    assert (tmp_path / "out.bin").read_bytes() == content
    return transfer, sub.drain()


@pytest.mark.parametrize("windowsize", [None, 16])
def test_runs_carry_every_packet_in_order_and_nothing_stays_behind(tmp_path, windowsize) -> None:
    transfer, events = download(tmp_path, RequestedOptions(blksize=1468, windowsize=windowsize), runs=True)
    mine = [e for e in events if getattr(e, "session", None) == transfer.session_id]
    runs = [e for e in mine if type(e) is PacketRun]
    assert sum(map(len, runs)) > 300 and max(map(len, runs)) > 16  # runs of many packets
    expanded = list(expand(mine))
    data_in = [e.packet.block for e in expanded if type(e) is PacketReceived and e.raw[:2] == b"\x00\x03"]
    assert data_in == list(range(1, 302))
    acks_out = [e.packet.block for e in expanded if type(e) is PacketSent and e.raw[:2] == b"\x00\x04"]
    assert acks_out[-1] == 301  # the final ACK too: the run still growing at the end was taken
    last_packet = max(i for i, e in enumerate(expanded) if type(e) in (PacketSent, PacketReceived))
    assert type(expanded[-1]) is Completed and last_packet < len(expanded) - 1


def test_under_impair_packets_go_one_by_one(tmp_path) -> None:
    transfer, events = download(tmp_path, RequestedOptions(blksize=512), runs=True,
                                impair=ImpairSpec(loss=0.0, dup=0.05, seed=3), size=512 * 60)
    assert not any(type(e) is PacketRun for e in events)
    assert sum(1 for e in events if type(e) is PacketReceived) >= 61


def test_a_peer_that_stops_answering_leaves_no_packet_unpublished_while_the_client_waits(tmp_path) -> None:
    # A server that sends five blocks and falls silent: the client waits (its timeout is long here), and
    # the five blocks and their ACKs reach the bus during that wait, not when the wait ends.
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5.0)
    bus = EventBus()
    sub = bus.subscribe()
    request = ClientRequest("127.0.0.1", "fw.bin", port=server.getsockname()[1], busy_poll=0.0,
                            timing=Timing(initial_timeout=30.0, max_timeout=30.0, adaptive=False, retries=1, dally=0.0))
    transfer = ClientTransfer(request, bus, runs=True).start()
    seen: list[Event] = []
    try:
        _, client = server.recvfrom(2048)
        for block in range(1, 6):
            server.sendto(encode(Data(block, bytes(512))), client)
            assert server.recvfrom(2048)[0] == encode(Ack(block))

        def acks_seen() -> bool:
            seen.extend(expand(sub.drain()))
            return sum(1 for e in seen if type(e) is PacketSent and e.raw[:2] == b"\x00\x04") == 5

        wait_for(acks_seen, 10.0, "the five ACKs on the bus")
        assert sum(1 for e in seen if type(e) is PacketReceived and e.raw[:2] == b"\x00\x03") == 5
        assert not any(type(e) is TimedOut for e in seen)  # published in the wait, not after it
    finally:
        transfer.cancel()
        transfer.join(5.0)
        server.close()
