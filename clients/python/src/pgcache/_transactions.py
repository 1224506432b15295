"""Whether a read may use the cache (issue #51, rule A), decided here for every integration.

A read may be answered by pgcache only where PostgreSQL would give the application what
pgcache gives: on a connection with no transaction open, or in a READ COMMITTED one known to
have written nothing (the integration saw every statement it ran). Anywhere else (a transaction that
wrote, or may have, or failed) the read goes to the connection, uncached. A position for
``AFTER`` is taken only outside a transaction, after a commit: inside one it would count
writes nobody has committed, and AFTER would wait for them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from ._statements import POSITION_SQL, may_write

# psycopg's and psycopg2's transaction statuses (libpq's PQtransactionStatus).
IDLE = 0
IN_TRANSACTION = 2


def lsn_value(lsn: str) -> int:
    """A log position as PostgreSQL prints it (``0/16B3748``), as a number to compare."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def later(a: str | None, b: str | None) -> str | None:
    """The later of two log positions, either of which may be missing."""
    if a is None or (b is not None and lsn_value(b) > lsn_value(a)):
        return b
    return a


def transaction_status(conn: Any) -> int:
    """libpq's transaction status of a psycopg 3 or psycopg2 connection (or of the driver
    connection under SQLAlchemy's asyncio adapter)."""
    conn = getattr(conn, "driver_connection", conn)
    info = getattr(conn, "info", None)
    if hasattr(info, "transaction_status"):
        return int(info.transaction_status)  # psycopg 3
    return int(conn.get_transaction_status())  # psycopg2


def take_position(conn: Any) -> str:
    """PostgreSQL's log position now, asked on ``conn`` (idle: no transaction open) in
    autocommit, so the question opens no transaction; switching autocommit on an idle
    connection costs no round trip. Asked on a cursor of its own: the caller's may be a
    named (server-side) cursor, which runs one statement only."""
    switched = not conn.autocommit
    if switched:
        conn.autocommit = True
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(POSITION_SQL)
            (position,) = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        if switched:
            conn.autocommit = False
    return str(position)


class Freshness:
    """What one reader (a thread, a tie) knows of its commits: whether one may have been
    made since its last position (``pending``), and that position."""

    def __init__(self) -> None:
        self.pending = False
        self.position: str | None = None


class CachedRead:
    """A read the cache may answer, AFTER ``after()``."""

    def __init__(self, freshness: Freshness, conn: Any, idle: bool) -> None:
        self._freshness = freshness
        self._conn = conn
        self._idle = idle

    def after(self) -> str | None:
        """The position the read waits for: after a commit, taken now (outside any
        transaction: the read is on an idle connection whenever one is pending); None
        where nothing was committed."""
        freshness = self._freshness
        if freshness.pending and self._idle:
            freshness.position = later(freshness.position, take_position(self._conn))
            freshness.pending = False
        return freshness.position


class Transactions:
    """The open transactions an integration saw write, by connection; and each thread's
    (under asyncio, each task's) ``Freshness``."""

    def __init__(self) -> None:
        self._wrote: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._thread = threading.local()
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], Freshness] = (
            weakref.WeakKeyDictionary()
        )
        # Apart from ``_lock``, under which ``_dirty`` asks for a freshness.
        self._tasks_lock = threading.Lock()

    def freshness(self) -> Freshness:
        """This thread's; under asyncio, this task's. Tasks interleave on one thread: a
        Connection's commit is announced before it is made (SQLAlchemy's ``commit`` event),
        and while it is awaited another task's read would take a position short of it and
        clear what the committing task waits for."""
        task = _current_task()
        if task is not None:
            with self._tasks_lock:
                mine = self._tasks.get(task)
                if mine is None:
                    mine = self._tasks[task] = Freshness()
            return mine
        mine = getattr(self._thread, "freshness", None)
        if mine is None:
            mine = self._thread.freshness = Freshness()
        return mine

    def executed(self, conn: Any, sql: str) -> None:
        """``sql`` ran on ``conn``: a write left a transaction that wrote, or (no
        transaction open after it: autocommit) committed as it ran."""
        if not may_write(sql):
            return
        if transaction_status(conn) == IDLE:
            self.freshness().pending = True
        else:
            with self._lock:
                self._wrote[_key(conn)] = True

    def route(self, conn: Any) -> CachedRead | None:
        """Where a read on ``conn`` goes: None to the connection, uncached, else the cache.
        The integration sees every statement run on ``conn`` (``executed``), so an open
        transaction it saw write nothing is clean."""
        return route(self.freshness(), conn, clean=not self._dirty(conn))

    def _dirty(self, conn: Any) -> bool:
        """Whether ``conn`` has a transaction open that wrote; one that wrote and has ended
        since (committed, or rolled back: nothing says which) leaves a commit pending."""
        key = _key(conn)
        with self._lock:
            wrote = self._wrote.get(key, False)
            if wrote and transaction_status(conn) == IDLE:
                del self._wrote[key]
                self.freshness().pending = True
                return False
        return wrote


def _current_task() -> asyncio.Task[Any] | None:
    """The asyncio task running (SQLAlchemy's greenlets run inside it), if any."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop runs in this thread
        return None


def route(freshness: Freshness, conn: Any, clean: bool) -> CachedRead | None:
    """Where a read on ``conn`` goes (see ``Transactions.route``); ``clean``: an open
    transaction on it is known to have written nothing."""
    # Outside autocommit a read opens a transaction (the driver's BEGIN) if none is open: a
    # REPEATABLE READ or SERIALIZABLE one reads the snapshot of its first statement, which
    # no cached answer is, even the first.
    if not reads_latest(conn):
        return None
    status = transaction_status(conn)
    if status == IDLE:
        return CachedRead(freshness, conn, idle=True)
    # A commit pending is one made before this transaction: its position would be taken
    # inside it.
    if status == IN_TRANSACTION and clean and not freshness.pending:
        return CachedRead(freshness, conn, idle=False)
    return None


# psycopg2's isolation levels whose statements each read the latest commits (autocommit,
# READ COMMITTED, READ UNCOMMITTED), as its ``extensions.ISOLATION_LEVEL_*`` number them.
_PSYCOPG2_READS_LATEST = (0, 1, 4)


def reads_latest(conn: Any) -> bool:
    """Whether each statement of a transaction on ``conn`` reads what was committed before
    it (READ COMMITTED, PostgreSQL's default), as the cache's answers do. A REPEATABLE READ or
    SERIALIZABLE transaction reads the snapshot it took at its first statement, which a
    cached answer may be newer than. The level is the driver's (as SQLAlchemy's and Django's
    ``isolation_level`` set it); None is the server's default, taken as READ COMMITTED (a
    server or role whose ``default_transaction_isolation`` is higher is a limit the client's README
    names)."""
    conn = getattr(conn, "driver_connection", conn)
    level = getattr(conn, "isolation_level", None)
    if level is None or getattr(conn, "autocommit", False):
        return True
    name = getattr(level, "name", None)  # psycopg 3's IsolationLevel
    if name is not None:
        return name in ("READ_COMMITTED", "READ_UNCOMMITTED")
    return int(level) in _PSYCOPG2_READS_LATEST


def _key(conn: Any) -> Any:
    # SQLAlchemy's asyncio adapter is made anew around the same driver connection.
    return getattr(conn, "driver_connection", conn)
