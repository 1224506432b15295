"""pgcache on ``redis.asyncio``: ``AsyncPGCacheManager``, ``load_pgcache_module`` and
``events``, the same calls as the sync client's, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from . import _frames
from ._cluster import AsyncClusterClient, is_cluster, per_node
from ._flows import Explained, Flows, Tags, run_async
from ._local import LocalCache, attached
from ._replies import mapping, plain, text
from .events import DEFAULT_CHANNEL, Event, parse_event
from .loader import PgConfig, Sources, load_flow, source_command
from .rows import RowFactory, dict_row


async def load_pgcache_module(
    redis_client: Any,
    pg_config: PgConfig,
    module_path: str | None = None,
    *,
    sources: Sources | None = None,
) -> bool:
    """``pgcache.load_pgcache_module`` on a ``redis.asyncio`` client (or cluster)."""
    if is_cluster(redis_client):
        loaded = [
            await run_async(node, load_flow(pg_config, module_path, sources))
            for node in await AsyncClusterClient(redis_client).nodes()
        ]
        return any(loaded)
    return await run_async(redis_client, load_flow(pg_config, module_path, sources))


class AsyncPGCacheManager(Flows):
    """``PGCacheManager`` on a ``redis.asyncio`` client: every call is awaited. With
    ``pg_config``, await ``load()`` (or ``load_pgcache_module``) before the first call."""

    def __init__(
        self,
        redis_client: Any,
        pg_config: PgConfig | None = None,
        *,
        row_factory: RowFactory = dict_row,
        module_path: str | None = None,
        local_cache: LocalCache | bool = False,
        source: str | None = None,
    ) -> None:
        super().__init__(row_factory, source)
        self.cluster = is_cluster(redis_client)
        self.redis = AsyncClusterClient(redis_client) if self.cluster else redis_client
        self.local = attached(local_cache, redis_client, self.cluster, source)
        self._pg_config = pg_config
        self._module_path = module_path

    async def load(self) -> bool:
        """Loads pgcache with the ``pg_config`` given, where it is not loaded."""
        if self._pg_config is None:
            raise ValueError("pgcache: no pg_config to load pgcache with")
        return await load_pgcache_module(self.redis, self._pg_config, self._module_path)

    async def get(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        row_factory: RowFactory | None = None,
        tags: Tags = None,
    ) -> list[Any]:
        """The rows of ``sql`` with ``params`` (see ``PGCacheManager.get``)."""
        if (
            self.local is not None
            and ttl is None
            and after is None
            and maxstale is None
            and tags is None
        ):
            kept = self.kept(sql, params, row_factory or self.row_factory)
            if kept is not None:
                return kept
        flow = self.get_flow(sql, params, ttl, after, maxstale, row_factory, tags)
        return await run_async(self.redis, flow)

    async def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        as_text: frozenset[str] = frozenset(),
        tags: Tags = None,
    ) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        """The columns of ``sql`` and its rows as tuples (see ``PGCacheManager.query``): what
        the SQLAlchemy integration awaits on an asyncio engine."""
        flow = self.query_flow(sql, params, ttl, after, maxstale, as_text, tags)
        return await run_async(self.redis, flow)

    async def frame(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        kind: str = "pandas",
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
        timezone: str | tzinfo | None = None,
    ) -> Any:
        """The rows of ``sql`` as a data frame (see ``PGCacheManager.frame``)."""
        _frames.check_kind(kind)
        columns, rows = await self.query(
            sql, params, ttl=ttl, after=after, maxstale=maxstale, tags=tags
        )
        zoned = _frames.zoned(columns)
        if zoned and timezone is None and self.session_zone is None:
            self.session_zone = _frames.zone_in(await self.health(), self.cluster)
        zone = self.session_zone if timezone is None else _frames.zone_named(timezone)
        rows = _frames.like_psycopg(columns, rows, zone)
        return _frames.frame(kind, [name for name, _ in columns], rows)

    async def query_json(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> str:
        command = self.query_command(sql, params, ttl, after, maxstale, tags)
        return text(await self.redis.execute_command(*command))

    async def explain(self, sql: str) -> Explained:
        return await run_async(self.redis, self.explain_flow(sql))

    async def read(
        self,
        table: str,
        pk: Mapping[str, Any],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> dict[str, Any] | None:
        flow = self.read_flow("PGCACHE.READ", table, self.pk(pk), ttl, after, maxstale, tags)
        return await run_async(self.redis, flow)

    async def multiread(
        self,
        table: str,
        pks: Sequence[Mapping[str, Any]],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> list[dict[str, Any] | None]:
        flow = self.read_flow("PGCACHE.MULTIREAD", table, self.pks(pks), ttl, after, maxstale, tags)
        return await run_async(self.redis, flow)

    async def write(
        self,
        table: str,
        pk: Mapping[str, Any],
        row: Mapping[str, Any],
        ttl: int | None = None,
        *,
        tags: Tags = None,
    ) -> None:
        await self.redis.execute_command(*self.write_args(table, pk, row, ttl, tags))

    async def invalidate(self, table: str, pk: Mapping[str, Any]) -> None:
        await self.redis.execute_command("PGCACHE.INVALIDATE", table, self.pk(pk), *self.sourced)

    async def invalidate_tags(self, *tags: str) -> int:
        """Drops every cached entry carrying any of ``tags`` (see
        ``PGCacheManager.invalidate_tags``)."""
        return self.dropped(await self.redis.execute_command(*self.invalidate_tags_args(tags)))

    async def flush(self, table: str) -> None:
        await self.redis.execute_command("PGCACHE.FLUSH", table, *self.sourced)

    async def key(self, table: str, pk: Mapping[str, Any]) -> str:
        return text(
            await self.redis.execute_command("PGCACHE.KEY", table, self.pk(pk), *self.sourced)
        )

    async def _each_node(self, parse: Any, *command: Any) -> Any:
        reply = await self.redis.execute_command(*command)
        return per_node(reply, parse) if self.cluster else parse(reply)

    async def stats(self) -> dict[str, Any]:
        return await self._each_node(mapping, "PGCACHE.STATS", *self.sourced)

    async def reset_stats(self) -> None:
        await self.redis.execute_command("PGCACHE.STATS", "RESET", *self.sourced)

    async def health(self) -> dict[str, Any]:
        return await self._each_node(mapping, "PGCACHE.HEALTH", *self.sourced)

    async def queries(self) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
        return await self._each_node(self.queries_of, "PGCACHE.QUERIES", *self.sourced)

    async def hooks(self) -> list[Any] | dict[str, list[Any]]:
        return await self._each_node(plain, "PGCACHE.HOOK", "LIST")

    async def add_hook(self, *definition: str) -> None:
        await self.redis.execute_command("PGCACHE.HOOK", "ADD", *definition)

    async def delete_hook(self, name: str) -> None:
        await self.redis.execute_command("PGCACHE.HOOK", "DEL", name)

    async def sources(self) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
        """PGCACHE.SOURCE LIST: the named sources served, each a dict (``name``,
        ``definition``, ``postgres``, ``feed``); on a cluster, each primary's by node name."""
        return await self._each_node(self.queries_of, "PGCACHE.SOURCE", "LIST")

    async def add_source(self, name: str, pg_config: PgConfig, **settings: Any) -> None:
        """PGCACHE.SOURCE ADD: serves the database of ``pg_config`` (as
        ``load_pgcache_module`` takes it) as source ``name`` from now on, with pgcache's
        ``settings`` by name (``tables="users"``); on a cluster, on every primary. No
        password: the server refuses one (it is saved in redis.conf), so give it the source's
        ``PGCACHE_<NAME>_PG_PASSWORD`` or a passfile. Adding it again as it is does nothing."""
        await self.redis.execute_command(*source_command("ADD", name, pg_config, settings))

    async def change_source(self, name: str, **settings: Any) -> None:
        """PGCACHE.SOURCE SET: restarts source ``name`` with ``settings`` over its own
        (refused while clients wait for it: send ``PGCACHE.DRAIN 10 SOURCE <name>`` until
        it replies 0)."""
        await self.redis.execute_command(*source_command("SET", name, None, settings))

    async def remove_source(self, name: str) -> None:
        """PGCACHE.SOURCE DEL: stops serving source ``name`` (refused while clients wait for
        it, as ``change_source`` is); its entries stay, unserved."""
        await self.redis.execute_command("PGCACHE.SOURCE", "DEL", name)


async def events(
    redis_client: Any, channel: str = DEFAULT_CHANNEL, *, poll_seconds: float = 1.0
) -> AsyncIterator[Event]:
    """``pgcache.events.events`` on a ``redis.asyncio`` client: ``async for event in ...``."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        while True:
            message = await pubsub.get_message(timeout=poll_seconds)
            if message is not None and message.get("type") == "message":
                yield parse_event(message["data"])
    finally:
        await pubsub.aclose()
