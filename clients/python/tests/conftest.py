"""One PostgreSQL and one server with pgcache for the whole run; each test makes its own
tables (named after it) so that tests stay apart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import Postgres, Server, pgcache_server

from pgcache import PGCacheManager


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    postgres = Postgres()
    yield postgres
    postgres.stop()


@pytest.fixture(scope="session")
def server(pg: Postgres) -> Iterator[Server]:
    started = pgcache_server(pg)
    yield started
    started.stop()


@pytest.fixture
def cache(server: Server) -> PGCacheManager:
    return PGCacheManager(server.client())
