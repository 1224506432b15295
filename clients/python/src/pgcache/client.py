"""``PGCacheManager``: pgcache's commands as Python methods with Python values."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from . import _decode
from .rows import RowFactory, dict_row

Params = Sequence[Any]


def text(value: Any) -> str:
    """A reply's bulk string as str, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


def mapping(reply: Any) -> dict[str, Any]:
    """A map reply (a dict under RESP3, a flat key-value array under RESP2) as a dict of
    plain Python values."""
    if isinstance(reply, dict):
        pairs: Iterable[tuple[Any, Any]] = reply.items()
    else:
        pairs = zip(reply[::2], reply[1::2])
    return {text(key): plain(value) for key, value in pairs}


def plain(value: Any) -> Any:
    """A reply value as Python: bulk strings as str, nested maps and arrays alike."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {text(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def param_text(value: Any) -> str:
    """How a Python value is sent as a QUERY parameter: the text PostgreSQL's input of the
    parameter's type reads."""
    if value is None:
        raise TypeError(
            "pgcache: a QUERY parameter cannot be None; write IS NULL in the statement instead"
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, UUID, str)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (dict, list, tuple)):
        if isinstance(value, (list, tuple)) and not any(
            isinstance(v, (dict, list, tuple)) for v in value
        ):
            return _array_text(value)
        return json.dumps(value, default=str)
    raise TypeError(f"pgcache: cannot send a {type(value).__name__} as a QUERY parameter")


def _array_text(values: Sequence[Any]) -> str:
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        else:
            item = param_text(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{item}"')
    return "{" + ",".join(items) + "}"


class Explained:
    """What PGCACHE.EXPLAIN says of a statement."""

    def __init__(self, reply: Mapping[str, Any]) -> None:
        self.cacheable: bool = bool(reply.get("cacheable"))
        self.reason: str | None = reply.get("reason")
        self.statement: str | None = reply.get("statement")
        self.tables: list[str] = list(reply.get("tables") or [])
        self.precision: str | None = reply.get("precision")
        self.parameters: list[str] = list(reply.get("parameters") or [])
        self.columns: list[tuple[str, str]] = [
            (name, type_name) for name, type_name in reply.get("columns") or []
        ]
        self.raw: dict[str, Any] = dict(reply)

    def __repr__(self) -> str:
        if self.cacheable:
            return f"Explained(cacheable, columns={self.columns!r})"
        return f"Explained(not cacheable: {self.reason})"


class PGCacheManager:
    """pgcache through a redis-py client (``redis.Redis``, or ``redis.RedisCluster``).

    ``get`` answers a SELECT with typed rows; ``read``/``multiread`` answer rows by primary
    key. Each statement's columns are learned once (PGCACHE.EXPLAIN) and kept.
    """

    def __init__(
        self,
        redis_client: Any,
        pg_config: Mapping[str, Any] | str | None = None,
        *,
        row_factory: RowFactory = dict_row,
        module_path: str | None = None,
    ) -> None:
        self.redis = redis_client
        self.row_factory = row_factory
        self._decoders: dict[tuple[str, Any], _decode.Decoder] = {}
        self._tables: dict[str, _decode.TableDecoder] = {}
        self._lock = threading.Lock()
        if pg_config is not None:
            from .loader import load_pgcache_module

            load_pgcache_module(redis_client, pg_config, module_path)

    # Queries

    def get(
        self,
        sql: str,
        params: Params = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
        row_factory: RowFactory | None = None,
    ) -> list[Any]:
        """The rows of ``sql`` (``$n`` or ``?`` placeholders) with ``params``: from the cache
        on a hit, from PostgreSQL on a miss."""
        reply = self.query_json(sql, params, ttl=ttl, after=after, maxstale=maxstale)
        return self._decoder(sql, row_factory or self.row_factory).rows(reply)

    def query_json(
        self,
        sql: str,
        params: Params = (),
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
    ) -> str:
        """PGCACHE.QUERY's answer as it comes: a JSON array of row objects."""
        args: list[Any] = [sql, len(params), *(param_text(p) for p in params)]
        args += _options(ttl=ttl, after=after, maxstale=maxstale)
        return text(self.redis.execute_command("PGCACHE.QUERY", *args))

    def explain(self, sql: str) -> Explained:
        """What pgcache makes of ``sql``, without running it."""
        return Explained(mapping(self.redis.execute_command("PGCACHE.EXPLAIN", sql)))

    def _decoder(self, sql: str, row_factory: RowFactory) -> _decode.Decoder:
        key = (sql, row_factory)
        decoder = self._decoders.get(key)
        if decoder is None:
            explained = self.explain(sql)
            decoder = _decode.Decoder(explained.columns, row_factory)
            with self._lock:
                if len(self._decoders) >= _MOST_DECODERS:
                    self._decoders.clear()
                self._decoders[key] = decoder
        return decoder

    def forget(self, sql: str | None = None) -> None:
        """Forgets the columns learned of ``sql`` (of every statement with None): after DDL
        changed what a statement returns."""
        with self._lock:
            if sql is None:
                self._decoders.clear()
                self._tables.clear()
            else:
                for key in [k for k in self._decoders if k[0] == sql]:
                    del self._decoders[key]

    # Rows by primary key

    def read(
        self,
        table: str,
        pk: Mapping[str, Any],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
    ) -> dict[str, Any] | None:
        """The row of ``table`` whose primary key is ``pk`` (a dict), or None."""
        args: list[Any] = [table, _pk_json(pk)]
        if ttl is not None:
            args.append(ttl)
        args += _options(after=after, maxstale=maxstale)
        reply = self.redis.execute_command("PGCACHE.READ", *args)
        return None if reply is None else self._row_of(table, text(reply))

    def multiread(
        self,
        table: str,
        pks: Sequence[Mapping[str, Any]],
        *,
        ttl: int | None = None,
        after: str | None = None,
        maxstale: int | None = None,
    ) -> list[dict[str, Any] | None]:
        """The rows of ``pks``, in order, None where there is none."""
        args: list[Any] = [table, "[" + ",".join(_pk_json(pk) for pk in pks) + "]"]
        if ttl is not None:
            args.append(ttl)
        args += _options(after=after, maxstale=maxstale)
        replies = self.redis.execute_command("PGCACHE.MULTIREAD", *args)
        return [None if r is None else self._row_of(table, text(r)) for r in replies]

    def _row_of(self, table: str, row_json: str) -> dict[str, Any] | None:
        decoder = self._tables.get(table)
        if decoder is None:
            # A row is what `SELECT * FROM <table>` returns: its columns are the table's.
            decoder = _decode.TableDecoder(self.explain(f"SELECT * FROM {table}").columns)
            with self._lock:
                if len(self._tables) >= _MOST_DECODERS:
                    self._tables.clear()
                self._tables[table] = decoder
        return decoder.row(row_json)

    def write(
        self, table: str, pk: Mapping[str, Any], row: Mapping[str, Any], ttl: int | None = None
    ) -> None:
        """Stores ``row`` as the cached row of ``pk`` (the cache only, not PostgreSQL)."""
        args: list[Any] = [table, _pk_json(pk), json.dumps(row, default=str)]
        if ttl is not None:
            args.append(ttl)
        self.redis.execute_command("PGCACHE.WRITE", *args)

    def invalidate(self, table: str, pk: Mapping[str, Any]) -> None:
        """Drops the cached row of ``pk`` (and the cached results that read ``table``)."""
        self.redis.execute_command("PGCACHE.INVALIDATE", table, _pk_json(pk))

    def flush(self, table: str) -> None:
        """Drops every cached row of ``table``."""
        self.redis.execute_command("PGCACHE.FLUSH", table)

    def key(self, table: str, pk: Mapping[str, Any]) -> str:
        """The cache key of a row (what PGCACHE.GET takes)."""
        return text(self.redis.execute_command("PGCACHE.KEY", table, _pk_json(pk)))

    # Administration

    def stats(self) -> dict[str, Any]:
        """PGCACHE.STATS: counters and latencies."""
        return mapping(self.redis.execute_command("PGCACHE.STATS"))

    def reset_stats(self) -> None:
        self.redis.execute_command("PGCACHE.STATS", "RESET")

    def health(self) -> dict[str, Any]:
        """PGCACHE.HEALTH: ``status``, the problems and warnings, the change feed's state."""
        return mapping(self.redis.execute_command("PGCACHE.HEALTH"))

    def queries(self) -> list[dict[str, Any]]:
        """PGCACHE.QUERIES: each statement seen, with its figures."""
        return [mapping(line) for line in self.redis.execute_command("PGCACHE.QUERIES")]

    def hooks(self) -> list[Any]:
        """PGCACHE.HOOK LIST: the hooks defined."""
        return plain(self.redis.execute_command("PGCACHE.HOOK", "LIST"))

    def add_hook(self, *definition: str) -> None:
        self.redis.execute_command("PGCACHE.HOOK", "ADD", *definition)

    def delete_hook(self, name: str) -> None:
        self.redis.execute_command("PGCACHE.HOOK", "DEL", name)


_MOST_DECODERS = 10_000


def _pk_json(pk: Mapping[str, Any]) -> str:
    if not isinstance(pk, Mapping):
        raise TypeError("pgcache: a primary key is a dict of its columns, such as {'id': 7}")
    return json.dumps({k: _json_value(v) for k, v in pk.items()}, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return param_text(value)


def _options(
    *, ttl: int | None = None, after: str | None = None, maxstale: int | None = None
) -> list[Any]:
    options: list[Any] = []
    if ttl is not None:
        options += ["TTL", ttl]
    if after is not None:
        options += ["AFTER", after]
    if maxstale is not None:
        options += ["MAXSTALE", maxstale]
    return options
