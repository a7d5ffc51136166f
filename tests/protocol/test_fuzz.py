"""Fuzz the four machines: random datagrams from the peer and from strangers, random timeouts.

Whatever arrives, a machine must turn it into events and datagrams: nothing may escape as an exception,
every event is one of events.py's types, every Failed says why, a machine ends at most once, it only
sends well-formed packets, and once finished it never sends DATA again.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.machines import (
    CLIENT,
    EVENT_TYPES,
    SERVER,
    TID,
    ack,
    client_read,
    client_write,
    data,
    oack,
    server_read,
    server_write,
)
from tftpdiag.engine.apart_wire import expand
from tftpdiag.protocol.events import Completed, Failed
from tftpdiag.protocol.options import RequestedOptions, ServerPolicy
from tftpdiag.protocol.packets import (
    Ack,
    Data,
    Error,
    OAck,
    Opcode,
    ProtocolError,
    Request,
    decode,
    encode,
)
from tftpdiag.protocol.session import Session
from tftpdiag.protocol.timer import Timing

FULL = bytes(512)
CONTENT = bytes(range(256)) * 8 + b"tail"  # 4 full blocks and a short one
TIMING = Timing(initial_timeout=0.5, retries=3, dally=1.0)


def _feed(m: Session, *datagrams: tuple[bytes, tuple[str, int]]) -> Session:
    for i, (raw, addr) in enumerate(datagrams):
        m.receive(raw, addr, 0.001 * (i + 1))
    return m


def _cr(options: RequestedOptions = RequestedOptions()) -> Session:
    return client_read(options=options, timing=TIMING)[0]


def _cw(options: RequestedOptions = RequestedOptions()) -> Session:
    return client_write(CONTENT, options=options, timing=TIMING, size=len(CONTENT))


# Each setup returns a machine in one of the states it can be in at the start of a transfer, and the
# address of its peer (the transfer ID it is, or will be, locked to).
SETUPS: dict[str, Callable[[], tuple[Session, tuple[str, int]]]] = {
    "client-read requesting": lambda: (_cr(RequestedOptions(blksize=1024, tsize=True)), TID),
    "client-read negotiating": lambda: (
        _feed(_cr(RequestedOptions(blksize=1024, tsize=True)), (oack(("blksize", "1024"), ("tsize", "3000")), TID)),
        TID),
    "client-read transferring": lambda: (_feed(_cr(), (data(1, FULL), TID)), TID),
    "client-read windowed": lambda: (
        _feed(_cr(RequestedOptions(windowsize=4)), (oack(("windowsize", "4")), TID), (data(1, FULL), TID)), TID),
    "client-read dallying": lambda: (_feed(_cr(), (data(1, FULL), TID), (data(2, b"x"), TID)), TID),
    "client-write requesting": lambda: (_cw(RequestedOptions(tsize=True)), TID),
    "client-write transferring": lambda: (_feed(_cw(), (ack(0), TID)), TID),
    "client-write windowed": lambda: (
        _feed(_cw(RequestedOptions(windowsize=4)), (oack(("windowsize", "4")), TID)), TID),
    "server-read negotiating": lambda: (server_read(CONTENT, ("blksize", "512"), ("tsize", "0"), timing=TIMING),
                                        CLIENT),
    "server-read transferring": lambda: (server_read(CONTENT, timing=TIMING), CLIENT),
    "server-read windowed": lambda: (
        _feed(server_read(CONTENT, ("windowsize", "3"), timing=TIMING), (ack(0), CLIENT)), CLIENT),
    "server-write negotiating": lambda: (server_write(("tsize", "2000"), timing=TIMING)[0], CLIENT),
    "server-write plain": lambda: (server_write(timing=TIMING)[0], CLIENT),
    "server-write transferring": lambda: (_feed(server_write(timing=TIMING)[0], (data(1, FULL), CLIENT)), CLIENT),
    "server-write windowed": lambda: (
        _feed(server_write(("windowsize", "4"), timing=TIMING)[0], (data(1, FULL), CLIENT)), CLIENT),
    "server-write limited": lambda: (
        server_write(timing=TIMING, policy=ServerPolicy(max_upload=700))[0], CLIENT),
}

# -- strategies -------------------------------------------------------------------------------------

blocks = st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF), st.sampled_from([0xFFFE, 0xFFFF]))
payloads = st.one_of(st.sampled_from([0, 1, 511, 512, 513, 1024]).map(bytes), st.binary(max_size=40))
option_values = st.one_of(st.sampled_from(["0", "1", "4", "8", "512", "1024", "65464", "65465", "99999"]),
                          st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=5))
option_lists = st.lists(st.tuples(st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "bogus"]),
                                  option_values), max_size=4, unique_by=lambda kv: kv[0]).map(tuple)
packets = st.one_of(
    st.builds(Data, blocks, payloads),
    st.builds(Ack, blocks),
    st.builds(Error, st.integers(0, 9) | st.integers(0, 0xFFFF), st.text(max_size=10).filter(lambda t: "\0" not in t)),
    st.builds(OAck, option_lists),
    st.builds(Request, st.sampled_from([Opcode.RRQ, Opcode.WRQ]), st.sampled_from(["boot.img", "x"]),
              st.sampled_from(["octet", "netascii", "mail"]), option_lists),
)
sources = st.sampled_from(["peer", "peer", "peer", "stray-port", "stray-host", "server-port"])
actions = st.lists(
    st.one_of(
        st.tuples(st.just("packet"), packets.map(encode), sources, st.floats(0, 0.3)),
        st.tuples(st.just("raw"), st.binary(max_size=30), sources, st.floats(0, 0.3)),
        st.tuples(st.just("wait"), st.just(b""), st.just("peer"), st.floats(0, 3.0)),
        st.tuples(st.just("fire"), st.just(b""), st.just("peer"), st.just(0.0)),
    ),
    max_size=25,
)


def _address(kind: str, peer: tuple[str, int]) -> tuple[str, int]:
    return {
        "peer": peer,
        "stray-port": (peer[0], peer[1] + 1),
        "stray-host": ("198.51.100.9", peer[1]),
        "server-port": SERVER,
    }[kind]


def _check_step(m: Session, was_finished: bool, ended: list) -> None:
    for raw, addr in m.datagrams_to_send():
        assert isinstance(addr, tuple) and len(addr) == 2
        try:
            packet = decode(raw)  # we only ever send well-formed packets
        except ProtocolError as exc:  # pragma: no cover - reported by the assertion
            raise AssertionError(f"sent a malformed datagram {raw!r}: {exc}") from None
        if was_finished or m.finished:
            assert not isinstance(packet, Data), f"DATA {packet.block} sent after the end"
    for event in m.events():
        assert isinstance(event, EVENT_TYPES), event
        if isinstance(event, Failed):
            assert event.message, event
        if isinstance(event, (Completed, Failed)):
            ended.append(event)
    assert len(ended) <= 1, ended
    if m.closed:
        assert m.next_timeout() is None


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions)
def test_machines_survive_anything(setup, steps):
    m, peer = SETUPS[setup]()
    ended: list = []
    _check_step(m, m.finished, ended)
    now = 0.01
    for kind, raw, source, dt in steps:
        was_finished = m.finished
        if kind in ("packet", "raw"):
            now += dt
            m.receive(raw, _address(source, peer), now)
        elif kind == "wait":
            now += dt
            m.handle_timeout(now)
        else:
            deadline = m.next_timeout()
            if deadline is not None:
                now = max(now, deadline)
            m.handle_timeout(now)
        _check_step(m, was_finished, ended)
    # However it got here, the machine winds down by itself: its timers end it within bounded time.
    for _ in range(40):
        deadline = m.next_timeout()
        if deadline is None:
            break
        was_finished = m.finished
        now = max(now, deadline)
        m.handle_timeout(now)
        _check_step(m, was_finished, ended)
    assert m.next_timeout() is None
    assert m.finished
    assert len(ended) == 1 and ended[0] is m.result


@pytest.mark.parametrize("setup", list(SETUPS), ids=list(SETUPS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions)
def test_runs_change_nothing_but_the_form_of_the_events(setup, steps):
    """Whatever arrives, a machine keeping its DATA and ACK in columns (Session.record_runs) sends the
    same datagrams as one that does not, and its events, expanded, are the same events."""
    plain, peer = SETUPS[setup]()
    columns, _ = SETUPS[setup]()
    for m in (plain, columns):
        m.datagrams_to_send()
        m.events()
    columns.record_runs()
    got_plain: list = []
    got_columns: list = []
    now = 0.01
    for kind, raw, source, dt in steps:
        now += dt
        for m in (plain, columns):
            if kind in ("packet", "raw"):
                m.receive(raw, _address(source, peer), now)
            else:
                m.handle_timeout(now)
        assert plain.datagrams_to_send() == columns.datagrams_to_send()
        got_plain += plain.events()
        got_columns += columns.settled_events()
    got_columns += columns.events()
    assert list(expand(got_columns)) == got_plain
