"""What read-your-writes costs a commit: an UPDATE and its COMMIT on one connection, alone
and then followed by ``ReadYourWrites.committed()`` (the log position asked for), with
psycopg 3 and psycopg2, in alternating runs against a private PostgreSQL and a server with
pgcache (the tests' own, ``tests/servers.py``).

    cd clients/python && PGCACHE_MODULE=../../target/release/libpgcache.so \\
        ../../.tools/venv/bin/python benchmarks/read_your_writes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import Postgres, pgcache_server  # noqa: E402

from pgcache import PGCacheManager, ReadYourWrites  # noqa: E402

COMMITS = 2_000
RUNS = 3


def main() -> None:
    pg = Postgres()
    pg.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, v integer)")
    pg.execute("INSERT INTO bench_items VALUES (1, 0)")
    server = pgcache_server(pg)
    cache = PGCacheManager(server.client())
    print("| driver | UPDATE + COMMIT, µs | + committed(), µs | cost of the position, µs |")
    print("|---|---|---|---|")
    try:
        for name, connect in (
            ("psycopg 3", lambda: psycopg.connect(pg.conninfo)),
            ("psycopg2", lambda: psycopg2.connect(pg.conninfo)),
        ):
            conn = connect()
            tie = ReadYourWrites(cache, conn)

            def commits(with_position: bool, conn=conn, tie=tie) -> float:
                started = time.perf_counter()
                for n in range(COMMITS):
                    with conn.cursor() as cursor:
                        cursor.execute("UPDATE bench_items SET v = %s WHERE id = 1", (n,))
                    conn.commit()
                    if with_position:
                        tie.committed()
                return (time.perf_counter() - started) / COMMITS * 1e6

            plain, tied = [], []
            for _ in range(RUNS):
                plain.append(commits(False))
                tied.append(commits(True))
            alone, with_it = sorted(plain)[RUNS // 2], sorted(tied)[RUNS // 2]
            print(f"| {name} | {alone:.0f} | {with_it:.0f} | {with_it - alone:+.0f} |")
            conn.close()
    finally:
        server.stop()
        pg.stop()


if __name__ == "__main__":
    main()
