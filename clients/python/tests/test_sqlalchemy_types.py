"""SQLAlchemy: every type the client types, read column by column through pgcache and
through the driver (psycopg 3, psycopg2), comes back the same, value by value and type by
type; a column the client cannot make the same falls back (issue #51, items 15 to 17).
Each test has its own tables."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from fidelity import COLUMNS, create_sql, differences, outcome
from servers import Postgres, Server
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Session

from pgcache import PGCacheManager
from pgcache.sqlalchemy import use_pgcache

# What each driver reads otherwise than the client can give it, which falls back: arrays of
# jsonb (each element parsed by the driver), a time of 24:00:00 (the driver raises), inet and
# cidr under psycopg2 (text, or objects where the application registered them).
FALLS_BACK = {
    "psycopg": {"jb_a", "tm"},
    "psycopg2": {"jb_a", "tm", "ip", "net", "ip_a"},
}


@pytest.fixture(params=["psycopg", "psycopg2"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def engine_of(pg: Postgres, driver: str, options: str) -> Any:
    """An engine whose connections' sessions start with ``options`` (libpq's)."""
    return create_engine(
        f"postgresql+{driver}://postgres@127.0.0.1:{pg.port}/postgres",
        connect_args={"options": options},
    )


@pytest.fixture
def typed(request: pytest.FixtureRequest, driver: str, pg: Postgres, server: Server) -> Iterator:
    """A table of every type (named after the test and the driver), an engine whose
    connections are in another TimeZone than pgcache's, and the integration."""
    table = f"sat51_{request.node.name.split('[')[0][5:30]}_{driver}"
    pg.execute(create_sql(table))
    engine = engine_of(pg, driver, "-c TimeZone=America/Chicago")
    integration = use_pgcache(engine, PGCacheManager(server.client()))
    yield engine, integration, Table(table, MetaData(), autoload_with=engine)
    integration.remove()
    engine.dispose()
    pg.execute(f"DROP TABLE {table}; DROP TYPE {table}_mood")


def test_every_type_reads_as_the_driver_reads_it(typed, driver: str) -> None:
    engine, integration, table = typed
    fell_back = set()
    wrong = {}
    for name in COLUMNS:
        statement = select(table.c.id, table.c[name]).order_by(table.c.id)
        with Session(engine) as session:
            plain = outcome(partial(session.execute, statement))
        before = integration.fell_back
        with Session(engine) as session:
            cached = outcome(partial(session.execute, statement.execution_options(pgcache=True)))
        if integration.fell_back > before:
            fell_back.add(name)
        if differences(cached, plain):
            wrong[name] = differences(cached, plain)
    assert wrong == {}
    assert fell_back == FALLS_BACK[driver], integration.refused()


def test_json_numbers_are_the_drivers_floats(typed) -> None:
    """#51 item 15: ``json.dumps(row.doc)`` works as without the cache."""
    engine, integration, table = typed
    statement = select(table.c.j, table.c.jb).where(table.c.id == 1)
    with Session(engine) as session:
        row = session.execute(statement.execution_options(pgcache=True)).one()
    assert row.j["a"] == 1.5 and type(row.j["a"]) is float
    assert json.loads(json.dumps(row.jb)) == row.jb


def test_float_negative_zero_and_oid(typed) -> None:
    """#51 items 16 and 17."""
    engine, integration, table = typed
    statement = select(table.c.f8, table.c.o).where(table.c.id == 2)
    answered = integration.answered
    with Session(engine) as session:
        f8, o = session.execute(statement.execution_options(pgcache=True)).one()
    assert integration.answered == answered + 1
    assert str(f8) == "-0.0"
    assert o == 0 and type(o) is int


def test_a_naive_datetime_is_read_in_the_connections_time_zone(
    request: pytest.FixtureRequest, driver: str, pg: Postgres, server: Server
) -> None:
    """#51 item 14, under SQLAlchemy: a naive datetime compared with a timestamptz means the
    application connection's wall-clock time (here America/Chicago), not pgcache's (UTC);
    timestamptz values come in the connection's zone."""
    table = Table(
        f"satz51_{driver}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True)),
        Column("doc", JSON),
    )
    engine = engine_of(pg, driver, "-c TimeZone=America/Chicago")
    table.drop(engine, checkfirst=True)
    table.create(engine)
    noon = datetime.datetime(2024, 1, 15, 12)
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=1, at=noon, doc={}))
    integration = use_pgcache(engine, PGCacheManager(server.client()))
    try:
        for statement in (
            select(table.c.id, table.c.at).where(table.c.at == noon),
            select(func.count()).select_from(table).where(table.c.at <= noon),
        ):
            with Session(engine) as session:
                plain = session.execute(statement).all()
            answered = integration.answered
            with Session(engine) as session:
                cached = session.execute(statement.execution_options(pgcache=True)).all()
            assert integration.answered == answered + 1, integration.refused()
            assert differences([tuple(r) for r in cached], [tuple(r) for r in plain]) == []
            assert plain[0][0] == 1
        # 02:30 on 10 March 2024 does not exist in Chicago: PostgreSQL and Python may place
        # it differently, so the read runs on PostgreSQL.
        skipped = select(table.c.id).where(table.c.at != datetime.datetime(2024, 3, 10, 2, 30))
        fell_back = integration.fell_back
        with Session(engine) as session:
            assert session.scalars(skipped.execution_options(pgcache=True)).all() == [1]
        assert integration.fell_back == fell_back + 1
        # Not remembered: the statement with another parameter is answered.
        other = select(table.c.id).where(table.c.at != datetime.datetime(2024, 3, 10, 4))
        answered = integration.answered
        with Session(engine) as session:
            assert session.scalars(other.execution_options(pgcache=True)).all() == [1]
        assert integration.answered == answered + 1
    finally:
        integration.remove()
        table.drop(engine)
        engine.dispose()


def test_a_string_date_under_another_date_style_runs_on_postgresql(
    driver: str, pg: Postgres, server: Server
) -> None:
    """The session-settings rule for DateStyle: '02/01/2024' is 2 January to a DMY session
    and 1 February to pgcache's (MDY), so it runs on PostgreSQL; a ``date`` parameter (sent
    as ISO 8601, read alike by both) is answered."""
    table = Table(
        f"sads51_{driver}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("d", Date),
    )
    engine = engine_of(pg, driver, "-c DateStyle=ISO,\\ DMY")
    table.drop(engine, checkfirst=True)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(id=1, d=datetime.date(2024, 1, 2)))
    integration = use_pgcache(engine, PGCacheManager(server.client()))
    try:
        fell_back = integration.fell_back
        with Session(engine) as session:
            by_text = select(table.c.id).where(
                table.c.d == bindparam("day", "02/01/2024", type_=Date)
            )
            assert session.scalars(by_text.execution_options(pgcache=True)).all() == [1]
        assert integration.fell_back == fell_back + 1
        answered = integration.answered
        with Session(engine) as session:
            by_date = select(table.c.id).where(table.c.d == datetime.date(2024, 1, 2))
            assert session.scalars(by_date.execution_options(pgcache=True)).all() == [1]
        assert integration.answered == answered + 1, integration.refused()
    finally:
        integration.remove()
        table.drop(engine)
        engine.dispose()
