"""SQLAlchemy 2.x: a small app (authors, books, tags: a foreign key and a many-to-many) whose
queries, run with ``execution_options(pgcache=True)``, return the same objects as without it,
before and after writes; statements pgcache refuses run on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal

import pytest
import redis.asyncio
from servers import Postgres, Server, wait_for
from sqlalchemy import (
    Column,
    ForeignKey,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

from pgcache import AsyncPGCacheManager, PGCacheManager
from pgcache.sqlalchemy import Integration, use_pgcache


class Base(DeclarativeBase):
    pass


book_tags = Table(
    "sa_book_tags",
    Base.metadata,
    Column("book_id", ForeignKey("sa_books.id"), primary_key=True),
    Column("tag_id", ForeignKey("sa_tags.id"), primary_key=True),
)


class Author(Base):
    __tablename__ = "sa_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author", order_by="Book.id")


class Book(Base):
    __tablename__ = "sa_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    published: Mapped[datetime.date]
    author_id: Mapped[int] = mapped_column(ForeignKey("sa_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")
    tags: Mapped[list[Tag]] = relationship(secondary=book_tags, order_by="Tag.id")


class Tag(Base):
    __tablename__ = "sa_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


@pytest.fixture(scope="module", params=["psycopg", "psycopg2"])
def app(request: pytest.FixtureRequest, pg: Postgres, server: Server):
    engine = create_engine(f"postgresql+{request.param}://postgres@127.0.0.1:{pg.port}/postgres")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        tags = [Tag(id=i, name=f"tag{i}") for i in range(1, 4)]
        for a in range(1, 4):
            author = Author(id=a, name=f"author{a}")
            for b in range(1, 5):
                n = a * 10 + b
                author.books.append(
                    Book(
                        id=n,
                        title=f"book{n}",
                        price=Decimal(f"{n}.99"),
                        published=datetime.date(2020, 1, b),
                        tags=tags[: b % 4],
                    )
                )
            session.add(author)
        session.commit()
    for table in ("sa_authors", "sa_books", "sa_tags", "sa_book_tags"):
        pg.execute(f"SELECT pgcache_watch('{table}')")
    cache = PGCacheManager(server.client())
    wait_for(
        "replication", lambda: cache.health().get("invalidation_source") == "replication" or None
    )
    integration = use_pgcache(engine, cache)
    yield engine, integration
    integration.remove()
    engine.dispose()


def shown(value):
    """Entities as their column values (and their loaded relationships), to compare."""
    if isinstance(value, (list, tuple)):
        return [shown(v) for v in value]
    if isinstance(value, Base):
        out = {c.key: getattr(value, c.key) for c in value.__table__.columns}
        for name in ("author", "books", "tags"):
            if name in value.__dict__:
                out[name] = shown(value.__dict__[name])
        return out
    if hasattr(value, "_mapping"):
        return dict(value._mapping)
    return value


QUERIES = {
    "books of an author": lambda: select(Book).where(Book.author_id == 2).order_by(Book.id),
    "joined eager load": lambda: select(Book).options(joinedload(Book.author)).where(Book.id == 23),
    "select-in load": lambda: select(Author)
    .options(selectinload(Author.books))
    .order_by(Author.id),
    "count": lambda: select(func.count()).select_from(Book).where(Book.price > 20),
    "a page": lambda: select(Book).order_by(Book.id).limit(3).offset(4),
    "many-to-many": lambda: select(Book)
    .join(Book.tags)
    .where(Tag.name == "tag2")
    .order_by(Book.id),
    "columns": lambda: select(Book.id, Book.title, Book.price).where(Book.id.in_([11, 32])),
}


def run(engine, query, cached: bool, shape: str):
    statement = query().execution_options(pgcache=cached)
    with Session(engine) as session:
        result = session.execute(statement)
        if shape == "mappings":
            return [dict(m) for m in result.mappings().all()]
        if shape == "scalars":
            return shown(result.unique().scalars().all())
        return shown(result.all())


@pytest.mark.parametrize("name", list(QUERIES))
def test_cached_queries_return_what_uncached_ones_do(app, name: str) -> None:
    engine, integration = app
    shape = {"count": "rows", "columns": "mappings"}.get(name, "scalars")
    before = integration.answered
    expected = run(engine, QUERIES[name], cached=False, shape=shape)
    assert run(engine, QUERIES[name], cached=True, shape=shape) == expected
    assert run(engine, QUERIES[name], cached=True, shape=shape) == expected
    # The select-in load's second statement (the books of the authors) is answered too.
    assert integration.answered >= before + (4 if name == "select-in load" else 2)


def test_a_write_is_read_back_by_its_thread(app) -> None:
    engine, integration = app
    by_id = lambda: select(Book).where(Book.id == 12)  # noqa: E731
    assert run(engine, by_id, True, "scalars")[0]["title"] == "book12"
    for n in range(20):
        with Session(engine) as session:
            session.get(Book, 12).title = f"retitled {n}"
            session.commit()
        assert run(engine, by_id, True, "scalars")[0]["title"] == f"retitled {n}"
    assert integration.fell_back == 0 or integration.refused()


def test_a_write_on_an_autocommit_connection_is_read_back_by_its_thread(app) -> None:
    engine, integration = app
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    by_id = lambda: select(Book).where(Book.id == 13)  # noqa: E731
    for n in range(200):
        # Committed as it runs: SQLAlchemy sees no commit.
        with autocommit.connect() as conn:
            conn.execute(update(Book).where(Book.id == 13).values(title=f"autocommitted {n}"))
        assert run(engine, by_id, True, "scalars")[0]["title"] == f"autocommitted {n}"


def test_a_statement_pgcache_refuses_runs_on_postgresql(app) -> None:
    engine, integration = app
    recent = lambda: select(Book).where(Book.published < func.now()).order_by(Book.id)  # noqa: E731
    expected = run(engine, recent, False, "scalars")
    before = integration.fell_back
    assert run(engine, recent, True, "scalars") == expected
    assert run(engine, recent, True, "scalars") == expected
    assert integration.fell_back == before + 2
    assert any("STABLE" in reason for reason in integration.refused().values())


def test_a_none_parameter_is_answered_by_pgcache(app) -> None:
    engine, integration = app
    statement = (
        select(Book.id)
        .where(func.coalesce(Book.price, bindparam("floor", type_=Numeric)) > 20)
        .where(or_(Book.title == bindparam("title"), Book.author_id > 0))
        .order_by(Book.id)
    )
    values = {"floor": None, "title": None}

    def ids(cached: bool) -> list[int]:
        with Session(engine) as session:
            return session.scalars(statement.execution_options(pgcache=cached), values).all()

    expected = ids(False)
    assert expected
    before = (integration.answered, integration.fell_back)
    assert ids(True) == expected
    assert ids(True) == expected
    assert (integration.answered, integration.fell_back) == (before[0] + 2, before[1])


def test_only_selects_marked_for_the_cache_go_to_it(app) -> None:
    engine, integration = app
    before = integration.answered
    with Session(engine) as session:
        session.execute(select(Author).where(Author.id == 1)).scalars().all()
    assert integration.answered == before
    assert isinstance(integration, Integration)


def test_an_asyncio_engine_reads_through_pgcache(app, pg: Postgres, server: Server) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def scenario() -> None:
        engine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres")
        client = redis.asyncio.Redis(port=server.port)
        integration = use_pgcache(engine, AsyncPGCacheManager(client))

        async def read(query, cached: bool):
            async with AsyncSession(engine) as session:
                result = await session.execute(query().execution_options(pgcache=cached))
                return shown(result.unique().scalars().all())

        try:
            for name in ("books of an author", "joined eager load", "a page", "many-to-many"):
                assert await read(QUERIES[name], True) == await read(QUERIES[name], False)
            by_id = lambda: select(Book).where(Book.id == 31)  # noqa: E731
            for n in range(20):
                async with AsyncSession(engine) as session:
                    (await session.get(Book, 31)).title = f"awaited {n}"
                    await session.commit()
                assert (await read(by_id, True))[0]["title"] == f"awaited {n}"
            assert integration.answered >= 24
        finally:
            integration.remove()
            await engine.dispose()
            await client.aclose()

    asyncio.run(scenario())
