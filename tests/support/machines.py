"""Small helpers to drive one protocol machine by hand: build it, feed it packets, read what it did."""

from __future__ import annotations

import io
import typing

from tftpdiag.engine.files import store_received
from tftpdiag.protocol import events as ev
from tftpdiag.protocol.client import ClientRead, ClientWrite
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    OAck,
    Opcode,
    Packet,
    Request,
    decode,
    encode,
)
from tftpdiag.protocol.receiver import Receiver
from tftpdiag.protocol.server import ServerRead, ServerWrite
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.timer import Timing

CLIENT: ev.Address = ("10.0.0.1", 40000)
SERVER: ev.Address = ("10.0.0.2", 69)  # where the request goes
TID: ev.Address = ("10.0.0.2", 50001)  # the server's transfer port
STRAY: ev.Address = ("10.0.0.2", 50002)  # same host, another port

EVENT_TYPES: tuple[type, ...] = typing.get_args(ev.Event)


def sent(machine: Session) -> list[tuple[Packet, ev.Address]]:
    """Decode and drain what the machine wants to send."""
    return [(decode(raw), addr) for raw, addr in machine.datagrams_to_send()]


def sent_packets(machine: Session) -> list[Packet]:
    return [packet for packet, _ in sent(machine)]


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def data(block: int, payload: bytes) -> bytes:
    return encode(Data(block, payload))


def ack(block: int) -> bytes:
    return encode(Ack(block))


def oack(*options: tuple[str, str]) -> bytes:
    return encode(OAck(tuple(options)))


class MemorySink(io.BytesIO):
    """Where a test keeps what a receiver took (getvalue()): nothing to commit."""

    def store(self, chunks: list[bytes]) -> None:
        self.writelines(chunks)

    def commit(self) -> None:
        pass


class _Stores(Receiver):
    """A receiver with the caller's half the engine runs after each datagram (engine/files.py): what it
    took goes to ``self.sink``, and the last block is stored before the final ACK is let go."""

    sink: MemorySink

    def receive(self, datagram: bytes, addr: ev.Address, now: float) -> None:
        super().receive(datagram, addr, now)
        store_received(self, self.sink, now)

    def receive_many(self, datagrams: typing.Sequence[bytes], addr: ev.Address, now: float) -> None:
        super().receive_many(datagrams, addr, now)
        store_received(self, self.sink, now)


class StoringClientRead(_Stores, ClientRead):
    def __init__(self, *args: typing.Any, sink: MemorySink | None = None, **kwargs: typing.Any) -> None:
        self.sink = MemorySink() if sink is None else sink
        super().__init__(*args, **kwargs)


class StoringServerWrite(_Stores, ServerWrite):
    def __init__(self, *args: typing.Any, sink: MemorySink | None = None, **kwargs: typing.Any) -> None:
        self.sink = MemorySink() if sink is None else sink
        super().__init__(*args, **kwargs)


def fed(machine: ClientWrite | ServerRead, content: bytes, now: float = 0.0) -> typing.Any:
    """A sender given the whole file at once, as a caller holding it in memory can."""
    machine.feed(content, now, eof=True)
    return machine


def client_read(now: float = 0.0, *, options: RequestedOptions = RequestedOptions(), mode: str = "octet",
                timing: Timing = Timing(), filename: str = "boot.img",
                server: ev.Address = SERVER) -> tuple[ClientRead, io.BytesIO]:
    machine = StoringClientRead(1, filename=filename, server=server, local=CLIENT, now=now, mode=mode,
                                options=options, timing=timing)
    return machine, machine.sink


def client_write(payload: bytes, now: float = 0.0, *, options: RequestedOptions = RequestedOptions(),
                 mode: str = "octet", timing: Timing = Timing(), size: int | None = None) -> ClientWrite:
    return fed(ClientWrite(1, filename="up.bin", server=SERVER, local=CLIENT, now=now, size=size, mode=mode,
                           options=options, timing=timing), payload, now)


def request(is_read: bool, *options: tuple[str, str], mode: str = "octet", filename: str = "boot.img") -> Request:
    return Request(Opcode.RRQ if is_read else Opcode.WRQ, filename, mode, tuple(options))


def server_read(content: bytes, *options: tuple[str, str], now: float = 0.0, mode: str = "octet",
                policy: ServerPolicy = ServerPolicy(), timing: Timing = Timing()) -> ServerRead:
    req = request(True, *options, mode=mode)
    return fed(ServerRead(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=now,
                          file_size=len(content), policy=policy, timing=timing), content, now)


def server_write(*options: tuple[str, str], now: float = 0.0, mode: str = "octet",
                 policy: ServerPolicy = ServerPolicy(), timing: Timing = Timing()) -> tuple[ServerWrite, io.BytesIO]:
    req = request(False, *options, mode=mode)
    machine = StoringServerWrite(2, request=req, raw=encode(req), client=CLIENT, local=TID, now=now,
                                 policy=policy, timing=timing)
    return machine, machine.sink


def pump(a: Session, b: Session, now: float = 0.0, step: float = 0.001, limit: int = 10_000_000,
         on_datagram: typing.Callable[[bytes, ev.Address, ev.Address], bool] | None = None,
         after_step: typing.Callable[[float], object] | None = None) -> float:
    """Join two machines by a wire with a fixed delay until neither has anything to do.

    ``a`` is the client, whose first datagram goes to the server's request port: the server machine
    ``b`` is already built from that request, so datagrams to SERVER are dropped here.
    ``on_datagram(raw, src, dst)`` sees every datagram; when it returns True the datagram is lost.
    ``after_step(now)`` runs after each step, while the machines wait (as the engine feeds a sender
    then); what it makes the machines send joins the wire.
    """
    queue: list[tuple[bytes, ev.Address, Session]] = []
    for raw, dst in a.datagrams_to_send():
        if dst != SERVER:
            queue.append((raw, a.local, b))
    for raw, _ in b.datagrams_to_send():
        queue.append((raw, b.local, a))
    a.events(), b.events()
    steps = 0
    while steps < limit:
        steps += 1
        if after_step is not None:
            after_step(now)
            for m, other in ((a, b), (b, a)):
                for out_raw, _ in m.datagrams_to_send():
                    queue.append((out_raw, m.local, other))
        if queue:
            now += step
            batch, queue = queue, []
            for raw, src, dst_machine in batch:
                if on_datagram is not None and on_datagram(raw, src, dst_machine.local):
                    continue
                dst_machine.receive(raw, src, now)
                other = a if dst_machine is b else b
                for out_raw, _ in dst_machine.datagrams_to_send():
                    queue.append((out_raw, dst_machine.local, other))
            a.events(), b.events()
            continue
        deadlines = [m.next_timeout() for m in (a, b) if m.next_timeout() is not None]
        if not deadlines:
            return now
        now = max(now, min(deadlines))
        for m, other in ((a, b), (b, a)):
            m.handle_timeout(now)
            for out_raw, _ in m.datagrams_to_send():
                queue.append((out_raw, m.local, other))
            m.events()
    raise AssertionError("pump did not settle")


# -- shared by the rule tests ------------------------------------------------------------------------

BLOCK = bytes(range(256)) * 2  # one full 512-byte block


def only_result(events):
    results = [e for e in events if isinstance(e, (ev.Completed, ev.Failed))]
    assert len(results) == 1, results
    return results[0]


def notes_sent(events):
    return [(e.packet, e.note) for e in of(events, ev.PacketSent)]


def notes_received(events):
    return [(e.packet, e.note) for e in of(events, ev.PacketReceived)]


def locked_client_read(options=RequestedOptions(), timing=Timing(), **oack_options):
    """A ClientRead that has had the server's first DATA 1 (no options) or OACK, and answered."""
    m, sink = client_read(options=options, timing=timing)
    m.datagrams_to_send(), m.events()
    if oack_options:
        m.receive(oack(*oack_options.items()), TID, 0.01)
    else:
        m.receive(data(1, BLOCK), TID, 0.01)
    m.datagrams_to_send(), m.events()
    return m, sink
