"""QUERY's JSON rows as Python values of each column's PostgreSQL type.

PGCACHE.EXPLAIN names each result column with the type its JSON value is decoded as
(``int4``, ``numeric``, ``timestamptz``, ``enum``, ``record``, ``int4[]`` ...); a
``Decoder`` is made once per statement from those and turns each answer's rows into
values as psycopg would return them: ``int``, ``Decimal`` (every digit), ``float``,
``bool``, ``str``, ``None``, timezone-aware ``datetime``, ``date``, ``time``,
``timedelta``, ``UUID``, ``bytes``, ``dict``/``list`` for json and jsonb (numbers exact:
``int`` or ``Decimal``), lists for arrays, enums as ``str``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from .rows import RowFactory

Converter = Callable[[Any], Any]


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs: a row may hold two columns of one name."""

    __slots__ = ()


def loads(text: str, parse_int: Callable[[str], Any] = int) -> Any:
    """JSON with objects as ``_Pairs`` and every non-integer number a ``Decimal``."""
    return json.loads(text, object_pairs_hook=_Pairs, parse_float=Decimal, parse_int=parse_int)


# PostgreSQL writes a float's negative zero as the JSON number -0, which the json module
# reads as the integer 0, its sign lost. An answer where -0 may stand as a number (inside a
# string too: then it only costs the slower parse) is parsed keeping it as -0.0.
_NEGATIVE_ZERO = re.compile(r"[\[:,]\s*-0\s*[,\]}]")


def _int_or_negative_zero(digits: str) -> Any:
    return -0.0 if digits == "-0" else int(digits)


def _without_negative_zero(value: Any) -> Any:
    """A value parsed by ``_int_or_negative_zero`` as the json module would have parsed it:
    its only floats are the -0 it made (other non-integers are ``Decimal``)."""
    if isinstance(value, float):
        return 0
    if isinstance(value, list):
        return type(value)(_without_negative_zero(item) for item in value)
    if isinstance(value, tuple):
        return tuple(_without_negative_zero(item) for item in value)
    return value


def plain(value: Any) -> Any:
    """A decoded JSON value with its objects as dicts (the last of duplicate keys wins,
    as ``json.loads`` has it)."""
    if isinstance(value, _Pairs):
        return {key: plain(item) for key, item in value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _numeric(value: Any) -> Decimal:
    # An integer, a Decimal, or the JSON string PostgreSQL writes for NaN and infinities.
    return value if isinstance(value, Decimal) else Decimal(value)


def _float(value: Any) -> float:
    # PostgreSQL writes the shortest text that reads back as the same double, so the
    # Decimal the JSON parser made converts to exactly that double; NaN and the infinities
    # come as strings.
    return float(value)


_FRACTION = r"(?:\.(\d{1,6}))?"
_OFFSET = r"([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?"
_TIME_RE = re.compile(r"(\d{2}):(\d{2}):(\d{2})" + _FRACTION + r"(?:" + _OFFSET + r")?$")
_DATE_RE = re.compile(r"(\d{4,})-(\d{2})-(\d{2})$")


def _micros(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


def _offset(
    sign: str | None, hours: str, minutes: str | None, seconds: str | None
) -> timezone | None:
    if sign is None:
        return None
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    return timezone(-delta if sign == "-" else delta)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return _date_slowly(value)


def _date_slowly(value: str) -> date:
    if value == "infinity":
        return date.max
    if value == "-infinity":
        return date.min
    match = _DATE_RE.match(value)
    try:
        if match is None:
            raise ValueError(value)
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise ValueError(
            f"pgcache: date {value!r} is outside Python's range (years 1 to 9999)"
        ) from None


def _time(value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError:
        return _time_slowly(value)


def _time_slowly(value: str) -> time:
    # PostgreSQL's 24:00:00, and fractions older Pythons' fromisoformat does not read.
    match = _TIME_RE.match(value)
    if match is None:
        raise ValueError(f"pgcache: cannot read {value!r} as a time")
    hour = int(match[1])
    tzinfo = _offset(match[5], match[6] or "0", match[7], match[8])
    if hour == 24:  # PostgreSQL's 24:00:00, the end of the day: Python has none.
        return time(23, 59, 59, 999999, tzinfo=tzinfo)
    return time(hour, int(match[2]), int(match[3]), _micros(match[4]), tzinfo=tzinfo)


def _timestamp(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return _timestamp_slowly(value)


def _timestamp_slowly(value: str) -> datetime:
    if value in ("infinity", "-infinity"):
        # As psycopg would be configured to: the furthest datetimes Python has.
        moment = datetime.max if value == "infinity" else datetime.min
        return moment
    day, _, clock = value.partition("T")
    when = _time_slowly(clock)
    on = _date_slowly(day)
    return datetime(
        on.year,
        on.month,
        on.day,
        when.hour,
        when.minute,
        when.second,
        when.microsecond,
        tzinfo=when.tzinfo,
    )


def _timestamptz(value: str) -> datetime:
    moment = _timestamp(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


_INTERVAL_RE = re.compile(
    r"(?:([+-]?\d+) years? ?)?(?:([+-]?\d+) mons? ?)?(?:([+-]?\d+) days? ?)?"
    r"(?:([+-])?(\d+):(\d{2}):(\d{2})" + _FRACTION + r")?$"
)


def _interval(value: str) -> timedelta:
    # IntervalStyle postgres, PostgreSQL's default; a year counts 365 days and a month 30,
    # as psycopg counts them.
    match = _INTERVAL_RE.match(value)
    if match is None:
        raise ValueError(
            f"pgcache: cannot read interval {value!r}: set IntervalStyle to postgres "
            "for pgcache's PostgreSQL role"
        )
    years, months, days = (int(group or 0) for group in match.groups()[:3])
    delta = timedelta(days=365 * years + 30 * months + days)
    if match[5] is not None:
        clock = timedelta(
            hours=int(match[5]),
            minutes=int(match[6]),
            seconds=int(match[7]),
            microseconds=_micros(match[8]),
        )
        delta += -clock if match[4] == "-" else clock
    return delta


def _bytea(value: str) -> bytes:
    if not value.startswith("\\x"):
        raise ValueError("pgcache: bytea arrived in the escape format; set bytea_output to hex")
    return bytes.fromhex(value[2:])


def _inet(value: str) -> Any:
    return ipaddress.ip_interface(value) if "/" in value else ipaddress.ip_address(value)


_BASE: dict[str, Converter] = {
    "numeric": _numeric,
    "float4": _float,
    "float8": _float,
    "date": _date,
    "time": _time,
    "timetz": _time,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "interval": _interval,
    "uuid": uuid.UUID,
    # PostgreSQL's JSON writes an oid as a string; drivers read it as a number.
    "oid": int,
    "bytea": _bytea,
    "json": plain,
    "jsonb": plain,
    "record": plain,
    "inet": _inet,
    "cidr": ipaddress.ip_network,
}


def _nullable(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _array_of(convert: Converter | None) -> Converter:
    # Nested lists for several dimensions; `convert` lets NULL elements through.
    def array(value: Any) -> Any:
        # A composite element parsed as its pairs is one element, not a dimension.
        if isinstance(value, list) and not isinstance(value, _Pairs):
            return [array(item) for item in value]
        return value if convert is None else convert(value)

    return array


def json_text(value: Any) -> str:
    """A parsed JSON value as JSON text again, every number as its digits came (a
    ``Decimal`` is written as is, never through a float)."""
    if isinstance(value, dict):
        items = (json.dumps(key) + ": " + json_text(item) for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, _Pairs):
        return "{" + ", ".join(json.dumps(k) + ": " + json_text(v) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(json_text(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


# A column asked for as text (``as_text``): json and jsonb arrive embedded in the answer
# and are written out again; the other types arrive as PostgreSQL's text already.
_AS_TEXT: dict[str, Converter] = {"json": json_text, "jsonb": json_text}


def _only_held(convert: Converter, cannot: Callable[[str], bool]) -> Converter:
    def exactly(value: str) -> Any:
        if cannot(value):
            raise ValueError(f"pgcache: {value!r} has no exact Python value")
        return convert(value)

    return exactly


def _infinite(value: str) -> bool:
    return value.endswith("infinity")


def _end_of_day(value: str) -> bool:
    return value.startswith("24:")


# Where a driver raises (values Python cannot hold), so does an exact decoder, instead of
# giving the nearest value.
_EXACT: dict[str, Converter] = {
    "date": _only_held(_date, _infinite),
    "timestamp": _only_held(_timestamp, _infinite),
    "timestamptz": _only_held(_timestamptz, _infinite),
    "time": _only_held(_time, _end_of_day),
    "timetz": _only_held(_time, _end_of_day),
}


def converter(
    type_name: str,
    as_text: frozenset[str] = frozenset(),
    exact: bool = False,
    handler: Converter | None = None,
) -> Converter | None:
    """How a column of ``type_name`` (as EXPLAIN names it) is decoded; None: as parsed.
    The types in ``as_text`` come as PostgreSQL's text of them. ``exact``: a value Python
    cannot hold (24:00:00, an infinite date) raises ``ValueError`` rather than becoming the
    nearest one Python has. ``handler``: a user's decoder of the column's type (see
    ``decoders``), given each value (each element of an array) as decoded without it."""
    if type_name.endswith("[]"):
        return _array_of(converter(type_name[:-2], as_text, exact, handler))
    if type_name in as_text:
        # Asked for as PostgreSQL's text: no decoder of the type applies.
        convert = _AS_TEXT.get(type_name)
        handler = None
    elif exact and type_name in _EXACT:
        convert = _EXACT[type_name]
    else:
        convert = _BASE.get(type_name)
    if handler is not None:
        # A value of a type pgcache leaves as parsed (a JSON object, say) reaches the
        # handler as the json module would make it.
        convert = _then(convert or plain, handler)
    return None if convert is None else _nullable(convert)


def _then(convert: Converter, handler: Converter) -> Converter:
    return lambda value: handler(convert(value))


def _naming(handler: Converter, column: str) -> Converter:
    """``handler`` (a user's decoder) whose exception says which column it was decoding
    (a note, on Pythons that have them: the exception itself is the user's)."""

    def decoded(value: Any) -> Any:
        try:
            return handler(value)
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(f"pgcache: in the decoder of column {column!r}")
            raise

    return decoded


class Decoder:
    """Turns one statement's answers into rows: made once from its columns."""

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        row_factory: RowFactory,
        as_text: frozenset[str] = frozenset(),
        exact: bool = False,
        handlers: Sequence[Converter | None] = (),
        handled: tuple[int, ...] = (),
    ) -> None:
        self.names: list[str] = [name for name, _ in columns]
        self.types: list[str] = [type_name for _, type_name in columns]
        handlers = [
            None if handler is None else _naming(handler, name)
            for handler, name in zip(list(handlers) or [None] * len(self.types), self.names)
        ]
        self._converters = [
            converter(type_name, as_text, exact, handler)
            for type_name, handler in zip(self.types, handlers)
        ]
        # Columns of distinct names: each row is a plain JSON object, parsed by the json
        # module's C code, its values in the columns' order; json, jsonb and records are
        # then already dicts and lists.
        self._unique = len(set(self.names)) == len(self.names)
        self._fast_converters = [
            None
            if type_name in _ALREADY_PLAIN
            and type_name.rstrip("[]") not in as_text
            and handler is None
            else convert
            for type_name, convert, handler in zip(self.types, self._converters, handlers)
        ]
        # Every column but the floats' has a -0 read back as the json module reads it.
        self._floats = any(t.rstrip("[]") in _FLOATS for t in self.types)
        self._zero_converters = [
            convert if type_name.rstrip("[]") in _FLOATS else _restoring_zero(convert)
            for type_name, convert in zip(self.types, self._converters)
        ]
        self._make_row = row_factory(self.names)
        # What PGCACHE.EXPLAIN said of the statement (set by the client that asked).
        self.explained: Any = None
        # What an answer kept for several callers was decoded as: the columns, the types
        # made text or exact (a ``get`` and a ``query`` of one statement share its answers),
        # and the decoders that applied (``handled``: their state then).
        self.shape = (tuple(self.names), as_text, exact, handled)

    def rows(self, text: str) -> list[Any]:
        """The rows of one answer (QUERY's JSON array of row objects)."""
        return self.rows_of(self.values(text))

    def rows_of(self, values: list[list[Any]]) -> list[Any]:
        """Rows made from one answer's values (``values``), this caller's alone."""
        make_row = self._make_row
        return [make_row(row) for row in values]

    def values(self, text: str) -> list[list[Any]]:
        """Each row of one answer as its columns' values, typed."""
        if self._floats and _NEGATIVE_ZERO.search(text):
            decoded = [[value for _, value in row] for row in loads(text, _int_or_negative_zero)]
            converters = self._zero_converters
        elif self._unique:
            decoded = [row.values() for row in json.loads(text, parse_float=Decimal)]
            converters = self._fast_converters
        else:
            decoded = [[value for _, value in row] for row in loads(text)]
            converters = self._converters
        width = len(converters)
        if not any(converters):
            return [list(values) for values in decoded if _fits(values, width)]
        return [
            [
                value if convert is None else convert(value)
                for value, convert in zip(values, converters)
            ]
            for values in decoded
            if _fits(values, width)
        ]

    def made(self, kept: Any) -> list[Any] | None:
        """Rows made from an answer kept for several callers (``_local.Kept``: a tuple per
        row, which no row factory can change): each caller's own, down to the values a
        caller could change (dicts and lists, whatever the column's type). None where the
        answer was kept decoded otherwise than this decoder decodes (other columns: DDL between
        the two; other types as text, or exact)."""
        if kept.shape != self.shape:
            return None
        make_row = self._make_row
        mutable = kept.mutable
        if not mutable:
            return [make_row(values) for values in kept.rows]
        return [
            make_row(tuple(copy.deepcopy(v) if i in mutable else v for i, v in enumerate(values)))
            for values in kept.rows
        ]


_FLOATS = {"float4", "float8"}


def _restoring_zero(convert: Converter | None) -> Converter:
    def restored(value: Any) -> Any:
        value = _without_negative_zero(value)
        return value if convert is None else convert(value)

    return restored


# What the json module parses as the column's value already (a dict or list, not pairs).
_ALREADY_PLAIN = {"json", "jsonb", "record", "json[]", "jsonb[]", "record[]"}


def _fits(values: Any, width: int) -> bool:
    if len(values) != width:
        raise ValueError(
            f"pgcache: a row has {len(values)} columns where the statement has {width}; the "
            "statement changed (DDL): ask EXPLAIN again"
        )
    return True


class TableDecoder:
    """Turns a table's rows (READ's JSON objects) into dicts, each known column by its type
    (a column the table gained since is left as parsed)."""

    def __init__(
        self, columns: Sequence[tuple[str, str]], handlers: Sequence[Converter | None] = ()
    ) -> None:
        handlers = list(handlers) or [None] * len(columns)
        self._converters: dict[str, Converter] = {
            name: converter(type_name, handler=handler) or plain
            for (name, type_name), handler in zip(columns, handlers)
        }
        self._floats = any(t.rstrip("[]") in _FLOATS for _, t in columns)
        # As `Decoder`'s: a -0 kept as -0.0 for the float columns only.
        self._zero_converters: dict[str, Converter] = {
            name: convert if type_name.rstrip("[]") in _FLOATS else _restoring_zero(convert)
            for (name, type_name), convert in zip(columns, self._converters.values())
        }

    def row(self, text: str) -> dict[str, Any] | None:
        """The row of one READ answer (``null``: a row remembered absent)."""
        if self._floats and _NEGATIVE_ZERO.search(text):
            pairs = loads(text, _int_or_negative_zero)
            converters = self._zero_converters
            unknown = _restoring_zero(plain)
        else:
            pairs = loads(text)
            converters = self._converters
            unknown = plain
        if pairs is None:
            return None
        return {name: converters.get(name, unknown)(value) for name, value in pairs}
