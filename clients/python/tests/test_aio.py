"""AsyncPGCacheManager: every call of the sync client, awaited on redis.asyncio."""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal

import pytest
import redis
import redis.asyncio
from servers import Postgres, Server, module_path

from pgcache import AsyncPGCacheManager, ModuleLoadError, tuple_row
from pgcache.aio import load_pgcache_module


@pytest.fixture(scope="module")
def aio_shop(pg: Postgres) -> Postgres:
    pg.execute(
        """
        CREATE TABLE aio_users (id integer PRIMARY KEY, name text NOT NULL, since date);
        INSERT INTO aio_users VALUES (1, 'ann', '2024-01-02'), (2, 'bob', NULL);
        """
    )
    return pg


def test_every_call_awaited(aio_shop: Postgres, server: Server) -> None:
    async def calls() -> None:
        client = redis.asyncio.Redis(port=server.port)
        cache = AsyncPGCacheManager(client)
        try:
            rows = await cache.get("SELECT id, since FROM aio_users WHERE id = $1", [1])
            assert rows == [{"id": 1, "since": date(2024, 1, 2)}]
            assert await cache.get(
                "SELECT id, name FROM aio_users WHERE id = ?", [2], row_factory=tuple_row
            ) == [(2, "bob")]
            assert (await cache.explain("SELECT name FROM aio_users WHERE id = $1")).columns == [
                ("name", "text")
            ]
            raw = await cache.query_json("SELECT name FROM aio_users WHERE id = $1", [2])
            assert raw == '[{"name":"bob"}]'
            assert await cache.read("aio_users", {"id": 2}) == {
                "id": 2,
                "name": "bob",
                "since": None,
            }
            assert [
                r and r["name"] for r in await cache.multiread("aio_users", [{"id": 1}, {"id": 9}])
            ] == ["ann", None]
            await cache.write("aio_users", {"id": 1}, {"id": 1, "name": "written", "since": None})
            assert (await cache.read("aio_users", {"id": 1}))["name"] == "written"
            await cache.invalidate("aio_users", {"id": 1})
            assert (await cache.read("aio_users", {"id": 1}))["name"] == "ann"
            await cache.flush("aio_users")
            assert await cache.key("aio_users", {"id": 1}) == 'pg_cache:aio_users:{"id":1}'
            assert isinstance((await cache.stats())["hits"], int)
            assert (await cache.health())["status"] in ("ok", "degraded", "failing")
            assert any("aio_users" in q["statement"] for q in await cache.queries())
            assert isinstance(await cache.hooks(), list)
            with pytest.raises(redis.ResponseError, match="STABLE"):
                await cache.get("SELECT id FROM aio_users WHERE since < now()")
        finally:
            await client.aclose()

    asyncio.run(calls())


def test_load_pgcache_module_awaited(pg: Postgres) -> None:
    bare = Server(["--enable-module-command", "yes"])

    async def loads() -> None:
        client = redis.asyncio.Redis(port=bare.port)
        try:
            assert await load_pgcache_module(client, pg.config, module_path()) is True
            cache = AsyncPGCacheManager(client, pg.config, module_path=module_path())
            assert await cache.load() is False
            assert await cache.get("SELECT 1.5::numeric AS n") == [{"n": Decimal("1.5")}]
            with pytest.raises(ModuleLoadError, match="pg_port"):
                await load_pgcache_module(client, dict(pg.config, port=1), module_path())
        finally:
            await client.aclose()

    try:
        asyncio.run(loads())
    finally:
        bare.stop()
