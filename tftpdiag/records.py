"""``@record``: the immutable value classes (events, packets, options, requests, findings) as dataclasses
whose comparison, hash and repr are written once, here, instead of compiled for each class.

Why not plain ``@dataclass(frozen=True, slots=True)``: Python 3.11's dataclass compiles every method it
makes from source (``exec``, about 0.3 ms each on a 2-core laptop), six for a frozen class (``__init__``,
``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``); the 35 a probe loads took 66 ms
of its 160 ms start. A record is ``dataclass(slots=True, eq=False, repr=False)``: only ``__init__`` is
compiled, and it assigns fields directly rather than through ``object.__setattr__`` as a frozen one does
(4x as fast a construction; a transfer makes events and packets by the datagram). Records are frozen for
the type checker (``dataclass_transform``'s ``frozen_default``: mypy rejects an assignment to a field),
not at run time. Equality, hashing and repr behave as the dataclass's: same class and equal fields
compare equal, fields with ``compare=False`` or ``repr=False`` are left out, and ``dataclasses.fields``,
``replace`` and ``asdict`` work as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from operator import attrgetter
from reprlib import recursive_repr
from typing import TYPE_CHECKING, Any, TypeVar

# dataclass_transform only tells the type checker what @record makes; mypy checks as for 3.10, where it
# comes from typing_extensions (its stubs ship with mypy), which tftpdiag does not load at run time.
if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
elif sys.version_info >= (3, 11):
    from typing import dataclass_transform  # novermin - only where it exists
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda decorated: decorated

__all__ = ["record"]

_T = TypeVar("_T")


def _record_eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self._record_key
        return key(self) == key(other)
    return NotImplemented


def _record_hash(self: Any) -> int:
    return hash(self._record_key(self))


@recursive_repr()
def _record_repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._record_shown)
    return f"{self.__class__.__qualname__}({shown})"


def _no_fields(_: object) -> tuple[()]:
    return ()


def _key(names: tuple[str, ...]) -> Callable[[Any], Any]:
    """Fields' values for eq and hash, in declaration order: one C call (a single field's value
    stands alone, which compares and hashes consistently with itself)."""
    return attrgetter(*names) if names else _no_fields


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a slotted dataclass with the shared eq, hash and repr (unless it defines its own)."""
    made: Any = dataclass(cls, slots=True, eq=False, repr=False)
    own = made.__dict__
    every = fields(made)
    made._record_key = staticmethod(_key(tuple(f.name for f in every if f.compare)))
    made._record_shown = tuple(f.name for f in every if f.repr)
    if "__eq__" not in own:
        made.__eq__ = _record_eq
    if "__hash__" not in own or own["__hash__"] is None:
        made.__hash__ = _record_hash
    if "__repr__" not in own:
        made.__repr__ = _record_repr
    return made
