"""Cached reads through the Python client beside the same reads through psycopg on
PostgreSQL: rows per second in one process, 1 and 16 threads, a 20-row result; the client's
decoding cost per row; and an ORM query (SQLAlchemy's and Django's) cached, through pgcache
and through its local cache, and uncached. Segments of each way alternate; a private
PostgreSQL and a server with pgcache (the tests' own).

    cd clients/python && PGCACHE_MODULE=../../target/release/libpgcache.so \\
        ../../.tools/venv/bin/python benchmarks/reads.py
"""

from __future__ import annotations

import datetime
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import Postgres, pgcache_server  # noqa: E402

from pgcache import PGCacheManager  # noqa: E402
from pgcache._decode import Decoder  # noqa: E402
from pgcache.rows import dict_row  # noqa: E402
from pgcache.sqlalchemy import use_pgcache  # noqa: E402

CUSTOMERS = 1_000
ROWS = 20
SECONDS = 5
SQL = "SELECT id, customer_id, total, created, note FROM bench_orders WHERE customer_id = $1"
PG_SQL = SQL.replace("$1", "%s")


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "bench_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int]
    total: Mapped[Decimal]
    created: Mapped[datetime.datetime]
    note: Mapped[str]


def segment(threads: int, read) -> float:
    """Rows per second read by ``threads`` threads calling ``read(customer)``."""
    until = time.perf_counter() + SECONDS
    counts = [0] * threads

    def reader(i: int) -> None:
        rng = random.Random(i)
        state = read(None)
        while time.perf_counter() < until:
            counts[i] += len(read((state, rng.randint(1, CUSTOMERS))))

    workers = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / SECONDS


def row(threads: int, ours: float, theirs: float) -> str:
    return f"| {threads} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.1f}x |"


def main() -> None:
    pg = Postgres()
    pg.execute(
        "CREATE TABLE bench_orders (id integer PRIMARY KEY, customer_id integer NOT NULL, "
        "total numeric(12, 2), created timestamptz, note text);"
        "CREATE INDEX ON bench_orders (customer_id);"
        f"INSERT INTO bench_orders SELECT g, (g - 1) % {CUSTOMERS} + 1, g * 1.25, "
        "now() - g * interval '1 minute', 'note ' || g "
        f"FROM generate_series(1, {CUSTOMERS * ROWS}) g; ANALYZE bench_orders;"
    )
    server = pgcache_server(pg)
    try:
        run(pg, server)
    finally:
        server.stop()
        pg.stop()


def run(pg: Postgres, server) -> None:
    cache = PGCacheManager(server.client())
    for customer in range(1, CUSTOMERS + 1):  # every result cached: the reads are hits
        cache.get(SQL, [customer])

    def through_pgcache(arg):
        if arg is None:
            return PGCacheManager(server.client())
        manager, customer = arg
        return manager.get(SQL, [customer])

    def through_psycopg(arg):
        if arg is None:
            return psycopg.connect(pg.conninfo, autocommit=True, prepare_threshold=0)
        conn, customer = arg
        return conn.execute(PG_SQL, (customer,)).fetchall()

    # One manager for the process, its results kept locally (local_cache=True).
    kept = PGCacheManager(server.client(), local_cache=True)
    for _ in range(2):
        for customer in range(1, CUSTOMERS + 1):
            kept.get(SQL, [customer])
    time.sleep(0.5)  # pgcache vouched for by the tracking connection's probe

    def through_local_cache(arg):
        if arg is None:
            return kept
        manager, customer = arg
        return manager.get(SQL, [customer])

    print(
        f"| threads | pgcache rows/s | pgcache, local cache rows/s | psycopg rows/s | ratio | "
        f"ratio, local cache |  ({ROWS}-row results)"
    )
    print("|---|---|---|---|---|---|")
    for threads in (1, 16):
        ours = [segment(threads, through_pgcache) for _ in range(2)]
        local = [segment(threads, through_local_cache) for _ in range(2)]
        theirs = [segment(threads, through_psycopg) for _ in range(2)]
        best, best_local, best_theirs = max(ours), max(local), max(theirs)
        print(
            f"| {threads} | {best:,.0f} | {best_local:,.0f} | {best_theirs:,.0f} | "
            f"{best / best_theirs:.1f}x | {best_local / best_theirs:.1f}x |"
        )
    print(f"local hits {kept.local.hits:,}, results kept {len(kept.local):,}")
    kept.local.close()

    answer = cache.query_json(SQL, [7])
    decoder = Decoder(cache.explain(SQL).columns, dict_row)
    started = time.perf_counter()
    for _ in range(2_000):
        decoder.rows(answer)
    per_row = (time.perf_counter() - started) / (2_000 * ROWS) * 1e6
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        started = time.perf_counter()
        for _ in range(200):
            conn.execute(PG_SQL, (7,)).fetchall()
        psycopg_call = (time.perf_counter() - started) / (200 * ROWS) * 1e6
    print(
        f"\ndecoding a cached row (JSON to typed dict): {per_row:.1f} µs; "
        f"psycopg's whole read of a row (the round trip shared by {ROWS}): {psycopg_call:.1f} µs"
    )

    with_local = PGCacheManager(server.client(), local_cache=True)
    engines = {}
    for name, manager in (("pgcache", cache), ("local", with_local)):
        engines[name] = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres", pool_size=16
        )
        use_pgcache(engines[name], manager)

    def orm(way: str):
        engine = engines["local" if way == "local" else "pgcache"]

        def read(arg):
            if arg is None:
                return None
            _, customer = arg
            statement = select(Order).where(Order.customer_id == customer)
            # A session per read, as a web request has: its connection goes back at once.
            with Session(engine) as session:
                cached = statement.execution_options(pgcache=way != "uncached")
                return session.scalars(cached).all()

        return read

    orm_table("SQLAlchemy", orm)
    for engine in engines.values():
        engine.dispose()

    django_orm = django_reads(pg, cache, with_local)
    orm_table("Django", django_orm)
    with_local.local.close()


def orm_table(name: str, way) -> None:
    """An ORM's reads through pgcache, through its local cache, and straight to PostgreSQL
    (each way warmed first)."""
    print(
        f"\n| {name} ORM, threads | cached rows/s | cached, local cache rows/s | uncached rows/s "
        "| ratio | ratio, local cache |"
    )
    print("|---|---|---|---|---|---|")
    for ways in ("pgcache", "local"):
        read = way(ways)
        for customer in range(1, CUSTOMERS + 1):
            for _ in range(3):  # learned, its keys known, kept
                read((read(None), customer))
    time.sleep(0.5)
    for threads in (1, 16):
        ours = max(segment(threads, way("pgcache")) for _ in range(2))
        local = max(segment(threads, way("local")) for _ in range(2))
        theirs = max(segment(threads, way("uncached")) for _ in range(2))
        print(
            f"| {threads} | {ours:,.0f} | {local:,.0f} | {theirs:,.0f} | {ours / theirs:.1f}x "
            f"| {local / theirs:.1f}x |"
        )


def django_reads(pg: Postgres, cache: PGCacheManager, with_local: PGCacheManager):
    """The same reads as Django's ``BenchOrder.objects.filter(customer_id=c)``, with
    ``.cached()`` through ``cache`` or ``with_local``, or not."""
    import django
    from django.conf import settings
    from django.db import models

    from pgcache import django as pgcache_django

    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "PORT": pg.port,
                "NAME": "postgres",
                "USER": "postgres",
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

    class BenchOrder(models.Model):
        customer_id = models.IntegerField()
        total = models.DecimalField(max_digits=12, decimal_places=2)
        created = models.DateTimeField()
        note = models.TextField()
        objects = pgcache_django.CachedManager()

        class Meta:
            app_label = "bench"
            db_table = "bench_orders"
            managed = False

    pgcache_django.use_pgcache(cache)

    def way(name: str):
        # One way per segment: the threads' reads all go the same way.
        pgcache_django.state.cache = with_local if name == "local" else cache

        def read(arg):
            if arg is None:
                return None
            _, customer = arg
            # Each thread keeps its database connection (persistent connections).
            query = BenchOrder.objects.filter(customer_id=customer)
            return list(query if name == "uncached" else query.cached())

        return read

    return way


if __name__ == "__main__":
    main()
