"""Which statements an ORM runs may have written, so that its thread's next cached read
waits for the log position after them."""

from __future__ import annotations


def may_write(sql: str) -> bool:
    """Whether ``sql`` may change data: anything but a plain SELECT. A WITH may hold an
    UPDATE (a writable CTE); a read taken for a write costs one question of the log's
    position, a write taken for a read a stale answer."""
    return not sql.lstrip()[:6].upper().startswith("SELECT")
