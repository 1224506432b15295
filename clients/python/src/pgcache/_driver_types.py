"""Which columns the client gives an ORM as its driver would: a statement with any other
column runs on the database (issue #51, rule B), where the driver types it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Callable

from ._fallback import Refusal

# The types ``_decode`` turns into what psycopg and psycopg2 return for them, by the name
# EXPLAIN gives; others (ranges, hstore, geometric types, ...) come as text, where a driver
# makes objects.
TYPED = frozenset(
    {
        "bool", "bytea", "name", "int8", "int2", "int4", "text", "oid", "json", "jsonb",
        "float4", "float8", "bpchar", "varchar", "date", "time", "timestamp", "timestamptz",
        "interval", "timetz", "numeric", "uuid", "enum", "inet", "cidr",
    }
)  # fmt: skip


def check_typed(
    columns: Sequence[tuple[str, str]],
    as_text: Collection[str] = (),
    typed: Collection[str] = TYPED,
) -> None:
    """Raises ``Refusal`` for the first column not of a type in ``typed`` (an array of a
    type asked for as text among them: its elements would not come as text)."""
    for name, type_name in columns:
        element = type_name[:-2] if type_name.endswith("[]") else type_name
        if element not in typed or (element != type_name and element in as_text):
            raise Refusal(
                f"column {name!r} is of type {type_name}, which the client does not type as "
                "the driver does"
            )


def retyped(
    columns: Sequence[tuple[str, str]],
    rows: list[tuple[Any, ...]],
    by_type: Mapping[str, Callable[[Any], Any]],
) -> list[tuple[Any, ...]]:
    """``rows`` with the values of each column whose type (or array's element type) is in
    ``by_type`` made as that function makes them, as the driver in use would have."""
    changes = [
        (i, through_arrays(by_type[type_name.removesuffix("[]")]))
        for i, (_, type_name) in enumerate(columns)
        if type_name.removesuffix("[]") in by_type
    ]
    return changed(rows, changes)


def changed(
    rows: list[tuple[Any, ...]], changes: Sequence[tuple[int, Callable[[Any], Any]]]
) -> list[tuple[Any, ...]]:
    """``rows`` with column ``i``'s value made by ``change`` for each ``(i, change)``."""
    if not changes or not rows:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i, change in changes:
            values[i] = change(values[i])
        out.append(tuple(values))
    return out


def through_arrays(change: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``change`` of a value, or of each element of an array of any depth; NULL stays None."""

    def each(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [each(item) for item in value]
        return change(value)

    return each
