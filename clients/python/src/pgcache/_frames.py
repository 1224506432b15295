"""Query results as data frames (issue #54): pandas, polars, or Arrow.

A frame is made by the library's own reader of a database cursor (``pandas.read_sql``,
``polars.read_database``), handed a cursor that holds pgcache's answer: the rows as a stock
psycopg connection's cursor holds them, and their columns. So each column is typed exactly as
that library types it when reading the same query from PostgreSQL through psycopg, today and
in the library's next version. ``PGCacheManager.query`` gives psycopg's values where psycopg
parses a type, and more where it does not; ``like_psycopg`` takes those back to what a
connection that registered nothing gives: json numbers as floats (``json.loads``), an array
of an enum as PostgreSQL's text of it, ranges as psycopg's ``Range``, a ``timestamptz`` in
the session's TimeZone (a named zone, as psycopg gives it: one dtype through a change of
daylight saving time). Arrow: the polars frame's table, the columns polars keeps as Python
objects (a UUID, an address, a range) as their text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Callable
from zoneinfo import ZoneInfo

from . import _decode
from ._driver_types import changed, through_arrays

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


def zone_named(name: str | tzinfo) -> tzinfo:
    """A TimeZone's name (``Europe/Berlin``) as psycopg makes it, or a ``tzinfo`` as given."""
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ValueError, LookupError):
        raise ValueError(
            f"pgcache: TimeZone {name!r} is not one Python knows; pass timezone= a tzinfo"
        ) from None


def zone_in(health: Any, cluster: bool) -> tzinfo | None:
    """The TimeZone of pgcache's sessions in a HEALTH reply (None: PostgreSQL was not asked).
    One Python does not know (a POSIX spelling such as ``<+03>-03``, or no tz database) is
    UTC, with a warning, as psycopg takes it."""
    if cluster:  # each primary's, by node name: they all read one database
        health = next(iter(health.values()))
    name = health.get("postgres_timezone")
    if name is None:
        return None
    try:
        return zone_named(name)
    except ValueError:
        warnings.warn(
            f"pgcache: TimeZone {name!r} is not one Python knows; frames show timestamps in "
            "UTC (pass timezone=)",
            stacklevel=3,
        )
        return ZoneInfo("UTC")


def zoned(columns: Sequence[tuple[str, str]]) -> bool:
    """Whether any of ``columns`` holds values shown in a time zone."""
    return any(type_name.rstrip("[]") in _ZONED for _, type_name in columns)


_ZONED = frozenset({"timestamptz", "tstzrange", "tstzmultirange"})


def like_psycopg(
    columns: Sequence[tuple[str, str]], rows: list[tuple[Any, ...]], zone: tzinfo | None
) -> list[tuple[Any, ...]]:
    """``rows`` (``query``'s, of ``columns``: name and type) with each value as a psycopg
    connection that registered nothing, in TimeZone ``zone``, gives it (None: timestamps
    keep the offset pgcache gave)."""
    changes = [
        (i, _null_kept(change))
        for i, (_, type_name) in enumerate(columns)
        if (change := _change(type_name, zone)) is not None
    ]
    return changed(rows, changes)


def _null_kept(change: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else change(value)


def _change(type_name: str, zone: tzinfo | None) -> Callable[[Any], Any] | None:
    array = type_name.endswith("[]")
    element = type_name.rstrip("[]")
    if element in ("json", "jsonb"):
        return _json_floats
    if array and element in _TEXT_ARRAYS:
        return _array_text
    if element in _RANGES:
        make = _range_of(_RANGES[element](zone))
        return through_arrays(make) if array else make
    if element in _MULTIRANGES:
        make = _multirange_of(_RANGES[_MULTIRANGES[element]](zone))
        return through_arrays(make) if array else make
    if element == "timestamptz" and zone is not None:
        return through_arrays(lambda moment: moment.astimezone(zone))
    return None


def _json_floats(value: Any) -> Any:
    """A json value as ``json.loads`` makes it: every non-integer number a float."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _json_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_floats(item) for item in value]
    return value


# Arrays whose element type psycopg has no loader for unless told (an enum's): it gives
# PostgreSQL's text of the array.
_TEXT_ARRAYS = frozenset({"enum"})

# What array_out quotes an element for (its whitespace is C's, not Unicode's).
_NEEDS_QUOTES = re.compile(r'[{},"\\ \t\n\r\f\v]')


def _array_text(value: Any) -> str:
    """An array's text as PostgreSQL writes it (``array_out``)."""
    if isinstance(value, list):
        return "{" + ",".join(_array_text(item) for item in value) + "}"
    if value is None:
        return "NULL"
    text = str(value)
    if text == "" or text.upper() == "NULL" or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _timestamp_text(value: str) -> datetime:
    return _decode._timestamp(value.replace(" ", "T", 1))


# A range type's bound, from PostgreSQL's text of it, as psycopg's loader makes it.
_RANGES: dict[str, Callable[[tzinfo | None], Callable[[str], Any]]] = {
    "int4range": lambda _: int,
    "int8range": lambda _: int,
    "numrange": lambda _: Decimal,
    "daterange": lambda _: date.fromisoformat,
    "tsrange": lambda _: _timestamp_text,
    "tstzrange": lambda zone: (
        _timestamp_text if zone is None else lambda v: _timestamp_text(v).astimezone(zone)
    ),
}
_MULTIRANGES = {
    "int4multirange": "int4range",
    "int8multirange": "int8range",
    "nummultirange": "numrange",
    "datemultirange": "daterange",
    "tsmultirange": "tsrange",
    "tstzmultirange": "tstzrange",
}

# One range in PostgreSQL's text: its brackets, and each bound bare or quoted.
_RANGE_RE = re.compile(r'([\[(])("(?:[^"\\]|\\.|"")*"|[^,]*),("(?:[^"\\]|\\.|"")*"|[^)\]]*)([\])])')


def _bound(text: str, make: Callable[[str], Any]) -> Any:
    if text == "":
        return None  # unbounded
    if text.startswith('"'):
        text = re.sub(r'\\(.)|""', lambda m: m[1] or '"', text[1:-1])
    return make(text)


def _range_of(make: Callable[[str], Any]) -> Callable[[str], Any]:
    from psycopg.types.range import Range

    def parsed(text: str) -> Any:
        if text == "empty":
            return Range(empty=True)
        match = _RANGE_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"pgcache: cannot read {text!r} as a range")
        lower, upper = _bound(match[2], make), _bound(match[3], make)
        return Range(lower, upper, match[1] + match[4])

    return parsed


def _multirange_of(make: Callable[[str], Any]) -> Callable[[str], Any]:
    from psycopg.types.multirange import Multirange

    one = _range_of(make)

    def parsed(text: str) -> Any:
        inner = text[1:-1]
        return Multirange(one(m[0]) for m in _RANGE_RE.finditer(inner))

    return parsed


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
