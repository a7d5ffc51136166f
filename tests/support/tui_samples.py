"""Recorded event streams for TUI tests and screenshots: made with the simulated network, so every
run gives the same packets at the same (virtual) times."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import fields, replace

from tests.support.simnet import CLIENT, Impairment, run_transfer
from tftpdiag.protocol.events import Address, Completed, Event
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Opcode, Request, encode
from tftpdiag.protocol.server import refuse
from tftpdiag.protocol.timer import Timing
from tftpdiag.tui.app import RecordedFeed, TftpDiagApp
from tftpdiag.tui.widgets.serve_view import ServerInfo

EPOCH = 1_795_000_000.0  # a fixed wall-clock origin for recorded runs
SERVER_ADDR: Address = ("10.0.0.2", 69)


class PushFeed:
    """A feed the test fills step by step, to watch the screen change state."""

    def __init__(self) -> None:
        self.pending: list[Event] = []

    def drain(self, limit: int | None = None) -> list[Event]:
        events, self.pending = self.pending, []
        return events


def _image(size: int, seed: int = 5) -> bytes:
    return random.Random(seed).randbytes(size)


def _retime(events: list[Event], *, offset: float, session_map: dict[int, int],
            client: Address | None = None) -> list[Event]:
    """Shift times, renumber sessions and (optionally) give the client another address."""
    out = []
    for event in events:
        changes: dict[str, object] = {"time": event.time + offset}
        if event.session in session_map:
            changes["session"] = session_map[event.session]
        if client is not None:
            for name in ("local", "peer"):
                if any(f.name == name for f in fields(event)) and getattr(event, name) == CLIENT:
                    changes[name] = client
        out.append(replace(event, **changes))  # type: ignore[arg-type]
    return out


def probe_success() -> list[Event]:
    """A windowed download over a slightly lossy path: retransmits, a gap, a timeout."""
    result = run_transfer("read", _image(400_000), options=RequestedOptions(blksize=1468, tsize=True, windowsize=8),
                          impairment=Impairment(loss=0.03, seed=2, delay=0.004))
    return _retime([e for e in result.events if e.session == 1], offset=EPOCH, session_map={})


def probe_failure() -> list[Event]:
    """The server has no such file: ERROR 1 in answer to the request."""
    result = run_transfer("read", b"", filename="pxelinux.0", server_files={"PXELINUX.0": b"x"},
                          options=RequestedOptions(blksize=1468, tsize=True))
    return _retime([e for e in result.events if e.session == 1], offset=EPOCH, session_map={})


def probe_timeout() -> list[Event]:
    """Nothing answers: the request is resent with backoff until the client gives up."""
    result = run_transfer("read", b"", options=RequestedOptions(blksize=1468, tsize=True),
                          impairment=Impairment(drop=lambda raw, src, dst: dst == SERVER_ADDR),
                          client_timing=Timing(initial_timeout=1.0, retries=3))
    return _retime([e for e in result.events if e.session == 1], offset=EPOCH, session_map={})


def serve_sessions() -> list[Event]:
    """A server's view of several clients: done, windowed, lossy, one still running, refusals."""
    events: list[Event] = []
    runs = [
        ("read", 300_000, RequestedOptions(blksize=1468, tsize=True), None, ("192.168.7.21", 2070)),
        ("read", 1_200_000, RequestedOptions(blksize=1468, tsize=True, windowsize=16), None, ("192.168.7.22", 49152)),
        ("read", 200_000, RequestedOptions(), Impairment(loss=0.08, seed=4, delay=0.003), ("192.168.7.23", 1024)),
        ("write", 90_000, RequestedOptions(blksize=512, tsize=True), None, ("192.168.7.30", 33001)),
        ("read", 2_000_000, RequestedOptions(blksize=1468, tsize=True), None, ("192.168.7.24", 50999)),
    ]
    for index, (direction, size, options, impairment, client) in enumerate(runs):
        result = run_transfer(direction, _image(size, index), options=options, impairment=impairment,
                              filename="firmware/phone-v2.bin" if direction == "read" else "logs/boot.txt")
        server_events = [e for e in result.events if e.session != 1]
        mapped = _retime(server_events, offset=EPOCH + index * 0.4, session_map={2: 10 + index}, client=client)
        if index == len(runs) - 1:
            # Still running when the screen is drawn: cut before the end.
            cut = next(i for i, e in enumerate(mapped) if isinstance(e, Completed))
            mapped = mapped[: cut // 2]
        events.extend(mapped)
    for sid, name, code, message, why, suggestion, client in (
        (30, "../../etc/shadow", 2, "path leads outside the served directory", "path-escape", None,
         ("192.168.7.66", 6000)),
        (31, "PXELINUX.0", 1, "file not found", "not-found", "pxelinux.0", ("192.168.7.40", 2071)),
    ):
        request = Request(Opcode.RRQ, name, "octet", ())
        _, refused = refuse(sid, raw=encode(request), packet=request, client=client, local=SERVER_ADDR,
                            now=EPOCH + 1.5, code=code, message=message, why=why, suggestion=suggestion)
        events.extend(refused)
    events.sort(key=lambda e: e.time)
    return events


def end_time(events: list[Event]) -> float:
    return max(e.time for e in events)




SIZE = (100, 32)
SERVER_INFO = ServerInfo("/srv/tftp", "0.0.0.0:69, [::]:69", uploads=True)


def probe_app(events: list[Event], label: str = "10.0.0.2:69") -> TftpDiagApp:
    """The probe view over recorded events, its clock frozen at the last one."""
    end = end_time(events)
    return TftpDiagApp(mode="probe", feed=RecordedFeed(events), label=label, clock=lambda: end, tick=None)


def serve_app() -> TftpDiagApp:
    events = serve_sessions()
    end = end_time(events)
    return TftpDiagApp(mode="serve", feed=RecordedFeed(events), server=SERVER_INFO, clock=lambda: end, tick=None)


def trace_events() -> list[Event]:
    """Transfers as `tftpdiag trace` rebuilds them from a capture: a download, a windowed one over a
    lossy path, a refused upload and a request nobody answered."""
    from tftpdiag.protocol.events import PacketReceived, PacketSent
    from tftpdiag.trace.pcap import Datagram
    from tftpdiag.trace.rebuild import rebuild

    runs = [
        run_transfer("read", _image(250_000, 1), options=RequestedOptions(blksize=1468, tsize=True)),
        run_transfer("read", _image(500_000, 2), options=RequestedOptions(blksize=1468, windowsize=16),
                     impairment=Impairment(loss=0.04, seed=9, delay=0.003)),
        run_transfer("read", b"", filename="config/phone.cfg", server_files={}),
        run_transfer("read", b"", impairment=Impairment(drop=lambda raw, src, dst: dst == SERVER_ADDR),
                     client_timing=Timing(initial_timeout=1.0, retries=2)),
    ]
    datagrams = []
    for index, result in enumerate(runs):
        client = ("192.168.7.50", 3000 + index)
        for event in _retime([e for e in result.events if e.session == 1], offset=EPOCH + index * 2.0,
                             session_map={}, client=client):
            if isinstance(event, PacketSent):
                datagrams.append(Datagram(event.time, event.local, event.peer, event.raw, len(event.raw)))
            elif isinstance(event, PacketReceived):
                datagrams.append(Datagram(event.time, event.peer, event.local, event.raw, len(event.raw)))
    datagrams.sort(key=lambda d: d.time)
    return rebuild(datagrams)


def trace_app() -> TftpDiagApp:
    events = trace_events()
    end = end_time(events)
    info = ServerInfo("boot-capture.pcap", "4 transfers", False, kind="trace")
    return TftpDiagApp(mode="trace", feed=RecordedFeed(events), server=info, clock=lambda: end, tick=None)


# -- synthetic, for size: a session of many packets, a capture of many sessions ----------------------

def big_session(blocks: int, session: int = 1, blksize: int = 1468) -> list[Event]:
    return list(iter_big_session(blocks, session, blksize))


def iter_big_session(blocks: int, session: int = 1, blksize: int = 1468) -> Iterator[Event]:
    """A lock-step download of ``blocks`` full blocks and a short last one, built directly (no
    simulated network, so a million packets take seconds, not minutes): RRQ, OACK, ACK 0, then DATA
    and ACK per block, Progress every 0.1 s of virtual time, Completed."""
    from tftpdiag.protocol.events import PacketReceived, PacketSent, Progress, Role, TransferStarted, TransferStats
    from tftpdiag.protocol.packets import Ack, Data, OAck

    local, server, tid = ("10.0.0.9", 40000), SERVER_ADDR, ("10.0.0.2", 50000)
    options = (("blksize", str(blksize)), ("tsize", "0"))
    size = blocks * blksize + 100
    yield TransferStarted(session, EPOCH, Role.CLIENT_READ, "firmware/big.bin", "octet", local, server, options)
    request = Request(Opcode.RRQ, "firmware/big.bin", "octet", options)
    yield PacketSent(session, EPOCH, local, server, encode(request), request)
    oack = OAck((("blksize", str(blksize)), ("tsize", str(size))))
    yield PacketReceived(session, EPOCH + 0.001, local, tid, encode(oack), oack)
    yield PacketSent(session, EPOCH + 0.001, local, tid, encode(Ack(0)), Ack(0))
    payload = bytes(blksize)
    raw_data, raw_ack = b"\x00\x03\x00\x00" + payload, b"\x00\x04\x00\x00"
    step = 0.00005  # 20,000 blocks a second
    t = EPOCH + 0.002
    next_progress = t + 0.1
    stats = TransferStats(0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0)
    for block in range(1, blocks + 2):
        last = block == blocks + 1
        number = block & 0xFFFF
        data = Data(number, payload if not last else payload[:100])
        yield PacketReceived(session, t, local, tid, raw_data if not last else raw_data[:104], data)
        yield PacketSent(session, t, local, tid, raw_ack, Ack(number))
        if t >= next_progress or last:
            done = min(block * blksize, size)
            stats = TransferStats(done, t - EPOCH, block, block + 1, block + 1, 0, 0, 0, 0, 0)
            yield Progress(session, t, done, size, stats)
            next_progress = t + 0.1
        t += step
    yield Completed(session, t, stats)


def many_sessions(count: int) -> list[Event]:
    """``count`` finished server-side transfers from as many clients, as a capture of a busy boot
    server would give (every tenth one failed)."""
    from tftpdiag.protocol.events import Failed, Reason, Role, Side, TransferStarted, TransferStats

    events: list[Event] = []
    for i in range(count):
        t = EPOCH + i * 0.01
        client = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000)
        name = f"images/firmware-{i:06d}.bin"
        events.append(TransferStarted(i + 1, t, Role.SERVER_READ, name, "octet", SERVER_ADDR, client, ()))
        stats = TransferStats(512 * (i % 50 + 1), 0.005, i % 50 + 1, i % 50 + 1, i % 50 + 1, 0, 0, 0, 0, 0)
        if i % 10 == 9:
            events.append(Failed(i + 1, t + 0.005, Reason.TIMEOUT, Side.LOCAL, None, "no answer", stats))
        else:
            events.append(Completed(i + 1, t + 0.005, stats))
    return events
