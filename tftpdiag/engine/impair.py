"""Fault injection between the sockets and the protocol machines: loss, delay, jitter, duplication,
reordering, a path MTU that drops what would fragment, and exact drops of chosen packets.

The impairer only decides the fate of each datagram (when it is delivered, how many times, or not at
all) and records an event for it; engine/driver.py carries the decision out for the client's and the
server's loops alike (engine/held.py keeps what is delayed until the loop's clock says it is due), so a
delay never blocks other sessions.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from tftpdiag.protocol.events import Address, Event, Impaired
from tftpdiag.protocol.packets import Ack, Data, Packet, ProtocolError, Request, decode
from tftpdiag.records import record

__all__ = ["ImpairSpec", "DropRule", "Impairer", "parse_impair", "ImpairError"]

_OPS = {"rrq", "wrq", "data", "ack", "error", "oack"}


class ImpairError(ValueError):
    """A --impair spec that cannot be understood; the message names the part."""


@record
class DropRule:
    """Drop packets of one kind (and block range): the first ``times`` copies of each, or all (None)."""

    op: str
    first: int | None = None
    last: int | None = None
    times: int | None = 1

    def matches(self, packet: Packet | None) -> bool:
        if packet is None:
            return False
        name = packet.opcode.name.lower()
        if name != self.op:
            return False
        if self.first is None:
            return True
        block = packet.block if isinstance(packet, (Data, Ack)) else None
        return block is not None and self.first <= block <= (self.last if self.last is not None else self.first)

    def __str__(self) -> str:
        text = self.op
        if self.first is not None:
            text += f":{self.first}" + (f"-{self.last}" if self.last not in (None, self.first) else "")
        if self.times != 1:
            text += "x*" if self.times is None else f"x{self.times}"
        return text


@record
class ImpairSpec:
    """The faults --impair injects: loss, delay, jitter, duplicates, reordering, MTU, drops."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    mtu: int | None = None
    drops: tuple[DropRule, ...] = ()
    direction: str = "both"
    seed: int | None = None

    def __str__(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"loss={self.loss * 100:g}%")
        if self.delay:
            parts.append(f"delay={self.delay * 1000:g}ms")
        if self.jitter:
            parts.append(f"jitter={self.jitter * 1000:g}ms")
        if self.dup:
            parts.append(f"dup={self.dup * 100:g}%")
        if self.reorder:
            parts.append(f"reorder={self.reorder * 100:g}%")
        if self.mtu:
            parts.append(f"mtu={self.mtu}")
        parts += [f"drop={rule}" for rule in self.drops]
        if self.direction != "both":
            parts.append(f"direction={self.direction}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return ",".join(parts) or "none"


def _fraction(key: str, text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ImpairError(f"{key}={text}: expected a percentage like 5% or a fraction like 0.05") from None
    if not 0.0 <= value <= 1.0:
        raise ImpairError(f"{key}={text}: must be between 0% and 100%")
    return value


def _duration(key: str, text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", text.strip().lower())
    if not match:
        raise ImpairError(f"{key}={text}: expected a time like 80ms or 0.5s")
    value = float(match.group(1)) / (1000 if match.group(2) in (None, "ms") else 1)
    if value > 60:
        raise ImpairError(f"{key}={text}: at most 60 s")
    return value


def _drop_rule(text: str) -> DropRule:
    match = re.fullmatch(r"([a-z]+)(?::(\d+)(?:-(\d+))?)?(?:x(\d+|\*))?", text.strip().lower())
    if not match or match.group(1) not in _OPS:
        raise ImpairError(f"drop={text}: expected OP[:N[-M]][xK] with OP one of {', '.join(sorted(_OPS))}, "
                          "e.g. drop=data:1-3 or drop=ack:7x*")
    op, first, last, times = match.groups()
    if first is not None and op not in ("data", "ack"):
        raise ImpairError(f"drop={text}: only data and ack have block numbers")
    lo = int(first) if first is not None else None
    hi = int(last) if last is not None else None
    if lo is not None and (lo > 65535 or (hi is not None and not lo <= hi <= 65535)):
        raise ImpairError(f"drop={text}: block numbers go from 0 to 65535, low to high")
    count = None if times == "*" else int(times) if times else 1
    return DropRule(op, lo, hi, count)


def parse_impair(spec: str) -> ImpairSpec:
    """'loss=5%,delay=80ms,jitter=20ms,dup=1%,reorder=2%,mtu=1400,drop=data:1-3,direction=out,seed=7'."""
    values: dict[str, Any] = {}  # each checked above against its field: float, int or str
    drops: list[DropRule] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise ImpairError(f"{part!r}: expected KEY=VALUE")
        if key in ("loss", "dup", "reorder"):
            values[key] = _fraction(key, value)
        elif key in ("delay", "jitter"):
            values[key] = _duration(key, value)
        elif key == "mtu":
            if not value.isdigit() or not 68 <= int(value) <= 65535:
                raise ImpairError(f"mtu={value}: expected a number of bytes from 68 to 65535")
            values["mtu"] = int(value)
        elif key == "drop":
            drops.append(_drop_rule(value))
        elif key == "direction":
            if value not in ("in", "out", "both"):
                raise ImpairError(f"direction={value}: expected in, out or both")
            values["direction"] = value
        elif key == "seed":
            if not value.isdigit():
                raise ImpairError(f"seed={value}: expected a whole number")
            values["seed"] = int(value)
        else:
            raise ImpairError(f"unknown impairment {key!r}; known: loss, delay, jitter, dup, reorder, mtu, drop, "
                              "direction, seed")
    if not values and not drops:
        raise ImpairError("empty impairment spec")
    return ImpairSpec(drops=tuple(drops), **values)


@dataclass
class Impairer:
    """Decides each datagram's fate, from a seeded random source so a run can be repeated."""

    spec: ImpairSpec
    rng: random.Random = field(init=False)
    seed: int = field(init=False)
    _dropped: dict[tuple[DropRule, str, int | None], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.seed = self.spec.seed if self.spec.seed is not None else random.SystemRandom().randrange(1 << 31)
        self.rng = random.Random(self.seed)

    def applies(self, direction: str) -> bool:
        return self.spec.direction in ("both", direction)

    def fate(self, raw: bytes, peer: Address, now: float, direction: str,
             session: int) -> tuple[list[float], list[Event]]:
        """When to deliver this datagram (empty: dropped; two times: duplicated) and the events saying so
        (Impaired events, in a list typed for EventBus.publish)."""
        spec = self.spec
        if not self.applies(direction):
            return [now], []
        events: list[Event] = []

        def record(action: str, delay: float, why: str) -> None:
            events.append(Impaired(session, now, direction, action, peer, raw, delay, why))

        if spec.mtu is not None:
            size = len(raw) + (48 if ":" in peer[0] else 28)  # the IP packet: IPv6 or IPv4 header, UDP header
            if size > spec.mtu:
                record("dropped", 0.0, f"{size}-byte IP packet exceeds mtu={spec.mtu}")
                return [], events
        if spec.drops:
            try:
                packet: Packet | None = decode(raw)
            except ProtocolError:
                packet = None
            for rule in spec.drops:
                if rule.matches(packet):
                    key = (rule, direction, packet.block if isinstance(packet, (Data, Ack)) else
                           hash(packet.filename) if isinstance(packet, Request) else None)
                    done = self._dropped.get(key, 0)
                    if rule.times is None or done < rule.times:
                        self._dropped[key] = done + 1
                        record("dropped", 0.0, f"drop={rule}")
                        return [], events
        rng = self.rng
        if spec.loss and rng.random() < spec.loss:
            record("dropped", 0.0, f"loss={spec.loss * 100:g}%")
            return [], events
        delay = spec.delay + (rng.random() * spec.jitter if spec.jitter else 0.0)
        if spec.reorder and rng.random() < spec.reorder:
            # Held back long enough for the packets behind it to overtake it.
            extra = max(spec.delay, spec.jitter, 0.005) * 2
            delay += extra
            record("reordered", delay, f"held {extra * 1000:.0f} ms so later packets pass it")
        elif delay > 0:
            record("delayed", delay, f"delay={spec.delay * 1000:g}ms jitter={spec.jitter * 1000:g}ms")
        times = [now + delay]
        if spec.dup and rng.random() < spec.dup:
            times.append(now + delay + max(spec.jitter, 0.001))
            record("duplicated", times[1] - now, f"dup={spec.dup * 100:g}%")
        return times, events
