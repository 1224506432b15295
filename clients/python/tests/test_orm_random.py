"""A random walk through each ORM's transactions, with and without the cache (issue #51):
writes (ORM and Core / QuerySet), commits, rollbacks, savepoints, autocommit on and off, and
reads of several shapes, each read twice at the same moment on the same session (once
through pgcache, once not) and the two compared: rows, types, and order where ordered.

SQLAlchemy on psycopg 3, on psycopg2 and on the asyncio engine (the same walk, run in
SQLAlchemy's greenlet), and Django. One thread reads and writes: the client promises a
thread (a task) reads its own writes. ``PGCACHE_ORM_STEPS`` steps per walk (default 400);
the seed is random unless ``PGCACHE_ORM_SEED`` gives it, and a difference prints it with
the steps that led there. Tables ``ro_*``."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
import redis.asyncio
from servers import Postgres, Server
from sqlalchemy import (
    DateTime,
    Numeric,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column
from sqlalchemy.util import greenlet_spawn

from pgcache import AsyncPGCacheManager, PGCacheManager
from pgcache.sqlalchemy import Integration, use_pgcache

SEED = int(os.environ.get("PGCACHE_ORM_SEED") or random.randrange(2**32))
STEPS = int(os.environ.get("PGCACHE_ORM_STEPS") or 400)

# Of the reads made outside any transaction, the share pgcache must have answered for the
# walk to have proved anything. Not all: after a commit, a read inside the transaction the
# uncached twin opened goes to the connection (its position would be taken inside it).
LEAST_ANSWERED = 0.5

NAMES = ["ann", "bob", "Cy", "dée", ""]
START = datetime.datetime(2024, 3, 30, 22, tzinfo=datetime.timezone.utc)


class Walk:
    """A walk's random source, the steps taken, and its counts: reads compared, and those
    pgcache answered (of them, those outside any transaction)."""

    def __init__(self, name: str, answered: Callable[[], int]) -> None:
        self.name = name
        self.rng = random.Random(f"{SEED}:{name}")
        self.steps: list[str] = []
        self.compared = 0
        self.answered = 0
        self.outside = 0
        self.answered_outside = 0
        self._answered = answered
        # An upper bound of the ids handed out (a rolled-back insert spends one too).
        self.top = 0

    def pk(self) -> int:
        return self.rng.randint(1, self.top + 1)

    def parent(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "name": rng.choice(NAMES),
            "score": rng.randint(-3, 3),
            "price": Decimal(rng.randint(-999, 999)).scaleb(-2),
            "flag": rng.random() < 0.5,
            "day": datetime.date(2024, 2, 27) + datetime.timedelta(days=rng.randint(0, 4)),
            # Across a DST change in some zones, and midnight UTC.
            "at": START + datetime.timedelta(minutes=30 * rng.randint(0, 12)),
        }

    def child(self) -> dict[str, Any]:
        return {
            "parent_id": self.pk(),
            "label": self.rng.choice(NAMES),
            "qty": self.rng.randint(0, 5),
        }

    def do(self, description: str, action: Callable[[], Any]) -> Any:
        """Takes a step; one that raises fails the walk with the steps that led there."""
        self.steps.append(description)
        try:
            return action()
        except Exception as error:
            raise AssertionError(self.report(f"the step raised {error!r}")) from error

    def compare(self, description: str, read: Callable[[bool], Any], outside: bool) -> None:
        """Reads with the cache and without it, in a random order, and compares."""
        results: dict[bool, Any] = {}
        answered = False
        first = self.rng.random() < 0.5
        for cached in (first, not first):
            before = self._answered()
            results[cached] = self.do(
                f"{description} ({'cached' if cached else 'plain'})", partial(read, cached)
            )
            if cached:
                answered = self._answered() > before
        if results[True] != results[False]:
            raise AssertionError(
                self.report(
                    f"{description}: the cached read (answered by pgcache: {answered}) "
                    f"differs\n  cached: {results[True]!r}\n  plain:  {results[False]!r}"
                )
            )
        self.compared += 1
        self.answered += answered
        self.outside += outside
        self.answered_outside += outside and answered

    def report(self, problem: str) -> str:
        # The whole walk goes to the captured output; the message holds its end.
        print(f"walk {self.name}, PGCACHE_ORM_SEED={SEED} PGCACHE_ORM_STEPS={STEPS}:")
        for n, step in enumerate(self.steps):
            print(f"  {n}: {step}")
        tail = "\n".join(
            f"  {n}: {s}" for n, s in enumerate(self.steps) if n >= len(self.steps) - 40
        )
        return (
            f"walk {self.name} at step {len(self.steps) - 1}: {problem}\n"
            f"reproduce: PGCACHE_ORM_SEED={SEED} PGCACHE_ORM_STEPS={STEPS}; the last steps:\n{tail}"
        )

    def check(self, refused: dict[str, str]) -> None:
        print(
            f"walk {self.name}: seed {SEED}, {STEPS} steps, {self.compared} reads compared, "
            f"{self.answered} answered by pgcache; outside transactions "
            f"{self.answered_outside} of {self.outside}"
        )
        assert self.outside > 0 and self.answered_outside >= LEAST_ANSWERED * self.outside, (
            f"walk {self.name}: pgcache answered {self.answered_outside} of the "
            f"{self.outside} reads outside transactions (refused: {refused})"
        )


def typed(value: Any) -> Any:
    """A value with its type, as ``repr`` shows both (a Decimal's scale, a datetime's zone)."""
    return repr(value)


# ---------------------------------------------------------------------------------------
# SQLAlchemy


def sa_models(prefix: str) -> tuple[Any, Any, Any]:
    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = f"{prefix}_parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        score: Mapped[int]
        price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
        flag: Mapped[bool]
        day: Mapped[datetime.date]
        at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))

    class Child(Base):
        __tablename__ = f"{prefix}_child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int]
        label: Mapped[str]
        qty: Mapped[int]

    return Base, Parent, Child


def sa_read(walk: Walk, P: Any, C: Any) -> tuple[str, Any, bool, bool]:
    """A read: its description, statement, whether ordered, whether of entities."""
    rng = walk.rng
    k, x = walk.pk(), rng.randint(-3, 4)
    ks = sorted({walk.pk() for _ in range(rng.randint(1, 4))})
    n, m = rng.randint(1, 5), rng.randint(0, 6)
    reads = [
        (f"parent {k} by pk", select(P).where(P.id == k), True, True),
        (
            f"parents of score > {x}",
            select(P.id, P.name, P.score, P.flag).where(P.score > x),
            False,
            False,
        ),
        (
            f"parents by score desc, limit {n} offset {m}",
            select(P).order_by(P.score.desc(), P.id).limit(n).offset(m),
            True,
            True,
        ),
        (
            f"count of children of qty >= {x}",
            select(func.count()).select_from(C).where(C.qty >= x),
            True,
            False,
        ),
        (
            "aggregates of parents",
            select(
                func.sum(P.price),
                func.max(P.score),
                func.min(P.name),
                func.avg(P.score),
                func.bool_or(P.flag),
                func.max(P.at),
                func.min(P.day),
            ),
            True,
            False,
        ),
        (
            "children by parent",
            select(C.parent_id, func.count(), func.sum(C.qty))
            .group_by(C.parent_id)
            .order_by(C.parent_id),
            True,
            False,
        ),
        (
            f"parents joined to children of qty > {x}",
            select(P.name, P.price, P.at, C.label, C.qty)
            .join(C, C.parent_id == P.id)
            .where(C.qty > x)
            .order_by(C.id),
            True,
            False,
        ),
        (f"parents in {ks}", select(P).where(P.id.in_(ks)), False, True),
        (f"children of parent {k}", select(C).where(C.parent_id == k).order_by(C.id), True, True),
    ]
    return rng.choice(reads)


def take_steps(walk: Walk, read: Callable[[], None], change: Callable[[], None]) -> None:
    """``STEPS`` steps of a walk, each a read or a change, even odds."""
    for _ in range(STEPS):
        if walk.rng.random() < 0.5:
            read()
        else:
            change()


class SaWalk:
    """The walk on SQLAlchemy: a Session (autocommit off, savepoints by ``begin_nested``)
    or an AUTOCOMMIT connection (on)."""

    def __init__(self, engine: Engine, P: Any, C: Any, walk: Walk) -> None:
        self.engine, self.P, self.C, self.walk = engine, P, C, walk
        self.session: Session | None = Session(engine)
        self.conn: Connection | None = None
        self.nested: list[SessionTransaction] = []

    def run(self) -> None:
        try:
            take_steps(self.walk, self.read, self.change)
        finally:
            if self.session is not None:
                self.session.close()
            if self.conn is not None:
                self.conn.close()

    def read(self) -> None:
        description, statement, ordered, entities = sa_read(self.walk, self.P, self.C)
        session = self.session
        outside = session is None or not (
            session.in_transaction() or session.new or session.dirty or session.deleted
        )
        self.walk.compare(
            description, lambda cached: self.rows(statement, ordered, entities, cached), outside
        )

    def rows(self, statement: Any, ordered: bool, entities: bool, cached: bool) -> list[Any]:
        statement = statement.execution_options(pgcache=cached, populate_existing=True)
        if self.session is not None and entities:
            # Entities as loaded (populate_existing: from this read's rows, not the
            # identity map's).
            columns = statement.column_descriptions[0]["entity"].__table__.columns
            got = [
                tuple((c.key, typed(getattr(obj, c.key))) for c in columns)
                for obj in self.session.scalars(statement).all()
            ]
        else:
            runner = self.session if self.session is not None else self.conn
            got = [tuple(typed(v) for v in row) for row in runner.execute(statement).all()]
        return got if ordered else sorted(got)

    def change(self) -> None:
        walk, P, C, session = self.walk, self.P, self.C, self.session
        runner = session if session is not None else self.conn
        values, child, k, x = walk.parent(), walk.child(), walk.pk(), walk.rng.randint(-3, 5)
        writes: list[tuple[str, Callable[[], Any]]] = [
            (f"core insert parent {values}", lambda: runner.execute(insert(P).values(values))),
            (f"core insert child {child}", lambda: runner.execute(insert(C).values(child))),
            (
                f"core update parents of score {x}",
                lambda: runner.execute(
                    update(P).where(P.score == x).values(price=P.price - 1, flag=~P.flag)
                ),
            ),
            (f"core delete parent {k}", lambda: runner.execute(delete(P).where(P.id == k))),
            (
                f"core delete children of qty {x}",
                lambda: runner.execute(delete(C).where(C.qty == x)),
            ),
        ]
        if session is None:
            control = [("autocommit off", self.autocommit_off)]
        else:
            writes += [
                (f"orm add parent {values}", lambda: session.add(P(**values))),
                (f"orm add child {child}", lambda: session.add(C(**child))),
                (f"orm change parent {k}", lambda: self.orm_change(k)),
                (f"orm delete parent {k}", lambda: self.orm_delete(k)),
                ("flush", session.flush),
            ]
            control = [
                ("commit", lambda: self.end(session.commit)),
                ("rollback", lambda: self.end(session.rollback)),
                ("savepoint", lambda: self.nested.append(session.begin_nested())),
                ("commit or roll back, then autocommit on", self.autocommit_on),
            ]
            if self.nested:
                control += [
                    ("release savepoint", lambda: self.nested.pop().commit()),
                    ("rollback to savepoint", lambda: self.nested.pop().rollback()),
                ]
        description, action = walk.rng.choice(writes if walk.rng.random() < 0.7 else control)
        if description.startswith(("core insert parent", "orm add parent")):
            walk.top += 1
        walk.do(description, action)

    def orm_change(self, k: int) -> None:
        obj = self.session.get(self.P, k)
        if obj is not None:
            obj.score, obj.price = self.walk.rng.randint(-3, 3), obj.price + 1

    def orm_delete(self, k: int) -> None:
        obj = self.session.get(self.P, k)
        if obj is not None:
            self.session.delete(obj)

    def end(self, how: Callable[[], None]) -> None:
        """A commit or a rollback, which ends the savepoints too."""
        how()
        self.nested.clear()

    def autocommit_on(self) -> None:
        session = self.session
        self.end(session.commit if self.walk.rng.random() < 0.5 else session.rollback)
        session.close()
        self.session = None
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def autocommit_off(self) -> None:
        self.conn.close()
        self.conn, self.session = None, Session(self.engine)


def sa_tables(pg: Postgres, prefix: str) -> tuple[Any, Any]:
    """The walk's tables, made anew and watched, with a few rows."""
    Base, P, C = sa_models(prefix)
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres")
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    seed = Walk(f"{prefix} rows", lambda: 0)
    with Session(engine) as session:
        seed.top = 8
        session.add_all(P(**seed.parent()) for _ in range(8))
        session.flush()
        session.add_all(C(**seed.child()) for _ in range(12))
        session.commit()
    engine.dispose()
    for table in (P, C):
        pg.execute(f"SELECT pgcache_watch('{table.__tablename__}')")
    return P, C


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy_walk(pg: Postgres, server: Server, driver: str) -> None:
    P, C = sa_tables(pg, f"ro_sa_{driver}")
    engine = create_engine(f"postgresql+{driver}://postgres@127.0.0.1:{pg.port}/postgres")
    integration = use_pgcache(engine, PGCacheManager(server.client()))
    walk = Walk(f"sqlalchemy-{driver}", lambda: integration.answered)
    walk.top = 8
    try:
        SaWalk(engine, P, C, walk).run()
    finally:
        integration.remove()
        engine.dispose()
    walk.check(integration.refused())


def test_sqlalchemy_asyncio_walk(pg: Postgres, server: Server) -> None:
    """The same walk on an asyncio engine: run in SQLAlchemy's greenlet, as AsyncSession
    runs its Session, so every call of the integration is awaited."""
    from sqlalchemy.ext.asyncio import create_async_engine

    P, C = sa_tables(pg, "ro_sa_asyncio")
    walk = Walk("sqlalchemy-asyncio", lambda: 0)
    walk.top = 8

    async def scenario() -> Integration:
        engine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres")
        client = redis.asyncio.Redis(port=server.port)
        integration = use_pgcache(engine, AsyncPGCacheManager(client))
        walk._answered = lambda: integration.answered
        try:
            await greenlet_spawn(SaWalk(engine.sync_engine, P, C, walk).run)
        finally:
            integration.remove()
            await engine.dispose()
            await client.aclose()
        return integration

    integration = asyncio.run(scenario())
    walk.check(integration.refused())


# ---------------------------------------------------------------------------------------
# Django


def dj_fields(obj: Any) -> Any:
    """A model instance as its fields, typed, and those of the instances loaded with it."""
    out = tuple((f.attname, typed(getattr(obj, f.attname))) for f in obj._meta.concrete_fields)
    related = tuple((name, dj_fields(r)) for name, r in sorted(obj._state.fields_cache.items()))
    return out + related


def dj_shown(value: Any) -> Any:
    if hasattr(value, "_meta"):
        return dj_fields(value)
    if isinstance(value, dict):
        return tuple(sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(dj_shown(v) for v in value)
    return typed(value)


def dj_read(walk: Walk, P: Any, C: Any) -> tuple[str, Callable[[Callable[[Any], Any]], Any], bool]:
    """A read: its description, the read of a QuerySet maker, whether ordered."""
    from django.db.models import Avg, Count, Max, Min, Sum

    rng = walk.rng
    k, x = walk.pk(), rng.randint(-3, 4)
    ks = sorted({walk.pk() for _ in range(rng.randint(1, 4))})
    n, m = rng.randint(1, 5), rng.randint(0, 6)
    name = rng.choice(NAMES)

    def get(q: Callable[[Any], Any]) -> Any:
        try:
            return q(P).get(pk=k)
        except P.DoesNotExist:
            return "DoesNotExist"

    reads = [
        (f"parent {k} by pk", lambda q: list(q(P).filter(pk=k)), True),
        (f"get parent {k}", get, True),
        (
            f"parents of score > {x}",
            lambda q: list(q(P).filter(score__gt=x).values_list("id", "name", "score", "flag")),
            False,
        ),
        (
            f"parents by score desc [{m}:{m + n}]",
            lambda q: list(q(P).order_by("-score", "id")[m : m + n]),
            True,
        ),
        (f"count of children of qty >= {x}", lambda q: q(C).filter(qty__gte=x).count(), True),
        (f"parents named {name!r} exist", lambda q: q(P).filter(name=name).exists(), True),
        (
            "aggregates of parents",
            lambda q: q(P).aggregate(
                Sum("price"), Max("score"), Min("name"), Avg("score"), Max("at"), Min("day")
            ),
            True,
        ),
        (
            "children by parent",
            lambda q: list(
                q(C)
                .values("parent_id")
                .annotate(n=Count("id"), total=Sum("qty"))
                .order_by("parent_id")
            ),
            True,
        ),
        (
            f"children of qty > {x} with their parent",
            lambda q: list(q(C).select_related("parent").filter(qty__gt=x).order_by("id")),
            True,
        ),
        (f"parents in {ks}", lambda q: list(q(P).filter(id__in=ks)), False),
        (
            "parents of day >= 2024-02-28, values",
            lambda q: list(
                q(P).filter(day__gte=datetime.date(2024, 2, 28)).values("id", "at", "price")
            ),
            False,
        ),
    ]
    return rng.choice(reads)


class DjangoWalk:
    """The walk on Django's connection: autocommit on or off, ``atomic()`` blocks (nested:
    savepoints), and savepoints by hand with autocommit off."""

    def __init__(self, P: Any, C: Any, walk: Walk) -> None:
        self.P, self.C, self.walk = P, C, walk
        self.atomics: list[Any] = []
        self.savepoints: list[str] = []

    def run(self) -> None:
        from django.db import transaction

        try:
            take_steps(self.walk, self.read, self.change)
        finally:
            while self.atomics:
                self.leave(rollback=True)
            if not transaction.get_autocommit():
                transaction.rollback()
                transaction.set_autocommit(True)

    def read(self) -> None:
        from django.db import transaction

        description, of, ordered = dj_read(self.walk, self.P, self.C)
        outside = transaction.get_autocommit() and not self.atomics

        def rows(cached: bool) -> Any:
            got = dj_shown(of(lambda model: model.objects.cached() if cached else model.objects))
            return got if ordered or not isinstance(got, tuple) else tuple(sorted(got, key=repr))

        self.walk.compare(description, rows, outside)

    def change(self) -> None:
        from django.db import transaction
        from django.db.models import F

        walk, P, C = self.walk, self.P, self.C
        values, child, k, x = walk.parent(), walk.child(), walk.pk(), walk.rng.randint(-3, 5)
        writes: list[tuple[str, Callable[[], Any]]] = [
            (f"create parent {values}", lambda: P.objects.create(**values)),
            (f"create child {child}", lambda: C.objects.create(**child)),
            (f"save parent {k}", lambda: self.save(k)),
            (f"delete parent {k}", lambda: self.remove(k)),
            (
                f"update parents of score {x}",
                lambda: P.objects.filter(score=x).update(price=F("price") + 1, flag=~F("flag")),
            ),
            (f"delete children of qty {x}", lambda: C.objects.filter(qty=x).delete()),
        ]
        control: list[tuple[str, Callable[[], Any]]] = [("atomic", self.enter)]
        if self.atomics:
            control += [
                ("leave atomic", lambda: self.leave(rollback=False)),
                ("leave atomic, rolled back", lambda: self.leave(rollback=True)),
            ]
        elif transaction.get_autocommit():
            control += [("autocommit off", lambda: transaction.set_autocommit(False))]
        else:
            control += [
                ("commit", lambda: self.end(transaction.commit)),
                ("rollback", lambda: self.end(transaction.rollback)),
                ("savepoint", lambda: self.savepoints.append(transaction.savepoint())),
                ("commit or roll back, then autocommit on", self.autocommit_on),
            ]
            if self.savepoints:
                control += [
                    (
                        "release savepoint",
                        lambda: transaction.savepoint_commit(self.savepoints.pop()),
                    ),
                    (
                        "rollback to savepoint",
                        lambda: transaction.savepoint_rollback(self.savepoints.pop()),
                    ),
                ]
        description, action = walk.rng.choice(writes if walk.rng.random() < 0.7 else control)
        if description.startswith("create parent"):
            walk.top += 1
        walk.do(description, action)

    def save(self, k: int) -> None:
        obj = self.P.objects.filter(pk=k).first()
        if obj is not None:
            obj.score, obj.name = self.walk.rng.randint(-3, 3), self.walk.rng.choice(NAMES)
            obj.save()

    def remove(self, k: int) -> None:
        obj = self.P.objects.filter(pk=k).first()
        if obj is not None:
            obj.delete()

    def enter(self) -> None:
        from django.db import transaction

        atomic = transaction.atomic()
        atomic.__enter__()
        self.atomics.append(atomic)

    def leave(self, rollback: bool) -> None:
        from django.db import transaction

        if rollback:
            transaction.set_rollback(True)
        self.atomics.pop().__exit__(None, None, None)

    def end(self, how: Callable[[], None]) -> None:
        """A commit or a rollback, which ends the savepoints made by hand too."""
        how()
        self.savepoints.clear()

    def autocommit_on(self) -> None:
        from django.db import transaction

        self.end(transaction.commit if self.walk.rng.random() < 0.5 else transaction.rollback)
        transaction.set_autocommit(True)


def test_django_walk(pg: Postgres, server: Server, django_configured: None) -> None:
    from django.db import connection
    from djangoapp.models import WalkChild, WalkParent

    from pgcache import django as pgcache_django

    pg.execute("DROP TABLE IF EXISTS ro_django_parent, ro_django_child")
    with connection.schema_editor() as editor:
        editor.create_model(WalkParent)
        editor.create_model(WalkChild)
    walk = Walk("django", lambda: pgcache_django.state.answered)
    for _ in range(8):
        WalkParent.objects.create(**walk.parent())
    walk.top = 8
    for _ in range(12):
        WalkChild.objects.create(**walk.child())
    for table in ("ro_django_parent", "ro_django_child"):
        pg.execute(f"SELECT pgcache_watch('{table}')")
    pgcache_django.use_pgcache(PGCacheManager(server.client()))
    DjangoWalk(WalkParent, WalkChild, walk).run()
    walk.check(pgcache_django.state.refused())
