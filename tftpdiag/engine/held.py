"""Datagrams the impairer (engine/impair.py) held back, kept by the time they fall due, for the loops'
driver (engine/driver.py) to deliver then. Its own module: every loop has one, while the impairer and
what it imports (random, the spec's dataclasses) is loaded only for a run that asks for --impair."""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

from tftpdiag.protocol.events import Address

__all__ = ["Held"]

_Target = TypeVar("_Target")


class Held(Generic[_Target]):
    """Datagrams held back by the impairer, by the time they fall due; ``target`` says where each goes
    (its type is the engine's: the client needs none, the server a socket or a session)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, bytes, Address, _Target]] = []
        self._seq = 0

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, when: float, way: str, raw: bytes, addr: Address, target: _Target) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, way, raw, addr, target))

    def next_time(self) -> float:
        return self._heap[0][0]

    def due(self, now: float) -> bool:
        return bool(self._heap) and self._heap[0][0] <= now

    def pop_due(self, now: float) -> list[tuple[str, bytes, Address, _Target]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, way, raw, addr, target = heapq.heappop(self._heap)
            out.append((way, raw, addr, target))
        return out
