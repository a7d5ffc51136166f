"""A simulated network with a virtual clock that joins protocol machines, for exact and lossy tests.

Datagrams can be dropped, duplicated, delayed and reordered from a seeded random source, so a failing
run repeats exactly. The server side is a listener that, like tftpd-hpa, starts a new session on a new
port for every request it receives (a repeated request therefore makes a second session, which the
client must turn away with ERROR 5).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.machines import MemorySink, StoringClientRead, StoringServerWrite, _Stores, fed
from tftpdiag.engine.files import store_received
from tftpdiag.protocol.client import ClientWrite
from tftpdiag.protocol.events import Address, Event
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import Data, ProtocolError, Request, decode
from tftpdiag.protocol.server import ServerRead, refuse
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.steady import Steady
from tftpdiag.protocol.timer import Timing

CLIENT: Address = ("10.0.0.1", 40000)
SERVER: Address = ("10.0.0.2", 69)

DropRule = Callable[[bytes, Address, Address], bool]


@dataclass
class Impairment:
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.001
    jitter: float = 0.0
    seed: int = 0
    drop: DropRule | None = None  # exact drops, decided before the random ones


def drop_once(kind: type, blocks: set[int]) -> tuple[DropRule, set[int]]:
    """A drop rule that loses the first copy of each of ``kind`` (Data or Ack) ``blocks``, and the set
    it fills with what it dropped."""
    dropped: set[int] = set()

    def drop(raw: bytes, src: Address, dst: Address) -> bool:
        packet = decode(raw)
        if isinstance(packet, kind) and packet.block in blocks and packet.block not in dropped:
            dropped.add(packet.block)
            return True
        return False

    return drop, dropped


def impatient_client(direction: str, data: bytes, drop: DropRule) -> SimResult:
    """A transfer whose server (rightly) ignores repeated ACKs and waits longer than the client: each
    loss ``drop`` makes costs the client several timeouts (it sends its last packet again at growing
    intervals) before the server resends."""
    return run_transfer(direction, data, impairment=Impairment(drop=drop),
                        client_timing=Timing(initial_timeout=0.05, min_timeout=0.05, retries=10),
                        server_timing=Timing(initial_timeout=1.0, min_timeout=1.0, adaptive=False))


def lost_once_then_resent(blocks: set[int], data: bytes) -> tuple[SimResult, set[int]]:
    """A download whose DATA ``blocks`` are each lost once (see impatient_client); the result and the
    blocks dropped."""
    drop, dropped = drop_once(Data, blocks)
    return impatient_client("read", data, drop), dropped


@dataclass
class SimResult:
    client: Session
    servers: list[Session]
    events: list[Event]
    received: bytes  # what the downloading side wrote
    datagrams: int
    end_time: float
    stored: dict[str, bytes] = field(default_factory=dict)
    steady_turns: int = 0  # (run with steady) the turns taken without the machines

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class SimNet:
    def __init__(self, impairment: Impairment) -> None:
        self.imp = impairment
        self.rng = random.Random(impairment.seed)
        self.queue: list[tuple[float, int, bytes, Address, Address]] = []
        self.seq = 0
        self.datagrams = 0

    def send(self, raw: bytes, src: Address, dst: Address, now: float) -> None:
        imp = self.imp
        if imp.drop is not None and imp.drop(raw, src, dst):
            return
        if self.rng.random() < imp.loss:
            return
        copies = 2 if self.rng.random() < imp.dup else 1
        for _ in range(copies):
            delay = imp.delay + self.rng.random() * imp.jitter
            if self.rng.random() < imp.reorder:
                delay += imp.delay * 3 + 0.002
            self.seq += 1
            heapq.heappush(self.queue, (now + delay, self.seq, raw, src, dst))


def run_transfer(
    direction: str,
    data: bytes,
    *,
    options: RequestedOptions = RequestedOptions(),
    mode: str = "octet",
    impairment: Impairment | None = None,
    client_timing: Timing = Timing(),
    server_timing: Timing = Timing(),
    policy: ServerPolicy = ServerPolicy(),
    filename: str = "image.bin",
    server_files: dict[str, bytes] | None = None,
    limit_time: float = 3600.0,
    dedupe_requests: bool = False,
    runs: bool = False,
    steady: bool = False,
) -> SimResult:
    """Run one download ("read") or upload ("write") to the end and return what happened. With ``runs``
    every machine keeps its DATA and ACK in columns (Session.record_runs) and is asked for its settled
    events after each step, the rest at the end: a session's events then come in its own order, but
    those of different sessions no longer interleave as they happened. With ``steady`` (and so runs) each
    machine takes what it can as steady lock-step turns (protocol/steady.py), as the engine does: a
    steady object made when the machine is asked for one, each datagram from its peer handed to it, its
    answer sent, and the machine settled when it takes no more, before a timer of the machine's is
    looked at, and at the end."""
    runs = runs or steady
    net = SimNet(impairment or Impairment())
    files = dict(server_files if server_files is not None else {filename: data})
    stored: dict[str, bytes] = {}
    events: list[Event] = []
    now = 0.0
    sink = MemorySink()
    client: Session
    if direction == "read":
        client = StoringClientRead(1, filename=filename, server=SERVER, local=CLIENT, sink=sink, now=now,
                                   mode=mode, options=options, timing=client_timing)
    else:
        client = fed(ClientWrite(1, filename=filename, server=SERVER, local=CLIENT, size=len(data), now=now,
                                 mode=mode, options=options, timing=client_timing), data, now)
    if runs:
        client.record_runs()
    machines: dict[Address, Session] = {CLIENT: client}
    servers: list[Session] = []
    server_sinks: dict[int, MemorySink] = {}
    next_port = [50000]
    active_peers: dict[Address, Session] = {}

    steadies: dict[Address, Steady] = {}
    turns = [0]  # steady turns taken, in all

    def settle(machine: Session) -> None:
        open_steady = steadies.pop(machine.local, None)
        if open_steady is not None:
            turns[0] += len(open_steady)
            machine.settle(open_steady)
            if isinstance(machine, _Stores):
                store_received(machine, machine.sink, now)

    def steady_turn(machine: Session, raw: bytes, src: Address) -> bool:
        """True when ``raw`` was a steady turn of ``machine`` (taken, answered)."""
        current = steadies.get(machine.local)
        if current is None:
            current = machine.steady()
            if current is None:
                return False
            steadies[machine.local] = current
        answer = current.take(raw, now) if src == current.peer else None
        if answer is None:
            settle(machine)
            flush(machine)
            return False
        net.send(answer, machine.local, current.peer, now)
        if not current.left:
            settle(machine)
            flush(machine)
        return True

    def flush(machine: Session) -> None:
        for raw, dst in machine.datagrams_to_send():
            net.send(raw, machine.local, dst, now)
        events.extend(machine.settled_events() if runs else machine.events())

    def listener(raw: bytes, src: Address) -> None:
        session_id = len(servers) + 2
        local = (SERVER[0], next_port[0])
        try:
            packet = decode(raw)
        except ProtocolError as exc:
            out, evs = refuse(session_id, raw=raw, packet=None, client=src, local=SERVER, now=now,
                              code=exc.code, message=exc.message, why="malformed")
            for r, d in out:
                net.send(r, SERVER, d, now)
            events.extend(evs)
            return
        if not isinstance(packet, Request):
            return
        if dedupe_requests and src in active_peers and not active_peers[src].closed:
            return
        next_port[0] += 1
        machine: Session
        if packet.is_read:
            content = files.get(packet.filename)
            if content is None:
                out, evs = refuse(session_id, raw=raw, packet=packet, client=src, local=SERVER, now=now,
                                  code=1, message="file not found", why="not-found")
                for r, d in out:
                    net.send(r, SERVER, d, now)
                events.extend(evs)
                return
            machine = fed(ServerRead(session_id, request=packet, raw=raw, client=src, local=local,
                                     file_size=len(content), now=now, policy=policy, timing=server_timing),
                          content, now)
        else:
            buf = MemorySink()
            server_sinks[session_id] = buf
            machine = StoringServerWrite(session_id, request=packet, raw=raw, client=src, local=local, sink=buf,
                                         now=now, policy=policy, timing=server_timing)
        if runs:
            machine.record_runs()
        servers.append(machine)
        machines[local] = machine
        active_peers[src] = machine
        flush(machine)

    flush(client)
    while now < limit_time:
        timers = [(m.next_timeout(), m) for m in machines.values() if m.next_timeout() is not None]
        next_timer = min(timers, key=lambda t: t[0]) if timers else None
        next_packet = net.queue[0][0] if net.queue else None
        if next_timer is None and next_packet is None:
            break
        if next_packet is not None and (next_timer is None or next_packet <= next_timer[0]):
            when, _, raw, src, dst = heapq.heappop(net.queue)
            now = max(now, when)
            net.datagrams += 1
            if dst == SERVER:
                listener(raw, src)
            elif dst in machines:
                machine = machines[dst]
                if steady and steady_turn(machine, raw, src):
                    continue
                machine.receive(raw, src, now)
                flush(machine)
        else:
            assert next_timer is not None
            if steadies:  # a machine's timer is its own again once it has settled
                for machine in machines.values():
                    settle(machine)
                    flush(machine)
                continue
            now = max(now, next_timer[0])
            for deadline, machine in timers:
                if deadline <= now:
                    machine.handle_timeout(now)
                    flush(machine)
    if runs:
        for machine in (client, *servers):
            settle(machine)
            flush(machine)
            events.extend(machine.events())
    for session_id, buf in server_sinks.items():
        stored[str(session_id)] = buf.getvalue()
    return SimResult(client, servers, events, sink.getvalue(), net.datagrams, now, stored, turns[0])
