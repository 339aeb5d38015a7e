"""pycni._record: the value classes copy and pickle as the dataclasses they replace."""

from __future__ import annotations

import copy
import pickle

import pytest

from pycni._record import FrozenError, FrozenRecord, Record, set_fields


class Point(FrozenRecord):
    """A frozen record with a mutable field (deepcopy must copy it)."""

    __slots__ = ("tags", "x")
    x: int
    tags: list[str]

    def __init__(self, x: int, tags: list[str]) -> None:
        set_fields(self, x, tags)


class Box(Record):
    """A mutable record."""

    __slots__ = ("items", "name")
    name: str
    items: list[int]

    def __init__(self, name: str, items: list[int]) -> None:
        self.name = name
        self.items = items


@pytest.mark.parametrize("make", [lambda: Point(1, ["a"]), lambda: Box("b", [1, 2])])
def test_copy_deepcopy_and_pickle_keep_the_fields(make: object) -> None:
    original = make()  # type: ignore[operator]
    shallow = copy.copy(original)
    deep = copy.deepcopy(original)
    loaded = pickle.loads(pickle.dumps(original))  # noqa: S301 - our own bytes
    for other in (shallow, deep, loaded):
        assert other == original
        assert other is not original
        assert type(other) is type(original)
    first = original._fields[1]
    assert getattr(shallow, first) is getattr(original, first)
    assert getattr(deep, first) is not getattr(original, first)


def test_a_copy_stays_frozen() -> None:
    point = copy.deepcopy(Point(1, []))
    with pytest.raises(FrozenError):
        point.x = 2  # type: ignore[misc]
