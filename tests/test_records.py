"""@record: dataclasses whose eq, hash and repr are shared, not compiled per class (tftpdiag/records.py).

They must behave as the frozen dataclasses they replaced wherever tftpdiag and its users look: equality
(same class, equal compared fields), hashing consistent with it, the dataclass's repr, and the
dataclasses module's fields/replace/asdict. And a probe's start must not compile the methods they share.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import field

import pytest

from tests.support.fresh import fresh_python
from tftpdiag.protocol.events import Completed, PacketSent, TransferStats
from tftpdiag.protocol.packets import Ack, Data, Error
from tftpdiag.records import record


@record
class Point:
    x: int
    y: int = 0
    label: str = field(default="", compare=False, repr=False)


@record
class Empty:
    pass


@dataclasses.dataclass(frozen=True)
class PointDC:  # the dataclass Point stands for, to compare against
    x: int
    y: int = 0
    label: str = field(default="", compare=False, repr=False)


def test_equality_and_hash_are_the_dataclass_ones() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2, "a") == Point(1, 2, "b")  # compare=False is left out
    assert hash(Point(1, 2, "a")) == hash(Point(1, 2, "b"))
    assert len({Point(1, 2), Point(1, 2), Point(3)}) == 2
    assert Empty() == Empty() and hash(Empty()) == hash(Empty())
    # Another class with the same fields is not equal (a tuple would be), nor is the tuple itself.
    assert Point(1, 2) != PointDC(1, 2)
    assert Ack(3) != Error(3) and Ack(3) != (3,) and Ack(3) != 3
    assert (Point(1, 2) == object()) is False


def test_single_field_records_compare_by_their_field() -> None:
    assert Ack(7) == Ack(7) and Ack(7) != Ack(8)
    assert hash(Ack(7)) == hash(Ack(7))
    assert Data(1, b"x") == Data(1, b"x") and Data(1, b"x") != Data(1, b"y")


def test_repr_is_the_dataclass_repr() -> None:
    assert repr(Point(1, 2, "hidden")) == repr(PointDC(1, 2, "hidden")).replace("PointDC", "Point")
    assert repr(Point(1, 2, "hidden")) == "Point(x=1, y=2)"
    assert repr(Ack(5)) == "Ack(block=5)"
    assert repr(Empty()) == "Empty()"


def test_the_dataclasses_module_still_works_on_records() -> None:
    stats = TransferStats(10, 0.5, 1, 2, 2, 0, 0, 0, 0, 0)
    assert dataclasses.is_dataclass(stats)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "label"]
    assert dataclasses.replace(Point(1, 2), y=5) == Point(1, 5)
    assert dataclasses.asdict(Point(1, 2, "l")) == {"x": 1, "y": 2, "label": "l"}
    event = Completed(session=1, time=2.0, stats=stats)
    assert pickle.loads(pickle.dumps(event)) == event


def test_records_are_slotted() -> None:
    with pytest.raises(AttributeError):
        Point(1).z = 3  # type: ignore[attr-defined]
    assert not hasattr(Ack(1), "__dict__")


def test_a_class_keeps_the_methods_it_defines() -> None:
    @record
    class Loose:
        a: int

        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    assert Loose(1) == Loose(2)


def test_a_probe_start_compiles_only_the_records_constructors() -> None:
    # A frozen dataclass compiled six methods from source (about 0.3 ms each); the 35 a probe imports
    # cost 66 ms of its start. Records compile __init__ alone.
    code = (
        "import dataclasses\n"
        "made = []\n"
        "original = dataclasses._create_fn\n"
        "def counting(name, *args, **kwargs):\n"
        "    made.append(name)\n"
        "    return original(name, *args, **kwargs)\n"
        "dataclasses._create_fn = counting\n"
        "import tftpdiag.commands, tftpdiag.engine.client, tftpdiag.headless\n"
        "print('SHARED', sorted(set(name for name in made if name in "
        "('__eq__', '__hash__', '__setattr__', '__delattr__'))))\n"
        "print('INITS', made.count('__init__'))\n"
    )
    out = fresh_python(code)
    assert "SHARED []" in out, out
    assert int(out.split("INITS ")[1]) >= 30, out  # the probe's records were made


def test_packet_events_are_records_too() -> None:
    # Made by the datagram: their constructor assigns directly (a frozen dataclass's went through
    # object.__setattr__, four times as slow).
    assert PacketSent.__eq__ is Ack.__eq__


def _dataclasses_of_tftpdiag() -> list[type]:
    import importlib
    import inspect
    import pkgutil

    import tftpdiag

    found = []
    for module_info in pkgutil.walk_packages(tftpdiag.__path__, "tftpdiag."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        found += [obj for obj in vars(module).values()
                  if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__]
    return found


def test_every_dataclass_says_what_it_holds() -> None:
    # A dataclass without a docstring gets one made from inspect.signature at import, about 0.1 ms a
    # class on CPython 3.11 (a probe's start made 18 of them), and a docstring says more than a signature.
    classes = _dataclasses_of_tftpdiag()
    assert len(classes) > 60  # every module was searched
    unsaid = [f"{c.__module__}.{c.__qualname__}" for c in classes
              if (c.__dict__.get("__doc__") or "").startswith(f"{c.__name__}(")]
    assert not unsaid, unsaid
