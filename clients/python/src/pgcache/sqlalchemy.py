"""SQLAlchemy 2.x: statements executed with the execution option ``pgcache=True`` are
answered by PGCACHE.QUERY, and everything SQLAlchemy and its ORM do with a result (entities,
``scalars()``, ``mappings()``, eager loads, identity map) happens as without the cache.

    from pgcache.sqlalchemy import use_pgcache
    use_pgcache(engine, PGCacheManager(redis.Redis()))
    session.scalars(select(User).where(User.id == 7).execution_options(pgcache=True))

The statement SQLAlchemy compiled for PostgreSQL (psycopg or psycopg2) is sent with its
bound parameters where the driver would have run it, and the rows come back in the driver's
cursor's place, typed as the driver types them. A statement pgcache refuses, a Redis out of
reach, or anything else the client cannot do (a parameter it cannot send, a column it cannot
type as the driver) runs on PostgreSQL as usual: counted, and logged once per statement with
the reason. A read in a transaction that wrote (a flush) goes to its connection, as does a
read of another database than pgcache's. After a commit in a thread (or a write on an
AUTOCOMMIT connection), that thread's cached reads pass ``AFTER`` the commit's position
(asked outside any transaction on the next cached read): a thread reads its own writes.

On an asyncio engine (``create_async_engine("postgresql+psycopg://...")``), give an
``AsyncPGCacheManager`` on a ``redis.asyncio`` client:

    use_pgcache(async_engine, AsyncPGCacheManager(redis.asyncio.Redis()))
    await session.scalars(select(User).where(User.id == 7).execution_options(pgcache=True))

SQLAlchemy runs the driver's calls in a greenlet of the awaiting task, and the integration
awaits each of its Redis calls there (``await_only``): while pgcache answers, the event loop
runs other tasks. Everything else is as on a sync engine, with "task" for "thread": a task
reads its own writes. A sync ``PGCacheManager`` given to an asyncio engine (its round trips
would stop the loop), or an ``AsyncPGCacheManager`` to a sync engine (nothing there could
await it), is a ``TypeError`` at ``use_pgcache``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from . import _session
from ._database import ServedDatabase, target
from ._driver_types import TYPED, check_typed, retyped
from ._fallback import Fallbacks
from ._placeholders import numbered
from ._transactions import Transactions
from .aio import AsyncPGCacheManager
from .client import PGCacheManager

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("pgcache.sqlalchemy")

OPTION = "pgcache"

# The types each driver reads as the client does: psycopg2 reads inet and cidr as text, or
# as ipaddress objects once an application registered them (psycopg2.extras): they run on
# PostgreSQL.
_TYPED = {"psycopg2": TYPED - {"inet", "cidr"}}

# json and jsonb come as text, parsed by the dialect's deserializer (``json_deserializer``,
# else json.loads) as the driver parses them: numbers ``float``, not the client's ``Decimal``.
_AS_TEXT = frozenset({"json", "jsonb"})

# How each driver shows a timestamptz: psycopg 3 in the connection's zone, psycopg2 at that
# zone's offset then.
_SHOWN = {"psycopg2": _session.fixed_offset_in}


# The type oids a cursor's description gives (SQLAlchemy picks some result processors by
# them, numeric's among them), by the type names EXPLAIN gives; arrays and other types: none.
TYPE_OIDS = {
    "bool": 16,
    "bytea": 17,
    "name": 19,
    "int8": 20,
    "int2": 21,
    "int4": 23,
    "text": 25,
    "oid": 26,
    "json": 114,
    "float4": 700,
    "float8": 701,
    "bpchar": 1042,
    "varchar": 1043,
    "date": 1082,
    "time": 1083,
    "timestamp": 1114,
    "timestamptz": 1184,
    "interval": 1186,
    "timetz": 1266,
    "numeric": 1700,
    "uuid": 2950,
    "jsonb": 3802,
}


class CachedCursor:
    """The rows pgcache answered, where SQLAlchemy reads a driver's cursor."""

    arraysize = 1

    def __init__(
        self, columns: Sequence[tuple[str, str]], rows: list[tuple[Any, ...]], connection: Any
    ) -> None:
        # The driver's connection, which dialects look at after a statement (psycopg2's
        # notices).
        self.connection = connection
        self.description = [
            (name, TYPE_OIDS.get(type_name), None, None, None, None, None)
            for name, type_name in columns
        ]
        self.rowcount = len(rows)
        self._rows = rows
        self._at = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = size or self.arraysize
        rows = self._rows[self._at : self._at + size]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def close(self) -> None:
        self._rows = []

    async def _async_soft_close(self) -> None:
        """What an asyncio engine's result awaits of its cursor once read: the rows are all
        here already."""


class _Calls(Protocol):
    """The manager's calls the integration makes, each returning its answer."""

    cluster: bool

    def query(
        self, sql: str, params: Sequence[Any], *, after: str | None, as_text: frozenset[str]
    ) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]: ...

    def health(self) -> dict[str, Any]: ...


class _Awaited:
    """An ``AsyncPGCacheManager``'s calls made from the greenlet SQLAlchemy runs an asyncio
    engine's events in: each is awaited there (``await_only``), which hands the event loop
    to other tasks until Redis answers. The one place the sync and the asyncio integration
    differ: a ``PGCacheManager`` makes the same calls itself."""

    def __init__(self, cache: AsyncPGCacheManager) -> None:
        self._cache = cache
        self.cluster = cache.cluster

    def query(
        self, sql: str, params: Sequence[Any], *, after: str | None, as_text: frozenset[str]
    ) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        return await_only(self._cache.query(sql, params, after=after, as_text=as_text))

    def health(self) -> dict[str, Any]:
        return await_only(self._cache.health())


def _calls(engine: Engine, cache: PGCacheManager | AsyncPGCacheManager) -> _Calls:
    """How the integration calls ``cache`` on ``engine``: awaited where the engine is an
    asyncio one, else directly; a manager of the other kind is refused."""
    if engine.dialect.is_async:
        if not isinstance(cache, AsyncPGCacheManager):
            raise TypeError(
                "pgcache: an asyncio engine takes an AsyncPGCacheManager (on a redis.asyncio "
                f"client), not a {type(cache).__name__}: its Redis round trips would stop the "
                "event loop"
            )
        return _Awaited(cache)
    if isinstance(cache, AsyncPGCacheManager):
        raise TypeError(
            "pgcache: a sync engine takes a PGCacheManager (on a redis.Redis client), not an "
            "AsyncPGCacheManager: nothing there could await its calls (an asyncio engine, "
            "create_async_engine, can)"
        )
    return cache


class Integration(Fallbacks):
    """What ``use_pgcache`` installed on an engine: its counters (``answered``,
    ``fell_back``, ``refused()``), and ``remove()``."""

    def __init__(
        self, engine: Engine | AsyncEngine, cache: PGCacheManager | AsyncPGCacheManager
    ) -> None:
        super().__init__(log, "PostgreSQL")
        # An AsyncEngine's events are its sync engine's.
        engine = getattr(engine, "sync_engine", engine)
        self._calls = _calls(engine, cache)
        self.engine = engine
        self.cache = cache
        self._transactions = Transactions()
        self._served = ServedDatabase(self._calls)
        url = engine.url
        self._target = target(url.host, url.port, url.database)
        self._typed = _TYPED.get(engine.dialect.driver, TYPED)
        self._loads: Callable[[str], Any] = engine.dialect._json_deserializer or json.loads
        self._shown = _SHOWN.get(engine.dialect.driver, _session.shown_in)
        event.listen(engine, "do_execute", self._do_execute)
        event.listen(engine, "do_execute_no_params", self._do_execute_no_params)
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(engine, "commit", self._committed)
        event.listen(Session, "after_commit", self._session_committed)

    def remove(self) -> None:
        event.remove(self.engine, "do_execute", self._do_execute)
        event.remove(self.engine, "do_execute_no_params", self._do_execute_no_params)
        event.remove(self.engine, "after_cursor_execute", self._executed)
        event.remove(self.engine, "commit", self._committed)
        event.remove(Session, "after_commit", self._session_committed)

    def _executed(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        self._transactions.executed(conn.connection.dbapi_connection, statement)

    def _committed(self, conn: Any) -> None:
        # Announced before the commit is made: its position is taken at the next read.
        self._transactions.freshness().pending = True

    def _session_committed(self, session: Any) -> None:
        self._transactions.freshness().pending = True

    def _do_execute_no_params(self, cursor: Any, statement: str, context: Any) -> bool:
        return self._do_execute(cursor, statement, {}, context)

    def _do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if not context.execution_options.get(OPTION) or not _is_select(context):
            return False
        if self.known_refused(statement):
            return False
        dbapi_connection = context.root_connection.connection.dbapi_connection
        read = self._transactions.route(dbapi_connection)
        if read is None:
            return False

        def answer() -> CachedCursor:
            self._served.check(self._target)
            sql, values = numbered(statement, parameters)
            _session.check_styles(dbapi_connection, values)
            where = _session.zone(dbapi_connection)
            columns, rows = self._calls.query(
                sql, _session.localized(values, where), after=read.after(), as_text=_AS_TEXT
            )
            check_typed(columns, _AS_TEXT, typed=self._typed)
            by_type = {"json": self._loads, "jsonb": self._loads, "timestamptz": self._shown(where)}
            rows = retyped(columns, rows, by_type)
            # An asyncio engine's adapted cursor keeps no public connection.
            return CachedCursor(columns, rows, getattr(cursor, "connection", None))

        cached = self.attempt(statement, answer)
        if cached is None:
            return False
        context.cursor = cached
        cursor.close()
        return True


def _is_select(context: Any) -> bool:
    """Whether SQLAlchemy compiled a SELECT (not DML, DDL or a text() statement)."""
    compiled = context.compiled
    return (
        compiled is not None
        and not context.is_crud
        and not context.isddl
        and not context.is_text
        and getattr(compiled.statement, "is_select", False)
    )


def use_pgcache(
    engine: Engine | AsyncEngine, cache: PGCacheManager | AsyncPGCacheManager
) -> Integration:
    """Answers the statements ``engine`` executes with ``execution_options(pgcache=True)``
    through ``cache``: a ``PGCacheManager`` for a sync engine, an ``AsyncPGCacheManager``
    for an asyncio one (an ``AsyncEngine`` or its ``sync_engine``)."""
    return Integration(engine, cache)
