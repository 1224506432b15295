"""Events as typed values, sync and asyncio: a miss and an invalidation seen as they happen."""

from __future__ import annotations

import asyncio
import threading
import time

import redis.asyncio
from servers import Postgres, Server, wait_for

from pgcache import Event, PGCacheManager, events
from pgcache.aio import events as aio_events


def subscribers(server: Server) -> int:
    reply = server.client().execute_command("PUBSUB", "NUMSUB", "pg_cache_events")
    return int(reply[1])


def test_events_arrive_typed(pg: Postgres, server: Server, cache: PGCacheManager) -> None:
    pg.execute("CREATE TABLE ev_users (id integer PRIMARY KEY, name text)")
    pg.execute("INSERT INTO ev_users VALUES (1, 'ann')")
    seen: list[Event] = []
    before = subscribers(server)

    def listen() -> None:
        for event in events(server.client()):
            seen.append(event)
            if event.type == "cache_invalidate":
                break

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wait_for("the listener to subscribe", lambda: subscribers(server) > before or None)
    cache.read("ev_users", {"id": 1})
    cache.invalidate("ev_users", {"id": 1})
    listener.join(timeout=20)
    assert not listener.is_alive()
    miss = next(e for e in seen if e.type == "cache_miss")
    assert miss.table == "ev_users" and miss.pk == {"id": 1}
    assert miss.timestamp.tzinfo is not None
    assert seen[-1].type == "cache_invalidate" and seen[-1].pk == {"id": 1}


def test_events_arrive_typed_on_asyncio(
    pg: Postgres, server: Server, cache: PGCacheManager
) -> None:
    pg.execute("CREATE TABLE ev_aio (id integer PRIMARY KEY, name text)")
    pg.execute("INSERT INTO ev_aio VALUES (1, 'ann')")
    before = subscribers(server)

    async def listen() -> Event:
        client = redis.asyncio.Redis(port=server.port)
        try:
            async for event in aio_events(client):
                if event.table == "ev_aio":
                    return event
            raise AssertionError("the events ended")
        finally:
            await client.aclose()

    async def scenario() -> Event:
        listening = asyncio.ensure_future(listen())
        deadline = time.monotonic() + 20
        while subscribers(server) <= before:
            assert time.monotonic() < deadline, "the listener never subscribed"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(cache.read, "ev_aio", {"id": 1})
        return await asyncio.wait_for(listening, timeout=20)

    event = asyncio.run(scenario())
    assert event.type == "cache_miss" and event.pk == {"id": 1}
