"""A request whose options the server refuses is asked once more without them, as real clients fall
back (UEFI firmware, U-Boot): tftpd-hpa refuses tsize in netascii with ERROR 8, atftpd refuses an OACK
that does not fit in the block size asked. One rule, in the client machines' request phase."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.machines import (
    SERVER,
    STRAY,
    TID,
    ack,
    client_read,
    client_write,
    data,
    of,
    sent,
)
from tftpdiag.protocol.client import dropped_options, fallback_options
from tftpdiag.protocol.events import (
    Completed,
    Failed,
    OptionsNegotiated,
    PeerLocked,
    RequestRetried,
)
from tftpdiag.protocol.options import RequestedOptions, Verdict
from tftpdiag.protocol.packets import Ack, Error, Opcode, Request, decode, encode
from tftpdiag.protocol.session import State
from tftpdiag.protocol.timer import Timing

ASKED = (("blksize", "1468"), ("tsize", "0"), ("windowsize", "16"))


@pytest.mark.parametrize(("code", "message", "keep"), [
    (8, "Unsupported option(s) requested", ()),  # tftpd-hpa: names none, so none are asked again
    (8, "Failure to negotiate RFC2347 options", ()),  # atftpd
    (8, "", ()),
    (8, "tsize not supported", (("blksize", "1468"), ("windowsize", "16"))),
    (0, "Option windowsize not supported", (("blksize", "1468"), ("tsize", "0"))),
    (4, "bad BLKSIZE and tsize", (("windowsize", "16"),)),
    (0, "options not understood", ()),
    (0, "blksize, tsize and windowsize refused", ()),
    (1, "File not found", None),
    (2, "Access violation", None),
    (0, "tsizes", None),  # a word that only contains an option's name names none
    (3, "Disk full or allocation exceeded", None),
])
def test_which_errors_refuse_options_and_what_is_asked_again(code, message, keep):
    assert fallback_options(Error(code, message), ASKED) == keep


def test_no_options_asked_means_nothing_to_drop():
    assert fallback_options(Error(8, "no options"), ()) is None


@given(st.integers(0, 0xFFFF), st.text(max_size=200),
       st.lists(st.sampled_from(ASKED), unique=True).map(tuple))
def test_fallback_keeps_a_subset_in_order(code, message, asked):
    keep = fallback_options(Error(code, message), asked)
    assert keep is None or (set(keep) < set(asked) and list(keep) == [o for o in asked if o in keep])


def test_read_refused_is_asked_again_without_options_and_completes():
    m, sink = client_read(options=RequestedOptions(blksize=1468, tsize=True), mode="netascii")
    (first, to), = sent(m)
    assert to == SERVER and first.options == (("blksize", "1468"), ("tsize", "0"))
    m.events()
    m.receive(encode(Error(8, "Unsupported option(s) requested")), TID, 0.1)
    events = m.events()
    assert not of(events, Failed) and m.state is State.REQUESTING
    (retried,) = of(events, RequestRetried)
    assert (retried.code, retried.message, retried.asked, retried.requested) == (
        8, "Unsupported option(s) requested", first.options, ())
    # The new request goes to the server's port, not to the transfer ID that refused the first.
    (again, to), = sent(m)
    assert to == SERVER and again == Request(Opcode.RRQ, "boot.img", "netascii", ())
    # A new transfer ID answers it.
    m.receive(data(1, b"hi\r\n"), STRAY, 0.2)
    events = m.events()
    assert [e.peer for e in of(events, PeerLocked)] == [STRAY]
    assert [(p, addr) for p, addr in sent(m)] == [(Ack(1), STRAY)]
    (negotiated,) = of(events, OptionsNegotiated)
    assert [(o.name, o.verdict, o.named) for o in negotiated.outcomes] == [
        ("blksize", Verdict.DROPPED, False), ("tsize", Verdict.DROPPED, False)]
    assert isinstance(m.result, Completed) and sink.getvalue() == b"hi\n"


@pytest.mark.parametrize(("message", "named"), [
    ("Unsupported option(s) requested", set()),  # tftpd-hpa names none: which one it minded is unknown
    ("tsize not supported", {"tsize"}),
])
def test_dropped_options_claim_a_refusal_only_where_the_server_named_it(message, named):
    asked = (("blksize", "1468"), ("tsize", "0"))
    keep = fallback_options(Error(8, message), asked)
    assert keep is not None
    outcomes = dropped_options(Error(8, message), asked, keep)
    assert {o.name for o in outcomes} == (named or {"blksize", "tsize"})
    for o in outcomes:
        assert o.verdict is Verdict.DROPPED and o.named == (o.name in named)
        if o.named:
            assert o.meaning == f"{o.name} refused by the server, so asked again without it"
        else:  # not "blksize refused by the server": it did not say so
            assert "refused" in o.meaning and o.name not in o.meaning, o.meaning


def test_the_refusing_transfer_id_is_a_stranger_once_the_new_one_answered():
    m, _ = client_read(options=RequestedOptions(tsize=True))
    m.datagrams_to_send()
    m.receive(encode(Error(8, "no")), TID, 0.1)
    m.datagrams_to_send()
    m.receive(data(1, b"x" * 512), STRAY, 0.2)
    m.datagrams_to_send()
    m.receive(data(1, b"y" * 512), TID, 0.3)
    assert [(p.code, addr) for p, addr in sent(m)] == [(5, TID)]


def test_a_timeout_repeats_the_new_request_not_the_refused_one():
    m, _ = client_read(options=RequestedOptions(blksize=1024, tsize=True), timing=Timing(initial_timeout=1.0))
    m.datagrams_to_send()
    m.receive(encode(Error(8, "tsize refused")), TID, 0.1)
    m.datagrams_to_send()
    m.handle_timeout(1.1)
    ((packet, to),) = sent(m)
    assert to == SERVER and packet.options == (("blksize", "1024"),)


def test_asked_again_once_only():
    m, _ = client_read(options=RequestedOptions(blksize=1024, tsize=True))
    m.datagrams_to_send()
    m.receive(encode(Error(8, "tsize refused")), TID, 0.1)
    m.datagrams_to_send(), m.events()
    m.receive(encode(Error(8, "blksize refused")), STRAY, 0.2)
    assert m.datagrams_to_send() == []
    assert isinstance(m.result, Failed) and m.result.code == 8


def test_other_errors_end_the_transfer_as_before():
    m, _ = client_read(options=RequestedOptions(tsize=True))
    m.datagrams_to_send()
    m.receive(encode(Error(1, "File not found")), TID, 0.1)
    assert m.datagrams_to_send() == [] and not of(m.events(), RequestRetried)
    assert isinstance(m.result, Failed) and m.result.code == 1


def test_an_error_after_the_request_phase_is_never_a_fallback():
    m, _ = client_read(options=RequestedOptions(blksize=512, tsize=True))
    m.datagrams_to_send()
    m.receive(data(1, b"x" * 512), TID, 0.1)
    m.datagrams_to_send()
    m.receive(encode(Error(8, "options")), TID, 0.2)
    assert m.datagrams_to_send() == [] and isinstance(m.result, Failed)


def test_write_refused_is_asked_again_and_sends_the_file():
    m = client_write(b"abc", options=RequestedOptions(blksize=8, windowsize=16, tsize=True), size=3)
    m.datagrams_to_send()
    m.receive(encode(Error(8, "Failure to negotiate RFC2347 options")), TID, 0.1)
    ((again, to),) = sent(m)
    assert to == SERVER and again == Request(Opcode.WRQ, "up.bin", "octet", ())
    m.receive(ack(0), STRAY, 0.2)
    ((packet, to),) = sent(m)
    assert to == STRAY and decode(encode(packet)).payload == b"abc"
    m.receive(ack(1), STRAY, 0.3)
    assert isinstance(m.result, Completed)
    assert [(o.name, o.verdict) for o in m.negotiated.outcomes] == [
        ("blksize", Verdict.DROPPED), ("tsize", Verdict.DROPPED), ("windowsize", Verdict.DROPPED)]
