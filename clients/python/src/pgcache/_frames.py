"""Query results as data frames (issue #54): pandas, polars, or Arrow.

A frame is made by the library's own reader of a database cursor (``pandas.read_sql``,
``polars.read_database``), handed a cursor that holds pgcache's answer: the rows as a driver's
cursor holds them (``PGCacheManager.query``: psycopg's values) and their columns. So each
column is typed exactly as that library types it when reading the same query from PostgreSQL
through psycopg, today and in the library's next version. Arrow: the polars frame's table,
the columns polars keeps as Python objects (a UUID, an address) as their text.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

KINDS = ("pandas", "polars", "arrow")


class _AnswerCursor:
    """A DB-API cursor over an answer already had: ``execute`` runs nothing."""

    def __init__(self, names: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        # (name, type_code, display_size, internal_size, precision, scale, null_ok): what the
        # readers look at is the name (a type code they cannot read is ignored).
        self.description = [(name, None, None, None, None, None, None) for name in names]
        self._rows = rows
        self.rowcount = len(rows)

    def execute(self, *_: Any, **__: Any) -> _AnswerCursor:
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = size or 1
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    def close(self) -> None:
        self._rows = []


class _AnswerConnection:
    """A DB-API connection whose one cursor holds the answer."""

    def __init__(self, cursor: _AnswerCursor) -> None:
        self._cursor = cursor

    def cursor(self) -> _AnswerCursor:
        return self._cursor

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


def check_kind(kind: str) -> None:
    """Refuses a kind of frame there is none of, before anything is asked."""
    if kind not in KINDS:
        raise ValueError(f"pgcache: kind {kind!r} is not one of {', '.join(KINDS)}")


def frame(kind: str, names: Sequence[str], rows: list[tuple[Any, ...]]) -> Any:
    """The answer (``names`` and tuple ``rows``) as a ``kind`` frame."""
    check_kind(kind)
    connection = _AnswerConnection(_AnswerCursor(names, rows))
    if kind == "pandas":
        pandas = _imported("pandas", "pandas")
        with warnings.catch_warnings():
            # pandas warns that it did not test DB-API connections other than sqlite3's.
            warnings.simplefilter("ignore", UserWarning)
            return pandas.read_sql("-- pgcache", connection)
    polars = _imported("polars", kind)
    made = polars.read_database("-- pgcache", connection)
    if kind == "arrow":
        _imported("pyarrow", "arrow")
        return _as_text_where_untyped(polars, made).to_arrow()
    return made


def _as_text_where_untyped(polars: Any, made: Any) -> Any:
    """The frame with the columns polars keeps as Python objects (a UUID, an address) as
    their text: Arrow has no type for them (polars would write each object's address)."""
    untyped = [name for name, dtype in made.schema.items() if dtype == polars.Object]
    if not untyped:
        return made
    return made.with_columns(
        polars.Series(name, [None if v is None else str(v) for v in made[name]], polars.String)
        for name in untyped
    )


def _imported(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f'pgcache: frames of kind {extra!r} need {module}: pip install "pgcache[{extra}]"'
        ) from None
