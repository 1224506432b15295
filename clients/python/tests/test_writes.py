"""Read your writes: 1,000 rounds of a commit on a tied connection and a cached read
through the tie, with psycopg 3 and with psycopg2; not one read answers from before its
round's commit, and most are answered from the cache."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import psycopg2
import pytest
from servers import Postgres, Server, wait_for

from pgcache import PGCacheManager, ReadYourWrites

ROUNDS = 1_000
BY_ID = "SELECT v FROM ryw_items WHERE id = $1"


@pytest.fixture(scope="module")
def items(pg: Postgres, server: Server) -> Postgres:
    cache = PGCacheManager(server.client())
    pg.execute(
        "CREATE TABLE ryw_items (id integer PRIMARY KEY, v integer NOT NULL);"
        "INSERT INTO ryw_items SELECT g, 0 FROM generate_series(1, 10) g;"
        "SELECT pgcache_watch('ryw_items');"
    )
    wait_for(
        "the change feed to serve hits",
        lambda: cache.health().get("invalidation_source") == "replication" or None,
    )
    return pg


def rounds(tie: ReadYourWrites, write: Callable[[int, int], None], offset: int) -> None:
    """ROUNDS commits of a new value (from ``offset`` on), each read back through ``tie``
    at once and again."""
    hits_before = tie.cache.stats()["query_hits"]
    stale = []
    for n in range(offset + 1, offset + ROUNDS + 1):
        item = n % 10 + 1
        write(item, n)
        for _ in range(2):  # the second read is answered from the cache once it holds it
            (row,) = tie.get(BY_ID, [item])
            if row["v"] != n:
                stale.append((n, item, row["v"]))
    assert stale == []
    assert tie.cache.stats()["query_hits"] - hits_before > ROUNDS // 2


def test_psycopg_commits_are_read_back(items: Postgres, cache: PGCacheManager) -> None:
    with psycopg.connect(items.conninfo) as conn:
        tie = ReadYourWrites(cache, conn)

        def write(item: int, n: int) -> None:
            with tie.transaction():
                conn.execute("UPDATE ryw_items SET v = %s WHERE id = %s", (n, item))

        rounds(tie, write, offset=0)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_psycopg2_commits_are_read_back(items: Postgres, cache: PGCacheManager) -> None:
    conn = psycopg2.connect(items.conninfo)
    try:
        tie = ReadYourWrites(cache, conn)

        def write(item: int, n: int) -> None:
            with conn.cursor() as cursor:
                cursor.execute("UPDATE ryw_items SET v = %s WHERE id = %s", (n, item))
            conn.commit()
            tie.committed()

        rounds(tie, write, offset=1_000_000)
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    finally:
        conn.close()


def test_a_position_given_to_a_read_through_the_tie_is_kept_if_later(
    items: Postgres, cache: PGCacheManager
) -> None:
    with psycopg.connect(items.conninfo, autocommit=True) as conn:
        tie = ReadYourWrites(cache, conn)
        (noted,) = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        tie.position = noted
        conn.execute("UPDATE ryw_items SET v = -1 WHERE id = 1")
        (later,) = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        # The later of the two positions is what the read waits for: the write is read back.
        assert tie.get(BY_ID, [1], after=later) == [{"v": -1}]
        assert tie.read("ryw_items", {"id": 1}, after=later) == {"id": 1, "v": -1}
        assert tie.multiread("ryw_items", [{"id": 1}], after=noted) == [{"id": 1, "v": -1}]
        assert tie.position == noted


def own_table(pg: Postgres, cache: PGCacheManager, name: str) -> None:
    """A table of one row (id 1, v 0) whose changes pgcache follows."""
    pg.execute(
        f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id integer PRIMARY KEY, v integer);"
        f"INSERT INTO {name} VALUES (1, 0); SELECT pgcache_watch('{name}')"
    )
    wait_for(
        "the change feed to serve hits",
        lambda: cache.health().get("invalidation_source") == "replication" or None,
    )


def test_psycopg_a_transaction_opened_by_a_statement_is_read_through_the_tie(
    pg: Postgres, cache: PGCacheManager
) -> None:
    """#51 item 3: after a statement psycopg has a transaction open, and ``transaction()``
    is a savepoint in it: nothing is committed, and the tie reads what the connection
    sees."""
    own_table(pg, cache, "ryw_psycopg_open")
    sql = "SELECT v FROM ryw_psycopg_open WHERE id = $1"
    with psycopg.connect(pg.conninfo) as conn:
        tie = ReadYourWrites(cache, conn)
        assert tie.get(sql, [1]) == [{"v": 0}]
        conn.execute("SELECT 1")
        with tie.transaction():
            conn.execute("UPDATE ryw_psycopg_open SET v = 1 WHERE id = 1")
        assert tie.position is None
        assert tie.get(sql, [1]) == [{"v": 1}]
        assert tie.read("ryw_psycopg_open", {"id": 1}) == {"id": 1, "v": 1}
        assert tie.multiread("ryw_psycopg_open", [{"id": 1}, {"id": 2}]) == [
            {"id": 1, "v": 1},
            None,
        ]
        conn.commit()
        assert tie.get(sql, [1]) == [{"v": 1}]
        assert tie.position is not None


def test_psycopg2_a_read_inside_the_tie_s_transaction_sees_its_write(
    pg: Postgres, cache: PGCacheManager
) -> None:
    """#51 item 3, psycopg2."""
    own_table(pg, cache, "ryw_psycopg2_inside")
    sql = "SELECT v FROM ryw_psycopg2_inside WHERE id = ?"
    conn = psycopg2.connect(pg.conninfo)
    try:
        tie = ReadYourWrites(cache, conn)
        assert tie.get(sql, [1]) == [{"v": 0}]
        with tie.transaction():
            with conn.cursor() as cursor:
                cursor.execute("UPDATE ryw_psycopg2_inside SET v = 2 WHERE id = 1")
            assert tie.get(sql, [1]) == [{"v": 2}]
        assert tie.get(sql, [1]) == [{"v": 2}]
    finally:
        conn.close()
