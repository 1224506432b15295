"""SQLAlchemy: a cached read gives what PostgreSQL would give the session (issue #51): a
transaction that wrote reads its own writes, and a statement the client cannot answer
exactly runs on PostgreSQL instead of failing. Each test has its own table."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
import redis.asyncio
from servers import Postgres, Server, wait_for
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.dialects.postgresql import INET, INT4RANGE, JSONB, Range
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgcache import AsyncPGCacheManager, PGCacheManager
from pgcache.sqlalchemy import use_pgcache


def item_model(table: str) -> Any:
    """A mapped class of its own table: id, a jsonb, an inet and a range."""

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = table
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(default="")
        doc: Mapped[dict] = mapped_column(JSONB, default=dict)
        ip: Mapped[Any] = mapped_column(INET, nullable=True)
        span: Mapped[Any] = mapped_column(INT4RANGE, nullable=True)

    return Item


@pytest.fixture(params=["psycopg", "psycopg2"])
def items(request: pytest.FixtureRequest, pg: Postgres, server: Server):
    """An engine of the driver, its integration, and a table (named after the test) of one
    item."""
    table = "sa51_" + request.node.name.split("[")[0][5:40] + "_" + request.param
    engine = create_engine(f"postgresql+{request.param}://postgres@127.0.0.1:{pg.port}/postgres")
    Item = item_model(table)
    Item.metadata.drop_all(engine)
    Item.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(
            Item(
                id=1,
                name="one",
                doc={"p": 1, "q": [1, 2]},
                ip="10.0.0.1",
                span=Range(1, 5),
            )
        )
        session.commit()
    integration = use_pgcache(engine, PGCacheManager(server.client()))
    yield engine, integration, Item
    integration.remove()
    Item.metadata.drop_all(engine)
    engine.dispose()


def cached(statement: Any) -> Any:
    return statement.execution_options(pgcache=True)


def test_a_flushed_insert_and_update_are_read_by_their_session(items) -> None:
    """#51 item 1."""
    engine, integration, Item = items
    with Session(engine) as session:
        assert session.scalars(cached(select(Item.id))).all() == [1]
    with Session(engine) as session:
        session.add(Item(id=2))
        session.flush()
        assert session.scalars(cached(select(Item.id).order_by(Item.id))).all() == [1, 2]
        session.execute(update(Item).where(Item.id == 1).values(name="renamed"))
        assert session.scalars(cached(select(Item.name).where(Item.id == 1))).all() == ["renamed"]
        session.rollback()
    # Nothing was committed: the next read is answered by pgcache, waiting for nothing.
    answered = integration.answered
    with Session(engine) as session:
        assert session.scalars(cached(select(Item.id).order_by(Item.id))).all() == [1]
    assert integration.answered == answered + 1


def test_an_async_session_reads_its_flushed_writes(items, pg: Postgres, server: Server) -> None:
    """#51 item 1, on an asyncio engine."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine, integration, Item = items
    if engine.dialect.driver != "psycopg":
        pytest.skip("asyncio is psycopg's")

    async def scenario() -> None:
        aengine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres")
        client = redis.asyncio.Redis(port=server.port)
        aintegration = use_pgcache(aengine, AsyncPGCacheManager(client))
        try:
            async with AsyncSession(aengine) as session:
                assert (await session.scalars(cached(select(Item.id)))).all() == [1]
                session.add(Item(id=3))
                await session.flush()
                ids = (await session.scalars(cached(select(Item.id).order_by(Item.id)))).all()
                assert ids == [1, 3]
                await session.rollback()
        finally:
            aintegration.remove()
            await aengine.dispose()
            await client.aclose()

    asyncio.run(scenario())


def test_json_and_inet_parameters_are_answered_by_pgcache(items) -> None:
    """#51 items 4 and 5 (psycopg2 sends no ipaddress object unless the application
    registered an adapter; pgcache answers it all the same)."""
    engine, integration, Item = items
    statements = [
        select(Item.id).where(Item.doc.contains({"p": 1})),
        select(Item.id).where(Item.ip == ipaddress.ip_address("10.0.0.1")),
    ]
    for statement in statements:
        answered = integration.answered
        with Session(engine) as session:
            assert session.scalars(cached(statement)).all() == [1]
        assert integration.answered == answered + 1, integration.refused()


def test_a_column_the_client_cannot_type_runs_on_postgresql(items) -> None:
    """#51 item 6: a range column."""
    engine, integration, Item = items
    with Session(engine) as session:
        expected = session.execute(select(Item.id, Item.span)).all()
    fell_back = integration.fell_back
    with Session(engine) as session:
        assert session.execute(cached(select(Item.id, Item.span))).all() == expected
    assert integration.fell_back == fell_back + 1
    assert any("int4range" in reason for reason in integration.refused().values())


def test_a_fallback_after_a_commit_with_yield_per(items) -> None:
    """#51 item 7: the position is asked on a cursor of its own, not on the named cursor
    the fallback then runs the statement on."""
    engine, integration, Item = items
    with Session(engine) as session:
        session.get(Item, 1).name = "committed"
        session.commit()
        statement = select(Item.name).where(func.random() >= 0)
        rows = session.scalars(cached(statement).execution_options(yield_per=10)).all()
    assert rows == ["committed"]


def test_a_repeatable_read_transaction_reads_its_snapshot(
    items, pg: Postgres, server: Server
) -> None:
    """A clean REPEATABLE READ transaction reads the snapshot of its first statement: a
    cached answer newer than that snapshot is not what PostgreSQL would give it."""
    engine, integration, Item = items
    table = Item.__tablename__
    pg.execute(f"SELECT pgcache_watch('{table}')")
    plain = PGCacheManager(server.client())
    statement = f"SELECT name FROM {table} WHERE id = $1"
    with Session(engine.execution_options(isolation_level="REPEATABLE READ")) as session:
        read = cached(select(Item.name).where(Item.id == 1))
        assert session.scalars(read).all() == ["one"]
        pg.execute(f"UPDATE {table} SET name = 'changed' WHERE id = 1")
        # The change applied to the cache (read outside the transaction).
        wait_for(
            "the change applied",
            lambda: plain.query(statement, [1])[1] == [("changed",)] or None,
        )
        assert session.scalars(read).all() == ["one"]
