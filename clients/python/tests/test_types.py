"""Typed rows: every type of a table, NULLs and edge values, read through pgcache and
compared field by field with what psycopg returns for the same SELECT."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from functools import partial

import psycopg
import pytest
from psycopg.types import TypeInfo
from psycopg.types.json import set_json_loads
from servers import Postgres

from pgcache import PGCacheManager

TYPES_SQL = """
CREATE DOMAIN typed_positive AS integer CHECK (VALUE > 0);
CREATE TYPE typed_mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id integer PRIMARY KEY,
    small smallint, big bigint, n numeric, f4 real, f8 double precision, b boolean,
    t text, v varchar(20), c char(4), ts timestamp, tstz timestamptz, d date, tm time,
    tmtz timetz, iv interval, u uuid, by bytea, j json, jb jsonb, ints integer[],
    texts text[], m typed_mood, moods typed_mood[], p typed_positive, grid integer[][]
);
INSERT INTO typed VALUES
 (1, 32767, 9223372036854775807, 12345678901234567890.123456789012345678901234567890,
  3.25, 0.1, true, 'héllo "quoted" \\ back', 'var', 'ab', '2024-02-29 23:59:59.999999',
  '2024-06-01 12:00:00.5+02', '2024-02-29', '23:59:59.123', '12:00:00+05:30',
  '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '\\x00ff10', '{"a": 1.10, "b": [1, 2.5e3, null], "c": "x"}',
  '{"exact": 0.1000000000000000055511151231257827, "big": 123456789012345678901234567890}',
  '{1,2,NULL,4}', '{"a","b,c","d\\"e"}', 'happy', '{sad,happy}', 7, '{{1,2},{3,4}}'),
 (2, -32768, -9223372036854775808, 'NaN', 'Infinity', '-Infinity', false, '', '', '',
  '1999-12-31 00:00:00', '1970-01-01 00:00:00+00', '0001-01-01', '00:00:00', '00:00:00-08',
  '-1 days +02:03:00', '00000000-0000-0000-0000-000000000000', '\\x', '[]', '{}', '{}',
  '{}', 'sad', '{}', 1, '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, -0.000000000000000000001, 'NaN', 1e308, true, 'x', 'x', 'x',
  '2024-01-01 00:00:00', '2024-01-01 00:00:00-03:30', '9999-12-31', '12:34:56.000001',
  '23:59:59.999999+14', '00:00:00.000001', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '\\xdeadbeef', '"a string"', 'null', '{-1}', '{NULL}', 'ok', '{NULL,ok}', 2147483647,
  '{{NULL}}');
"""


@pytest.fixture(scope="module")
def typed(pg: Postgres) -> Postgres:
    pg.execute(TYPES_SQL)
    return pg


def psycopg_rows(pg: Postgres, sql: str, params: tuple) -> list:
    with psycopg.connect(pg.conninfo) as conn:
        # Exact numbers in json, as pgcache gives them.
        set_json_loads(partial(json.loads, parse_float=Decimal), conn)
        conn.execute("SET TimeZone = 'UTC'")
        # Arrays of the enum as lists of str (psycopg reads them as text unless told).
        TypeInfo.fetch(conn, "typed_mood").register(conn)
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(sql, params).fetchall()


@pytest.mark.parametrize("row_id", [1, 2, 3, 4])
def test_every_type_reads_as_psycopg_reads_it(
    typed: Postgres, cache: PGCacheManager, row_id: int
) -> None:
    sql = "SELECT * FROM typed WHERE id = $1"
    (ours,) = cache.get(sql, [row_id])
    (theirs,) = psycopg_rows(typed, "SELECT * FROM typed WHERE id = %s", (row_id,))
    assert list(ours) == list(theirs)
    for column in theirs:
        expected = theirs[column]
        got = ours[column]
        if isinstance(expected, float) and expected != expected:
            assert got != got, column
            continue
        if isinstance(expected, Decimal) and expected.is_nan():
            assert isinstance(got, Decimal) and got.is_nan(), column
            continue
        assert got == expected, f"{column}: {got!r} != {expected!r}"
        assert type(got) is type(expected), f"{column}: {type(got)} != {type(expected)}"


def test_a_hit_decodes_as_the_miss_did(typed: Postgres, cache: PGCacheManager) -> None:
    sql = "SELECT id, n, tstz, iv, by, jb FROM typed WHERE id = $1"
    first = cache.get(sql, [1])
    again = cache.get(sql, [1])
    assert first == again


def test_negative_zero_and_oid_read_as_psycopg_reads_them(
    pg: Postgres, cache: PGCacheManager
) -> None:
    """#51 items 16 and 17, through ``get`` and ``read``: a float's -0 keeps its sign (a json
    value's -0 stays the integer 0, as the json module reads it), an oid is an int."""
    pg.execute(
        "DROP TABLE IF EXISTS typed_zero;"
        " CREATE TABLE typed_zero (id integer PRIMARY KEY, f8 float8, f4s real[], o oid, j json);"
        " INSERT INTO typed_zero VALUES (1, '-0', '{-0,1}', 4294967295, '{\"a\": -0}')"
    )
    (theirs,) = psycopg_rows(pg, "SELECT * FROM typed_zero WHERE id = %s", (1,))
    by_query = cache.get("SELECT * FROM typed_zero WHERE id = $1", [1])[0]
    for ours in (by_query, cache.read("typed_zero", {"id": 1})):
        assert ours == theirs
        assert [math.copysign(1, v) for v in (ours["f8"], *ours["f4s"])] == [-1, -1, 1]
        assert type(ours["o"]) is int and type(ours["j"]["a"]) is int
