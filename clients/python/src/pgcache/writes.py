"""Read your writes without code: a psycopg connection tied to the cache, so that the
cached reads made through the tie after a commit on that connection reflect the commit. A
read through the tie while a transaction is open on the connection (which may have written:
the tie does not see its statements) runs on the connection, uncached."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ._placeholders import driver_style
from ._transactions import Freshness, later, route
from .client import PGCacheManager
from .rows import RowFactory, dict_row


class ReadYourWrites:
    """Ties ``connection`` (psycopg 3 or psycopg2) to ``cache``: after each commit made
    through ``transaction()`` (or announced with ``committed()``), ``get``, ``read`` and
    ``multiread`` pass ``AFTER`` the commit's position, so they never answer from before
    it. A commit costs one round trip more: the question of the position, asked outside any
    transaction. While a transaction is open on the connection, reads through the tie run
    on the connection (they see its writes). Reads before any commit, or in another tie, are
    plain cached reads."""

    def __init__(self, cache: PGCacheManager, connection: Any) -> None:
        self.cache = cache
        self.connection = connection
        self._freshness = Freshness()

    @property
    def position(self) -> str | None:
        """The position reads wait for (None before the first commit noted)."""
        return self._freshness.position

    @position.setter
    def position(self, position: str | None) -> None:
        self._freshness.position = position

    def committed(self) -> str | None:
        """Notes that a transaction on the connection committed (after ``conn.commit()``, or
        from an ORM's after-commit hook); returns the position reads now wait for. Where a
        transaction is open again on the connection, the position is taken at the first
        read through the tie once it has ended (never inside a transaction: it would count
        writes not committed)."""
        self._freshness.pending = True
        read = route(self._freshness, self.connection, clean=False)
        return self._freshness.position if read is None else read.after()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction on the connection (psycopg's ``connection.transaction()``, or for
        psycopg2 the connection's own block), noted as committed when it commits. Inside a
        transaction already open (psycopg opens one at a statement outside autocommit) it
        is a savepoint, and nothing is committed until the outer one is."""
        conn = self.connection
        if hasattr(conn, "transaction"):
            with conn.transaction() as tx:
                yield tx
        else:
            with conn:
                yield conn
        self.committed()

    def _route(self, after: str | None) -> tuple[bool, str | None]:
        """Whether a read goes to the cache, and AFTER which position."""
        read = route(self._freshness, self.connection, clean=False)
        if read is None:
            return False, None
        return True, later(read.after(), after)

    def get(
        self, sql: str, params: Sequence[Any] = (), after: str | None = None, **options: Any
    ) -> list[Any]:
        """``PGCacheManager.get``, AFTER the last commit noted (or ``after``, if later)."""
        cached, position = self._route(after)
        if cached:
            return self.cache.get(sql, params, after=position, **options)
        factory = options.get("row_factory") or self.cache.row_factory
        return self._run(sql, params, factory)

    def read(
        self, table: str, pk: Mapping[str, Any], after: str | None = None, **options: Any
    ) -> dict[str, Any] | None:
        """``PGCacheManager.read``, AFTER the last commit noted (or ``after``, if later)."""
        cached, position = self._route(after)
        if cached:
            return self.cache.read(table, pk, after=position, **options)
        return self._row(table, pk)

    def multiread(
        self,
        table: str,
        pks: Sequence[Mapping[str, Any]],
        after: str | None = None,
        **options: Any,
    ) -> list[dict[str, Any] | None]:
        """``PGCacheManager.multiread``, AFTER the last commit noted (or ``after``, if
        later)."""
        cached, position = self._route(after)
        if cached:
            return self.cache.multiread(table, pks, after=position, **options)
        return [self._row(table, pk) for pk in pks]

    def _run(self, sql: str, params: Sequence[Any], factory: RowFactory) -> list[Any]:
        """``sql`` run on the connection, in its transaction; rows made by ``factory``."""
        statement, values = driver_style(sql, params)
        cursor = self.connection.cursor()
        try:
            cursor.execute(statement, values)
            make = factory([column[0] for column in cursor.description])
            return [make(list(row)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def _row(self, table: str, pk: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row of ``pk`` read on the connection, in its transaction."""
        where = " AND ".join(f"{_quoted(column)} = ${n}" for n, column in enumerate(pk, 1))
        rows = self._run(f"SELECT * FROM {table} WHERE {where}", list(pk.values()), dict_row)
        return rows[0] if rows else None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
