"""Query results kept in the process, decoded (``PGCacheManager(..., local_cache=True)``):
a hit costs no round trip, and a result leaves as soon as Redis says one of the keys it
depends on changed.

How it stays exact. Only answers pgcache holds under a key are kept: ``PGCACHE.QUERY ...
WITHKEY`` names that key and the generation keys of the tables the result depends on (nil
where no key holds the answer: passed through, too big, a replica's miss; no change to those
would be signalled). One connection of the cache's own has Redis broadcast every change to
the keys kept results depend on (``CLIENT TRACKING ON BCAST``, RESP3 pushes): the
statement's result keys (``<prefix>~q:{<statement hash>``), its tables' generation keys
(``<prefix><table>:~``, as the last WITHKEY reply of the statement named them: DDL may change
them), and the epoch (``<prefix>~epoch``), all registered before the call whose answer is
kept. A result key's change (a fill, a delete by the change feed, an expiry, an eviction)
drops the kept answer of the same statement and parameters; a generation's end (a per-table
invalidation, DDL, a flush; signalled by pgcache even where the key was evicted) drops every
answer over that table; an epoch's change, a FLUSHALL, or the connection lost, drops
everything. An answer fetched while one of those keys changed, or on another connection than
the one following them, is not kept. The same connection asks PGCACHE.STATS every
``probe_interval`` seconds: while pgcache does not serve hits (``hits_served``: its change
feed has not vouched for the cache within ``max_staleness_ms``), nothing is answered locally;
after an answer, local hits go on no longer than pgcache's would if its feed stalled then
(``max_staleness_ms`` less the horizon's age); an answer a second overdue ends the connection
(it is opened again).

What it costs in exactness: a local hit may lag pgcache by the time a change's push takes to
reach the process (well under a millisecond here), and its answer was pgcache's for this
client when it was fetched: revoked permissions and a narrowed allowlist reach it within
``max_age`` seconds. Not on a cluster: its nodes keep their generations in memory, not in
keys.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Callable

from . import _resp
from ._cluster import statement_hash

log = logging.getLogger("pgcache.local")

# How many results' last changes a local cache tells apart (see `LocalCache._tag_changed`).
_TAGS_REMEMBERED = 10_000


def tag(key: str) -> str | None:
    """A result key's hash tag, its statement and parameters: from its first ``{`` to the
    first ``}`` after it (a parameter holding one ends it early); None for another key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return None if start < 0 or end < 0 else key[start : end + 1]


def generation_prefix(key: str) -> str:
    """What a generation key (``<prefix><table>:~gen``, ``~rgen``) shares with every
    generation key of its table: ``<prefix><table>:~``."""
    return key[: key.rindex(":~") + 2]


class Kept:
    """An answer kept for several callers: its rows as tuples, how they were decoded
    (``Decoder.shape``), and which columns hold values a caller could change (dicts and
    lists, copied for each caller)."""

    __slots__ = ("rows", "shape", "mutable")

    def __init__(self, rows: Sequence[Sequence[Any]], shape: tuple) -> None:
        self.rows = [tuple(values) for values in rows]
        self.shape = shape
        self.mutable = frozenset(
            i for row in self.rows for i, v in enumerate(row) if not _immutable(v)
        )


def _immutable(value: Any) -> bool:
    """Whether no caller can change ``value``: pgcache's own scalars, a frozen dataclass (a
    type decoder's usual value), a tuple of such."""
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple):
        return all(_immutable(v) for v in value)
    params = getattr(type(value), "__dataclass_params__", None)
    return params is not None and params.frozen


# What pgcache's own decoding makes that no caller can change: every other value (a dict, a
# list, what a type decoder of the application's made) is copied for each caller.
_IMMUTABLE = (
    type(None),
    str,
    int,
    float,
    Decimal,
    bytes,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


class Plan:
    """What a result to keep depends on, followed on one of the tracker's connections."""

    __slots__ = ("statement", "prefixes", "connection", "seen", "sequence")

    def __init__(self, statement: str, prefixes: frozenset[str], connection: int) -> None:
        self.statement = statement
        self.prefixes = prefixes
        # Which of the tracker's connections follows its keys: changes made while another
        # one was being opened were seen by none.
        self.connection = connection
        self.seen: tuple[int, ...] = ()
        # The last result key's change seen when the plan was made.
        self.sequence = 0


class LocalCache:
    """Results kept in this process (see the module's description). ``max_entries``
    results at most (least recently used first out), each for ``max_age`` seconds at most;
    pgcache asked whether it serves hits every ``probe_interval`` seconds."""

    def __init__(
        self, *, max_entries: int = 10_000, max_age: float = 60.0, probe_interval: float = 0.1
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.probe_interval = probe_interval
        self.hits = 0
        self.kept = 0
        # Key -> (the answer, when kept, result tag, generation prefixes).
        self._entries: OrderedDict[tuple, tuple[Kept, float, str, frozenset]] = OrderedDict()
        self._by_tag: dict[str, set[tuple]] = {}
        self._by_generation: dict[str, set[tuple]] = {}
        # Changes seen by generation prefix; `_epoch` counts the times everything went.
        self._changes: dict[str, int] = {}
        self._epoch = 0
        # Result keys' changes, numbered: the last one's number by the key's tag (its
        # statement and parameters), so that a fill of one parameter's result does not
        # stop the answer for another, fetched meanwhile, from being kept. Forgotten in
        # bulk past `_TAGS_REMEMBERED` (every plan made before is then refused).
        self._sequence = 0
        self._tag_changed: dict[str, int] = {}
        self._tags_forgotten_at = 0
        self._fresh_until = 0.0
        self._lock = threading.Lock()
        self._tracker: _Tracker | None = None
        # The server's cache_prefix and each statement's generation prefixes, as its
        # WITHKEY replies name them (a statement's tables change with DDL: the reply says).
        self._prefix: str | None = None
        self._generations: dict[str, frozenset[str]] = {}
        self._client: Any = None
        # A forked child (gunicorn --preload, multiprocessing) has none of the parent's
        # threads, shares its tracking socket, and may hold a lock a vanished thread held:
        # it starts afresh. A weak reference: the hook outlives the cache.
        mine = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart_in_child(mine))

    def attach(self, redis_client: Any) -> None:
        """Starts following changes on the server ``redis_client`` (a ``redis.Redis`` or a
        ``redis.asyncio.Redis``) talks to."""
        if self._tracker is not None:
            raise ValueError("pgcache: this local cache already serves a client")
        self._client = redis_client
        self._tracker = _Tracker(self, redis_client)

    def _forked(self) -> None:
        """In a forked child: nothing kept (the parent's changes from now on are not seen
        here), new locks, and a connection of the child's own, opened by its reader thread
        (a fork hook must not block on the network)."""
        self._lock = threading.Lock()
        self._fresh_until = 0.0
        self.hits = self.kept = 0
        self.clear()
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.abandon()
            self._tracker = _Tracker(self, self._client, connect_now=False)

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
        self.clear()

    # The cache itself.

    def get(self, key: tuple) -> Kept | None:
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

    def _prefixes(self, statement: str, generations: frozenset[str]) -> frozenset[str]:
        prefix = self._prefix
        # The epoch too: a server that takes a new one (a promotion, a load, a FLUSHDB)
        # serves none of the results it held before, nor deletes them on a change.
        return frozenset({f"{prefix}~epoch", f"{prefix}~q:{{{statement}", *generations})

    def plan(self, canonical: str) -> Plan | None:
        """What keeping a result of the statement whose canonical text is ``canonical``
        depends on, followed from now on; None until a WITHKEY reply of it said which
        generations it reads (``learn``)."""
        tracker = self._tracker
        statement = statement_hash(canonical)
        generations = self._generations.get(statement)
        if tracker is None or generations is None or self._prefix is None:
            return None
        prefixes = self._prefixes(statement, generations)
        connection = tracker.connections
        if not tracker.follow(prefixes) or tracker.connections != connection:
            return None
        plan = Plan(statement, prefixes, connection)
        with self._lock:
            plan.seen = self._seen(plan)
            plan.sequence = self._sequence
        return plan

    def learn(self, held_by: str, generations: Sequence[str]) -> None:
        """What a WITHKEY reply says: the server's prefix, and the generation keys the
        statement's results depend on now; followed for the next calls."""
        route_tag = tag(held_by)
        marker = held_by.find("~q:{")
        if route_tag is None or marker < 0:
            return
        self._prefix = held_by[:marker]
        statement = route_tag[1:].split(":", 1)[0]
        learned = frozenset(generation_prefix(name) for name in generations if ":~" in name)
        if self._generations.get(statement) != learned:
            if len(self._generations) >= 10_000:
                self._generations.clear()
            self._generations[statement] = learned
        tracker = self._tracker
        if tracker is not None:
            # Asked for now, so that the statement's next call finds its keys followed.
            tracker.follow(self._prefixes(statement, learned))

    def _seen(self, plan: Plan) -> tuple[int, ...]:
        changes = self._changes
        return (self._epoch, *(changes.get(prefix, 0) for prefix in sorted(plan.prefixes)))

    def _result_changed_since(self, route_tag: str, plan: Plan) -> bool:
        """Whether a key of the result ``route_tag`` names changed after ``plan`` was made
        (or may have: changes from before `_tags_forgotten_at` are no longer told apart)."""
        return (
            plan.sequence < self._tags_forgotten_at
            or self._tag_changed.get(route_tag, 0) > plan.sequence
        )

    def keep(
        self,
        key: tuple,
        plan: Plan,
        held_by: str,
        generations: Sequence[str],
        rows: list,
        shape: tuple,
    ) -> Kept | None:
        """Keeps ``rows`` (decoded as ``shape`` says; returned as kept), which pgcache holds
        under the key ``held_by`` over ``generations``, unless the plan does not follow all
        it depends on or one of those keys changed since the plan was made."""
        route_tag = tag(held_by)
        if (
            route_tag is None
            or not held_by.startswith(f"{self._prefix}~q:{{{plan.statement}:")
            or not self._prefixes(
                plan.statement, frozenset(generation_prefix(g) for g in generations)
            )
            <= plan.prefixes
        ):
            return None
        tracker = self._tracker
        with self._lock:
            if (
                self._seen(plan) != plan.seen
                or self._result_changed_since(route_tag, plan)
                or tracker is None
                or tracker.connections != plan.connection
                or not tracker.connected()
            ):
                return None
            if key in self._entries:
                self._drop(key)
            kept = Kept(rows, shape)
            depends = frozenset(p for p in plan.prefixes if p.endswith(":~"))
            self._entries[key] = (kept, time.monotonic(), route_tag, depends)
            self._by_tag.setdefault(route_tag, set()).add(key)
            for prefix in depends:
                self._by_generation.setdefault(prefix, set()).add(key)
            self.kept += 1
            while len(self._entries) > self.max_entries:
                # One call (a lock-free `get` may move entries meanwhile).
                oldest, entry = self._entries.popitem(last=False)
                self._unindexed(oldest, entry)
            return kept

    def _drop(self, key: tuple) -> None:
        self._unindexed(key, self._entries.pop(key))

    def _unindexed(self, key: tuple, entry: tuple[Kept, float, str, frozenset]) -> None:
        _, _, route_tag, depends = entry
        self._unindex(self._by_tag, route_tag, key)
        for prefix in depends:
            self._unindex(self._by_generation, prefix, key)

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
            self._changes.clear()
            self._tag_changed.clear()
            self._entries.clear()
            self._by_tag.clear()
            self._by_generation.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # What the tracking connection reports.

    def changed(self, keys: list[bytes] | None) -> None:
        """Keys changed on the server (None: all of them)."""
        prefix = self._prefix
        if keys is None or prefix is None:
            self.clear()
            return
        names = [raw.decode(errors="replace") for raw in keys]
        if f"{prefix}~epoch" in names:
            self.clear()
            return
        results = f"{prefix}~q:{{"
        with self._lock:
            for name in names:
                if name.startswith(results):
                    route_tag = tag(name)
                    if route_tag is None:
                        continue
                    self._result_changed(route_tag)
                    for entry in list(self._by_tag.get(route_tag, ())):
                        self._drop(entry)
                elif name.startswith(prefix) and ":~" in name:
                    generation = generation_prefix(name)
                    self._changes[generation] = self._changes.get(generation, 0) + 1
                    for entry in list(self._by_generation.get(generation, ())):
                        self._drop(entry)

    def _result_changed(self, route_tag: str) -> None:
        """Numbers a change of a key of the result ``route_tag`` names. The caller holds
        ``_lock``."""
        self._sequence += 1
        if len(self._tag_changed) >= _TAGS_REMEMBERED:
            self._tag_changed.clear()
            self._tags_forgotten_at = self._sequence
        self._tag_changed[route_tag] = self._sequence

    def serving(self, until: float) -> None:
        """pgcache serves hits: local hits may be answered until ``until``."""
        self._fresh_until = until

    def not_serving(self) -> None:
        """pgcache does not serve hits (or cannot be asked): none are answered locally."""
        self._fresh_until = 0.0
        self.clear()


def _restart_in_child(cache: weakref.ref[LocalCache]) -> None:
    alive = cache()
    if alive is not None:
        alive._forked()


def attached(
    local_cache: LocalCache | bool, redis_client: Any, cluster: bool, source: str | None = None
) -> LocalCache | None:
    """The local cache a manager was given (``True``: one with the defaults), following the
    server ``redis_client`` talks to; None for none."""
    if local_cache is False:
        return None
    if source is not None:
        raise ValueError(
            "pgcache: no local cache for a named source yet: the local cache follows the "
            "default source's freshness only"
        )
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
    pushes and replies as they come, a prober asks PGCACHE.STATS; lost, it reconnects, and
    everything kept goes (changes made meanwhile were not seen)."""

    def __init__(self, cache: LocalCache, redis_client: Any, *, connect_now: bool = True) -> None:
        self.cache = cache
        pool = redis_client.connection_pool
        self._kwargs = dict(pool.connection_kwargs)
        self._tls = "SSL" in pool.connection_class.__name__
        self._write = threading.Lock()
        # One registration at a time: Redis refuses a prefix registered twice.
        self._following = threading.Lock()
        self._waiting: deque[Callable[[Any], None]] = deque()
        self._followed: set[str] = set()
        # Prefixes whose registration was sent and not yet answered.
        self._asked: set[str] = set()
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        # When the probe's question now unanswered was sent (0: none is).
        self._probe_sent = 0.0
        # pgcache's max_staleness_ms as the probe last read it.
        self._bound_ms: int | None = None
        # Connections opened so far: each follows only the prefixes registered on it.
        self.connections = 0
        if connect_now:
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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
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
        try:
            self._hello(sock)
        except BaseException:
            sock.close()
            raise

    def _hello(self, sock: socket.socket) -> None:
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
            raise ConnectionError(f"pgcache: the local cache's connection was refused: {reply}")
        # Under `_following`: a registration is sent on the connection whose sets it updates.
        with self._following:
            self._followed, self._asked = set(), set()
            self._sock, self._stream = sock, stream
            self._probe_sent = 0.0
            self.connections += 1
        self._connected.set()

    def connected(self) -> bool:
        return self._connected.is_set()

    def follow(self, prefixes: Sequence[str]) -> bool:
        """Whether Redis broadcasts changes to keys starting with ``prefixes`` on this
        connection. Those not followed yet are asked for, without waiting for the answer
        (no caller, nor an event loop, waits a round trip): until it comes, no."""
        followed = self._followed
        if all(p in followed for p in prefixes):
            return self._connected.is_set()
        with self._following:
            # The sets of the connection the prefixes are sent on: a reconnect meanwhile
            # starts sets of its own, which these never reach.
            followed, asked = self._followed, self._asked
            new = [p for p in dict.fromkeys(prefixes) if p not in followed and p not in asked]
            if new:
                self._ask(new, followed, asked)
        return False

    def _ask(self, new: list[str], followed: set[str], asked: set[str]) -> None:
        """Sends the registration of ``new``: each prefix once (Redis refuses one
        registered twice), followed once Redis says so. The caller holds `_following`."""
        args: list[Any] = ["CLIENT", "TRACKING", "ON", "BCAST"]
        for prefix in new:
            args += ["PREFIX", prefix]

        def answered(reply: Any) -> None:
            with self._following:
                asked.difference_update(new)
                if not isinstance(reply, (_resp.ErrorReply, ConnectionError)):
                    followed.update(new)

        asked.update(new)
        if not self._send(args, answered):
            asked.difference_update(new)

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
        if not self._connected.is_set():
            self._reconnect()
        while not self._closed.is_set():
            try:
                item = _resp.read(self._stream)
                if isinstance(item, _resp.Push):
                    if item and item[0] in (b"invalidate", "invalidate"):
                        self.cache.changed(item[1] if len(item) > 1 else None)
                elif self._waiting:
                    self._waiting.popleft()(item)
            except Exception as error:  # whatever it was, what is kept can't be vouched for
                if not self._closed.is_set():
                    log.warning("pgcache: the local cache's connection failed: %s", error)
                self._lost()

    def _lost(self) -> None:
        """The connection broke: nothing kept can be vouched for; connect again."""
        self._connected.clear()
        self.cache.not_serving()
        with self._write:
            waiting, self._waiting = list(self._waiting), deque()
            if self._sock is not None:
                self._stream.close()
                self._sock.close()
                self._sock = None
        for on_reply in waiting:
            on_reply(ConnectionError("pgcache: the local cache's connection was lost"))
        self._reconnect()

    def _reconnect(self) -> None:
        pause = 0.05
        while not self._closed.is_set():
            try:
                self._connect()
                return
            except Exception:  # refused, unreachable, credentials: tried again
                self._closed.wait(pause)
                pause = min(pause * 2, 1.0)

    def _probe_loop(self) -> None:
        """Asks pgcache whether it serves hits (STATS' ``hits_served``: its change feed
        vouched for the cache within ``max_staleness_ms``; answered on its event loop,
        without PostgreSQL), one question at a time. An answer overdue by a second means a
        connection gone silent: it is dropped, and opened again."""
        interval = self.cache.probe_interval
        while not self._closed.wait(interval):
            sent = self._probe_sent
            if sent:
                if time.monotonic() - sent > max(1.0, 10 * interval):
                    self._silent()
                continue
            asked_at = time.monotonic()

            def bound(reply: Any) -> None:
                # pgcache's max_staleness_ms (None where CONFIG is not allowed: ACL).
                value = reply.get(b"pgcache.max_staleness_ms") if isinstance(reply, dict) else None
                self._bound_ms = None if value is None else int(value)

            def answered(reply: Any, asked_at: float = asked_at) -> None:
                self._probe_sent = 0.0
                stats = reply if isinstance(reply, dict) else {}
                if stats.get(b"hits_served", stats.get("hits_served")) != 1:
                    self.cache.not_serving()
                    return
                # Vouched for as of the question: good until the next answer is due, and no
                # longer than pgcache itself would serve hits if its feed stalled now.
                until = asked_at + 2 * interval
                age = stats.get(b"freshness_age_ms", stats.get("freshness_age_ms"))
                if self._bound_ms is not None and self._bound_ms >= 0 and age is not None:
                    until = min(until, asked_at + max(0, self._bound_ms - int(age)) / 1000)
                self.cache.serving(until)

            self._probe_sent = asked_at
            if not (
                self._send(["CONFIG", "GET", "pgcache.max_staleness_ms"], bound)
                and self._send(["PGCACHE.STATS"], answered)
            ):
                self._probe_sent = 0.0
                self.cache.not_serving()

    def _silent(self) -> None:
        """Ends a connection that stopped answering: the reader then opens another."""
        self.cache.not_serving()
        with self._write:
            self._shutdown()

    def abandon(self) -> None:
        """In a forked child: stops using the parent's connection without touching it (no
        shutdown, which would end it for the parent too; the child's copy of it closed)."""
        self._closed.set()
        self._connected.clear()
        if self._sock is not None:
            # The file descriptor alone: the stream's lock may be held by the parent's
            # reader thread, which the child does not have.
            os.close(self._sock.detach())
            self._sock = None

    def close(self) -> None:
        self._closed.set()
        with self._write:
            self._shutdown()
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _shutdown(self) -> None:
        """Shuts the socket both ways, waking a reader blocked on it. The caller holds `_write`."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
