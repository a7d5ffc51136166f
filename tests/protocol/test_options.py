"""Option negotiation (RFC 2347/2348/2349/7440): the server's grant and the client's check of an OACK."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tftpdiag.protocol.options import (
    BLKSIZE_MAX,
    DEFAULT_BLKSIZE,
    Negotiated,
    OptionOutcome,
    RequestedOptions,
    ServerPolicy,
    Verdict,
    accept_oack,
    negotiate_server,
    option_number,
    options_ignored,
    options_refused,
)
from tftpdiag.protocol.packets import ProtocolError


def serve(*requested: tuple[str, str], is_read: bool = True, mode: str = "octet",
          policy: ServerPolicy = ServerPolicy(), file_size: int | None = 1000) -> Negotiated:
    return negotiate_server(tuple(requested), is_read=is_read, mode=mode, policy=policy, file_size=file_size)


def outcome(negotiated: Negotiated, name: str) -> OptionOutcome:
    (found,) = [o for o in negotiated.outcomes if o.name == name]
    return found


# -- server side ------------------------------------------------------------------------------------

def test_no_options_means_no_oack():
    result = serve()
    assert result.oack is None
    assert (result.blksize, result.windowsize, result.timeout, result.tsize) == (DEFAULT_BLKSIZE, 1, None, None)
    assert result.outcomes == ()


@pytest.mark.parametrize(("asked", "granted", "verdict"), [
    ("8", "8", Verdict.ACCEPTED),
    ("512", "512", Verdict.ACCEPTED),
    ("1468", "1468", Verdict.ACCEPTED),
    ("65464", "65464", Verdict.ACCEPTED),
    ("65465", "65464", Verdict.REDUCED),
    ("100000", "65464", Verdict.REDUCED),
])
def test_blksize_grant(asked, granted, verdict):
    result = serve(("blksize", asked))
    assert result.oack == (("blksize", granted),)
    assert result.blksize == int(granted)
    assert outcome(result, "blksize") == OptionOutcome("blksize", asked, granted, verdict)


@pytest.mark.parametrize("asked", ["0", "7", "abc", "", "-512", "1e3", " 512", "0x200", "9" * 13])
def test_blksize_invalid_is_ignored(asked):
    result = serve(("blksize", asked))
    assert result.oack is None
    assert result.blksize == DEFAULT_BLKSIZE
    assert outcome(result, "blksize").verdict is Verdict.IGNORED


def test_blksize_capped_by_policy():
    result = serve(("blksize", "9000"), policy=ServerPolicy(max_blksize=1468))
    assert result.oack == (("blksize", "1468"),)
    assert outcome(result, "blksize").verdict is Verdict.REDUCED
    small = serve(("blksize", "1024"), policy=ServerPolicy(max_blksize=1468))
    assert small.oack == (("blksize", "1024"),)


@pytest.mark.parametrize("asked", ["1", "3", "255"])
def test_timeout_echoed(asked):
    result = serve(("timeout", asked))
    assert result.oack == (("timeout", asked),)
    assert result.timeout == int(asked)
    assert outcome(result, "timeout").verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("asked", ["0", "256", "1000", "x"])
def test_timeout_out_of_range_ignored(asked):
    result = serve(("timeout", asked))
    assert result.oack is None and result.timeout is None
    assert outcome(result, "timeout").verdict is Verdict.IGNORED


@pytest.mark.parametrize(("asked", "cap", "granted", "verdict"), [
    ("1", 64, "1", Verdict.ACCEPTED),
    ("16", 64, "16", Verdict.ACCEPTED),
    ("64", 64, "64", Verdict.ACCEPTED),
    ("65535", 64, "64", Verdict.REDUCED),
    ("40", 32, "32", Verdict.REDUCED),
])
def test_windowsize_capped(asked, cap, granted, verdict):
    result = serve(("windowsize", asked), policy=ServerPolicy(max_windowsize=cap))
    assert result.oack == (("windowsize", granted),)
    assert result.windowsize == int(granted)
    assert outcome(result, "windowsize").verdict is verdict


@pytest.mark.parametrize("asked", ["0", "65536", "many"])
def test_windowsize_out_of_range_ignored(asked):
    result = serve(("windowsize", asked))
    assert result.oack is None and result.windowsize == 1


def test_tsize_on_read_is_file_size_in_octet():
    result = serve(("tsize", "0"), file_size=123456)
    assert result.oack == (("tsize", "123456"),)
    assert result.tsize == 123456
    assert outcome(result, "tsize") == OptionOutcome("tsize", "0", "123456", Verdict.ACCEPTED)


def test_tsize_on_read_omitted_in_netascii_and_when_size_unknown():
    assert serve(("tsize", "0"), mode="netascii", file_size=100).oack is None
    assert serve(("tsize", "0"), file_size=None).oack is None
    assert outcome(serve(("tsize", "0"), mode="netascii"), "tsize").verdict is Verdict.IGNORED


def test_tsize_on_write_echoed():
    result = serve(("tsize", "5000"), is_read=False, file_size=None)
    assert result.oack == (("tsize", "5000"),)
    assert result.tsize == 5000
    within = serve(("tsize", "5000"), is_read=False, policy=ServerPolicy(max_upload=5000))
    assert within.oack == (("tsize", "5000"),)


def test_tsize_on_write_over_max_upload_refused_with_code_3():
    with pytest.raises(ProtocolError) as info:
        serve(("blksize", "1024"), ("tsize", "5001"), is_read=False, policy=ServerPolicy(max_upload=5000))
    assert info.value.code == 3
    assert "5001" in info.value.message


def test_refused_options_left_out():
    policy = ServerPolicy(refuse=frozenset({"tsize", "windowsize"}))
    result = serve(("blksize", "1024"), ("tsize", "0"), ("windowsize", "8"), policy=policy)
    assert result.oack == (("blksize", "1024"),)
    assert result.windowsize == 1 and result.tsize is None
    assert outcome(result, "tsize").verdict is Verdict.IGNORED
    assert outcome(result, "windowsize").verdict is Verdict.IGNORED
    # A refused tsize on write is not checked against the limit either.
    quiet = serve(("tsize", "999999"), is_read=False, policy=ServerPolicy(refuse=frozenset({"tsize"}), max_upload=1))
    assert quiet.oack is None


def test_unknown_options_ignored_silently():
    result = serve(("multicast", ""), ("rollover", "0"), ("blksize", "1024"), ("utimeout", "5000"))
    assert result.oack == (("blksize", "1024"),)
    assert [o.name for o in result.outcomes] == ["blksize"]


def test_grant_order_follows_request():
    result = serve(("windowsize", "4"), ("tsize", "0"), ("blksize", "1024"), ("timeout", "2"), file_size=7)
    assert result.oack == (("windowsize", "4"), ("tsize", "7"), ("blksize", "1024"), ("timeout", "2"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["blksize", "timeout", "windowsize", "tsize", "other"]),
                       st.one_of(st.integers(0, 200_000).map(str), st.text(max_size=4))),
             max_size=6, unique_by=lambda kv: kv[0]),
    st.integers(8, 70_000), st.integers(1, 100), st.booleans(), st.sampled_from(["octet", "netascii"]),
)
def test_server_never_grants_more_than_asked_or_allowed(requested, max_blk, max_win, is_read, mode):
    policy = ServerPolicy(max_blksize=max_blk, max_windowsize=max_win)
    result = serve(*requested, is_read=is_read, mode=mode, policy=policy, file_size=4242)
    asked = dict(requested)
    for name, value in result.oack or ():
        assert name in asked and name != "other"
        assert value.isdigit()
        if name == "blksize":
            assert 8 <= int(value) <= min(int(asked[name]), BLKSIZE_MAX, max_blk)
        if name == "windowsize":
            assert 1 <= int(value) <= min(int(asked[name]), max_win)
        if name == "timeout":
            assert value == asked[name] and 1 <= int(value) <= 255
        if name == "tsize":
            assert value == ("4242" if is_read else asked[name])
            assert mode == "octet" or not is_read
    # The client side accepts whatever a correct server grants.
    if result.oack is not None:
        client_view = accept_oack(tuple(requested), result.oack, is_read=is_read)
        assert client_view.blksize == result.blksize
        assert client_view.windowsize == result.windowsize


# -- client side ------------------------------------------------------------------------------------

ASKED = RequestedOptions(blksize=1468, windowsize=16, timeout=3, tsize=True).to_wire()


def test_requested_options_to_wire():
    assert ASKED == (("blksize", "1468"), ("tsize", "0"), ("timeout", "3"), ("windowsize", "16"))
    assert RequestedOptions(tsize=True).to_wire(upload_size=99) == (("tsize", "99"),)
    assert RequestedOptions().to_wire() == ()
    with pytest.raises(ValueError):
        RequestedOptions(blksize=7)
    with pytest.raises(ValueError):
        RequestedOptions(timeout=256)
    with pytest.raises(ValueError):
        RequestedOptions(windowsize=0)


def test_accept_full_oack():
    result = accept_oack(ASKED, (("blksize", "1468"), ("tsize", "9999"), ("timeout", "3"), ("windowsize", "16")),
                         is_read=True)
    assert (result.blksize, result.windowsize, result.timeout, result.tsize) == (1468, 16, 3, 9999)
    assert all(o.verdict is Verdict.ACCEPTED for o in result.outcomes)
    assert [o.name for o in result.outcomes] == ["blksize", "tsize", "timeout", "windowsize"]
    assert result.oack == (("blksize", "1468"), ("tsize", "9999"), ("timeout", "3"), ("windowsize", "16"))


def test_accept_reduced_and_partial_oack():
    result = accept_oack(ASKED, (("windowsize", "8"), ("blksize", "1024")), is_read=True)
    assert (result.blksize, result.windowsize, result.timeout, result.tsize) == (1024, 8, None, None)
    verdicts = {o.name: (o.asked, o.granted, o.verdict) for o in result.outcomes}
    assert verdicts == {
        "blksize": ("1468", "1024", Verdict.REDUCED),
        "windowsize": ("16", "8", Verdict.REDUCED),
        "tsize": ("0", None, Verdict.IGNORED),
        "timeout": ("3", None, Verdict.IGNORED),
    }


@pytest.mark.parametrize("oack", [
    (("blksize", "1468"), ("multicast", "1")),  # never asked
    (("rollover", "0"),),
    (("blksize", "1469"),),  # more than asked
    (("windowsize", "17"),),
    (("timeout", "4"),),  # changed
    (("timeout", "2"),),
    (("blksize", "7"),),  # out of range
    (("blksize", "70000"),),
    (("windowsize", "0"),),
    (("timeout", "0"),),
    (("blksize", "abc"),),  # not a number
    (("tsize", "-1"),),
    (("tsize", ""),),
    (("windowsize", "1.5"),),
    (("tsize", "9" * 13),),
])
def test_bad_oack_refused_with_code_8(oack):
    with pytest.raises(ProtocolError) as info:
        accept_oack(ASKED, oack, is_read=True)
    assert info.value.code == 8
    assert info.value.message


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0660\u0662\u0664", "\uff11\uff10\uff12\uff14", "1\u00b2"])
def test_non_ascii_digits_are_not_numbers(value):
    # str.isdigit() says yes to these; int() refuses some and reads others: neither may leak through.
    result = serve(("blksize", value), ("timeout", value), ("windowsize", value), ("tsize", value))
    assert result.oack is None
    assert {o.verdict for o in result.outcomes} == {Verdict.IGNORED}
    with pytest.raises(ProtocolError) as info:
        accept_oack(ASKED, (("blksize", value),), is_read=True)
    assert info.value.code == 8


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "other"]),
                          st.one_of(st.integers(0, 100_000).map(str), st.text(max_size=6))),
                max_size=5, unique_by=lambda kv: kv[0]))
def test_accept_oack_only_raises_protocol_error(oack):
    try:
        result = accept_oack(ASKED, tuple(oack), is_read=True)
    except ProtocolError as exc:
        assert exc.code == 8 and exc.message
        return
    assert 8 <= result.blksize <= 1468 and 1 <= result.windowsize <= 16
    assert result.timeout in (None, 3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["blksize", "tsize", "timeout", "windowsize"]),
                          st.one_of(st.integers(0, 100_000).map(str), st.text(max_size=6), st.just("9" * 5000))),
                max_size=5),
       st.lists(st.tuples(st.sampled_from(["blksize", "tsize", "timeout", "windowsize"]),
                          st.integers(0, 100_000).map(str)), max_size=4, unique_by=lambda kv: kv[0]))
def test_an_oack_to_any_request_a_capture_saw_only_raises_protocol_error(asked, oack):
    # A watcher's request holds what its client sent (packets.seen_request): values that are no number,
    # non-ASCII digits, thousands of digits, names asked twice. The OACK is judged, never a crash.
    try:
        result = accept_oack(tuple(asked), tuple(oack), is_read=True)
    except ProtocolError as exc:
        assert exc.code == 8 and exc.message
        return
    assert len(result.outcomes) == len(asked)


@pytest.mark.parametrize("value", ["abc", "\u00b2", "\udcff\udcfe", "9" * 5000, ""],
                         ids=["letters", "superscript", "not-utf-8", "5000-digits", "empty"])
def test_an_oack_granting_an_option_asked_with_no_number_is_refused(value):
    for name in ("blksize", "windowsize", "timeout"):
        with pytest.raises(ProtocolError) as info:
            accept_oack(((name, value),), ((name, "8"),), is_read=True)
        assert info.value.code == 8 and "no number" in info.value.message
    assert option_number(value) is None


def test_oack_with_option_when_none_asked_is_refused():
    with pytest.raises(ProtocolError) as info:
        accept_oack((), (("blksize", "512"),), is_read=True)
    assert info.value.code == 8


def test_options_ignored_and_refused():
    ignored = options_ignored(ASKED)
    granted = (ignored.blksize, ignored.windowsize, ignored.timeout, ignored.tsize, ignored.oack)
    assert granted == (512, 1, None, None, None)
    assert [(o.name, o.verdict) for o in ignored.outcomes] == [(n, Verdict.IGNORED) for n, _ in ASKED]
    refused = options_refused(ASKED, (("blksize", "1468"), ("bogus", "1")))
    assert refused.blksize == 512 and refused.windowsize == 1
    assert all(o.verdict is Verdict.REFUSED for o in refused.outcomes)
    assert outcome(refused, "blksize").granted == "1468"
    assert outcome(refused, "tsize").granted is None
    assert refused.oack == (("blksize", "1468"), ("bogus", "1"))
    assert options_refused(ASKED, None).oack is None


# -- OptionOutcome.meaning --------------------------------------------------------------------------

@pytest.mark.parametrize(("outcome_", "expected"), [
    (OptionOutcome("blksize", "1468", "1468", Verdict.ACCEPTED), "1468-byte blocks"),
    (OptionOutcome("blksize", "9000", "1468", Verdict.REDUCED), "1468-byte blocks (asked 9000)"),
    (OptionOutcome("blksize", "1468", None, Verdict.IGNORED), "blksize ignored, so 512-byte blocks"),
    (OptionOutcome("windowsize", "16", "16", Verdict.ACCEPTED), "16 blocks per ACK"),
    (OptionOutcome("windowsize", "64", "32", Verdict.REDUCED), "32 blocks per ACK (asked 64)"),
    (OptionOutcome("windowsize", "1", "1", Verdict.ACCEPTED), "window of 1: lock-step as in RFC 1350"),
    (OptionOutcome("windowsize", "8", None, Verdict.IGNORED), "no windowsize, so lock-step (one ACK per block)"),
    (OptionOutcome("timeout", "3", "3", Verdict.ACCEPTED), "retransmit after 3 s without an answer"),
    (OptionOutcome("timeout", "3", None, Verdict.IGNORED),
     "timeout ignored, so each side uses its own retransmit timer"),
    (OptionOutcome("tsize", "0", "1048576", Verdict.ACCEPTED), "size 1048576 bytes announced"),
    (OptionOutcome("tsize", "0", "0", Verdict.ACCEPTED), "size 0"),
    (OptionOutcome("tsize", "0", None, Verdict.IGNORED), "no size announced, so no percentage or ETA"),
    (OptionOutcome("blksize", "1468", "1468", Verdict.REFUSED), "blksize refused: the transfer ended with ERROR 8"),
    (OptionOutcome("tsize", "0", None, Verdict.REFUSED), "tsize refused: the transfer ended with ERROR 8"),
    (OptionOutcome("custom", "x", None, Verdict.IGNORED), "custom ignored"),
    (OptionOutcome("custom", "x", "y", Verdict.ACCEPTED), "custom = y"),
])
def test_meaning(outcome_, expected):
    assert outcome_.meaning == expected


def test_meaning_of_real_negotiations_is_non_empty_and_names_the_value():
    result = serve(("blksize", "100000"), ("windowsize", "100"), ("timeout", "5"), ("tsize", "0"), file_size=77)
    texts = {o.name: o.meaning for o in result.outcomes}
    assert texts["blksize"] == "65464-byte blocks (asked 100000)"
    assert texts["windowsize"] == "64 blocks per ACK (asked 100)"
    assert texts["timeout"] == "retransmit after 5 s without an answer"
    assert texts["tsize"] == "size 77 bytes announced"
