"""``PGCacheManager``: pgcache's commands as Python methods with Python values, on a sync
redis-py client (``redis.Redis``; ``aio.AsyncPGCacheManager`` is the asyncio one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any

from . import _frames
from ._cluster import ClusterClient, is_cluster, per_node
from ._flows import Explained, Flows, Tags, run
from ._local import LocalCache, attached
from ._replies import mapping, plain, text
from .loader import PgConfig, load_pgcache_module, source_command
from .rows import RowFactory, dict_row


class PGCacheManager(Flows):
    """pgcache through a redis-py client.

    ``get`` answers a SELECT with typed rows; ``read``/``multiread`` answer rows by primary
    key. Each statement's columns are learned once (PGCACHE.EXPLAIN) and kept. With
    ``pg_config``, pgcache is loaded first where it is not (``load_pgcache_module``).

    ``redis_client`` is a ``redis.Redis`` (a primary, or a replica for reads) or a
    ``redis.cluster.RedisCluster``: each call then goes to the node that answers it, and
    ``stats``, ``health``, ``queries`` and ``hooks`` answer for each primary, by node name.

    With ``source="analytics"``, every call reads and reports on that source: a database
    declared where pgcache was loaded (a ``source analytics ...`` block), not the default
    one. One manager per source; each keeps its own columns learned.
    """

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
        self.redis = ClusterClient(redis_client) if self.cluster else redis_client
        if pg_config is not None:
            load_pgcache_module(redis_client, pg_config, module_path)
        self.local = attached(local_cache, redis_client, self.cluster, source)

    def get(
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
        """The rows of ``sql`` (``$n`` or ``?`` placeholders) with ``params``: from the cache
        on a hit, from PostgreSQL on a miss. ``tags`` (a tag or several; also on ``query``,
        ``frame``, ``read``, ``multiread`` and ``write``) tag the entry it comes from, for
        ``invalidate_tags``."""
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
        return run(self.redis, flow)

    def query(
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
        """The columns of ``sql`` (name and type) and its rows as tuples: what a driver's
        cursor holds after running it. The columns of the types in ``as_text`` (``jsonb``,
        ``inet``, ...) come as PostgreSQL's text, as from a driver told not to parse them. A
        value Python cannot hold (a time of 24:00:00, an infinite date or timestamp) raises
        ``ValueError``, as psycopg's loaders raise, where ``get`` gives the nearest."""
        flow = self.query_flow(sql, params, ttl, after, maxstale, as_text, tags)
        return run(self.redis, flow)

    def frame(
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
        """The rows of ``sql`` as a data frame: ``kind`` ``"pandas"`` (a ``DataFrame``),
        ``"polars"`` (a ``polars.DataFrame``) or ``"arrow"`` (a ``pyarrow.Table``), each
        column typed as ``pandas.read_sql`` or ``polars.read_database`` type it reading the
        same query from PostgreSQL with psycopg (``pip install "pgcache[pandas]"``,
        ``[polars]``, ``[arrow]``). ``timestamptz`` values are in ``timezone`` (a name, such
        as ``"Europe/Berlin"``, or a ``tzinfo``), by default the TimeZone of pgcache's
        sessions (HEALTH's ``postgres_timezone``, asked once): what a psycopg connection of
        the same role shows them in."""
        _frames.check_kind(kind)
        columns, rows = self.query(sql, params, ttl=ttl, after=after, maxstale=maxstale, tags=tags)
        zoned = _frames.zoned(columns)
        if zoned and timezone is None and self.session_zone is None:
            self.session_zone = _frames.zone_in(self.health(), self.cluster)
        zone = self.session_zone if timezone is None else _frames.zone_named(timezone)
        rows = _frames.like_psycopg(columns, rows, zone)
        return _frames.frame(kind, [name for name, _ in columns], rows)

    def query_json(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> str:
        """PGCACHE.QUERY's answer as it comes: a JSON array of row objects."""
        return text(
            self.redis.execute_command(*self.query_command(sql, params, ttl, after, maxstale, tags))
        )

    def explain(self, sql: str) -> Explained:
        """What pgcache makes of ``sql``, without running it."""
        return run(self.redis, self.explain_flow(sql))

    def read(
        self,
        table: str,
        pk: Mapping[str, Any],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> dict[str, Any] | None:
        """The row of ``table`` whose primary key is ``pk`` (a dict), or None."""
        flow = self.read_flow("PGCACHE.READ", table, self.pk(pk), ttl, after, maxstale, tags)
        return run(self.redis, flow)

    def multiread(
        self,
        table: str,
        pks: Sequence[Mapping[str, Any]],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        tags: Tags = None,
    ) -> list[dict[str, Any] | None]:
        """The rows of ``pks``, in order, None where there is none."""
        flow = self.read_flow("PGCACHE.MULTIREAD", table, self.pks(pks), ttl, after, maxstale, tags)
        return run(self.redis, flow)

    def write(
        self,
        table: str,
        pk: Mapping[str, Any],
        row: Mapping[str, Any],
        ttl: int | None = None,
        *,
        tags: Tags = None,
    ) -> None:
        """Stores ``row`` as the cached row of ``pk`` (the cache only, not PostgreSQL)."""
        self.redis.execute_command(*self.write_args(table, pk, row, ttl, tags))

    def invalidate(self, table: str, pk: Mapping[str, Any]) -> None:
        """Drops the cached row of ``pk`` (and the cached results that read ``table``)."""
        self.redis.execute_command("PGCACHE.INVALIDATE", table, self.pk(pk), *self.sourced)

    def invalidate_tags(self, *tags: str) -> int:
        """Drops every cached entry carrying any of ``tags`` (given with ``tags=`` to
        ``get``, ``query``, ``read``, ``multiread`` or ``write``), of every source, and
        returns how many went; on a cluster, on every primary. From its return on, none of
        them is served."""
        return self.dropped(self.redis.execute_command(*self.invalidate_tags_args(tags)))

    def flush(self, table: str) -> None:
        """Drops every cached row of ``table``."""
        self.redis.execute_command("PGCACHE.FLUSH", table, *self.sourced)

    def key(self, table: str, pk: Mapping[str, Any]) -> str:
        """The cache key of a row (what PGCACHE.GET takes)."""
        return text(self.redis.execute_command("PGCACHE.KEY", table, self.pk(pk), *self.sourced))

    def _each_node(self, parse: Any, *command: Any) -> Any:
        """A call that reports on one node: its reply, parsed; on a cluster, each primary's,
        by node name."""
        reply = self.redis.execute_command(*command)
        return per_node(reply, parse) if self.cluster else parse(reply)

    def stats(self) -> dict[str, Any]:
        """PGCACHE.STATS: counters and latencies."""
        return self._each_node(mapping, "PGCACHE.STATS", *self.sourced)

    def reset_stats(self) -> None:
        self.redis.execute_command("PGCACHE.STATS", "RESET", *self.sourced)

    def health(self) -> dict[str, Any]:
        """PGCACHE.HEALTH: ``status``, the problems and warnings, the change feed's state."""
        return self._each_node(mapping, "PGCACHE.HEALTH", *self.sourced)

    def queries(self) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
        """PGCACHE.QUERIES: each statement seen, with its figures."""
        return self._each_node(self.queries_of, "PGCACHE.QUERIES", *self.sourced)

    def hooks(self) -> list[Any] | dict[str, list[Any]]:
        """PGCACHE.HOOK LIST: the hooks defined."""
        return self._each_node(plain, "PGCACHE.HOOK", "LIST")

    def add_hook(self, *definition: str) -> None:
        self.redis.execute_command("PGCACHE.HOOK", "ADD", *definition)

    def delete_hook(self, name: str) -> None:
        self.redis.execute_command("PGCACHE.HOOK", "DEL", name)

    def sources(self) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]]:
        """PGCACHE.SOURCE LIST: the named sources served, each a dict (``name``,
        ``definition``, ``postgres``, ``feed``); on a cluster, each primary's by node name."""
        return self._each_node(self.queries_of, "PGCACHE.SOURCE", "LIST")

    def add_source(self, name: str, pg_config: PgConfig, **settings: Any) -> None:
        """PGCACHE.SOURCE ADD: serves the database of ``pg_config`` (as
        ``load_pgcache_module`` takes it) as source ``name`` from now on, with pgcache's
        ``settings`` by name (``tables="users"``); on a cluster, on every primary. No
        password: the server refuses one (it is saved in redis.conf), so give it the source's
        ``PGCACHE_<NAME>_PG_PASSWORD`` or a passfile. Adding it again as it is does nothing."""
        self.redis.execute_command(*source_command("ADD", name, pg_config, settings))

    def change_source(self, name: str, **settings: Any) -> None:
        """PGCACHE.SOURCE SET: restarts source ``name`` with ``settings`` over its own
        (refused while clients wait for it: send ``PGCACHE.DRAIN 10 SOURCE <name>`` until
        it replies 0)."""
        self.redis.execute_command(*source_command("SET", name, None, settings))

    def remove_source(self, name: str) -> None:
        """PGCACHE.SOURCE DEL: stops serving source ``name`` (refused while clients wait for
        it, as ``change_source`` is); its entries stay, unserved."""
        self.redis.execute_command("PGCACHE.SOURCE", "DEL", name)
