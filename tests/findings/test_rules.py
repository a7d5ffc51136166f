"""Rules and their declarations: the analyzer runs rules in the order their ``after=`` declarations give
(not the order they are listed in), reports a cycle by name, and a rule's context gives it only the
lookups it declared."""

from __future__ import annotations

import random

import pytest

from tftpdiag.findings.analyzer import RULES, Analyzer
from tftpdiag.findings.model import INFO, WARNING, Finding
from tftpdiag.findings.rules import (
    FOLLOW_UP,
    Context,
    FollowUp,
    OrderError,
    Rule,
    UndeclaredLookup,
    order,
    rule,
)
from tftpdiag.findings.session_state import SessionState
from tftpdiag.protocol.events import (
    Completed,
    Event,
    Role,
    TransferStarted,
    TransferStats,
)

pytestmark = pytest.mark.timeout(30)

STATS = TransferStats(bytes=0, duration=1.0, blocks=0, packets_sent=1, packets_received=1, retransmits=0,
                      duplicates=0, timeouts=0, out_of_order=0, stray=0)


def finished_download(session: int = 1) -> list[Event]:
    """The smallest stream the rules look at: a download that started and completed."""
    return [TransferStarted(session, 0.0, Role.CLIENT_READ, "f.bin", "octet", ("127.0.0.1", 40000),
                            ("127.0.0.1", 69), ()),
            Completed(session, 0.5, STATS)]


@rule("base")
def base(s: SessionState, ctx: Context) -> Finding:
    return Finding("base", WARNING, "the base finding", session=s.session)


@rule("follower", after=("base",))
def follower(s: SessionState, ctx: Context) -> Finding:
    seen = ctx.found("base")
    return Finding("follower", INFO, f"saw base: {seen is not None}", session=s.session)


def test_a_rule_declared_after_another_sees_its_result_whatever_the_listing() -> None:
    for listing in ((follower, base), (base, follower)):
        analyzer = Analyzer(rules=listing)
        assert [r.name for r in analyzer.rules] == ["base", "follower"]
        analyzer.feed(finished_download())
        by_id = {f.id: f for f in analyzer.findings(1)}
        assert by_id["follower"].summary == "saw base: True", listing


def test_order_is_the_listing_where_declarations_leave_a_choice() -> None:
    @rule("c")
    def c(s: SessionState, ctx: Context) -> None:
        return None

    @rule("d", after=("c",))
    def d(s: SessionState, ctx: Context) -> None:
        return None

    assert [r.name for r in order((d, base, c, follower))] == ["base", "c", "d", "follower"]
    assert [r.name for r in order((base, c, d))] == ["base", "c", "d"]


def _assert_declarations_hold(rules: tuple[Rule, ...]) -> None:
    position = {r.name: i for i, r in enumerate(rules)}
    for r in rules:
        for finding_id in r.after:
            makers = [m for m in rules if finding_id in m.makes and m is not r]
            assert makers, (r.name, finding_id)
            for m in makers:
                assert position[m.name] < position[r.name], f"{r.name} runs before {m.name} ({finding_id})"


def test_the_real_rules_run_after_what_they_declare_in_any_listing() -> None:
    _assert_declarations_hold(RULES)
    names = [r.name for r in RULES]
    # The stall that a more specific cause explains: stalled reads their findings, so it runs after them.
    for cause in ("rollover_stall", "large_block_loss", "client_stopped_acking", "server_stopped",
                  "port_unreachable"):
        assert names.index(cause) < names.index("stalled")
    assert names.index("tsize_overrun") < names.index("local_error")
    assert names.index("client_ignored_oack") < names.index("tsize_mismatch")
    rng = random.Random(7)
    for _ in range(20):
        shuffled = list(RULES)
        rng.shuffle(shuffled)
        again = order(shuffled)
        assert sorted(r.name for r in again) == sorted(names)
        _assert_declarations_hold(again)


def test_a_cycle_is_reported_by_name() -> None:
    @rule("p", after=("r",))
    def p(s: SessionState, ctx: Context) -> None:
        return None

    @rule("q", after=("p",))
    def q(s: SessionState, ctx: Context) -> None:
        return None

    @rule("r", after=("q",))
    def r(s: SessionState, ctx: Context) -> None:
        return None

    with pytest.raises(OrderError, match=r"cycle: (p -> r -> q -> p|q -> p -> r -> q|r -> q -> p -> r)"):
        order((base, p, q, r))
    with pytest.raises(OrderError, match="cycle"):
        Analyzer(rules=(p, q, r))


def test_an_after_that_no_rule_makes_is_an_error() -> None:
    @rule("lonely", after=("no-such-finding",))
    def lonely(s: SessionState, ctx: Context) -> None:
        return None

    with pytest.raises(OrderError, match="lonely comes after 'no-such-finding', which no rule makes"):
        order((base, lonely))


def test_the_context_gives_a_rule_only_what_it_declares() -> None:
    found = {"base": Finding("base", WARNING, "b"), "other": Finding("other", WARNING, "o")}
    asked: list[str] = []

    def follow_up() -> FollowUp:
        asked.append("follow-up")
        return (1.0, 2, "without options")

    ctx = Context(5.0, 3.0, found, follow_up)
    assert (ctx.now, ctx.stall_after) == (5.0, 3.0)

    view = ctx.for_rule(follower)
    assert view.found("base") is found["base"]  # declared after=("base",)
    assert view.found("follower") is None  # its own, none yet
    with pytest.raises(UndeclaredLookup, match="follower reads finding 'other'"):
        view.found("other")
    with pytest.raises(UndeclaredLookup, match="follower asks for the follow-up"):
        view.follow_up()
    assert asked == []

    @rule("probe", uses=(FOLLOW_UP,))
    def probe(s: SessionState, ctx: Context) -> None:
        return None

    assert ctx.for_rule(probe).follow_up() == (1.0, 2, "without options")
    assert asked == ["follow-up"]
    with pytest.raises(UndeclaredLookup):
        ctx.for_rule(probe).found("base")


def test_an_undeclared_lookup_inside_the_analyzer_is_loud() -> None:
    @rule("sneaky")
    def sneaky(s: SessionState, ctx: Context) -> None:
        ctx.found("base")  # not declared: the order would not promise base has run

    with pytest.raises(UndeclaredLookup, match="sneaky"):
        Analyzer(rules=(base, sneaky)).feed(finished_download())


def test_a_rule_makes_only_the_ids_it_declares() -> None:
    @rule("declared")
    def liar(s: SessionState, ctx: Context) -> Finding:
        return Finding("something-else", INFO, "x", session=s.session)

    with pytest.raises(ValueError, match="liar made 'something-else'"):
        Analyzer(rules=(liar,)).feed(finished_download())


def test_declarations_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="unknown lookups"):
        rule("x", uses=("clock",))
    with pytest.raises(ValueError, match="transient"):
        rule("x", "y", transient=True)
    with pytest.raises(ValueError, match="at least one"):
        rule()


def test_every_finding_id_is_made_by_a_declared_rule() -> None:
    from tftpdiag.findings import IDS

    assert set(IDS) == {finding_id for r in RULES for finding_id in r.makes}
    transient = {r.transient for r in RULES if r.transient}
    assert transient == {"client-stopped-acking", "server-stopped", "stalled", "large-block-loss", "rollover-stall"}
