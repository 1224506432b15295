"""Data frames (issue #54): ``frame(sql, params, kind=...)`` compared, frame by frame and dtypes
included, with what pandas and polars read from PostgreSQL through psycopg for the same query,
over every column type the typed-rows test covers."""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from decimal import Decimal
from functools import partial
from typing import Any

import pandas
import pandas.testing
import polars
import polars.testing
import psycopg
import pyarrow
import pytest
import redis.asyncio
from psycopg.types import TypeInfo
from psycopg.types.json import set_json_loads
from servers import Postgres, Server
from test_types import TYPES_SQL

from pgcache import AsyncPGCacheManager, PGCacheManager

# Row 2's NaN and infinities, row 4's extremes and every NULL of row 3: each frame library's
# handling of them is compared too. Columns of one type each, so a frame's dtype is the type's.
SELECT_TYPED = "SELECT * FROM typed WHERE id = ANY($1::int[]) ORDER BY id"
ROW_SETS = [[1], [1, 2], [1, 2, 3, 4], [3], [2], [4], [2, 3, 4]]


@pytest.fixture(scope="module")
def typed(pg: Postgres) -> Postgres:
    pg.execute(TYPES_SQL.replace("typed", "framed"))
    return pg


def psycopg_frame(pg: Postgres, kind: str, sql: str, params: list) -> Any:
    with psycopg.connect(pg.conninfo) as conn:
        # Exact numbers in json, as pgcache gives them.
        set_json_loads(partial(json.loads, parse_float=Decimal), conn)
        conn.execute("SET TimeZone = 'UTC'")
        # Arrays of the enum as lists of str (psycopg reads them as text unless told).
        TypeInfo.fetch(conn, "framed_mood").register(conn)
        literal = sql.replace("$1::int[]", "'{" + ",".join(map(str, params[0])) + "}'::int[]")
        if kind == "pandas":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return pandas.read_sql(literal, conn)
        made = polars.read_database(literal, conn)
        if kind != "arrow":
            return made
        # Arrow: the columns polars keeps as Python objects, as their text.
        untyped = [name for name, dtype in made.schema.items() if dtype == polars.Object]
        return made.with_columns(
            polars.Series(n, [None if v is None else str(v) for v in made[n]], polars.String)
            for n in untyped
        ).to_arrow()


def assert_same(kind: str, ours: Any, theirs: Any, ids: list[int]) -> None:
    if kind == "pandas":
        pandas.testing.assert_frame_equal(ours, theirs, check_dtype=True, check_exact=True)
    elif kind == "polars":
        assert ours.schema == theirs.schema, f"rows {ids}"
        for name in ours.columns:
            if ours.schema[name] == polars.Object:
                # Python objects (a UUID): polars compares them by identity.
                assert ours[name].to_list() == theirs[name].to_list(), f"{name}, rows {ids}"
            else:
                polars.testing.assert_series_equal(ours[name], theirs[name], check_exact=True)
    else:
        assert isinstance(ours, pyarrow.Table)
        assert ours.schema == theirs.schema, f"rows {ids}"
        # Table.equals holds NaN unequal to itself: compare the values, NaN as NaN.
        for name in ours.column_names:
            mine, other = ours[name].to_pylist(), theirs[name].to_pylist()
            assert same_values(mine, other), f"{name}, rows {ids}: {mine!r} != {other!r}"


def same_values(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, float) and isinstance(theirs, float) and ours != ours:
        return theirs != theirs
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(same_values, ours, theirs))
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_values(ours[k], theirs[k]) for k in ours)
    return type(ours) is type(theirs) and ours == theirs


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
@pytest.mark.parametrize("ids", ROW_SETS)
def test_a_frame_is_what_the_library_reads_from_postgresql(
    server: Server, typed: Postgres, kind: str, ids: list[int]
) -> None:
    cache = PGCacheManager(server.client())
    sql = SELECT_TYPED.replace("typed", "framed")
    try:
        theirs = psycopg_frame(typed, kind, sql, [ids])
    # Whatever the library refuses, so must we (polars panics on some values: a BaseException).
    except (Exception, polars.exceptions.PanicException) as refused:
        # A value the library cannot hold (polars: a numeric of 50 digits): the same refusal.
        with pytest.raises(type(refused), match=re.escape(str(refused))):
            cache.frame(sql, [ids], kind=kind)
        return
    # A miss, then a hit: the same frame.
    for _ in range(2):
        assert_same(kind, cache.frame(sql, [ids], kind=kind), theirs, ids)


def test_an_empty_result_has_the_columns(server: Server, typed: Postgres) -> None:
    cache = PGCacheManager(server.client())
    sql = SELECT_TYPED.replace("typed", "framed")
    ours = cache.frame(sql, [[]])
    assert list(ours.columns) == list(psycopg_frame(typed, "pandas", sql, [[]]).columns)
    assert len(ours) == 0


def test_the_asyncio_manager_makes_the_same_frames(server: Server, typed: Postgres) -> None:
    sql = SELECT_TYPED.replace("typed", "framed")

    async def framed() -> Any:
        client = redis.asyncio.Redis(port=server.port)
        try:
            return await AsyncPGCacheManager(client).frame(sql, [[3, 4]], kind="polars")
        finally:
            await client.aclose()

    ours = asyncio.run(framed())
    assert_same("polars", ours, psycopg_frame(typed, "polars", sql, [[3, 4]]), [3, 4])


def test_an_unknown_kind_is_refused_before_anything_is_asked(server: Server) -> None:
    cache = PGCacheManager(server.client())
    with pytest.raises(ValueError, match="kind 'excel' is not one of pandas, polars, arrow"):
        cache.frame("SELECT 1", kind="excel")
