"""Row factories, as psycopg's ``psycopg.rows``: each takes a statement's column names and
returns what makes one row from its values."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# What a row factory is: given a statement's column names, what makes a row of its values.
RowFactory = Callable[[Sequence[str]], Callable[[list[Any]], Any]]


def dict_row(names: Sequence[str]) -> Callable[[list[Any]], dict[str, Any]]:
    """Rows as dicts by column name (the default; of two columns of one name, the last)."""
    keys = list(names)
    return lambda values: dict(zip(keys, values))


def tuple_row(names: Sequence[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """Rows as tuples, in the statement's column order."""
    return tuple


def namedtuple_row(names: Sequence[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """Rows as named tuples (a name that is no identifier becomes ``_<position>``)."""
    make = namedtuple("Row", list(names), rename=True)  # type: ignore[misc]
    return lambda values: make._make(values)


def class_row(cls: type[T]) -> Callable[[Sequence[str]], Callable[[list[Any]], T]]:
    """Rows as instances of ``cls`` (a dataclass, say), its fields passed by name."""

    def factory(names: Sequence[str]) -> Callable[[list[Any]], T]:
        keys = list(names)
        return lambda values: cls(**dict(zip(keys, values)))

    return factory
