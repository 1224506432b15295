"""SQLAlchemy's asyncio engine with ``AsyncPGCacheManager``: AsyncSession reads answered by
pgcache, a transaction that wrote read on its connection, a task reading its own writes,
and the event loop running other tasks while Redis answers. Tables ``saio_*``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import redis.asyncio
from servers import Postgres, Server, pgcache_server, wait_for
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pgcache import AsyncPGCacheManager, PGCacheManager
from pgcache._transactions import lsn_value
from pgcache.sqlalchemy import Integration, use_pgcache


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "saio_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    n: Mapped[int]


class Held(Base):
    """A table whose commits wait at a deferred trigger for an advisory lock the test
    holds: a commit kept in flight."""

    __tablename__ = "saio_held"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


HELD_LOCK = 5151


class Recording(redis.asyncio.Redis):
    """A ``redis.asyncio`` client that keeps the commands it sends (to read a QUERY's
    AFTER)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sent: list[tuple[Any, ...]] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(args)
        return await super().execute_command(*args, **options)


@pytest.fixture(scope="module")
def tables(pg: Postgres, server: Server) -> Postgres:
    pg.execute(
        f"""
        DROP TABLE IF EXISTS saio_items, saio_held;
        CREATE TABLE saio_items (id integer PRIMARY KEY, name text NOT NULL, n integer NOT NULL);
        INSERT INTO saio_items SELECT i, 'item' || i, i % 5 FROM generate_series(1, 20) i;
        CREATE TABLE saio_held (id integer PRIMARY KEY, name text NOT NULL);
        INSERT INTO saio_held VALUES (1, 'one'), (2, 'two');
        CREATE OR REPLACE FUNCTION saio_hold() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock({HELD_LOCK}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER saio_held_at_commit AFTER UPDATE ON saio_held
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION saio_hold();
        SELECT pgcache_watch('saio_items');
        SELECT pgcache_watch('saio_held');
        """
    )
    cache = PGCacheManager(server.client())
    wait_for(
        "replication", lambda: cache.health().get("invalidation_source") == "replication" or None
    )
    return pg


@asynccontextmanager
async def app(pg: Postgres, server: Server) -> AsyncIterator[tuple[AsyncEngine, Integration]]:
    """An asyncio engine (psycopg 3) and its integration on a ``Recording`` client."""
    engine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres")
    client = Recording(port=server.port)
    integration = use_pgcache(engine, AsyncPGCacheManager(client))
    try:
        yield engine, integration
    finally:
        integration.remove()
        await engine.dispose()
        await client.aclose()


def cached(statement: Any) -> Any:
    return statement.execution_options(pgcache=True)


def shown(value: Any) -> Any:
    """An entity as its column values, to compare."""
    if isinstance(value, Base):
        return {c.key: getattr(value, c.key) for c in value.__table__.columns}
    return value


async def rows(engine: AsyncEngine, statement: Any) -> list[Any]:
    async with AsyncSession(engine) as session:
        return [tuple(map(shown, row)) for row in (await session.execute(statement)).all()]


READS: dict[str, Callable[[], Any]] = {
    "by pk": lambda: select(Item).where(Item.id == 7),
    "a page": lambda: select(Item.id, Item.name).where(Item.n > 1).order_by(Item.id).limit(4),
    "a count": lambda: select(func.count()).select_from(Item).where(Item.n == 2),
    "a sum by group": lambda: select(Item.n, func.sum(Item.id)).group_by(Item.n).order_by(Item.n),
}


def test_async_session_reads_are_answered_by_pgcache(tables: Postgres, server: Server) -> None:
    async def scenario() -> None:
        async with app(tables, server) as (engine, integration):
            stats = await integration.cache.stats()
            for name, read in READS.items():
                expected = await rows(engine, read())
                assert await rows(engine, cached(read())) == expected, name
                assert await rows(engine, cached(read())) == expected, name
            assert (integration.answered, integration.fell_back) == (2 * len(READS), 0)
            # The second of each pair was a hit.
            after = await integration.cache.stats()
            assert after["query_hits"] >= stats["query_hits"] + len(READS)

    asyncio.run(scenario())


def test_a_transaction_that_flushed_reads_on_its_connection(
    tables: Postgres, server: Server
) -> None:
    """#51 item 1, in an AsyncSession."""

    async def scenario() -> None:
        async with app(tables, server) as (engine, integration):
            ids = cached(select(Item.id).where(Item.id > 18).order_by(Item.id))
            async with AsyncSession(engine) as session:
                assert (await session.scalars(ids)).all() == [19, 20]
                answered = integration.answered
                session.add(Item(id=21, name="new", n=0))
                await session.flush()
                assert (await session.scalars(ids)).all() == [19, 20, 21]
                await session.execute(update(Item).where(Item.id == 19).values(name="changed"))
                name = cached(select(Item.name).where(Item.id == 19))
                assert (await session.scalars(name)).all() == ["changed"]
                assert integration.answered == answered
                await session.rollback()
            assert await rows(engine, ids) == [(19,), (20,)]
            assert integration.answered == answered + 1

    asyncio.run(scenario())


def test_a_task_reads_its_own_writes(tables: Postgres, server: Server) -> None:
    async def scenario() -> None:
        async with app(tables, server) as (engine, integration):
            name = cached(select(Item.name).where(Item.id == 3))
            for n in range(20):
                async with AsyncSession(engine) as session:
                    (await session.get(Item, 3)).name = f"session {n}"
                    await session.commit()
                assert await rows(engine, name) == [(f"session {n}",)]
                # A Connection's commit, which no Session announces after it is made.
                async with engine.begin() as conn:
                    await conn.execute(update(Item).where(Item.id == 3).values(name=f"core {n}"))
                assert await rows(engine, name) == [(f"core {n}",)]
            assert (integration.answered, integration.fell_back) == (40, 0)

    asyncio.run(scenario())


async def waiting_for_lock(holder: psycopg.AsyncConnection, deadline: float) -> None:
    """Returns once a backend waits for the advisory lock ``holder`` holds."""
    while True:
        cursor = await holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
            "AND NOT granted",
            [HELD_LOCK],
        )
        (waiting,) = await cursor.fetchone()
        if waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("no commit waited for the advisory lock")
        await asyncio.sleep(0.01)


def test_a_task_reads_its_commit_while_another_task_read_during_it(
    tables: Postgres, server: Server
) -> None:
    """A Connection's commit is announced before it is made; another task's read while it
    is in flight must not take the position the committing task's next read waits for."""

    async def scenario() -> None:
        async with app(tables, server) as (engine, integration):
            holder = await psycopg.AsyncConnection.connect(tables.conninfo, autocommit=True)
            await holder.execute("SELECT pg_advisory_lock(%s)", [HELD_LOCK])

            async def writer() -> tuple[str, list[Any]]:
                async with engine.connect() as conn:
                    await conn.execute(update(Held).where(Held.id == 1).values(name="new"))
                    await conn.commit()
                    position = text("SELECT pg_current_wal_insert_lsn()::text")
                    committed = (await conn.execute(position)).scalar_one()
                return committed, await rows(engine, cached(select(Held.name).where(Held.id == 1)))

            written = asyncio.create_task(writer())
            try:
                await waiting_for_lock(holder, time.monotonic() + 20)
                assert await rows(engine, cached(select(Held.name).where(Held.id == 2))) == [
                    ("two",)
                ]
            finally:
                await holder.execute("SELECT pg_advisory_unlock(%s)", [HELD_LOCK])
                await holder.close()
            committed, name = await written
            assert name == [("new",)]
            query = integration.cache.redis.sent[-1]
            assert query[0] == "PGCACHE.QUERY" and "AFTER" in query, query
            after = query[query.index("AFTER") + 1]
            assert lsn_value(after) >= lsn_value(committed)

    asyncio.run(scenario())


def test_the_event_loop_runs_while_redis_answers(tables: Postgres) -> None:
    """A server paused for a moment (CLIENT PAUSE, on a server of the test's own): a task
    scheduled after a cached read started has run by the time the read has its answer."""
    paused = pgcache_server(tables)

    async def scenario() -> None:
        async with app(tables, paused) as (engine, integration):
            by_pk = cached(select(Item.name).where(Item.id == 5))
            # The integration's first read asks which database pgcache serves (HEALTH) and
            # the statement's columns (EXPLAIN): the paused read below then only QUERYs.
            assert await rows(engine, by_pk) == [("item5",)]
            progressed = asyncio.Event()

            async def read() -> bool:
                async with AsyncSession(engine) as session:
                    assert (await session.scalars(by_pk)).all() == ["item5"]
                    return progressed.is_set()

            async def progress() -> None:
                progressed.set()

            answered = integration.answered
            await integration.cache.redis.execute_command("CLIENT", "PAUSE", 300, "ALL")
            reading = asyncio.create_task(read())
            asyncio.create_task(progress())
            assert await reading, "the event loop stood still while Redis answered"
            assert integration.answered == answered + 1

    try:
        asyncio.run(scenario())
    finally:
        paused.stop()


def test_a_manager_of_the_wrong_kind_is_refused(tables: Postgres, server: Server) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{tables.port}/postgres"
    sync_engine, async_engine = create_engine(url), create_async_engine(url)
    client = redis.asyncio.Redis(port=server.port)
    try:
        with pytest.raises(TypeError, match="asyncio engine takes an AsyncPGCacheManager"):
            use_pgcache(async_engine, PGCacheManager(server.client()))
        with pytest.raises(TypeError, match="asyncio engine takes an AsyncPGCacheManager"):
            use_pgcache(async_engine.sync_engine, PGCacheManager(server.client()))
        with pytest.raises(TypeError, match="sync engine takes a PGCacheManager"):
            use_pgcache(sync_engine, AsyncPGCacheManager(client))
    finally:
        sync_engine.dispose()
        asyncio.run(async_engine.dispose())
        asyncio.run(client.aclose())
