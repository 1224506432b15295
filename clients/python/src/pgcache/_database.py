"""Which database pgcache serves, so that a read meant for another is never answered by it
(issue #51, rule A). pgcache says what it reads in PGCACHE.HEALTH's ``config`` (``pg_host``,
``pg_port``, ``pg_database``: a ``pg_url`` is shown taken apart); a connection is to that
database when its host, port and database name are those, spelled alike (``localhost`` and
``127.0.0.1`` are two spellings: give the application and pgcache the same one)."""

from __future__ import annotations

import threading
from typing import Any

_DEFAULT_PORT = 5432

# Host, port and database name.
Target = tuple[str, int, str]


class OtherDatabase(Exception):
    """A read meant for a database pgcache does not serve."""


def target(host: Any, port: Any, database: Any) -> Target:
    """A database as a connection names it (a missing host is libpq's default, the local
    socket, which pgcache names ``localhost``)."""
    return (str(host or "localhost").lower(), int(port or _DEFAULT_PORT), str(database or ""))


class ServedDatabase:
    """The database pgcache serves, asked of it once (HEALTH makes a round trip to
    PostgreSQL), and whether a connection's database is that one."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self._served: Target | None = None
        self._lock = threading.Lock()

    def check(self, wanted: Target) -> None:
        """Raises ``OtherDatabase`` unless ``wanted`` is the database pgcache serves."""
        served = self._served
        if served is None:
            served = self._ask()
        if wanted != served:
            raise OtherDatabase(
                f"the read is for database {wanted[2]!r} on {wanted[0]}:{wanted[1]}; pgcache "
                f"serves {served[2]!r} on {served[0]}:{served[1]} (spell the host alike in "
                "both to have it cached)"
            )

    def _ask(self) -> Target:
        health = self._cache.health()
        if self._cache.cluster:  # each primary's, by node name: they all read one database
            health = next(iter(health.values()))
        config = health["config"]
        served = target(config["pg_host"], config["pg_port"], config["pg_database"])
        with self._lock:
            self._served = served
        return served
