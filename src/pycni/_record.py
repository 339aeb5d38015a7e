"""Plain value classes: equality, hashing and ``repr`` over ``__slots__``, without dataclasses.

A plugin process pays for every class it creates at import. ``dataclasses.dataclass``
generates each class's methods as source text and ``exec``s it (and imports ``inspect``,
``re``, ``copy``...): the ~20 records on a standalone bridge + host-local call cost about a
quarter of its instructions. A record here declares its fields as ``__slots__`` and, in
order, as annotations, and writes a typed ``__init__``; the rest is inherited:

* :class:`Record`: mutable; ``==`` compares the fields in order when both sides are of the
  same class (as a dataclass's ``eq``); unhashable; ``repr`` is ``Name(field=value, ...)``.
* :class:`FrozenRecord`: the same, immutable and hashable (a frozen dataclass); its
  ``__init__`` sets the fields through :func:`set_fields`. Both copy and pickle.

:func:`replace` is ``dataclasses.replace`` for both: a copy through the class's own
``__init__`` (whose parameters are named as the fields) with some fields changed.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound="Record")


class Record:  # noqa: PLW1641 - unhashable on purpose, as a mutable dataclass
    """Base of a mutable value class whose fields are its ``__slots__``."""

    __slots__ = ()
    #: The fields, in the order of their annotations, along the class's bases.
    _fields: "tuple[str, ...]" = ()

    def __init_subclass__(cls, **kwargs: "Any") -> None:
        super().__init_subclass__(**kwargs)
        # The order is the annotations' (``__slots__`` is a set of names, sorted by ruff).
        slots = set(cls.__dict__.get("__slots__", ()))
        own = tuple(name for name in cls.__dict__.get("__annotations__", {})  # noqa: RUF063
                    if name in slots)  # (inspect is what a plugin start must not load)
        if len(own) != len(slots):
            raise TypeError(f"{cls.__qualname__}: every name in __slots__ needs an annotation")
        cls._fields = cls._fields + own

    def _values(self) -> "tuple[Any, ...]":
        return tuple([getattr(self, name) for name in self._fields])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    # No __hash__: a class that defines __eq__ alone is unhashable, as a mutable dataclass.

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{self.__class__.__qualname__}({fields})"


class FrozenError(AttributeError):
    """An assignment to a field of a :class:`FrozenRecord`."""


class FrozenRecord(Record):
    """Base of an immutable, hashable value class whose fields are its ``__slots__``."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")

    def __setstate__(self, state: "Any") -> None:
        # copy, deepcopy and pickle rebuild the object from (__dict__ or None, {slot: value})
        # (object.__getstate__) and would set each field through __setattr__, which refuses.
        for part in state if isinstance(state, tuple) else (state,):
            for name, value in (part or {}).items():
                object.__setattr__(self, name, value)


def set_fields(record: Record, *values: object) -> None:
    """Set ``record``'s fields, in order, to ``values`` (for a FrozenRecord's ``__init__``)."""
    for name, value in zip(record._fields, values, strict=True):
        object.__setattr__(record, name, value)


def replace(record: "R", **changes: object) -> "R":
    """A copy of ``record`` with the fields ``changes`` names set to new values."""
    values: dict[str, object] = {name: getattr(record, name) for name in record._fields}
    unknown = changes.keys() - values.keys()
    if unknown:
        raise TypeError(f"{record.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return record.__class__(**values)
