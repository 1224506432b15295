"""A table of every type the client types (``_driver_types.TYPED``) and arrays of them,
with ordinary values, edge values (-0, NaN, infinities, extremes) and NULLs; and the
comparison of two reads of it, value by value, type included (issue #51)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, time
from decimal import Decimal
from typing import Any, Callable

# Column name -> its type; arrays end in _a.
COLUMNS = {
    "b": "boolean", "by": "bytea", "nm": "name", "i2": "smallint", "i4": "integer",
    "i8": "bigint", "t": "text", "o": "oid", "j": "json", "jb": "jsonb", "f4": "real",
    "f8": "double precision", "bp": "char(3)", "vc": "varchar(10)", "d": "date", "tm": "time",
    "ts": "timestamp", "tstz": "timestamptz", "iv": "interval", "tmtz": "timetz",
    "n": "numeric", "u": "uuid", "e": "{mood}", "ip": "inet", "net": "cidr",
    "b_a": "boolean[]", "i4_a": "integer[]", "i8_a": "bigint[]", "t_a": "text[]",
    "f8_a": "double precision[]", "n_a": "numeric[]", "d_a": "date[]",
    "tstz_a": "timestamptz[]", "u_a": "uuid[]", "e_a": "{mood}[]", "ip_a": "inet[]",
    "jb_a": "jsonb[]",
}  # fmt: skip

ROWS = [
    # Ordinary values.
    "true, '\\x00ff', 'nm', 7, 8, 9, 'héllo', 12345, '{\"a\": 1.5, \"b\": [1, 2.25e3, null]}',"
    " '{\"a\": 1.50, \"big\": 123456789012345678901234567890}', 3.25, 0.1, 'ab', 'var',"
    " '2024-02-29', '23:59:59.123', '2024-06-01 12:00:00.5', '2024-06-01 12:00:00.5+02',"
    " '1 year 2 mons 3 days 04:05:06.789', '12:00:00+05:30', 12.340,"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', '10.0.0.1', '10.0.0.0/8',"
    " '{true,NULL}', '{1,NULL,3}', '{9223372036854775807}', '{a,\"b,c\"}', '{1.5,-2}',"
    " '{1.10,NULL}', '{2024-01-01}', '{\"2024-01-01 00:00:00+00\"}',"
    " '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{sad,happy}', '{10.0.0.2,::1}',"
    " ARRAY['{\"x\": 1.5}'::jsonb]",
    # Edge values.
    "false, '\\x', '', -32768, -2147483648, -9223372036854775808, '', 0,"
    ' \'{"a": -0, "b": -0.0, "c": 1e400}\', \'{"a": -0.0, "n": null}\', \'-0\', \'-0\','
    " '', '', '0001-01-01', '24:00:00', '1999-12-31 23:59:59.999999',"
    " '1970-01-01 00:00:00+00', '-1 days +02:03:00', '00:00:00-08', 'NaN',"
    " '00000000-0000-0000-0000-000000000000', 'sad', '::ffff:1.2.3.4', '2001:db8::/32',"
    " '{}', '{}', '{}', '{}', '{NaN,Infinity,-Infinity,-0}', '{NaN}', '{}', '{}', '{}', '{}',"
    " '{}', '{}'",
    "true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '[]', 'null', 'NaN', 'Infinity',"
    " NULL, NULL, '9999-12-31', '00:00:00', NULL, '2024-03-31 01:30:00+00', '0', NULL,"
    " '-0.000000000000000000001', NULL, NULL, '10.0.0.1/24', NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity', '-Infinity',"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
]


def create_sql(table: str) -> str:
    """The table (an id, then ``COLUMNS``), its enum type (``<table>_mood``), and ``ROWS``."""
    mood = f"{table}_mood"
    columns = ", ".join(f"{name} {kind.format(mood=mood)}" for name, kind in COLUMNS.items())
    rows = ", ".join(f"({i}, {row})" for i, row in enumerate(ROWS, 1))
    return (
        f"DROP TABLE IF EXISTS {table}; DROP TYPE IF EXISTS {mood};"
        f" CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'happy');"
        f" CREATE TABLE {table} (id integer PRIMARY KEY, {columns});"
        f" INSERT INTO {table} VALUES {rows}"
    )


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` is ``b``'s value as a caller sees it: of the same type, equal, NaN
    where NaN, the same sign of zero, a datetime in the same zone."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal) and (a.is_nan() or b.is_nan()):
        return a.is_nan() and b.is_nan()
    if isinstance(a, (datetime, time)):
        return a == b and repr(a.tzinfo) == repr(b.tzinfo) and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def shown(value: Any) -> str:
    """``value`` described, a memoryview by its bytes (psycopg2's bytea)."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(shown(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, memoryview):
        return f"memoryview({bytes(value)!r})"
    return repr(value)


def outcome(read: Callable[[], Iterable[Any]]) -> list[tuple[Any, ...]] | type:
    """``read()``'s rows as tuples, or the class of what it raised (a driver raises for a
    value Python cannot hold)."""
    try:
        return [tuple(row) for row in read()]
    except Exception as error:
        return type(error)


def differences(cached: Any, plain: Any) -> list[str]:
    """Each value of ``cached`` not ``same`` as ``plain``'s, described; either may be the
    class of what a read raised (``outcome``)."""
    if isinstance(cached, type) or isinstance(plain, type):
        return [] if cached is plain else [f"{cached!r} where the database gives {plain!r}"]
    if len(cached) != len(plain):
        return [f"{len(cached)} rows where the database gives {len(plain)}"]
    return [
        f"row {i}: {shown(ours)} != {shown(theirs)}"
        for i, (ours, theirs) in enumerate(zip(cached, plain))
        if not same(ours, theirs)
    ]
