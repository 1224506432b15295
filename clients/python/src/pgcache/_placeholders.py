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
