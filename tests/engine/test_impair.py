"""Fault injection (--impair): the spec parser, repeatable fates, byte-exact transfers through a bad
network with our client, our server and real peers, an MTU that stalls large blocks, and delays that
do not hold up other sessions."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.peers import wait_until
from tftpdiag.engine.apart_wire import expand
from tftpdiag.engine.bus import EventBus
from tftpdiag.engine.client import ClientRequest, ClientTransfer
from tftpdiag.engine.impair import DropRule, Impairer, ImpairError, parse_impair
from tftpdiag.engine.server import ServerConfig, TftpServer
from tftpdiag.protocol.events import Completed, Impaired, PacketReceived, PacketSent
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.protocol.packets import Data, encode_ack, encode_data
from tftpdiag.protocol.timer import Timing
from tftpdiag.trace.pcap import read_datagrams
from tftpdiag.trace.recorder import TraceRecorder

BAD = "loss=20%,dup=5%,reorder=5%"
FAST = Timing(initial_timeout=0.2, min_timeout=0.05, retries=30, dally=0.0)
# The server lingers after its final ACK longer than the client's backed-off retransmissions of its
# last DATA take, so a lost final ACK is answered again rather than with ICMP port unreachable.
SERVER_TIMING = Timing(initial_timeout=0.2, min_timeout=0.05, retries=30, dally=8.0)


# -- the spec ------------------------------------------------------------------------------------------

def test_full_spec_parses() -> None:
    spec = parse_impair("loss=5%,delay=80ms,jitter=20ms,dup=1%,reorder=2%,mtu=1400,drop=data:1-3,"
                        "drop=ack:7x*,direction=out,seed=42")
    assert (spec.loss, spec.delay, spec.jitter, spec.dup, spec.reorder) == (0.05, 0.08, 0.02, 0.01, 0.02)
    assert spec.mtu == 1400 and spec.direction == "out" and spec.seed == 42
    assert spec.drops == (DropRule("data", 1, 3, 1), DropRule("ack", 7, None, None))
    assert parse_impair(str(spec)) == spec  # the spec shown in the TUI header reads back the same


@pytest.mark.parametrize("text, part", [
    ("loss=120%", "loss=120%"),
    ("loss=lots", "loss=lots"),
    ("delay=fast", "delay=fast"),
    ("mtu=20", "mtu=20"),
    ("drop=data:9-3", "drop=data:9-3"),
    ("drop=oack:3", "only data and ack have block numbers"),
    ("drop=frob", "drop=frob"),
    ("direction=sideways", "direction=sideways"),
    ("colour=red", "unknown impairment 'colour'"),
    ("loss", "expected KEY=VALUE"),
    ("", "empty"),
])
def test_bad_spec_names_the_wrong_part(text: str, part: str) -> None:
    with pytest.raises(ImpairError, match=part.replace("(", r"\(")):
        parse_impair(text)


def test_same_seed_gives_the_same_fates() -> None:
    def fates(seed: int) -> list[tuple[str, ...]]:
        impairer = Impairer(parse_impair(f"{BAD},delay=10ms,jitter=5ms,seed={seed}"))
        out = []
        for block in range(1, 400):
            times, events = impairer.fate(encode_data(block, b"x" * 512), ("127.0.0.1", 9), 0.0, "out", 1)
            out.append(tuple(e.action for e in events) + tuple(f"{t:.6f}" for t in times))
        return out

    assert fates(7) == fates(7)
    assert fates(7) != fates(8)
    actions = Counter(a for fate in fates(7) for a in fate if not a[0].isdigit())
    assert 0.1 < actions["dropped"] / 399 < 0.3 and actions["duplicated"] and actions["reordered"]


def test_drop_rules_and_mtu() -> None:
    impairer = Impairer(parse_impair("drop=data:3,drop=ack:5x2,mtu=576"))
    peer = ("127.0.0.1", 9)
    assert impairer.fate(encode_data(3, b"a"), peer, 0, "in", 1)[0] == []  # first DATA 3 dropped
    assert impairer.fate(encode_data(3, b"a"), peer, 0, "in", 1)[0] == [0]  # its retransmission passes
    assert [impairer.fate(encode_ack(5), peer, 0, "out", 1)[0] for _ in range(3)] == [[], [], [0]]
    assert impairer.fate(encode_data(9, bytes(544)), peer, 0, "out", 1)[0] == [0]  # 20 + 8 + 4 + 544 = 576
    times, events = impairer.fate(encode_data(9, bytes(545)), peer, 0, "out", 1)
    assert times == [] and "exceeds mtu=576" in events[0].why
    direction_out = Impairer(parse_impair("loss=100%,direction=out"))
    assert direction_out.fate(encode_ack(1), peer, 0, "in", 1)[0] == [0]


# -- through the engine ----------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path: Path) -> Path:
    served = tmp_path / "root"
    served.mkdir()
    (served / "image.bin").write_bytes(os.urandom(60_000))
    # Peer clients wait about a second before each retransmission: a small file keeps them bounded.
    (served / "peer.bin").write_bytes(os.urandom(20_000))
    return served


@pytest.fixture
def impaired_server(root: Path) -> Iterator[tuple[TftpServer, EventBus]]:
    bus = EventBus()
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair(BAD), timing=SERVER_TIMING,
                          allow_upload=True, allow_overwrite=True)
    with TftpServer(config, bus) as server:
        yield server, bus


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("windowsize", [None, 8])
@pytest.mark.parametrize("side", ["client", "server"])
def test_our_pair_is_byte_exact_through_a_bad_network(root: Path, side: str, windowsize: int | None) -> None:
    server_impair = parse_impair(BAD) if side == "server" else None
    client_impair = parse_impair(BAD) if side == "client" else None
    bus = EventBus()
    log = bus.subscribe()
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=server_impair, timing=SERVER_TIMING)
    with TftpServer(config, bus) as server:
        request = ClientRequest("127.0.0.1", "image.bin", port=server.addresses[0][1], timing=FAST,
                                options=RequestedOptions(blksize=1024, windowsize=windowsize),
                                impair=client_impair, deadline=60)
        outcome = ClientTransfer(request, bus).run()
    assert outcome.ok, outcome.result
    assert outcome.sha256 == sha((root / "image.bin").read_bytes())
    actions = Counter(e.action for e in log.drain() if isinstance(e, Impaired))
    assert actions["dropped"] > 0 and actions["duplicated"] + actions["reordered"] > 0


def test_upload_through_a_bad_network(impaired_server: tuple[TftpServer, EventBus], tmp_path: Path,
                                      root: Path) -> None:
    server, _ = impaired_server
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(30_000))
    # The server's side of the path is impaired (20% each way); impairing the client too would stack
    # to about 36% and outlast the server's dally after a final ACK lost again and again.
    request = ClientRequest("127.0.0.1", "up.bin", port=server.addresses[0][1], upload=True, source=local,
                            timing=FAST, options=RequestedOptions(blksize=512, windowsize=4), deadline=60)
    assert ClientTransfer(request).run().ok
    assert (root / "up.bin").read_bytes() == local.read_bytes()


@pytest.mark.peers
# curl with options asks for a timeout that follows its --max-time, and a server keeping to RFC 2349
# then waits that long for each loss; without options both ends use their own adaptive timers.
@pytest.mark.parametrize("client", ["curl-no-options", "atftp-window", "tftp-hpa"])
def test_peer_clients_against_our_impaired_server(impaired_server: tuple[TftpServer, EventBus], root: Path,
                                                  tmp_path: Path, client: str) -> None:
    server, _ = impaired_server
    host, port = server.addresses[0]
    out = tmp_path / "got.bin"
    if client == "curl-no-options":
        result = peers.curl_get(host, port, "peer.bin", out, no_options=True, timeout=50)
    elif client == "atftp-window":
        # atftp aborts on a second OACK ("unexpected OACK"), which our server rightly resends when the
        # client's ACK 0 is lost. Seed 8's first exchange passes; the rest of the transfer sees 20% loss.
        config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair(f"{BAD},seed=8"),
                              timing=SERVER_TIMING)
        bus = EventBus()
        log = bus.subscribe()
        with TftpServer(config, bus) as seeded:
            host, port = seeded.addresses[0]
            result = peers.atftp_get(host, port, "peer.bin", out, options={"windowsize": 8, "blksize": 1024},
                                     timeout=50, extra=["--tftp-timeout", "1"])
        fates = Counter(e.action for e in log.drain() if isinstance(e, Impaired))
        assert fates["dropped"] > 0, fates
    else:
        result = peers.tftp_hpa_get(host, port, "peer.bin", out, timeout=50)
    assert result.returncode is not None, f"{client} did not finish in time"
    assert out.read_bytes() == (root / "peer.bin").read_bytes(), result


def test_mtu_stalls_large_blocks_like_a_fragment_dropping_path(root: Path) -> None:
    bus = EventBus()
    log = bus.subscribe()
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair("mtu=1400"),
                          timing=Timing(initial_timeout=0.1, retries=3))
    with TftpServer(config, bus) as server:
        port = server.addresses[0][1]
        small = ClientTransfer(ClientRequest("127.0.0.1", "image.bin", port=port, timing=FAST,
                                             options=RequestedOptions(blksize=1024))).run()
        large = ClientTransfer(ClientRequest("127.0.0.1", "image.bin", port=port,
                                             timing=Timing(initial_timeout=0.1, retries=3, dally=0),
                                             options=RequestedOptions(blksize=1468))).run()
    assert small.ok
    # The negotiation passes (small packets), then no large DATA ever arrives: the signature of a path
    # that drops IP fragments.
    assert not large.ok and large.negotiated.blksize == 1468
    drained = log.drain()
    events = [e for e in drained if e.session == large.session]
    assert not any(isinstance(e, PacketReceived) and isinstance(e.packet, Data) for e in events)
    assert any(isinstance(e, Impaired) and e.action == "dropped" and "exceeds mtu=1400" in e.why for e in drained)


def test_delays_do_not_hold_up_other_sessions(root: Path) -> None:
    """Four lock-step downloads, each datagram delayed 50 ms: together they take about as long as one."""
    (root / "small.bin").write_bytes(os.urandom(512 * 20))
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair("delay=50ms,direction=out"),
                          timing=Timing(initial_timeout=1.0))
    with TftpServer(config) as server:
        port = server.addresses[0][1]

        def one() -> ClientTransfer:
            return ClientTransfer(ClientRequest("127.0.0.1", "small.bin", port=port,
                                                timing=Timing(initial_timeout=1.0, dally=0)))

        started = time.monotonic()
        assert one().run().ok
        alone = time.monotonic() - started
        transfers = [one().start() for _ in range(4)]
        started = time.monotonic()
        outcomes = [t.wait(30) for t in transfers]
        together = time.monotonic() - started
    assert all(o is not None and o.ok for o in outcomes)
    # 21 DATA each delayed 50 ms: about 1.05 s alone. Serialised, four would take over 4 s.
    assert alone > 1.0 and together < 2 * alone


def test_pcap_shows_what_left_not_what_the_machine_sent(root: Path, tmp_path: Path) -> None:
    trace = tmp_path / "t.pcap"
    bus = EventBus()
    log = bus.subscribe()
    recorder = TraceRecorder.open(trace, bus)
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, timing=SERVER_TIMING)
    with TftpServer(config) as server:
        request = ClientRequest("127.0.0.1", "image.bin", port=server.addresses[0][1], timing=FAST,
                                options=RequestedOptions(blksize=1024),
                                impair=parse_impair("drop=ack:5,dup=20%,direction=out,seed=3"))
        assert ClientTransfer(request, bus).run().ok
    recorder.close()
    events = log.drain()
    sent_by_machine = [e for e in events if isinstance(e, PacketSent)]
    fates = Counter(e.action for e in events if isinstance(e, Impaired))
    ours = [d for d in read_datagrams(trace) if d.src == sent_by_machine[0].local]
    assert fates["dropped"] == 1 and fates["duplicated"] > 0
    assert len(ours) == len(sent_by_machine) - fates["dropped"] + fates["duplicated"]
    ack5 = encode_ack(5)
    ack5_fates = Counter(e.action for e in events if isinstance(e, Impaired) and e.raw == ack5)
    assert ack5_fates["dropped"] == 1
    assert sum(1 for d in ours if d.payload == ack5) == (
        [e.raw for e in sent_by_machine].count(ack5) - 1 + ack5_fates["duplicated"])


def test_server_impairment_events_name_their_session(impaired_server: tuple[TftpServer, EventBus]) -> None:
    server, bus = impaired_server
    log = bus.subscribe()
    request = ClientRequest("127.0.0.1", "image.bin", port=server.addresses[0][1], timing=FAST, deadline=60,
                            options=RequestedOptions(blksize=1024))
    outcome = ClientTransfer(request).run()
    assert outcome.ok
    impaired = [e for e in log.drain() if isinstance(e, Impaired)]
    assert impaired and all(e.session != 0 or e.direction == "in" for e in impaired)
    assert threading.active_count() < 50


def test_cancel_under_delay_still_tells_the_server(root: Path) -> None:
    """The ERROR 0 a cancel sends is held by the impairment like any datagram, and still leaves."""
    from tftpdiag.protocol.events import Failed, Reason

    (root / "slow.bin").write_bytes(os.urandom(512 * 200))
    bus = EventBus()
    log = bus.subscribe()
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0, timing=SERVER_TIMING), bus) as server:
        request = ClientRequest("127.0.0.1", "slow.bin", port=server.addresses[0][1], timing=FAST,
                                impair=parse_impair("delay=40ms,direction=out"))
        transfer = ClientTransfer(request).start()
        deadline = time.monotonic() + 10
        seen: list = []
        while not any(isinstance(e, PacketSent) and isinstance(e.packet, Data) for e in seen):
            assert time.monotonic() < deadline, "the transfer never started"
            seen += expand(log.drain())
            time.sleep(0.01)
        transfer.cancel()
        assert transfer.wait(10) is not None
        transfer.join(5)
        while not any(isinstance(e, Failed) for e in seen):
            assert time.monotonic() < deadline, "the server never heard of the cancel"
            seen += expand(log.drain())
            time.sleep(0.01)
    failed = next(e for e in seen if isinstance(e, Failed))
    assert failed.reason is Reason.PEER_ERROR and failed.code == 0 and "cancelled" in failed.message


# -- delays as asked -------------------------------------------------------------------------------------

def test_the_client_waits_for_a_held_datagram_to_its_due_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delayed datagram falls due between the kernel's ticks: the client waits for it with select()'s
    timeout, the time left to it, and not with its socket's receive timeout, which the kernel rounds up
    to whole ticks (a 2 ms delay came out as 6-8 ms). A fake clock: no wall time is measured."""
    import socket

    from tftpdiag.engine import client_loop
    from tftpdiag.engine.net import normalise
    from tftpdiag.protocol.client import ClientRead

    server = ("127.0.0.1", 9)
    now = 1000.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        machine = ClientRead(1, filename="a.bin", server=server, local=normalise(sock.getsockname()), now=now)
        loop = client_loop.ClientLoop(
            sock, machine, bus=EventBus(), session=1, server=server, impair=parse_impair("delay=2ms"),
            offload=False, windowed=False, busy_poll=0.0, deadline=None, files=lambda now: False,
            cancel=threading.Event(), cancel_reason=str, on_finished=lambda: None)
        loop.held.add(now + 0.002, "in", encode_data(1, b"x"), server, None)
        selects: list[float] = []
        kernel: list[float] = []
        real_set_wait = loop.set_wait
        loop.readable = lambda timeout: selects.append(timeout) or False
        loop.set_wait = lambda seconds: (kernel.append(seconds), real_set_wait(seconds))[1]
        monkeypatch.setattr(client_loop, "_clock", lambda: now + 0.0005)  # the hand-over took 0.5 ms of it
        loop._wait(now, loop.driver.wait(0.2, now), True)
    assert kernel == [] and selects == [pytest.approx(0.0015)]


def test_a_delayed_transfer_waits_for_its_held_datagrams_by_select(root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop itself takes that way whenever it holds a datagram: every wait then asks at most the delay."""
    from tftpdiag.engine import client_loop

    asked: list[float] = []
    real = client_loop._readable
    monkeypatch.setattr(client_loop, "_readable",
                        lambda sock, timeout: (asked.append(timeout), real(sock, timeout))[1])
    (root / "some.bin").write_bytes(os.urandom(512 * 20))
    with TftpServer(ServerConfig(root=root, bind=("127.0.0.1",), port=0, timing=SERVER_TIMING), EventBus()) as server:
        request = ClientRequest("127.0.0.1", "some.bin", port=server.addresses[0][1], timing=FAST,
                                impair=parse_impair("delay=2ms"))
        outcome = ClientTransfer(request).run()
    assert outcome.ok, outcome.result
    assert asked and max(asked) <= 0.002  # none past the due time of what it held


def _in_place(events: list, session: int) -> None:
    """A session's packet rows as the packet table and -v list them: in time order, and each outgoing
    datagram's Impaired events right before its PacketSent, at its time."""
    rows = [e for e in events if isinstance(e, (PacketSent, PacketReceived, Impaired)) and e.session == session]
    assert any(isinstance(e, Impaired) and e.direction == "out" for e in rows)
    assert [e.time for e in rows] == sorted(e.time for e in rows)
    for i, e in enumerate(rows):
        if isinstance(e, Impaired) and e.direction == "out":
            sent = next(r for r in rows[i + 1:] if not isinstance(r, Impaired))
            assert isinstance(sent, PacketSent) and (sent.raw, sent.time) == (e.raw, e.time)


def test_impaired_rows_come_in_time_order_with_the_packets_they_explain(root: Path) -> None:
    """Under delay=2ms the ACK a DATA draws is impaired as it leaves: its row was listed before the DATA
    it answers, with the later time of the send. Our client and our server, each impaired."""
    server_bus, client_bus = EventBus(), EventBus()
    server_log, client_log = server_bus.subscribe(), client_bus.subscribe()
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair("delay=2ms,seed=1"),
                          timing=SERVER_TIMING)
    served: list = []
    with TftpServer(config, server_bus) as server:
        request = ClientRequest("127.0.0.1", "image.bin", port=server.addresses[0][1], timing=FAST,
                                impair=parse_impair("delay=2ms,seed=2"), options=RequestedOptions(blksize=1024))
        assert ClientTransfer(request, client_bus).run().ok
        wait_until(lambda: served.extend(server_log.drain()) or any(isinstance(e, Completed) for e in served),
                   10, "the server's session to end")
    ours = client_log.drain()
    _in_place(ours, next(e.session for e in ours if isinstance(e, PacketSent)))
    _in_place(served, next(e.session for e in served if isinstance(e, Completed)))


def test_a_refusal_under_impairment_keeps_its_rows_in_place_and_those_after_it(root: Path) -> None:
    """The server refuses a request (no such file) with an impaired ERROR: its row goes before it, and
    the next session's rows still come each before its packet."""
    bus = EventBus()
    log = bus.subscribe()
    config = ServerConfig(root=root, bind=("127.0.0.1",), port=0, impair=parse_impair("delay=2ms,seed=1"),
                          timing=SERVER_TIMING)
    seen: list = []
    with TftpServer(config, bus) as server:
        port = server.addresses[0][1]
        missing = ClientTransfer(ClientRequest("127.0.0.1", "missing.bin", port=port, timing=FAST)).run()
        assert not missing.ok
        assert ClientTransfer(ClientRequest("127.0.0.1", "image.bin", port=port, timing=FAST)).run().ok
        wait_until(lambda: seen.extend(log.drain()) or any(isinstance(e, Completed) for e in seen),
                   10, "the second session to end")
    refused, served = sorted({e.session for e in seen if isinstance(e, PacketSent)})
    _in_place(seen, refused)
    _in_place(seen, served)


def test_fates_never_placed_are_published_as_they_were_not_kept_without_bound() -> None:
    """A datagram sent on a path that never places its events (a bug) must not hold every later row
    back nor grow a long-running server's memory: past a bound the oldest fate goes out as it was."""
    from tftpdiag.engine import driver as driver_module
    from tftpdiag.engine.driver import Driver

    bus = EventBus()
    log = bus.subscribe()
    driver: Driver[object] = Driver(bus, parse_impair("delay=1ms,seed=1"), False, alone=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        target = sock.getsockname()
        for n in range(driver_module._FATES_MAX + 5):
            driver.send_each(sock, 1, [(n.to_bytes(4, "big"), target)], lambda *_: None)
    assert len(driver.fates) == driver_module._FATES_MAX
    published = [e for e in log.drain() if isinstance(e, Impaired)]
    assert [e.raw for e in published] == [n.to_bytes(4, "big") for n in range(5)]
