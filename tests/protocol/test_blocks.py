"""protocol/blocks.py: the rollover rule, exactly, and fuzzed against a model that counts."""

from hypothesis import given
from hypothesis import strategies as st

from tftpdiag.protocol.blocks import (
    absolute,
    ahead,
    at_or_after,
    next_wire,
    rollovers,
    shows_wrap_to_one,
    wire,
    wires,
)


def _model_wires(count: int, rollover: int) -> list[int]:
    """Wire numbers of blocks 0..count-1, counted one by one as a sender does."""
    out, w = [0], 0
    for _ in range(1, count):
        w = w + 1 if w < 0xFFFF else rollover
        out.append(w)
    return out


def test_wire_wraps_to_zero_or_one():
    assert [wire(n) for n in (1, 65535, 65536, 65537, 131072)] == [1, 65535, 0, 1, 0]
    assert [wire(n, 1) for n in (1, 65535, 65536, 65537, 131070, 131071)] == [1, 65535, 1, 2, 65535, 1]


def test_wire_matches_counting_sender():
    for rollover in (0, 1):
        model = _model_wires(140_000, rollover)
        assert [wire(n, rollover) for n in range(140_000)] == model


def test_wires_number_a_run_as_wire_numbers_each_block():
    for rollover in (0, 1):
        for first, count in ((1, 128), (65400, 200), (65535, 1), (65536, 3), (131000, 200), (7, 0)):
            assert list(wires(first, count, rollover)) == [wire(n, rollover) for n in range(first, first + count)]


def test_absolute_nearest_across_the_wrap():
    assert absolute(0, 65535) == 65536  # the next block after 65535 wraps to 0
    assert absolute(65535, 65536) == 65535  # a retransmit just behind the wrap
    assert absolute(1, 65535, 1) == 65536  # a sender wrapping to 1
    assert absolute(65535, 65536, 1) == 65535
    assert absolute(0, 70000, 1) == 0  # wire 0 is only ever the ACK of the request with rollover 1
    assert absolute(5, 3) == 5 and absolute(3, 5) == 3


@given(st.integers(0, 400_000), st.integers(-30_000, 30_000), st.sampled_from([0, 1]))
def test_absolute_inverts_wire_near_ref(n, offset, rollover):
    ref = max(n + offset, 0)
    if rollover == 1 and n > 0 and wire(n, 1) == 0:
        return
    if rollover == 1 and n == 0:
        assert absolute(0, ref, 1) == 0
        return
    assert absolute(wire(n, rollover), ref, rollover) == n


def test_ahead_and_next():
    assert ahead(2, 65534) == 4 and ahead(7, 7) == 0 and next_wire(65535) == 0 and next_wire(4) == 5


def test_rollovers_count_matches_counting():
    for rollover in (0, 1):
        model = _model_wires(200_000, rollover)
        wraps = 0
        for n in range(1, 200_000):
            if model[n] < model[n - 1]:
                wraps += 1
            assert rollovers(n, rollover) == wraps, (n, rollover)


def test_absolute_half_space_boundaries():
    # Nearest means a signed 16-bit distance: up to 32767 ahead of ref and 32768 behind it.
    for n in (40_000, 70_000, 200_000):
        assert absolute(wire(n), n - 32767) == n
        assert absolute(wire(n), n + 32768) == n
        assert absolute(wire(n), n - 32768) == n - 65536  # one further ahead is nearer behind


@given(st.integers(0, 300_000), st.integers(0, 65_534), st.sampled_from([0, 1]))
def test_at_or_after_counts_forward_like_a_sender(ref, ahead_by, rollover):
    # A sender whose last acknowledged block is ``ref`` meets wire number wire(ref + k): the block is ref + k.
    n = ref + ahead_by
    if rollover == 1 and ref > 0 and wire(n, 1) == 0:
        return
    assert at_or_after(wire(n, rollover), ref, rollover) == n


def test_at_or_after_reaches_a_whole_window_ahead_and_refuses_block_zero_past_a_wrap_to_one():
    assert at_or_after(65535, 0) == 65535  # a window of 65535 blocks: beyond any signed distance
    assert at_or_after(0, 65535) == 65536
    assert at_or_after(4, 5) == 65540  # behind ref: the next time round, which no sender has sent yet
    assert at_or_after(0, 70_000, 1) is None  # wire 0 past block 0 never comes from a sender wrapping to 1
    assert at_or_after(0, 0, 1) == 0 and at_or_after(65535, 0, 1) == 65535


def test_wrap_to_one_shows_only_at_the_wrap_and_only_by_block_windowsize():
    assert shows_wrap_to_one(1, 65536, 1)  # lock-step: 65535 then 1
    assert shows_wrap_to_one(4, 65536, 4)  # window of 4: block 4 cannot come from a sender wrapping to 0
    assert not shows_wrap_to_one(1, 65536, 4)  # a lost block 0, then 1: a gap
    assert not shows_wrap_to_one(1, 65535, 1)  # not at the wrap
    assert not shows_wrap_to_one(1, 1, 1)  # the first pass: block 1 is block 1
    assert shows_wrap_to_one(65535, 65536, 65535) and not shows_wrap_to_one(65535, 65536, 65534)


def test_rollover_told_by_the_first_block_past_65535() -> None:
    from tftpdiag.protocol.blocks import rollover_of

    assert rollover_of(wire(65536, 0)) == 0
    assert rollover_of(wire(65536, 1)) == 1
    assert rollover_of(7) == 0  # a bogus number is taken for the usual rollover
