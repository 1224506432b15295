"""Read your writes without code: a psycopg connection tied to the cache, so that the
cached reads made through the tie after a commit on that connection reflect the commit."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .client import PGCacheManager

# A position in PostgreSQL's log that every commit made before it is at or before.
_POSITION_SQL = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"
_IDLE = 0  # psycopg's and psycopg2's TRANSACTION_STATUS_IDLE: no transaction open.


def lsn_value(lsn: str) -> int:
    """A log position as PostgreSQL prints it (``0/16B3748``), as a number to compare."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def later(a: str | None, b: str | None) -> str | None:
    """The later of two log positions, either of which may be missing."""
    if a is None or (b is not None and lsn_value(b) > lsn_value(a)):
        return b
    return a


class ReadYourWrites:
    """Ties ``connection`` (psycopg 3 or psycopg2) to ``cache``: after each commit made
    through ``transaction()`` (or announced with ``committed()``), ``get``, ``read`` and
    ``multiread`` pass ``AFTER`` the commit's position, so they never answer from before
    it. A commit costs one round trip more: the question of the position, asked outside any
    transaction. Reads before any commit, or in another tie, are plain cached reads."""

    def __init__(self, cache: PGCacheManager, connection: Any) -> None:
        self.cache = cache
        self.connection = connection
        self.position: str | None = None

    def committed(self) -> str:
        """Notes that a transaction on the connection committed (after ``conn.commit()``, or
        from an ORM's after-commit hook); returns the position reads now wait for."""
        conn = self.connection
        # Asked outside a transaction (autocommit, switched on for the question where the
        # connection is idle: no round trip), the question opens none to end.
        switched = not conn.autocommit and _transaction_status(conn) == _IDLE
        if switched:
            conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(_POSITION_SQL)
                (position,) = cursor.fetchone()
        finally:
            if switched:
                conn.autocommit = False
        latest = later(self.position, position) or position
        self.position = latest
        return latest

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction on the connection (psycopg's ``connection.transaction()``, or for
        psycopg2 the connection's own block), noted as committed when it commits."""
        conn = self.connection
        if hasattr(conn, "transaction"):
            with conn.transaction() as tx:
                yield tx
        else:
            with conn:
                yield conn
        self.committed()

    def get(
        self, sql: str, params: Sequence[Any] = (), after: str | None = None, **options: Any
    ) -> list[Any]:
        """``PGCacheManager.get``, AFTER the last commit noted (or ``after``, if later)."""
        return self.cache.get(sql, params, after=later(self.position, after), **options)

    def read(
        self, table: str, pk: Mapping[str, Any], after: str | None = None, **options: Any
    ) -> dict[str, Any] | None:
        """``PGCacheManager.read``, AFTER the last commit noted (or ``after``, if later)."""
        return self.cache.read(table, pk, after=later(self.position, after), **options)

    def multiread(
        self,
        table: str,
        pks: Sequence[Mapping[str, Any]],
        after: str | None = None,
        **options: Any,
    ) -> list[dict[str, Any] | None]:
        """``PGCacheManager.multiread``, AFTER the last commit noted (or ``after``, if
        later)."""
        return self.cache.multiread(table, pks, after=later(self.position, after), **options)


def _transaction_status(conn: Any) -> int:
    if hasattr(conn, "info") and hasattr(conn.info, "transaction_status"):
        return int(conn.info.transaction_status)  # psycopg 3
    return int(conn.get_transaction_status())  # psycopg2
