"""One PostgreSQL and one server with pgcache for the whole run; each test makes its own
tables (named after it) so that tests stay apart."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from servers import ROOT, Postgres, Server, pgcache_server

from pgcache import PGCacheManager


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    postgres = Postgres()
    # pgcache's SQL, so that tests can have their tables' changes followed (pgcache_watch).
    postgres.execute((ROOT / "examples/invalidation_trigger.sql").read_text())
    yield postgres
    postgres.stop()


@pytest.fixture(scope="session")
def server(pg: Postgres) -> Iterator[Server]:
    started = pgcache_server(pg)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def django_configured(pg: Postgres) -> None:
    """Django, set up once for the run (a process configures its settings once): "default"
    is the database pgcache serves, "other" one it does not, on the same server. The app
    ``djangoapp`` (tests/djangoapp) holds the models; each test module creates its tables."""
    import django
    from django.conf import settings

    if os.environ.get("PGCACHE_DJANGO_DRIVER") == "psycopg2":
        # Django takes psycopg 3 where it can import it: hidden, Django takes psycopg2 (run
        # the Django tests alone this way: other tests need psycopg 3).
        sys.modules["psycopg"] = None  # type: ignore[assignment]
    pg.execute("DROP DATABASE IF EXISTS django_other")
    pg.execute("CREATE DATABASE django_other")
    default = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": pg.port,
        "NAME": "postgres",
        "USER": "postgres",
    }
    settings.configure(
        DATABASES={"default": default, "other": {**default, "NAME": "django_other"}},
        INSTALLED_APPS=["djangoapp"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    assert is_psycopg3 == (os.environ.get("PGCACHE_DJANGO_DRIVER") != "psycopg2")


@pytest.fixture
def cache(server: Server) -> PGCacheManager:
    return PGCacheManager(server.client())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test says whether a server it used went away, with the tail of its log: a
    connection refused alone cannot tell a crash from a test's own mistake."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in Server.running:
            gone = server.gone()
            if gone is not None:
                report.sections.append(("pgcache test server went away", gone))
