"""Decoders of types of the application's own (issue #54): registered by type name or oid,
applied to columns of the type, arrays of it and domains over it, by priority; for the
process or one manager; through ``get``, ``query``, ``read`` and ``multiread``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from servers import Postgres, Server

import pgcache
from pgcache import PGCacheManager
from pgcache._local import Kept

PLACES_SQL = """
CREATE TYPE point3 AS (x double precision, y double precision, z double precision);
CREATE DOMAIN location AS point3;
CREATE DOMAIN checked_location AS location CHECK ((VALUE).z >= 0);
CREATE TABLE places (
    id integer PRIMARY KEY, at point3, spot checked_location, path point3[], label text
);
INSERT INTO places VALUES
 (1, ROW(1, 2, 3), ROW(4, 5, 6), ARRAY[ROW(1, 1, 1), NULL, ROW(2, 2, 2)]::point3[], 'one'),
 (2, NULL, NULL, NULL, NULL);
SELECT pgcache_watch('places');
"""


@dataclass(frozen=True)
class Point3:
    x: Decimal
    y: Decimal
    z: Decimal


def point3(value: dict) -> Point3:
    return Point3(**value)


@pytest.fixture(scope="module")
def places(pg: Postgres) -> Postgres:
    pg.execute(PLACES_SQL)
    return pg


@pytest.fixture
def no_global_decoders() -> Iterator[None]:
    yield
    for entry in pgcache.list_decoders():
        pgcache.unregister_decoder(entry.type)


SELECT_PLACE = "SELECT id, at, spot, path, label FROM places WHERE id = $1"


def test_a_type_s_decoder_applies_to_its_columns_arrays_and_domains(
    server: Server, places: Postgres, no_global_decoders: None
) -> None:
    cache = PGCacheManager(server.client())
    before = cache.get(SELECT_PLACE, [1])[0]
    assert before["at"] == {"x": 1, "y": 2, "z": 3}
    # An array of a composite read by READ: each element a dict (they came as their pairs).
    path = [{"x": 1, "y": 1, "z": 1}, None, {"x": 2, "y": 2, "z": 2}]
    assert cache.read("places", {"id": 1})["path"] == path
    assert before["path"] == path
    pgcache.register_decoder("point3", point3)
    row = cache.get(SELECT_PLACE, [1])[0]
    assert row["at"] == Point3(1, 2, 3)
    assert row["spot"] == Point3(4, 5, 6)  # a domain over a domain over it
    assert row["path"] == [Point3(1, 1, 1), None, Point3(2, 2, 2)]
    assert row["label"] == "one"
    # NULLs are never given to a decoder.
    nulls = cache.get(SELECT_PLACE, [2])[0]
    assert (nulls["at"], nulls["spot"], nulls["path"]) == (None, None, None)
    # The rows of ``read`` and ``multiread`` too; not ``query``'s, a driver's rows (what the
    # ORM integrations and frames read: their values are the drivers').
    columns, rows = cache.query(SELECT_PLACE, [1])
    assert [name for name, _ in columns][:2] == ["id", "at"]
    assert rows[0][1] == {"x": 1, "y": 2, "z": 3}
    assert cache.read("places", {"id": 1})["spot"] == Point3(4, 5, 6)
    assert [r["at"] if r else None for r in cache.multiread("places", [{"id": 1}, {"id": 3}])] == [
        Point3(1, 2, 3),
        None,
    ]
    # Unregistered, the values come as before.
    assert pgcache.unregister_decoder("point3")
    assert not pgcache.unregister_decoder("point3")
    assert cache.get(SELECT_PLACE, [1])[0]["at"] == {"x": 1, "y": 2, "z": 3}


def test_by_oid_by_priority_and_nearest_type_first(
    server: Server, places: Postgres, no_global_decoders: None
) -> None:
    cache = PGCacheManager(server.client())
    with psycopg.connect(places.conninfo) as conn:
        oid = conn.execute("SELECT 'point3'::regtype::oid::int").fetchone()[0]
    pgcache.register_decoder(oid, lambda v: ("by oid", v["x"]))
    assert cache.get(SELECT_PLACE, [1])[0]["at"] == ("by oid", 1)
    # A domain's own decoder wins over its base type's at the same priority...
    pgcache.register_decoder("location", lambda v: "a location")
    row = cache.get(SELECT_PLACE, [1])[0]
    assert (row["at"], row["spot"]) == (("by oid", 1), "a location")
    # ... and a higher priority wins over nearness.
    pgcache.register_decoder("point3", lambda v: "preferred", priority=10)
    row = cache.get(SELECT_PLACE, [1])[0]
    assert (row["at"], row["spot"]) == ("preferred", "preferred")
    listed = pgcache.list_decoders()
    assert [(e.type, e.priority) for e in listed] == [("point3", 10), ("location", 0), (oid, 0)]
    assert all(e.scope == "global" for e in listed)


def test_a_manager_s_decoders_are_its_own_and_win_ties(
    server: Server, places: Postgres, no_global_decoders: None
) -> None:
    own = PGCacheManager(server.client())
    other = PGCacheManager(server.client())
    pgcache.register_decoder("point3", lambda v: "global")
    own.register_decoder("point3", lambda v: "own")
    assert own.get(SELECT_PLACE, [1])[0]["at"] == "own"
    assert other.get(SELECT_PLACE, [1])[0]["at"] == "global"
    assert [e.scope for e in own.list_decoders()] == ["manager", "global"]
    assert [e.scope for e in other.list_decoders()] == ["global"]
    assert own.unregister_decoder("point3")
    assert own.get(SELECT_PLACE, [1])[0]["at"] == "global"


def test_kept_answers_are_decoded_by_the_decoders_of_their_call(
    server: Server, places: Postgres, no_global_decoders: None
) -> None:
    """With a local cache, answers kept in the process: each caller gets its own copy of a
    decoder's value, and a decoder registered later applies to answers kept before."""
    cache = PGCacheManager(server.client(), local_cache=True)
    pgcache.register_decoder("point3", lambda v: dict(v, decoded=True))
    first = None
    for _ in range(50):
        first = cache.get(SELECT_PLACE, [1])[0]
    assert first is not None and first["at"]["decoded"] is True
    first["at"]["decoded"] = "changed by a caller"
    assert cache.get(SELECT_PLACE, [1])[0]["at"]["decoded"] is True
    pgcache.register_decoder("point3", point3, priority=1)
    assert cache.get(SELECT_PLACE, [1])[0]["at"] == Point3(1, 2, 3)


def test_kept_values_a_caller_can_change_are_copied_and_no_others() -> None:
    """A frozen dataclass (a decoder's usual value) or a tuple of such is shared by the
    callers of a kept answer; a dict, a list or another object is copied for each."""

    @dataclass
    class Open:
        v: int

    kept = Kept([(Point3(1, 2, 3), (Point3(1, 1, 1), "a"), {"a": 1}, [1], Open(1), "t", None)], ())
    assert kept.mutable == frozenset({2, 3, 4})


@pytest.mark.parametrize(
    ("type_", "error"),
    [
        ("", ValueError),
        ("public.point3", ValueError),
        ("double precision", ValueError),
        ("point3[]", ValueError),
        (0, ValueError),
        (True, TypeError),
        (1.5, TypeError),
    ],
)
def test_a_decoder_of_no_type_is_refused(type_: object, error: type) -> None:
    with pytest.raises(error, match="pgcache"):
        pgcache.register_decoder(type_, str)  # type: ignore[arg-type]


def test_a_decoder_s_exception_names_the_column(
    server: Server, places: Postgres, no_global_decoders: None
) -> None:
    def refuse(value: dict) -> Point3:
        raise ValueError("not a point I know")

    cache = PGCacheManager(server.client())
    cache.register_decoder("point3", refuse)
    with pytest.raises(ValueError, match="not a point I know") as raised:
        cache.get(SELECT_PLACE, [1])
    assert "pgcache: in the decoder of column 'at'" in raised.value.__notes__


def test_a_decoder_must_be_a_function() -> None:
    with pytest.raises(TypeError, match="a decoder is a function"):
        pgcache.register_decoder("point3", "not callable")  # type: ignore[arg-type]
