"""Django 4.2+ and 5.x: ``Order.objects.filter(...).cached()`` reads through pgcache.

    from pgcache.django import CachedManager, use_pgcache
    use_pgcache(PGCacheManager(redis.Redis()))          # once, at start-up

    class Order(models.Model):
        ...
        objects = CachedManager()

    Order.objects.filter(customer_id=7).cached()

A cached QuerySet compiles its SQL with Django's own compiler, sends it through PGCACHE.QUERY,
and hands the rows to Django where the database cursor's would have gone, typed as psycopg
types them: model instances (``Model.from_db``), ``values()``, ``values_list()``,
``count()``, ``exists()``, ``get()``, slicing and ``select_related`` come back as without the
cache. Inside ``transaction.atomic()`` reads go to the database (a transaction sees its own
writes), as do statements pgcache refuses (counted, logged once per statement with the
reason) and every read while Redis is out of reach. After a thread wrote through Django, its
next cached read passes ``AFTER`` the log position it asks PostgreSQL for then: a thread
reads its own writes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models import Manager, QuerySet
from django.db.models.sql.compiler import MULTI, SINGLE
from django.db.models.sql.query import Query

from ._fallback import Fallbacks
from ._placeholders import numbered
from ._statements import may_write
from .client import PGCacheManager

log = logging.getLogger("pgcache.django")

_POSITION_SQL = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"


class _State(Fallbacks):
    """The cache in use, the counters (``answered``, ``fell_back``, ``refused()``), and each
    thread's writes."""

    def __init__(self) -> None:
        super().__init__(log, "the database")
        self.cache: PGCacheManager | None = None
        self.thread = threading.local()


state = _State()


def use_pgcache(cache: PGCacheManager) -> None:
    """Reads ``.cached()`` QuerySets through ``cache`` from now on."""
    state.cache = cache
    connection_created.connect(_watch_writes, dispatch_uid="pgcache")
    for connection in connections.all(initialized_only=True):
        _watch_writes(None, connection)


def _watch_writes(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _note_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(_note_writes)


def _note_writes(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    if may_write(sql):
        state.thread.wrote = True
    return execute(sql, params, many, context)


class CachedQuery(Query):
    """A query whose SELECTs go through pgcache."""

    def get_compiler(self, using: Any = None, connection: Any = None, elide_empty: bool = True):
        compiler = super().get_compiler(using, connection, elide_empty)
        compiler.__class__ = _cached_class(compiler.__class__)
        return compiler


_CACHED_CLASSES: dict[type, type] = {}


def _cached_class(compiler_class: type) -> type:
    cached = _CACHED_CLASSES.get(compiler_class)
    if cached is None:
        cached = type(f"Cached{compiler_class.__name__}", (_CachedCompiler, compiler_class), {})
        _CACHED_CLASSES[compiler_class] = cached
    return cached


class _CachedCompiler:
    def execute_sql(
        self, result_type: Any = MULTI, chunked_fetch: bool = False, chunk_size: int = 100
    ):
        plain = super().execute_sql  # type: ignore[misc]
        cache = state.cache
        if (
            cache is None
            or result_type not in (MULTI, SINGLE)
            or self.connection.in_atomic_block
            or self.connection.vendor != "postgresql"
            or type(self).__name__ != "CachedSQLCompiler"
        ):
            return plain(result_type, chunked_fetch, chunk_size)
        try:
            sql, params = self.as_sql()
            if not sql:
                raise EmptyResultSet
        except EmptyResultSet:
            return iter([]) if result_type == MULTI else None
        if state.known_refused(sql):
            return plain(result_type, chunked_fetch, chunk_size)
        statement, values = numbered(sql, params)
        try:
            _, rows = cache.query(statement, values, after=self._position())
        except redis.ResponseError as refusal:
            state.refusal(sql, str(refusal))
            return plain(result_type, chunked_fetch, chunk_size)
        except redis.RedisError as unreachable:
            state.unreachable(unreachable)
            return plain(result_type, chunked_fetch, chunk_size)
        state.answered += 1
        if result_type == SINGLE:
            return rows[0][0 : self.col_count] if rows else None
        if self.has_extra_select:
            rows = [row[: self.col_count] for row in rows]
        return [rows] if rows else []

    def _position(self) -> str | None:
        if getattr(state.thread, "wrote", False):
            state.thread.wrote = False
            with self.connection.cursor() as cursor:
                cursor.execute(_POSITION_SQL)
                state.thread.position = cursor.fetchone()[0]
        return getattr(state.thread, "position", None)


class CachedQuerySet(QuerySet):
    """A QuerySet with ``cached()``."""

    def cached(self) -> CachedQuerySet:
        """This QuerySet, read through pgcache."""
        clone = self._chain()
        clone.query.__class__ = CachedQuery
        return clone


class CachedManager(Manager.from_queryset(CachedQuerySet)):  # type: ignore[misc]
    """A manager whose QuerySets have ``cached()``."""
