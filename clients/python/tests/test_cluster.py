"""The client on a Redis Cluster / Valkey cluster (redis-py's ``RedisCluster``, sync and
asyncio, three primaries with pgcache loaded) and on a replica: every call answers what a
single server answers, each keyless command reaching the node that owns it without a
redirection, and a replica serving reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from servers import Cluster, Postgres, Server, replica_of, wait_for

from pgcache import AsyncPGCacheManager, PGCacheManager, events, load_pgcache_module
from pgcache.aio import load_pgcache_module as aio_load_pgcache_module

ITEMS = 60
BY_ID = "SELECT id, name, price FROM cl_items WHERE id = $1"


@pytest.fixture(scope="module")
def items(pg: Postgres) -> Postgres:
    pg.execute(
        f"""
        CREATE TABLE cl_items (id integer PRIMARY KEY, name text NOT NULL, price numeric);
        INSERT INTO cl_items SELECT g, 'item' || g, g * 1.25 FROM generate_series(1, {ITEMS}) g;
        SELECT pgcache_watch('cl_items');
        """
    )
    return pg


@pytest.fixture(scope="module")
def cluster(items: Postgres) -> Iterator[Cluster]:
    started = Cluster(items)
    yield started
    started.stop()


def expected(pg: Postgres, ident: int) -> dict:
    with psycopg.connect(pg.conninfo) as conn:
        cursor = conn.execute("SELECT id, name, price FROM cl_items WHERE id = %s", (ident,))
        names = [c.name for c in cursor.description]
        return dict(zip(names, cursor.fetchone()))


def moved_replies(cluster: Cluster) -> int:
    """MOVED errors the cluster's nodes have answered, in all."""
    return sum(
        node.client().info("errorstats").get("errorstat_MOVED", {}).get("count", 0)
        for node in cluster.nodes
    )


def test_every_call_reaches_the_node_that_answers_it(items: Postgres, cluster: Cluster) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.port)
    cache = PGCacheManager(client)
    assert load_pgcache_module(client, items.config) is False  # loaded alike on every node
    moved_before = moved_replies(cluster)
    rows = {i: expected(items, i) for i in range(1, ITEMS + 1)}
    for _ in range(2):  # misses, then hits
        for i in range(1, ITEMS + 1):
            assert cache.get(BY_ID, [i]) == [rows[i]]
            assert cache.read("cl_items", {"id": i}) == {**rows[i]}
    # Parameters past 128 bytes, which the key holds hashed.
    by_name = "SELECT id FROM cl_items WHERE name = $1 OR name = $2"
    assert cache.get(by_name, ["item1", "x" * 200]) == [{"id": 1}]
    # Every result and row went straight to its owner: the client spells the hash tags as
    # the server does.
    assert moved_replies(cluster) == moved_before
    stats = cache.stats()
    assert len(stats) == 3
    assert all(figures["query_hits"] > 0 for figures in stats.values()), stats
    assert sum(figures["query_hits"] for figures in stats.values()) >= ITEMS

    # Keys spanning every node in one call, in the order asked.
    wanted = [{"id": i} for i in range(ITEMS, 0, -3)] + [{"id": 10_000}]
    assert cache.multiread("cl_items", wanted) == [rows[k["id"]] for k in wanted[:-1]] + [None]
    # A parameter the server spells otherwise (an integer's leading zeros) is redirected
    # and followed.
    assert cache.get(BY_ID, ["007"]) == [rows[7]]

    cache.write("cl_items", {"id": 5}, {"id": 5, "name": "written", "price": 1})
    assert cache.read("cl_items", {"id": 5})["name"] == "written"
    cache.invalidate("cl_items", {"id": 5})
    assert cache.read("cl_items", {"id": 5}) == rows[5]
    assert cache.key("cl_items", {"id": 5}) == 'pg_cache:cl_items:{"id":5}'
    assert cache.explain(BY_ID).columns == [("id", "int4"), ("name", "text"), ("price", "numeric")]
    assert all(h["status"] in ("ok", "degraded") for h in cache.health().values())
    assert any(
        BY_ID.split(" WHERE")[0] in q["statement"]
        for per_node in cache.queries().values()
        for q in per_node
    )
    # A tag's entries on every node go with one call (sent to every primary).
    for i in range(1, 21):
        cache.read("cl_items", {"id": i}, tags="tenant:7")
    assert cache.invalidate_tags("tenant:7") == 20
    left = [key for node in cluster.nodes for key in node.client().keys("pg_cache:cl_items:*")]
    tagged = {f'pg_cache:cl_items:{{"id":{i}}}'.encode() for i in range(1, 21)}
    assert not tagged & set(left), "every tagged row dropped"
    cache.flush("cl_items")

    # A change in PostgreSQL reaches the node holding the result.
    items.execute("UPDATE cl_items SET price = 99.5 WHERE id = 11")
    wait_for(
        "the change to be read",
        lambda: cache.get(BY_ID, [11])[0]["price"] == Decimal("99.5") or None,
    )
    client.close()


def test_every_call_awaited_on_the_cluster(items: Postgres, cluster: Cluster) -> None:
    async def calls() -> None:
        client = AsyncRedisCluster(host="127.0.0.1", port=cluster.port)
        cache = AsyncPGCacheManager(client)
        try:
            assert await aio_load_pgcache_module(client, items.config) is False
            for i in range(1, ITEMS + 1):
                row = expected(items, i)
                assert await cache.get(BY_ID, [i]) == [row]
                assert await cache.read("cl_items", {"id": i}) == row
            wanted = [{"id": i} for i in (1, 2, 3, 4, 5, 10_000)]
            rows = await cache.multiread("cl_items", wanted)
            assert [r and r["id"] for r in rows] == [1, 2, 3, 4, 5, None]
            assert await cache.get(BY_ID, ["0012"]) == [expected(items, 12)]
            await cache.write("cl_items", {"id": 6}, {"id": 6, "name": "w", "price": 1})
            assert (await cache.read("cl_items", {"id": 6}))["name"] == "w"
            await cache.invalidate("cl_items", {"id": 6})
            assert (await cache.read("cl_items", {"id": 6}))["name"] == "item6"
            await cache.get(BY_ID, [30], tags="t")
            await cache.read("cl_items", {"id": 31}, tags="t")
            assert await cache.invalidate_tags("t") == 2
            assert len(await cache.stats()) == 3
            assert len(await cache.health()) == 3
            await cache.flush("cl_items")
        finally:
            await client.aclose()

    asyncio.run(calls())


def test_a_replica_serves_reads(items: Postgres, server: Server) -> None:
    replica = replica_of(items, server)
    try:
        primary = PGCacheManager(server.client())
        on_replica = PGCacheManager(replica.client())
        for i in (1, 2, 3):
            assert primary.get(BY_ID, [i]) == [expected(items, i)]
        wait_for(
            "the primary's results on the replica",
            lambda: on_replica.stats()["query_hits"] > 0 or (on_replica.get(BY_ID, [1]) and None),
        )
        for i in (1, 2, 3, 4):  # cached on the primary, and not
            assert on_replica.get(BY_ID, [i]) == [expected(items, i)]
            assert on_replica.read("cl_items", {"id": i}) == expected(items, i)
        assert on_replica.health()["status"] in ("ok", "degraded")

        async def awaited() -> None:
            client = redis.asyncio.Redis(port=replica.port)
            try:
                assert await AsyncPGCacheManager(client).get(BY_ID, [2]) == [expected(items, 2)]
            finally:
                await client.aclose()

        asyncio.run(awaited())
    finally:
        replica.stop()


def test_events_of_every_node_reach_a_cluster_subscriber(cluster: Cluster) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.port)
    cache = PGCacheManager(client)
    seen: set[int] = set()
    wanted = set(range(1, 13))  # rows on every node

    def subscribed() -> bool | None:
        return (
            any(
                int(node.client().execute_command("PUBSUB", "NUMSUB", "pg_cache_events")[1])
                for node in cluster.nodes
            )
            or None
        )

    def listen() -> None:
        for event in events(client):
            if event.type == "cache_invalidate" and event.table == "cl_items":
                seen.add(event.pk["id"])
                if seen >= wanted:
                    break

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_for("the listener to subscribe", subscribed)
    for i in wanted:
        cache.invalidate("cl_items", {"id": i})
    listener.join(timeout=20)
    assert seen >= wanted
    client.close()


def test_invalidate_tags_goes_on_while_a_slot_of_the_tag_moves(
    items: Postgres, cluster: Cluster
) -> None:
    """An entry moved to its slot's new node before its tag's set: the old node answers
    TRYAGAIN (it cannot reach the entry), and ``invalidate_tags`` asks every primary again
    until the slot has moved and the new node drops the entry."""
    client = RedisCluster(host="127.0.0.1", port=cluster.port)
    cache = PGCacheManager(client)
    cache.read("cl_items", {"id": 3}, tags="moving")
    key = 'pg_cache:cl_items:{"id":3}'
    slot = client.keyslot(key)
    source = client.get_node_from_key(key)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    old, new = (client.get_redis_connection(n) for n in (source, target))
    new.execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", old.execute_command("CLUSTER", "MYID")
    )
    old.execute_command(
        "CLUSTER", "SETSLOT", slot, "MIGRATING", new.execute_command("CLUSTER", "MYID")
    )
    old.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", key)
    tried = old.info("errorstats").get("errorstat_TRYAGAIN", {}).get("count", 0)
    dropped: list[int] = []
    invalidating = threading.Thread(target=lambda: dropped.append(cache.invalidate_tags("moving")))
    invalidating.start()
    wait_for(
        "a TRYAGAIN from the old node",
        lambda: old.info("errorstats").get("errorstat_TRYAGAIN", {}).get("count", 0) > tried
        or None,
    )
    left = old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
    old.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *left)
    for node in client.get_primaries():
        client.get_redis_connection(node).execute_command(
            "CLUSTER", "SETSLOT", slot, "NODE", new.execute_command("CLUSTER", "MYID")
        )
    invalidating.join(timeout=60)
    assert dropped == [1]
    assert new.exists(key) == 0
    client.close()
