"""Which columns the client gives an ORM as its driver would: a statement with any other
column runs on the database (issue #51, rule B), where the driver types it."""

from __future__ import annotations

from collections.abc import Collection, Sequence

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
