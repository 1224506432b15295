"""The local cache (``local_cache=True``): results kept in the process answer without a round
trip, equal to pgcache's, and leave when a change reaches pgcache (a row-precise delete, a
per-table generation, a FLUSHALL, the tracking connection lost); answers no key holds are
not kept."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import psycopg
import pytest
import redis.asyncio
from servers import ROOT, Postgres, Server, pgcache_server, wait_for

from pgcache import AsyncPGCacheManager, PGCacheManager
from pgcache._local import tag

BY_ID = "SELECT id, name, tags FROM lc_items WHERE id = $1"
COUNT = "SELECT count(*) AS n FROM lc_items"


@pytest.fixture(scope="module")
def items(pg: Postgres) -> Postgres:
    pg.execute(
        """
        CREATE TABLE lc_items (id integer PRIMARY KEY, name text NOT NULL, tags jsonb);
        INSERT INTO lc_items SELECT g, 'item' || g, '{"a": [1]}' FROM generate_series(1, 20) g;
        SELECT pgcache_watch('lc_items');
        """
    )
    return pg


@pytest.fixture
def local(items: Postgres, server: Server) -> Iterator[PGCacheManager]:
    cache = PGCacheManager(server.client(), local_cache=True)
    wait_for(
        "the change feed",
        lambda: cache.health().get("invalidation_source") == "replication" or None,
    )
    yield cache
    cache.local.close()


def postgres_row(pg: Postgres, ident: int) -> dict:
    with psycopg.connect(pg.conninfo) as conn:
        name, tags = conn.execute(
            "SELECT name, tags FROM lc_items WHERE id = %s", (ident,)
        ).fetchone()
    return {"id": ident, "name": name, "tags": tags}


def served_locally(cache: PGCacheManager, sql: str, params: list) -> list:
    """Reads until the answer comes from the process (kept, and pgcache vouched for)."""

    def attempt() -> list | None:
        hits = cache.local.hits
        rows = cache.get(sql, params)
        return rows if cache.local.hits > hits else None

    return wait_for("a local hit", attempt)


def test_local_hits_answer_what_pgcache_does_without_asking_it(
    items: Postgres, local: PGCacheManager
) -> None:
    rows = served_locally(local, BY_ID, [1])
    assert rows == [postgres_row(items, 1)]
    server_hits = local.stats()["query_hits"]
    for _ in range(50):
        assert local.get(BY_ID, [1]) == rows
    assert local.stats()["query_hits"] == server_hits  # none reached pgcache
    # A caller that changes its rows changes its own copy.
    rows[0]["tags"]["a"].append(2)
    assert local.get(BY_ID, [1])[0]["tags"] == {"a": [1]}
    # Tuples (the ORMs' path) from the same values.
    assert local.query(BY_ID, [1])[1] == [(1, "item1", {"a": [1]})]


def test_a_change_drops_the_kept_result(items: Postgres, local: PGCacheManager) -> None:
    served_locally(local, BY_ID, [2])
    served_locally(local, COUNT, [])
    for n in range(20):
        items.execute(f"UPDATE lc_items SET name = 'renamed {n}' WHERE id = 2")
        wait_for(
            "the change to be read",
            lambda n=n: local.get(BY_ID, [2])[0]["name"] == f"renamed {n}" or None,
        )
    # A per-table result (no WHERE): an insert changes its table's generation.
    items.execute("INSERT INTO lc_items VALUES (100, 'new', NULL)")
    wait_for("the count to follow", lambda: local.get(COUNT, [])[0]["n"] == 21 or None)
    items.execute("DELETE FROM lc_items WHERE id = 100")
    wait_for("the count to follow", lambda: local.get(COUNT, [])[0]["n"] == 20 or None)


def test_an_answer_is_kept_unless_its_own_result_changed_while_it_was_fetched(
    items: Postgres, local: PGCacheManager, server: Server
) -> None:
    """Keeping an answer is refused when a key of its result changed after the call was
    planned (the answer may predate the change), not when another parameter's did."""
    served_locally(local, BY_ID, [3])  # the statement's prefix and generations learned
    names = ["id", "name", "tags"]
    cache, admin = local.local, server.client()
    canonical = local.explain(BY_ID).statement

    def fetched(ident: int) -> tuple:
        answer, held_by, generations = local.redis.execute_command(
            "PGCACHE.QUERY", BY_ID, 1, ident, "WITHKEY"
        )
        rows = [[r["id"], r["name"], r["tags"]] for r in json.loads(answer)]
        return held_by.decode(), [g.decode() for g in generations], rows

    def fill(ident: int) -> None:
        """Fills the result of ``ident`` afresh (a miss, whose fill sets its key) and waits
        for the local cache to follow a change of it made after every earlier one."""
        before = cache._sequence
        admin.delete(fetched(ident)[0])
        held_by = fetched(ident)[0]
        wait_for(
            "the fill to be followed",
            lambda: cache._tag_changed.get(tag(held_by), 0) > before or None,
        )

    def refused_after(change: int, ident: int) -> bool | None:
        """Whether the answer for ``ident`` is refused for a change of its own result,
        after ``change``'s result was filled; None when the probe or a reconnect emptied the
        cache meanwhile (tried again)."""
        epoch, connection = cache._epoch, cache._tracker.connections
        fill(ident)
        fill(6)  # ident's own fill followed before the plan is made
        plan = cache.plan(canonical)
        if plan is None:
            return None
        fill(change)
        held_by, generations, rows = fetched(ident)  # a hit
        refused = cache._result_changed_since(tag(held_by), plan)
        kept = cache.keep((BY_ID, 1, str(ident)), plan, held_by, generations, rows, names)
        if (cache._epoch, cache._tracker.connections) != (epoch, connection):
            return None
        assert (kept is None) == refused
        return refused

    assert wait_for("another's fill", lambda: refused_after(4, 5) is False or None)
    assert wait_for("its own fill", lambda: refused_after(5, 5))


def test_a_registration_is_asked_for_without_waiting_for_its_answer(
    local: PGCacheManager, server: Server
) -> None:
    """No caller, nor an asyncio event loop, waits for Redis to register a statement's keys:
    the first call that needs them asks and goes on; a later one finds them followed."""
    tracker, admin = local.local._tracker, server.client()
    prefix = "pg_cache:~q:{registration-test"
    admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
    assert tracker.follow([prefix]) is False  # returned with Redis paused
    assert prefix in tracker._asked
    wait_for("the registration to be answered", lambda: tracker.follow([prefix]) or None)


def test_what_no_key_holds_is_not_kept(items: Postgres, local: PGCacheManager, server) -> None:
    admin = server.client()
    admin.config_set("pgcache.query_max_rows", 1)
    try:
        many = "SELECT id FROM lc_items WHERE id < $1 ORDER BY id"
        for _ in range(5):
            assert local.get(many, [4]) == [{"id": 1}, {"id": 2}, {"id": 3}]
        assert all(key[0] != many for key in local.local._entries)
    finally:
        admin.config_set("pgcache.query_max_rows", 10000)


def test_flushall_and_a_lost_connection_drop_everything(items: Postgres) -> None:
    # A server of its own: FLUSHALL would empty the other tests' cache.
    server = pgcache_server(items)
    local = PGCacheManager(server.client(), local_cache=True)
    try:
        flushed_and_killed(items, server, local)
    finally:
        local.local.close()
        server.stop()


def flushed_and_killed(items: Postgres, server: Server, local: PGCacheManager) -> None:
    served_locally(local, BY_ID, [3])
    assert len(local.local) > 0
    server.client().flushall()
    wait_for("the flush to reach the process", lambda: len(local.local) == 0 or None)
    served_locally(local, BY_ID, [3])
    admin = server.client()
    for client in admin.client_list():
        if client.get("name") == "pgcache-local-cache":
            admin.execute_command("CLIENT", "KILL", "ID", client["id"])
    wait_for("the loss to empty the process's cache", lambda: len(local.local) == 0 or None)
    # Connected again, it keeps and serves once more.
    assert served_locally(local, BY_ID, [3]) == [postgres_row(items, 3)]


def test_asyncio_manager_keeps_results_too(items: Postgres, server: Server) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis(port=server.port)
        cache = AsyncPGCacheManager(client, local_cache=True)
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while cache.local.hits == 0:
                assert asyncio.get_running_loop().time() < deadline, "no local hit"
                assert await cache.get(BY_ID, [4]) == [postgres_row(items, 4)]
                await asyncio.sleep(0.01)
        finally:
            cache.local.close()
            await client.aclose()

    asyncio.run(scenario())


def test_a_change_is_followed_when_the_generation_key_was_evicted(
    items: Postgres, local: PGCacheManager, server: Server
) -> None:
    before = served_locally(local, COUNT, [])[0]["n"]
    # Gone (evicted, say) while pgcache still serves results under the generation it held.
    server.client().delete("pg_cache:lc_items:~gen")
    assert served_locally(local, COUNT, [])[0]["n"] == before
    items.execute("INSERT INTO lc_items VALUES (200, 'new', NULL)")
    try:
        wait_for("the count to follow", lambda: local.get(COUNT, [])[0]["n"] == before + 1 or None)
    finally:
        items.execute("DELETE FROM lc_items WHERE id = 200")


def test_the_first_answer_kept_is_the_callers_own(local: PGCacheManager) -> None:
    def attempt() -> bool | None:
        hits = local.local.hits
        rows = local.get(BY_ID, [7])
        rows[0]["tags"]["a"].append(99)  # each caller changes its own answer
        return (local.local.hits > hits) or None

    wait_for("a local hit", attempt)
    assert local.get(BY_ID, [7])[0]["tags"] == {"a": [1]}


def test_a_server_with_its_own_cache_prefix(items: Postgres) -> None:
    server = pgcache_server(items, "cache_prefix", "app:")
    local = PGCacheManager(server.client(), local_cache=True)
    try:
        before = served_locally(local, COUNT, [])[0]["n"]
        items.execute("INSERT INTO lc_items VALUES (201, 'new', NULL)")
        wait_for("the count to follow", lambda: local.get(COUNT, [])[0]["n"] == before + 1 or None)
    finally:
        items.execute("DELETE FROM lc_items WHERE id = 201")
        local.local.close()
        server.stop()


def test_a_statement_whose_tables_change_with_ddl() -> None:
    # A PostgreSQL of its own: the DDL trigger would follow every other test's DDL too.
    pg = Postgres()
    pg.execute((ROOT / "examples/invalidation_trigger.sql").read_text())
    pg.execute((ROOT / "examples/ddl_trigger.sql").read_text())
    pg.execute(
        """
        CREATE TABLE lc_a (id integer PRIMARY KEY); INSERT INTO lc_a SELECT generate_series(1, 5);
        CREATE TABLE lc_b (id integer PRIMARY KEY); INSERT INTO lc_b SELECT generate_series(1, 7);
        SELECT pgcache_watch('lc_a'); SELECT pgcache_watch('lc_b');
        CREATE VIEW lc_v AS SELECT id FROM lc_a;
        """
    )
    server = pgcache_server(pg)
    local = PGCacheManager(server.client(), local_cache=True)
    view = "SELECT count(*) AS n FROM lc_v"
    try:
        assert served_locally(local, view, [])[0]["n"] == 5
        pg.execute("CREATE OR REPLACE VIEW lc_v AS SELECT id FROM lc_b")
        wait_for("the view's new table", lambda: local.get(view, [])[0]["n"] == 7 or None)
        assert served_locally(local, view, [])[0]["n"] == 7
        pg.execute("INSERT INTO lc_b VALUES (100)")
        wait_for("a change to the new table", lambda: local.get(view, [])[0]["n"] == 8 or None)
    finally:
        local.local.close()
        server.stop()
        pg.stop()


def test_callers_in_threads_over_a_full_cache(items: Postgres, server: Server) -> None:
    from pgcache import LocalCache

    cache = PGCacheManager(server.client(), local_cache=LocalCache(max_entries=5))
    expected = {i: [postgres_row(items, i)] for i in range(1, 21)}
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        try:
            for n in range(600):
                ident = (n * 7 + seed) % 20 + 1
                assert cache.get(BY_ID, [ident]) == expected[ident]
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.local.close()
    assert failures == []
    assert cache.local.kept > 5  # the cache was full and turned over


def test_a_value_a_caller_can_change_is_its_own_whatever_its_type(
    pg: Postgres, server: Server
) -> None:
    pg.execute(
        "CREATE EXTENSION IF NOT EXISTS hstore;"
        "CREATE TABLE lc_attrs (id integer PRIMARY KEY, attrs hstore);"
        "INSERT INTO lc_attrs VALUES (1, 'a => 1');"
        "SELECT pgcache_watch('lc_attrs');"
    )
    local = PGCacheManager(server.client(), local_cache=True)
    sql = "SELECT id, attrs FROM lc_attrs WHERE id = $1"
    try:
        rows = served_locally(local, sql, [1])
        assert rows == [{"id": 1, "attrs": {"a": "1"}}]  # hstore comes as a JSON object
        rows[0]["attrs"]["a"] = "changed by a caller"
        assert served_locally(local, sql, [1]) == [{"id": 1, "attrs": {"a": "1"}}]
    finally:
        local.local.close()


FORK_BY_ID = "SELECT id, name FROM lc_fork WHERE id = $1"


def _child_reads(cache: PGCacheManager, conninfo: str, report: object) -> None:
    """In a forked child: reads answered by the child's local cache, then dropped by a
    change to the row; what failed, if anything, is reported."""
    try:
        assert len(cache.local) == 0  # the parent's answers are not the child's
        assert served_locally(cache, FORK_BY_ID, [1]) == [{"id": 1, "name": "one"}]
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("UPDATE lc_fork SET name = 'changed in the child' WHERE id = 1")
        wait_for(
            "the change in the child",
            lambda: cache.get(FORK_BY_ID, [1])[0]["name"] == "changed in the child" or None,
        )
        assert served_locally(cache, FORK_BY_ID, [1])[0]["name"] == "changed in the child"
        report.put("ok")  # type: ignore[attr-defined]
    except BaseException as error:
        report.put(repr(error))  # type: ignore[attr-defined]


def test_a_forked_child_starts_afresh(items: Postgres, local: PGCacheManager) -> None:
    """gunicorn --preload: a child forked from a process with a local cache has its own, kept
    and invalidated as the parent's; the parent's goes on."""
    import multiprocessing

    items.execute(
        """
        DROP TABLE IF EXISTS lc_fork;
        CREATE TABLE lc_fork (id integer PRIMARY KEY, name text NOT NULL);
        INSERT INTO lc_fork VALUES (1, 'one'), (2, 'two');
        SELECT pgcache_watch('lc_fork');
        """
    )
    assert served_locally(local, FORK_BY_ID, [1]) == [{"id": 1, "name": "one"}]
    connections = local.local._tracker.connections
    context = multiprocessing.get_context("fork")
    report = context.Queue()
    child = context.Process(target=_child_reads, args=(local, items.conninfo, report))
    child.start()
    try:
        assert report.get(timeout=60) == "ok"
    finally:
        child.join(10)
    assert child.exitcode == 0
    # The parent's connection is its own still, and still follows changes.
    assert local.local._tracker.connections == connections
    wait_for(
        "the child's change in the parent",
        lambda: local.get(FORK_BY_ID, [1])[0]["name"] == "changed in the child" or None,
    )
    assert served_locally(local, FORK_BY_ID, [2]) == [{"id": 2, "name": "two"}]
    items.execute("UPDATE lc_fork SET name = 'changed in the parent' WHERE id = 2")
    wait_for(
        "the change in the parent",
        lambda: local.get(FORK_BY_ID, [2])[0]["name"] == "changed in the parent" or None,
    )
