"""trace.rebuild fed live: datagram by datagram, events taken as they settle, ended transfers let go.

The capture watcher feeds the same demultiplexer and observers as a capture file, a datagram at a time.
What it takes must be, transfer by transfer, what the file gives; and what it keeps must shrink back
once the transfers have ended.
"""

from __future__ import annotations

import pytest

from tests.support.simnet import CLIENT, Impairment, run_transfer
from tests.trace.test_trace_rebuild import DATA, check_invariants, client_view
from tftpdiag.protocol.datagram import Address, Datagram
from tftpdiag.protocol.events import Event
from tftpdiag.protocol.options import RequestedOptions
from tftpdiag.trace.rebuild import FORGET_AFTER, Rebuilder, rebuild


def _moved(d: Datagram, port: int, shift: int) -> Datagram:
    """The client on ``port``, and the server's transfer ID ``shift`` ports on (as a new session's would be)."""

    def move(a: Address) -> Address:
        return (a[0], port) if a == CLIENT else a if a[1] == 69 else (a[0], a[1] + shift)

    return Datagram(d.time, move(d.src), move(d.dst), d.payload, d.orig_len)


def merged_capture(seed: int) -> list[Datagram]:
    """Three lossy transfers from three client ports at once, and a fourth reusing the first port."""
    runs = [("read", 8, 40000, 0.0), ("write", None, 40001, 0.0), ("read", None, 40002, 0.0), ("read", 4, 40000, 1e4)]
    capture: list[Datagram] = []
    for i, (direction, windowsize, port, later) in enumerate(runs):
        res = run_transfer(direction, DATA, options=RequestedOptions(blksize=700, windowsize=windowsize),
                           impairment=Impairment(loss=0.05, seed=seed * 10 + i))
        capture += [_moved(Datagram(d.time + later, d.src, d.dst, d.payload, d.orig_len), port, 100 * i)
                    for d in client_view(res)]
    capture.sort(key=lambda d: d.time)
    return capture


def by_session(events: list[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for e in events:
        out.setdefault(e.session, []).append(e)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_live_feeding_gives_what_the_file_gives(seed: int) -> None:
    capture = merged_capture(seed)
    whole = Rebuilder()
    whole.feed(capture)
    expected = whole.finish()
    check_invariants(expected)
    live = Rebuilder(live=True)
    taken: list[Event] = []
    for i, d in enumerate(capture):
        live.feed([d])
        if i % 7 == 0:
            live.tick(d.time)
            taken += live.take()
    taken += live.finish()
    assert by_session(taken) == by_session(expected)
    assert len(by_session(taken)) == 4
    assert (live.transfers, live.datagrams, live.capture_gaps, live.cut) == \
        (whole.transfers, whole.datagrams, whole.capture_gaps, whole.cut)
    assert not live.events  # a live rebuild keeps no list of everything


def test_live_lets_ended_transfers_go() -> None:
    capture = merged_capture(3)
    live = Rebuilder(live=True)
    live.feed(capture)
    live.take()
    end = capture[-1].time
    live.tick(end + 1)
    live.take()
    # Ports 40001 and 40002 have been quiet for hours: forgotten. Port 40000 still knows its last transfer
    # (for a repeat or a late packet of it) and the one before (its server may still be talking).
    assert sorted(t.sid for t in live._transfers) == [1, 4]
    live.tick(end + FORGET_AFTER + 1)
    assert live.take() == []
    assert live._transfers == [] and live._by_client == {}
    assert live.transfers == 4 and rebuild(capture)  # the counts stay


def test_live_ends_a_transfer_that_went_quiet() -> None:
    from tftpdiag.protocol.events import Failed, Reason
    from tftpdiag.protocol.packets import Opcode, Request, encode

    raw = encode(Request(Opcode.RRQ, "gone.bin", "octet", ()))
    live = Rebuilder(live=True)
    live.feed([Datagram(10.0, CLIENT, ("10.0.0.2", 69), raw, len(raw))])
    live.tick(10.0 + FORGET_AFTER / 2)
    assert not any(isinstance(e, Failed) for e in live.take())  # a server may still answer
    live.tick(10.0 + FORGET_AFTER + 1)
    (failed,) = [e for e in live.take() if isinstance(e, Failed)]
    assert failed.reason is Reason.TIMEOUT and "no reply from 10.0.0.2:69" in failed.message
