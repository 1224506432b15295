"""Named sources (pgcache's ``SOURCE name``): a manager made with ``source=`` reads and reports
on that database, another manager on the same server on the default one, and no answer
crosses from one to the other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
import redis.asyncio
from servers import ROOT, Postgres, Server, module_path, pgcache_server, wait_for

from pgcache import ModuleLoadError, PGCacheManager, load_pgcache_module
from pgcache.aio import AsyncPGCacheManager

NAMED_DB = "py_analytics"


def _tables(pg: Postgres, dbname: str, prefix: str) -> None:
    with psycopg.connect(f"{pg.conninfo} dbname={dbname}", autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE TABLE src_users (id integer PRIMARY KEY, name text NOT NULL);
            INSERT INTO src_users SELECT g, '{prefix}' || g FROM generate_series(1, 20) g;
            SELECT pgcache_watch('src_users');
            """
        )


@pytest.fixture(scope="module")
def sources_server(pg: Postgres) -> Iterator[Server]:
    pg.execute(f"DROP DATABASE IF EXISTS {NAMED_DB}")
    pg.execute(f"CREATE DATABASE {NAMED_DB}")
    with psycopg.connect(f"{pg.conninfo} dbname={NAMED_DB}", autocommit=True) as conn:
        conn.execute((ROOT / "examples/invalidation_trigger.sql").read_text())
    pg.execute("DROP TABLE IF EXISTS src_users")
    _tables(pg, "postgres", "user")
    _tables(pg, NAMED_DB, "analytics")
    started = pgcache_server(
        pg,
        "source",
        "analytics",
        "pg_host",
        "127.0.0.1",
        "pg_port",
        str(pg.port),
        "pg_database",
        NAMED_DB,
        "pg_user",
        "postgres",
    )
    yield started
    started.stop()


def test_a_manager_per_source_never_crosses(pg: Postgres, sources_server: Server) -> None:
    default = PGCacheManager(sources_server.client())
    named = PGCacheManager(sources_server.client(), source="analytics")
    for cache, prefix in [(default, "user"), (named, "analytics")]:
        assert cache.read("src_users", {"id": 1}) == {"id": 1, "name": f"{prefix}1"}
        assert cache.multiread("src_users", [{"id": 2}, {"id": 99}]) == [
            {"id": 2, "name": f"{prefix}2"},
            None,
        ]
        sql = "SELECT name FROM src_users WHERE id = $1"
        assert cache.get(sql, [3]) == [{"name": f"{prefix}3"}]
        assert cache.query(sql, [3])[1] == [(f"{prefix}3",)]
        assert cache.explain(sql).cacheable
    assert default.key("src_users", {"id": 1}) == 'pg_cache:src_users:{"id":1}'
    assert named.key("src_users", {"id": 1}) == 'pg_cache:@analytics:src_users:{"id":1}'

    # The reports are each source's own.
    assert named.health()["config"]["pg_database"] == NAMED_DB
    assert default.health()["config"]["pg_database"] == "postgres"
    tables = named.stats()["tables"]
    assert tables["src_users"]["calls"] >= 2
    statements = [q["statement"] for q in named.queries()]
    assert any("src_users" in s for s in statements)

    # WRITE, INVALIDATE and FLUSH reach the named source's entries only.
    named.write("src_users", {"id": 5}, {"id": 5, "name": "written"})
    assert named.read("src_users", {"id": 5}) == {"id": 5, "name": "written"}
    assert default.read("src_users", {"id": 5}) == {"id": 5, "name": "user5"}
    named.invalidate("src_users", {"id": 5})
    assert named.read("src_users", {"id": 5}) == {"id": 5, "name": "analytics5"}
    named.flush("src_users")
    client = sources_server.client()
    wait_for(
        "the named source's rows flushed",
        lambda: not client.keys("pg_cache:@analytics:src_users:{*") or None,
    )
    assert client.keys("pg_cache:src_users:{*")

    # A change in the named database reaches the named source's answers.
    with psycopg.connect(f"{pg.conninfo} dbname={NAMED_DB}", autocommit=True) as conn:
        named.read("src_users", {"id": 7})
        conn.execute("UPDATE src_users SET name = 'changed' WHERE id = 7")
    wait_for(
        "the named change applied",
        lambda: named.read("src_users", {"id": 7}) == {"id": 7, "name": "changed"} or None,
    )
    assert default.read("src_users", {"id": 7}) == {"id": 7, "name": "user7"}


def test_an_unknown_source_is_refused(sources_server: Server) -> None:
    with pytest.raises(Exception, match='no source named "billing"'):
        PGCacheManager(sources_server.client(), source="billing").read("src_users", {"id": 1})


def test_no_local_cache_for_a_named_source(sources_server: Server) -> None:
    with pytest.raises(ValueError, match="named source"):
        PGCacheManager(sources_server.client(), source="analytics", local_cache=True)


def test_the_asyncio_manager_takes_a_source(sources_server: Server) -> None:
    async def both() -> tuple:
        client = redis.asyncio.Redis(port=sources_server.port)
        try:
            named = AsyncPGCacheManager(client, source="analytics")
            default = AsyncPGCacheManager(client)
            sql = "SELECT name FROM src_users WHERE id = $1"
            return (
                await named.read("src_users", {"id": 9}),
                await named.get(sql, [9]),
                await default.get(sql, [9]),
            )
        finally:
            await client.aclose()

    row, named_rows, default_rows = asyncio.run(both())
    assert row == {"id": 9, "name": "analytics9"}
    assert named_rows == [{"name": "analytics9"}]
    assert default_rows == [{"name": "user9"}]


def test_two_engines_two_sources(pg: Postgres, sources_server: Server) -> None:
    """SQLAlchemy: an engine per database, each integrated with the manager of its source;
    each answer is its own database's, answered by pgcache."""
    from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, select

    from pgcache.sqlalchemy import use_pgcache

    users = Table(
        "src_users", MetaData(), Column("id", Integer, primary_key=True), Column("name", Text)
    )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}"
    answers = {}
    for dbname, source in [("postgres", None), (NAMED_DB, "analytics")]:
        engine = create_engine(f"{url}/{dbname}")
        integration = use_pgcache(engine, PGCacheManager(sources_server.client(), source=source))
        try:
            with engine.connect() as conn:
                statement = select(users.c.name).where(users.c.id == 4)
                rows = conn.execute(statement.execution_options(pgcache=True))
                answers[dbname] = (rows.scalars().all(), integration.answered)
        finally:
            integration.remove()
            engine.dispose()
    assert answers == {"postgres": (["user4"], 1), NAMED_DB: (["analytics4"], 1)}


def test_load_pgcache_module_with_sources(pg: Postgres, sources_server: Server) -> None:
    """``sources=`` loads a block per source; loading again with the same sources does nothing,
    with others it is refused, naming what differs."""
    bare = Server(["--enable-module-command", "yes"])
    named = dict(pg.config, database=NAMED_DB)
    try:
        client = bare.client()
        sources = {"analytics": named}
        assert load_pgcache_module(client, pg.config, module_path(), sources=sources) is True
        cache = PGCacheManager(client, source="analytics")
        assert cache.read("src_users", {"id": 2}) == {"id": 2, "name": "analytics2"}
        assert load_pgcache_module(client, pg.config, module_path(), sources=sources) is False
        with pytest.raises(ModuleLoadError, match="source analytics: pg_database is"):
            other = {"analytics": dict(named, database="postgres")}
            load_pgcache_module(client, pg.config, module_path(), sources=other)
        with pytest.raises(ModuleLoadError, match="source analytics is served, and not wanted"):
            load_pgcache_module(client, pg.config, module_path(), sources={})
        # Without sources=, the sources loaded are not judged.
        assert load_pgcache_module(client, pg.config, module_path()) is False
        with pytest.raises(ModuleLoadError, match="source billing is not served"):
            more = {**sources, "billing": named}
            load_pgcache_module(client, pg.config, module_path(), sources=more)
    finally:
        bare.stop()


def _names(sources: object) -> list[str]:
    assert isinstance(sources, list)
    return [source["name"] for source in sources]


def test_sources_added_changed_and_removed_at_runtime(pg: Postgres, sources_server: Server) -> None:
    """``add_source`` serves another database from now on, ``change_source`` restarts it on
    new settings, ``remove_source`` stops it: its manager is then refused."""
    admin = PGCacheManager(sources_server.client())
    config = dict(pg.config, database=NAMED_DB)
    reports = PGCacheManager(sources_server.client(), source="reports")
    with pytest.raises(Exception, match='no source named "reports"'):
        reports.read("src_users", {"id": 3})
    with pytest.raises(ValueError, match="PGCACHE_REPORTS_PG_PASSWORD"):
        admin.add_source("reports", dict(config, password="s3cret"))
    with pytest.raises(ValueError, match="never sent"):
        admin.add_source("reports", "postgresql://u:s3cret@h/db")
    admin.add_source("reports", config, invalidation_source="notify")
    try:
        assert reports.read("src_users", {"id": 3}) == {"id": 3, "name": "analytics3"}
        assert reports.get("SELECT name FROM src_users WHERE id = $1", [4]) == [
            {"name": "analytics4"}
        ]
        listed = {source["name"]: source for source in admin.sources()}  # type: ignore[union-attr]
        assert set(listed) == {"analytics", "reports"}
        assert f"pg_database {NAMED_DB}" in listed["reports"]["definition"]
        assert listed["reports"]["feed"] == "notify"
        # As it is: nothing to do. With other settings: change_source's job.
        admin.add_source("reports", config, invalidation_source="notify")
        with pytest.raises(Exception, match="change it with PGCACHE.SOURCE SET"):
            admin.add_source("reports", config, default_ttl=60)
        admin.change_source("reports", default_ttl=60)
        listed = {source["name"]: source for source in admin.sources()}  # type: ignore[union-attr]
        assert "default_ttl 60" in listed["reports"]["definition"]

        # The restarted source answers at once; it caches once its feed listens again.
        def cached_ttl() -> int | None:
            assert reports.read("src_users", {"id": 5}) == {"id": 5, "name": "analytics5"}
            ttl = sources_server.client().ttl('pg_cache:@reports:src_users:{"id":5}')
            return ttl if ttl != -2 else None

        assert 0 < wait_for("the restarted source to cache", cached_ttl) <= 60
    finally:
        admin.remove_source("reports")
    assert _names(admin.sources()) == ["analytics"]
    with pytest.raises(Exception, match='no source named "reports"'):
        reports.read("src_users", {"id": 3})


def test_the_asyncio_manager_adds_and_removes_sources(pg: Postgres, sources_server: Server) -> None:
    async def cycle() -> tuple:
        client = redis.asyncio.Redis(port=sources_server.port)
        try:
            admin = AsyncPGCacheManager(client)
            await admin.add_source(
                "reports_aio", dict(pg.config, database=NAMED_DB), invalidation_source="notify"
            )
            named = AsyncPGCacheManager(client, source="reports_aio")
            row = await named.read("src_users", {"id": 6})
            during = _names(await admin.sources())
            await admin.change_source("reports_aio", tables="src_users")
            await admin.remove_source("reports_aio")
            return row, during, _names(await admin.sources())
        finally:
            await client.aclose()

    row, during, after = asyncio.run(cycle())
    assert row == {"id": 6, "name": "analytics6"}
    assert during == ["analytics", "reports_aio"]
    assert after == ["analytics"]
