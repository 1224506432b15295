"""None parameters, checked with PostgreSQL as the oracle: generated statements whose
parameters are drawn None or a value, answered by pgcache (a None written into the statement
as NULL) and by psycopg (a None bound as NULL), compared before and after generated writes
the change feed applies. PGCACHE_NULL_SEED=n repeats a run; PGCACHE_NULL_ROUNDS sets its
length."""

from __future__ import annotations

import os
import random

import psycopg
import pytest
import redis
from servers import Postgres, Server, wait_for

from pgcache import PGCacheManager, ReadYourWrites, tuple_row
from pgcache._placeholders import driver_style

SEED = int(os.environ.get("PGCACHE_NULL_SEED", random.randrange(1 << 30)))
ROUNDS = int(os.environ.get("PGCACHE_NULL_ROUNDS", "60"))

# Conditions with placeholders ({} is the next parameter; {0} repeats the first one drawn
# in the condition), each with how its parameters are drawn.
CONDITIONS = [
    ("a = {}", ["int"]),
    ("a <> {}", ["int"]),
    ("a IS NOT DISTINCT FROM {}", ["int"]),
    ("a IS DISTINCT FROM {}::int", ["int"]),
    ("coalesce(a, {}) > 1", ["int"]),
    ("coalesce({}, a, 0) < 3", ["int"]),
    ("{}::int IS NULL", ["int"]),
    ("({0}::int IS NULL OR a > {0})", ["int"]),
    ("a IN ({}, {})", ["int", "int"]),
    ("NOT (a = {})", ["int"]),
    ("b = {}", ["text"]),
    ("b LIKE {}", ["pattern"]),
    ("coalesce(b, {}) = 'x'", ["text"]),
    ("a = ANY({}::int[])", ["array"]),
    ("a BETWEEN {} AND {}", ["int", "int"]),
    ("(a > {}) IS NOT TRUE", ["int"]),
]
SHAPES = [
    "SELECT id FROM nulls_t WHERE {}",
    "SELECT count(*) FROM nulls_t WHERE {}",
    "SELECT id, a, b FROM nulls_t WHERE {} ORDER BY id LIMIT 3",
]


def draw_value(rng: random.Random, kind: str):
    if rng.random() < 0.4:
        return None
    if kind == "int":
        return rng.randint(0, 4)
    if kind == "text":
        return rng.choice(["x", "y", ""])
    if kind == "pattern":
        return rng.choice(["x%", "%", "_"])
    return [rng.choice([None, 0, 1, 2, 3]) for _ in range(rng.randint(0, 3))]


def draw_statement(rng: random.Random) -> tuple[str, list]:
    """A statement with `$n` placeholders and its parameters."""
    params: list = []
    parts = []
    for _ in range(rng.randint(1, 3)):
        template, kinds = rng.choice(CONDITIONS)
        values = [draw_value(rng, kind) for kind in kinds]
        numbers = []
        for value in values:
            params.append(value)
            numbers.append(f"${len(params)}")
        parts.append(
            template.format(*numbers) if "{0}" not in template else template.format(numbers[0])
        )
    where = f" {rng.choice(['AND', 'OR'])} ".join(parts)
    return rng.choice(SHAPES).format(where), params


def draw_write(rng: random.Random) -> str:
    row_id = rng.randint(1, 12)
    a = rng.choice(["NULL", "0", "1", "2", "3", "4"])
    b = rng.choice(["NULL", "'x'", "'y'", "''", "'xy'"])
    return rng.choice(
        [
            f"INSERT INTO nulls_t VALUES ({row_id}, {a}, {b}) ON CONFLICT (id) DO UPDATE "
            f"SET a = {a}, b = {b}",
            f"UPDATE nulls_t SET a = {a} WHERE id = {row_id}",
            f"DELETE FROM nulls_t WHERE id = {row_id}",
        ]
    )


@pytest.fixture(scope="module")
def table(pg: Postgres, server: Server) -> Postgres:
    pg.execute(
        "CREATE TABLE nulls_t (id integer PRIMARY KEY, a integer, b text);"
        "INSERT INTO nulls_t VALUES (1, NULL, NULL), (2, 0, 'x'), (3, 1, NULL), (4, NULL, 'y'),"
        " (5, 2, ''), (6, 3, 'x'), (7, 1, 'xy');"
        "SELECT pgcache_watch('nulls_t');"
    )
    cache = PGCacheManager(server.client())
    wait_for(
        "the change feed to serve hits",
        lambda: cache.health().get("invalidation_source") == "replication" or None,
    )
    return pg


def test_none_parameters_are_answered_as_postgresql_answers(
    table: Postgres, server: Server
) -> None:
    rng = random.Random(SEED)
    cache = PGCacheManager(server.client(), row_factory=tuple_row)
    differences, answered, refused = [], 0, 0
    with psycopg.connect(table.conninfo, autocommit=True) as conn:
        tie = ReadYourWrites(cache, conn)
        statements = [draw_statement(rng) for _ in range(ROUNDS)]
        for round_number in range(4):
            for sql, params in statements:
                expected = conn.execute(*driver_style(sql, params)).fetchall()
                try:
                    # Twice: the second is a hit where pgcache kept the first answer.
                    got = [tie.get(sql, params) for _ in range(2)]
                except redis.ResponseError as refusal:
                    refused += 1
                    assert "NULL" not in str(refusal), (SEED, sql, params, refusal)
                    continue
                answered += 1
                ordered = "ORDER BY" in sql
                for rows in got:
                    if (rows if ordered else sorted(rows)) != (
                        expected if ordered else sorted(expected)
                    ):
                        differences.append((round_number, sql, params, rows, expected))
            for _ in range(5):
                conn.execute(draw_write(rng))
            tie.committed()
    assert differences == [], f"PGCACHE_NULL_SEED={SEED}: {differences[:3]}"
    assert answered > 3 * refused, f"PGCACHE_NULL_SEED={SEED}: {refused} refused"
