"""What a rule is: a function of one session's state and a small context, declared with the findings it
makes and the findings it comes after; and the order the analyzer runs them in, taken from those
declarations (never from where a rule sits in a list).

    @rule("stalled", after=("rollover-stall", "server-stopped"), transient=True)
    def stalled(s: SessionState, ctx: Context) -> Finding | None:
        ...
        if ctx.found("rollover-stall"):  # allowed: declared in after=
            ...

A rule sees the time, the thresholds, its own earlier findings and those of the rules it comes after;
any other lookup raises :class:`UndeclaredLookup`, so what a rule depends on is written where it is
defined and the order follows from it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field

from tftpdiag.findings.model import Finding
from tftpdiag.findings.session_state import SessionState
from tftpdiag.records import record

__all__ = [
    "FOLLOW_UP",
    "Context",
    "FollowUp",
    "OrderError",
    "Rule",
    "RuleFn",
    "UndeclaredLookup",
    "order",
    "rule",
]

# Server side, the read of the same file by the same client host that came after a session:
# (time, session, its options in words).
FollowUp = tuple[float, int, str]

RuleFn = Callable[[SessionState, "Context"], "Finding | list[Finding] | None"]

# The lookups a rule may ask for besides findings (uses=...): names, so a typo is caught at import.
FOLLOW_UP = "follow-up"
_LOOKUPS = frozenset({FOLLOW_UP})


class OrderError(ValueError):
    """The rules' declarations cannot be ordered: a cycle, or a rule after a finding no rule makes."""


class UndeclaredLookup(LookupError):
    """A rule looked up something it did not declare (a finding not in its after=, a lookup not in uses=)."""


@record
class Rule:
    """A rule and its declarations: the finding ids it ``makes``, those it comes ``after``, the lookups it
    ``uses``, whether its finding is ``transient`` (a live hypothesis that progress can disprove: when
    the rule no longer holds after the session moved again, the finding turns into info), and whether it
    looks again ``after_end`` (its tally goes on past the transfer's end, where the others' stays: the
    copies of a capture's final packets come after the end; only such rules see the session again then)."""

    fn: RuleFn
    makes: tuple[str, ...]
    after: tuple[str, ...] = ()
    uses: frozenset[str] = frozenset()
    transient: str | None = None
    after_end: bool = False
    reads: frozenset[str] = field(init=False)  # the findings it may look up: its own and those it comes after

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset(self.makes) | frozenset(self.after))

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, s: SessionState, ctx: Context) -> Finding | list[Finding] | None:
        return self.fn(s, ctx)


def rule(*makes: str, after: Iterable[str] = (), uses: Iterable[str] = (),
         transient: bool = False, after_end: bool = False) -> Callable[[RuleFn], Rule]:
    """Declare a rule: the finding ids it makes (the first is its own), those it comes after, the
    lookups it uses (``FOLLOW_UP``), whether its finding is transient, and whether it looks again after
    the end (Rule.after_end)."""
    if not makes:
        raise ValueError("a rule makes at least one finding id")
    used = frozenset(uses)
    unknown = used - _LOOKUPS
    if unknown:
        raise ValueError(f"unknown lookups {sorted(unknown)}; known: {sorted(_LOOKUPS)}")
    if transient and len(makes) != 1:
        raise ValueError("a transient rule makes exactly one finding id")

    def declare(fn: RuleFn) -> Rule:
        return Rule(fn, tuple(makes), tuple(after), used, makes[0] if transient else None, after_end)

    return declare


class Context:
    """What a rule is given about the analysis beyond the session's own state: the time, the
    thresholds, and only the lookups it declared.

    The analyzer makes one per evaluation of a session and points it at each rule in turn
    (:meth:`for_rule`): a rule reads it while it runs and keeps nothing of it."""

    __slots__ = ("now", "stall_after", "_found", "_follow_up", "_reads", "_uses", "_rule")

    def __init__(self, now: float, stall_after: float, found: Mapping[str, Finding] | None = None,
                 follow_up: Callable[[], FollowUp | None] | None = None) -> None:
        self.now = now  # the analysis' time: the last event's, or the tick's
        self.stall_after = stall_after  # seconds without progress before a transfer counts as stalled
        self._found = found
        self._follow_up = follow_up
        self._reads: frozenset[str] = frozenset()
        self._uses: frozenset[str] = frozenset()
        self._rule = "?"

    def for_rule(self, r: Rule) -> Context:
        """This context as rule ``r`` may see it."""
        self._reads, self._uses, self._rule = r.reads, r.uses, r.name
        return self

    def found(self, finding_id: str) -> Finding | None:
        """This session's finding ``finding_id`` so far: the rule's own earlier one, or one made by a
        rule it comes after (those have run already in this evaluation)."""
        if finding_id not in self._reads:
            raise UndeclaredLookup(f"rule {self._rule} reads finding {finding_id!r} without declaring "
                                   f"after=({finding_id!r},)")
        return None if self._found is None else self._found.get(finding_id)

    def follow_up(self) -> FollowUp | None:
        """Server side: the read of the same file by the same client host after this session, or None
        yet (then it is watched for, and the session is looked at again when it comes)."""
        if FOLLOW_UP not in self._uses:
            raise UndeclaredLookup(f"rule {self._rule} asks for the follow-up read without declaring "
                                   f"uses=({FOLLOW_UP!r},)")
        return None if self._follow_up is None else self._follow_up()


def order(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """The rules in an order where each comes after every rule making a finding it declared ``after``.

    Where the declarations leave a choice, the given sequence decides (it sets the order findings of
    one severity are listed in). Raises :class:`OrderError` on a cycle, naming it, or on an ``after``
    that no rule makes."""
    makers: dict[str, list[int]] = {}
    for i, r in enumerate(rules):
        for finding_id in r.makes:
            makers.setdefault(finding_id, []).append(i)
    needs: list[set[int]] = []
    for i, r in enumerate(rules):
        deps: set[int] = set()
        for finding_id in r.after:
            if finding_id not in makers:
                raise OrderError(f"rule {r.name} comes after {finding_id!r}, which no rule makes")
            deps.update(j for j in makers[finding_id] if j != i)
        needs.append(deps)
    waiting_on = [len(d) for d in needs]
    unlocks: list[list[int]] = [[] for _ in rules]
    for i, deps in enumerate(needs):
        for j in deps:
            unlocks[j].append(i)
    ready = [i for i, n in enumerate(waiting_on) if n == 0]
    heapq.heapify(ready)
    out: list[Rule] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(rules[i])
        for k in unlocks[i]:
            waiting_on[k] -= 1
            if waiting_on[k] == 0:
                heapq.heappush(ready, k)
    if len(out) < len(rules):
        left = {i for i, n in enumerate(waiting_on) if n > 0}
        raise OrderError("rules wait on each other in a cycle: " + " -> ".join(_cycle(rules, needs, left)))
    return tuple(out)


def _cycle(rules: Sequence[Rule], needs: list[set[int]], left: set[int]) -> list[str]:
    """One cycle among the rules left unordered, by name, its first rule repeated at the end."""
    path: list[int] = []
    seen: dict[int, int] = {}
    i = min(left)
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = min(j for j in needs[i] if j in left)  # every rule left waits on another rule left
    loop = path[seen[i]:] + [i]
    return [rules[j].name for j in loop]
