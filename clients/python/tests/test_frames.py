"""Data frames (issue #54): ``frame(sql, params, kind=...)`` compared, frame by frame and dtypes
included, with what pandas and polars read from PostgreSQL through a stock psycopg connection
(nothing registered or set) for the same query, over every column type the typed-rows test
covers, ranges, arrays of an enum and timestamps across a change of daylight saving time."""

from __future__ import annotations

import asyncio
import re
import warnings
from typing import Any
from zoneinfo import ZoneInfo

import pandas
import pandas.testing
import polars
import polars.testing
import psycopg
import pyarrow
import pytest
import redis.asyncio
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


def psycopg_frame(
    pg: Postgres, kind: str, sql: str, params: list, timezone: str | None = None
) -> Any:
    with psycopg.connect(pg.conninfo) as conn:
        if timezone is not None:
            conn.execute(f"SET TimeZone = '{timezone}'")
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
    sql = SELECT_TYPED.replace("typed", "framed")
    assert_frames_alike(PGCacheManager(server.client()), typed, kind, sql, ids)


def assert_frames_alike(
    cache: PGCacheManager, pg: Postgres, kind: str, sql: str, ids: list[int], **zone: str
) -> None:
    """Our frame of ``sql`` for rows ``ids`` (a miss, then a hit) is the library's from
    psycopg, or refused as the library refuses it."""
    try:
        theirs = psycopg_frame(pg, kind, sql, [ids], zone.get("timezone"))
    # Whatever the library refuses, so must we (polars panics on some values: a BaseException).
    except (Exception, polars.exceptions.PanicException) as refused:
        # A value the library cannot hold (polars: a numeric of 50 digits): the same refusal.
        with pytest.raises(type(refused), match=re.escape(str(refused))):
            cache.frame(sql, [ids], kind=kind, **zone)
        return
    for _ in range(2):
        assert_same(kind, cache.frame(sql, [ids], kind=kind, **zone), theirs, ids)


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


MORE_SQL = """
CREATE TYPE framed_label AS ENUM
    ('plain', 'with space', 'a,b', 'q"uote', 'back\\slash', 'NULL', '');
CREATE TABLE framed_more (
    id integer PRIMARY KEY, labels framed_label[], r int4range, nr numrange, dr daterange,
    tr tsrange, tzr tstzrange, mr int4multirange, rs int4range[], at timestamptz,
    ats timestamptz[], j json
);
INSERT INTO framed_more VALUES
 (1, '{plain,"with space","a,b","q\\"uote","back\\\\slash","NULL","",NULL}', '[1,5)',
  '(1.5,2.25]', '[2024-01-01,2024-02-01)', '["2024-03-31 01:00","2024-03-31 03:00")',
  '[2024-03-31 00:30+00,2024-03-31 02:30+00)', '{[1,3),[5,7)}', '{"[1,2)",empty}',
  '2024-03-31 00:30:00+00', '{"2024-03-31 00:30:00+00","2024-03-31 02:30:00+00"}',
  '{"f": 0.1, "e": 2.5e3, "n": [0.5, -0.0, 1e-7]}'),
 (2, '{}', 'empty', '(,3]', '[2024-01-01,)', NULL, '(,)', '{}', '{}',
  '2024-10-27 00:30:00+00', '{}', '{"f": 1.5, "e": 2.0, "n": []}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-10-27 01:30:00+00', NULL, NULL);
"""
SELECT_MORE = "SELECT * FROM framed_more WHERE id = ANY($1::int[]) ORDER BY id"


@pytest.fixture(scope="module")
def more(pg: Postgres) -> Postgres:
    pg.execute(MORE_SQL)
    return pg


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
@pytest.mark.parametrize("ids", [[1], [1, 2, 3], [3]])
def test_ranges_enum_arrays_and_json_are_what_a_stock_psycopg_gives(
    server: Server, more: Postgres, kind: str, ids: list[int]
) -> None:
    assert_frames_alike(PGCacheManager(server.client()), more, kind, SELECT_MORE, ids)


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_timestamps_across_daylight_saving_time_are_in_the_zone_asked_for(
    server: Server, more: Postgres, kind: str
) -> None:
    """A named zone, as psycopg gives it in a session of that TimeZone: one dtype through the
    change of offset (polars ``Datetime(time_zone="Europe/Berlin")``; pandas.read_sql makes
    every zone UTC)."""
    cache = PGCacheManager(server.client())
    sql = SELECT_MORE.replace("*", "id, tzr, at, ats")
    assert_frames_alike(cache, more, kind, sql, [1, 2, 3], timezone="Europe/Berlin")
    if kind == "polars":
        ours = cache.frame(sql, [[1, 2, 3]], kind="polars", timezone="Europe/Berlin")
        assert ours.schema["at"] == polars.Datetime("us", "Europe/Berlin")


def test_the_default_zone_is_pgcache_s_sessions(server: Server, more: Postgres) -> None:
    cache = PGCacheManager(server.client())
    shown = cache.health()["postgres_timezone"]
    with psycopg.connect(more.conninfo) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == (shown,)
    ours = cache.frame(SELECT_MORE.replace("*", "id, at"), [[1]], kind="polars")
    assert ours.schema["at"] == polars.Datetime("us", shown)


def test_an_unknown_zone_is_refused(server: Server, more: Postgres) -> None:
    cache = PGCacheManager(server.client())
    with pytest.raises(ValueError, match="TimeZone 'Mars/Olympus' is not one Python knows"):
        cache.frame(SELECT_MORE, [[1]], timezone="Mars/Olympus")


def test_a_zone_python_does_not_know_is_utc_with_a_warning() -> None:
    from pgcache import _frames

    with pytest.warns(UserWarning, match="TimeZone '<\\+03>-03' is not one Python knows"):
        assert _frames.zone_in({"postgres_timezone": "<+03>-03"}, False) == ZoneInfo("UTC")
    assert _frames.zone_in({}, False) is None
    assert _frames.zoned([("at", "timestamptz[]")]) and not _frames.zoned([("d", "date")])
