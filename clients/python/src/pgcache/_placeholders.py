"""A driver's statement as pgcache takes it: psycopg's and psycopg2's placeholders
(``%(name)s``, ``%s``; ``%%`` a percent sign) numbered ``$1..$n``, the values in order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


def numbered(statement: str, parameters: Any) -> tuple[str, list[Any]]:
    """``statement`` with the driver's placeholders as ``$1..$n``, and the values in order."""
    values: list[Any] = []
    positional = iter(parameters) if isinstance(parameters, Sequence) else None

    def replace(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) is not None:
            values.append(parameters[match.group(1)])
        else:
            if positional is None:
                raise ValueError("positional placeholder without positional parameters")
            values.append(next(positional))
        return f"${len(values)}"

    return _PLACEHOLDER.sub(replace, statement), values


# What a placeholder may not be found in: literals (standard, escape, dollar-quoted),
# quoted identifiers and comments; then the placeholders and percent signs.
_PGCACHE_TOKEN = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|[eE]'(?:[^'\\]|\\.|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/"""
    r"""|(?P<tag>\$\w*\$).*?(?P=tag))|\$(?P<number>\d+)|(?P<double>\?\?)|(?P<mark>\?)"""
    r"""|(?P<percent>%)""",
    re.DOTALL,
)


def driver_style(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """A statement with pgcache's placeholders (``$n``, or ``?`` where it has no ``$n``:
    ``??`` is the jsonb ``?``) in psycopg's and psycopg2's style (``%s``, the values in
    order, a percent sign doubled), to run it on the application's connection."""
    numbers = any(m.group("number") for m in _PGCACHE_TOKEN.finditer(sql))
    values: list[Any] = []
    marks = iter(params)

    def replace(match: re.Match) -> str:
        if match.group("skip") is not None:
            return match.group(0).replace("%", "%%")
        if match.group("percent") is not None:
            return "%%"
        if match.group("number") is not None:
            values.append(params[int(match.group("number")) - 1])
            return "%s"
        if numbers:
            return match.group(0)
        if match.group("double") is not None:
            return "?"
        values.append(next(marks))
        return "%s"

    return _PGCACHE_TOKEN.sub(replace, sql), values


def nulls_written(sql: str, params: Sequence[Any]) -> tuple[str, list[Any]]:
    """``sql`` with each placeholder of a ``None`` parameter written as ``NULL``, as psycopg2
    writes a None into a statement, and the others numbered again ``$1..$n``: QUERY binds
    text, and no text is NULL. PostgreSQL reads the literal as it reads an untyped NULL
    parameter (its type taken from where it stands: ``x = NULL``, ``$1::int`` becomes
    ``NULL::int``); a statement with no None is returned as it is."""
    if not any(p is None for p in params):
        return sql, list(params)
    numbers = any(m.group("number") for m in _PGCACHE_TOKEN.finditer(sql))
    renumbered: dict[int, int] = {}
    values: list[Any] = []
    for old, value in enumerate(params, start=1):
        if value is not None:
            values.append(value)
            renumbered[old] = len(values)
    marks = iter(params)

    def replace(match: re.Match) -> str:
        if match.group("number") is not None:
            old = int(match.group("number"))
            if old > len(params):
                # Left for pgcache to refuse with its own reason (nparams too small).
                return match.group(0)
            new = renumbered.get(old)
            return "NULL" if new is None else f"${new}"
        if match.group("mark") is not None and not numbers:
            return "NULL" if next(marks, "") is None else "?"
        return match.group(0)

    return _PGCACHE_TOKEN.sub(replace, sql), values
