"""Django 4.2+ and 5.x: ``Order.objects.filter(...).cached()`` reads through pgcache.

    from pgcache.django import CachedManager, use_pgcache
    use_pgcache(PGCacheManager(redis.Redis()))          # once, at start-up
    # or, a manager per database alias (each a source pgcache serves):
    use_pgcache({"default": PGCacheManager(r), "analytics": PGCacheManager(r, source="analytics")})

    class Order(models.Model):
        ...
        objects = CachedManager()

    Order.objects.filter(customer_id=7).cached()

A cached QuerySet compiles its SQL with Django's own compiler, sends it through PGCACHE.QUERY,
and hands the rows to Django where the database cursor's would have gone, typed as psycopg
types them: model instances (``Model.from_db``), ``values()``, ``values_list()``,
``count()``, ``exists()``, ``get()``, slicing and ``select_related`` come back as without the
cache. In a transaction that wrote (``atomic()`` or autocommit off) reads go to the
database, as do reads of a database no manager serves (``using()``, a router), statements
pgcache refuses, and any the client cannot answer as Django would read them (counted,
logged once per statement with the reason). After a thread wrote through Django, its next
cached read passes ``AFTER`` the log position it asks PostgreSQL for then (outside any
transaction): a thread reads its own writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Callable

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models import Manager, QuerySet
from django.db.models.sql.compiler import MULTI, SINGLE
from django.db.models.sql.query import Query

from . import _session
from ._database import ServedDatabase, target
from ._driver_types import check_typed, retyped
from ._fallback import Fallbacks
from ._placeholders import numbered
from ._transactions import Transactions
from .client import PGCacheManager

log = logging.getLogger("pgcache.django")

# What Django has psycopg (and psycopg2) leave as text: its JSONField and
# GenericIPAddressField read text; an enum psycopg reads as its label, and an array of one,
# unregistered, as text (such arrays, of a type asked for as text, run on the database).
# json comes as text too, parsed as the driver parses it (numbers ``float``).
_AS_TEXT = frozenset({"json", "jsonb", "inet", "cidr", "enum"})


class _State(Fallbacks):
    """The managers in use, by database alias, the counters (``answered``, ``fell_back``,
    ``refused()``), and the transactions that wrote."""

    def __init__(self) -> None:
        super().__init__(log, "the database")
        # Each alias's manager, and the database its source serves.
        self.caches: dict[str, tuple[PGCacheManager, ServedDatabase]] = {}
        self.transactions = Transactions()


state = _State()


def use_pgcache(cache: PGCacheManager | Mapping[str, PGCacheManager]) -> None:
    """Reads ``.cached()`` QuerySets through pgcache from now on: with one manager, those of
    the ``default`` alias; with a mapping of aliases to managers (``{"default": ...,
    "analytics": PGCacheManager(r, source="analytics")}``), each alias's through its own.
    Any other alias's reads are checked against the ``default`` manager's database; a read
    whose database is not the one its manager's source serves goes to its database."""
    caches = {"default": cache} if isinstance(cache, PGCacheManager) else dict(cache)
    state.caches = {alias: (c, ServedDatabase(c)) for alias, c in caches.items()}
    connection_created.connect(_watch_writes, dispatch_uid="pgcache")
    for connection in connections.all(initialized_only=True):
        _watch_writes(None, connection)


def _watch_writes(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _note_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(_note_writes)


def _note_writes(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    result = execute(sql, params, many, context)
    state.transactions.executed(context["connection"].connection, sql)
    return result


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
        # An alias without a manager of its own is checked against the default's database:
        # another database's reads go to it (counted, as every read pgcache does not answer).
        alias = self.using  # type: ignore[attr-defined]
        chosen = state.caches.get(alias) or state.caches.get("default")
        if (
            chosen is None
            or result_type not in (MULTI, SINGLE)
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
        cache, served = chosen
        self.connection.ensure_connection()
        read = state.transactions.route(self.connection.connection)
        if read is None:
            return plain(result_type, chunked_fetch, chunk_size)

        def answer() -> list[tuple[Any, ...]]:
            settings = self.connection.settings_dict
            served.check(target(settings["HOST"], settings["PORT"], settings["NAME"]))
            statement, values = numbered(sql, params)
            _session.check_styles(self.connection.connection, values)
            where = _session.zone(self.connection.connection)
            columns, rows = cache.query(
                statement, _session.localized(values, where), after=read.after(), as_text=_AS_TEXT
            )
            check_typed(columns, _AS_TEXT)
            # A timestamptz as Django's loader makes it: in the connection's zone, labelled
            # with Django's (naive with USE_TZ off).
            label = self.connection.timezone
            by_type = {"json": json.loads, "timestamptz": _session.wall_clock_in(where, label)}
            if _is_psycopg2(self.connection.connection):
                by_type.update(_PSYCOPG2_TYPES, timetz=lambda t: t.replace(tzinfo=label))
            return retyped(columns, rows, by_type)

        rows = state.attempt(sql, answer)
        if rows is None:
            return plain(result_type, chunked_fetch, chunk_size)
        if result_type == SINGLE:
            return rows[0][0 : self.col_count] if rows else None
        if self.has_extra_select:
            rows = [row[: self.col_count] for row in rows]
        return [rows] if rows else []


# What Django on psycopg2 gives that it does not on psycopg 3: bytea as the memoryview
# psycopg2 makes (of single bytes, format "c"); and (above) a timetz at its own wall-clock
# time, labelled with the zone Django's ``tzinfo_factory`` answers for every offset (naive
# with USE_TZ off).
_PSYCOPG2_TYPES: dict[str, Callable[[Any], Any]] = {
    "bytea": lambda data: memoryview(data).cast("c")
}


def _is_psycopg2(dbapi_connection: Any) -> bool:
    return type(dbapi_connection).__module__.startswith("psycopg2")


class CachedQuerySet(QuerySet):
    """A QuerySet with ``cached()``."""

    def cached(self) -> CachedQuerySet:
        """This QuerySet, read through pgcache."""
        clone = self._chain()
        clone.query.__class__ = CachedQuery
        return clone


class CachedManager(Manager.from_queryset(CachedQuerySet)):  # type: ignore[misc]
    """A manager whose QuerySets have ``cached()``."""
