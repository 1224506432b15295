"""What the integrations ask PostgreSQL, and which of an ORM's statements may have written."""

from __future__ import annotations

# A position in PostgreSQL's log that every commit made before it is at or before.
POSITION_SQL = "SELECT pg_catalog.pg_current_wal_insert_lsn()::text"


def may_write(sql: str) -> bool:
    """Whether ``sql`` may change data: anything but a plain SELECT. A WITH may hold an
    UPDATE (a writable CTE); a read taken for a write costs one question of the log's
    position, a write taken for a read a stale answer."""
    return not sql.lstrip()[:6].upper().startswith("SELECT")
