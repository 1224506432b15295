"""Query results kept in the process, decoded (``PGCacheManager(..., local_cache=True)``):
a hit costs no round trip, and a result leaves as soon as Redis says one of the keys it
came from changed.

How it stays exact. One connection of its own asks Redis to broadcast every change to the
keys the kept results depend on (``CLIENT TRACKING ON BCAST``, RESP3 pushes): for each
statement, its results' keys (``<prefix>~q:{<statement hash>``), and for each table it
reads, the table's generation keys (``<prefix><table>:~``), registered before the statement is
first asked with ``WITHKEY``, which says under which key pgcache holds each answer (nil
where none holds it: passed through, too big, a replica's miss: those are not kept, as no
change to them would be pushed). A result key's change (a fill, a delete by the change feed, an
expiry, an eviction) drops the kept result of the same statement and parameters; a
generation's change (a per-table invalidation, DDL, a flush) drops every result over that
table; a FLUSHALL, or the connection lost, drops everything. A result fetched while one of
its statement's or tables' keys changed is not kept. The same connection asks PGCACHE.HEALTH
every ``probe_interval`` seconds: while pgcache does not serve hits (its change feed has not
vouched for the cache within ``max_staleness_ms``), nothing is answered locally.

What it costs in exactness: a local hit may lag pgcache by the time a change's push takes to
reach the process (well under a millisecond here), and its answer was pgcache's for this
client when it was fetched: revoked permissions and a narrowed allowlist reach it within
``max_age`` seconds. Not on a cluster: its nodes keep their generations in memory, not in
keys.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Callable

from . import _resp
from ._cluster import statement_hash


def tag(key: str) -> str:
    """A result key's hash tag, its statement and parameters: from its first ``{`` to the
    first ``}`` after it (a parameter holding one ends it early)."""
    start = key.index("{")
    return key[start : key.index("}", start) + 1]


class Plan:
    """What a result to keep depends on: its statement (hash) and its tables."""

    __slots__ = ("statement", "tables", "connection", "seen")

    def __init__(self, statement: str, tables: Sequence[str], connection: int) -> None:
        self.statement = statement
        self.tables = tuple(tables)
        # Which of the tracker's connections follows its keys: changes made while another
        # one was being opened were seen by none.
        self.connection = connection
        self.seen: tuple[int, ...] = ()


class LocalCache:
    """Results kept in this process (see the module's description). ``max_entries``
    results at most (least recently used first out), each for ``max_age`` seconds at most;
    pgcache's HEALTH asked every ``probe_interval`` seconds."""

    def __init__(
        self, *, max_entries: int = 10_000, max_age: float = 60.0, probe_interval: float = 0.1
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.probe_interval = probe_interval
        self.hits = 0
        self.kept = 0
        self._entries: OrderedDict[tuple, tuple[list[list[Any]], float, str, tuple]] = OrderedDict()
        self._by_tag: dict[str, set[tuple]] = {}
        self._by_table: dict[str, set[tuple]] = {}
        # Changes seen, by statement hash and by table; `_epoch` counts the times all went.
        self._changes: dict[str, int] = {}
        self._epoch = 0
        self._fresh_until = 0.0
        self._lock = threading.Lock()
        self._tracker: _Tracker | None = None
        self._prefix = "pg_cache:"

    def attach(self, redis_client: Any) -> None:
        """Starts following changes on the server ``redis_client`` (a ``redis.Redis`` or a
        ``redis.asyncio.Redis``) talks to."""
        if self._tracker is not None:
            raise ValueError("pgcache: this local cache already serves a client")
        self._tracker = _Tracker(self, redis_client)

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
        self.clear()

    # The cache itself.

    def get(self, key: tuple) -> list[list[Any]] | None:
        """The rows kept for ``key``, while pgcache vouches for its cache. No lock: each
        dict operation is atomic, and an entry dropped meanwhile was current when read."""
        now = time.monotonic()
        if now >= self._fresh_until:
            return None
        entry = self._entries.get(key)
        if entry is None or now - entry[1] >= self.max_age:
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:  # dropped meanwhile
            pass
        self.hits += 1  # a statistic: threads may count over one another
        return entry[0]

    def plan(self, explained: Any) -> Plan | None:
        """What keeping a result of the statement ``explained`` depends on, with the keys it
        depends on followed from now on; None where it cannot be kept."""
        tracker = self._tracker
        if tracker is None or not explained.statement:
            return None
        statement = statement_hash(explained.statement)
        # The epoch too: a server that takes a new one (a promotion, a load) serves none of
        # the results it held before, nor deletes them on a change.
        prefixes = [f"{self._prefix}~epoch", f"{self._prefix}~q:{{{statement}"] + [
            f"{self._prefix}{table}:~" for table in explained.tables
        ]
        connection = tracker.connections
        if not tracker.follow(prefixes) or tracker.connections != connection:
            return None
        plan = Plan(statement, explained.tables, connection)
        plan.seen = self._seen(plan)
        return plan

    def _seen(self, plan: Plan) -> tuple[int, ...]:
        changes = self._changes
        return (
            self._epoch,
            changes.get(plan.statement, 0),
            *(changes.get(table, 0) for table in plan.tables),
        )

    def keep(self, key: tuple, plan: Plan, held_by: str, rows: list[list[Any]]) -> None:
        """Keeps ``rows``, which pgcache holds under the key ``held_by``, unless a key they
        depend on changed since ``plan`` was made."""
        route_tag = tag(held_by)
        if not route_tag.startswith("{" + plan.statement + ":"):
            return  # not the statement the plan follows
        tracker = self._tracker
        with self._lock:
            if (
                self._seen(plan) != plan.seen
                or tracker is None
                or tracker.connections != plan.connection
                or not tracker.connected()
            ):
                return
            if key in self._entries:
                self._drop(key)
            kept = [tuple(values) for values in rows]
            self._entries[key] = (kept, time.monotonic(), route_tag, plan.tables)
            self._by_tag.setdefault(route_tag, set()).add(key)
            for table in plan.tables:
                self._by_table.setdefault(table, set()).add(key)
            self.kept += 1
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple) -> None:
        _, _, route_tag, tables = self._entries.pop(key)
        self._unindex(self._by_tag, route_tag, key)
        for table in tables:
            self._unindex(self._by_table, table, key)

    @staticmethod
    def _unindex(index: dict[str, set[tuple]], name: str, key: tuple) -> None:
        keys = index.get(name)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[name]

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._by_tag.clear()
            self._by_table.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # What the tracking connection reports.

    def changed(self, keys: list[bytes] | None) -> None:
        """Keys changed on the server (None: all of them)."""
        if keys is None:
            self.clear()
            return
        results = f"{self._prefix}~q:{{"
        epoch = f"{self._prefix}~epoch"
        if any(raw.decode(errors="replace") == epoch for raw in keys):
            self.clear()
            return
        with self._lock:
            for raw in keys:
                key = raw.decode(errors="replace")
                if key.startswith(results) and "}" in key:
                    route_tag = tag(key)
                    statement = route_tag[1:].split(":", 1)[0]
                    self._changes[statement] = self._changes.get(statement, 0) + 1
                    for entry in list(self._by_tag.get(route_tag, ())):
                        self._drop(entry)
                elif key.startswith(self._prefix) and ":~" in key:
                    table = key[len(self._prefix) : key.rindex(":~")]
                    self._changes[table] = self._changes.get(table, 0) + 1
                    for entry in list(self._by_table.get(table, ())):
                        self._drop(entry)

    def serving(self, until: float) -> None:
        """pgcache serves hits: local hits may be answered until ``until``."""
        self._fresh_until = until

    def not_serving(self) -> None:
        """pgcache does not serve hits (or cannot be asked): none are answered locally."""
        self._fresh_until = 0.0
        self.clear()


def attached(local_cache: LocalCache | bool, redis_client: Any, cluster: bool) -> LocalCache | None:
    """The local cache a manager was given (``True``: one with the defaults), following the
    server ``redis_client`` talks to; None for none."""
    if local_cache is False:
        return None
    if cluster:
        raise ValueError(
            "pgcache: no local cache on a cluster: its nodes keep their generations in memory, "
            "where no change can be followed"
        )
    local = LocalCache() if local_cache is True else local_cache
    local.attach(redis_client)
    return local


class _Tracker:
    """The connection that follows changes for a ``LocalCache``: a reader thread takes its
    pushes and replies as they come, a prober asks PGCACHE.HEALTH; lost, it reconnects, and
    everything kept goes (changes made meanwhile were not seen)."""

    def __init__(self, cache: LocalCache, redis_client: Any) -> None:
        self.cache = cache
        pool = redis_client.connection_pool
        self._kwargs = dict(pool.connection_kwargs)
        self._tls = "SSL" in pool.connection_class.__name__
        self._write = threading.Lock()
        # One registration at a time: Redis refuses a prefix registered twice.
        self._following = threading.Lock()
        self._waiting: deque[Callable[[Any], None]] = deque()
        self._followed: set[str] = set()
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        # Connections opened so far: each follows only the prefixes registered on it.
        self.connections = 0
        self._connect()
        threading.Thread(target=self._read_loop, name="pgcache-local", daemon=True).start()
        threading.Thread(target=self._probe_loop, name="pgcache-probe", daemon=True).start()

    def _open_socket(self) -> socket.socket:
        kw = self._kwargs
        timeout = kw.get("socket_connect_timeout") or 5
        if kw.get("path"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(kw["path"])
        else:
            sock = socket.create_connection(
                (kw.get("host", "localhost"), kw.get("port", 6379)), timeout
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls:
            context = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
            if kw.get("ssl_certfile"):
                context.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
            context.check_hostname = bool(kw.get("ssl_check_hostname"))
            if kw.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=kw.get("host"))
        sock.settimeout(None)
        return sock

    def _connect(self) -> None:
        sock = self._open_socket()
        stream = sock.makefile("rb")
        username, password = self._kwargs.get("username"), self._kwargs.get("password")
        provider = self._kwargs.get("credential_provider")
        if provider is not None:
            credentials = provider.get_credentials()
            username, password = (
                credentials if len(credentials) == 2 else ("default", credentials[0])
            )
        hello: list[Any] = ["HELLO", 3]
        if password is not None:
            hello += ["AUTH", username or "default", password]
        hello += ["SETNAME", "pgcache-local-cache"]
        sock.sendall(_resp.command(*hello))
        reply = _resp.read(stream)
        if isinstance(reply, _resp.ErrorReply):
            sock.close()
            raise ConnectionError(f"pgcache: the local cache's connection was refused: {reply}")
        sock.sendall(_resp.command("CONFIG", "GET", "pgcache.cache_prefix"))
        prefix = _resp.read(stream)
        if isinstance(prefix, dict) and prefix:
            self.cache._prefix = next(iter(prefix.values())).decode()
        self._sock, self._stream = sock, stream
        self._followed = set()
        self.connections += 1
        self._connected.set()

    def connected(self) -> bool:
        return self._connected.is_set()

    def follow(self, prefixes: Sequence[str]) -> bool:
        """Has Redis broadcast changes to keys starting with ``prefixes`` from now on."""
        if all(p in self._followed for p in prefixes):
            return self._connected.is_set()
        with self._following:
            return self._register([p for p in dict.fromkeys(prefixes) if p not in self._followed])

    def _register(self, new: list[str]) -> bool:
        if not new:
            return self._connected.is_set()
        args: list[Any] = ["CLIENT", "TRACKING", "ON", "BCAST"]
        for prefix in new:
            args += ["PREFIX", prefix]
        done = threading.Event()
        answer: list[Any] = []

        def answered(reply: Any) -> None:
            answer.append(reply)
            done.set()

        if not self._send(args, answered) or not done.wait(5):
            return False
        if isinstance(answer[0], (_resp.ErrorReply, ConnectionError)):
            return False
        self._followed.update(new)
        return True

    def _send(self, args: Sequence[Any], on_reply: Callable[[Any], None]) -> bool:
        with self._write:
            sock = self._sock
            if sock is None or not self._connected.is_set():
                return False
            self._waiting.append(on_reply)
            try:
                sock.sendall(_resp.command(*args))
            except OSError:
                return False
        return True

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                item = _resp.read(self._stream)
            except (OSError, ValueError, ConnectionError):
                self._lost()
                continue
            if isinstance(item, _resp.Push):
                if item and item[0] in (b"invalidate", "invalidate"):
                    self.cache.changed(item[1] if len(item) > 1 else None)
                continue
            if self._waiting:
                self._waiting.popleft()(item)

    def _lost(self) -> None:
        """The connection broke: nothing kept can be vouched for; connect again."""
        self._connected.clear()
        self.cache.not_serving()
        with self._write:
            waiting, self._waiting = list(self._waiting), deque()
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        for on_reply in waiting:
            on_reply(ConnectionError("pgcache: the local cache's connection was lost"))
        pause = 0.05
        while not self._closed.is_set():
            try:
                self._connect()
                return
            except OSError:
                self._closed.wait(pause)
                pause = min(pause * 2, 1.0)

    def _probe_loop(self) -> None:
        interval = self.cache.probe_interval
        while not self._closed.wait(interval):
            asked_at = time.monotonic()

            def answered(reply: Any, asked_at: float = asked_at) -> None:
                health = reply if isinstance(reply, dict) else {}
                hits = health.get(b"hits", health.get("hits"))
                if hits in (b"served", "served"):
                    # Vouched for as of the question: good until the next answer is due.
                    self.cache.serving(asked_at + 2 * interval)
                else:
                    self.cache.not_serving()

            if not self._send(["PGCACHE.HEALTH"], answered):
                self.cache.not_serving()

    def close(self) -> None:
        self._closed.set()
        with self._write:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._sock.close()
                self._sock = None
