"""pgcache's commands on a Redis Cluster / Valkey cluster (redis-py's ``RedisCluster``, sync
and asyncio).

READ, MULTIREAD, WRITE, INVALIDATE and QUERY name no key, so redis-py cannot route them
("No way to dispatch this command to Redis Cluster. Missing key"). The node that answers
each is the one serving the slot of the cache key it derives, whose hash tag the client can
spell: a row's primary-key JSON (``{"id":7}``), a result's statement and parameters
(``{<first 128 bits of SHA-256 of the statement's canonical text>:<parameters>}``, the
canonical text from PGCACHE.EXPLAIN, asked once per statement). A guess the server spells
otherwise (a composite key in another order, ``"7"`` for an integer) is answered ``MOVED``
by the node that got it, and followed: the server decides, the client only saves the hop.
The calls that report on one node (STATS, HEALTH, QUERIES, HOOK LIST) answer for each
primary, by node name; FLUSH, STATS RESET and HOOK ADD/DEL go to every primary, and
INVALIDATE TAG too (each primary answers how many of its entries it dropped).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from ._replies import mapping, text

# Commands routed by the key their arguments derive (the pk JSON is their third argument).
_BY_PK = {"PGCACHE.READ", "PGCACHE.MULTIREAD", "PGCACHE.WRITE", "PGCACHE.INVALIDATE"}
# Commands any node answers alike.
_ANY_NODE = {"PGCACHE.EXPLAIN", "PGCACHE.KEY"}
# Parameters longer than this in all are hashed into a result's key (as the server does).
_INLINE_PARAMS = 128
# Redirections followed before giving up (a slot moving twice while a call is in flight).
_MOST_REDIRECTS = 5
# Statements whose canonical hash a client keeps; past this it starts over.
_MOST_STATEMENTS = 10_000


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client (sync or asyncio)."""
    return hasattr(client, "get_node_from_key") and hasattr(client, "get_primaries")


def statement_hash(canonical: str) -> str:
    """The statement's part of its results' keys: the first 128 bits of SHA-256 over its
    canonical text, in hex."""
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def result_route(statement: str, params: Sequence[Any]) -> str:
    """A name with the hash tag of a result's key: the statement's hash and each parameter
    as ``<length>:<text>``, or ``#`` and the first 128 bits of their SHA-256 past 128
    bytes."""
    encoded = "".join(f"{len(p.encode())}:{p}" for p in (text(v) for v in params))
    if len(encoded.encode()) > _INLINE_PARAMS:
        encoded = "#" + hashlib.sha256(encoded.encode()).hexdigest()[:32]
    return "{" + statement + ":" + encoded + "}"


def query_params(command: Sequence[Any]) -> list[Any]:
    """The parameters of a PGCACHE.QUERY command: ``sql nparams p1 .. pn [options]``."""
    return list(command[3 : 3 + int(command[2])])


class Router:
    """What a cluster client knows of statements (each one's hash, from EXPLAIN) and where
    each command goes."""

    def __init__(self) -> None:
        self._statements: dict[str, str] = {}
        self._lock = threading.Lock()

    def learn(self, sql: str, explained: Any) -> None:
        """Keeps the hash of ``sql``'s canonical text from EXPLAIN's reply."""
        canonical = mapping(explained).get("statement")
        if canonical:
            with self._lock:
                if len(self._statements) >= _MOST_STATEMENTS:
                    self._statements.clear()
                self._statements[sql] = statement_hash(canonical)

    def statement(self, sql: str) -> str | None:
        return self._statements.get(text(sql))

    @staticmethod
    def kind(command: Sequence[Any]) -> str:
        """``pk``, ``query``, ``any``, ``primaries``, ``each``, ``settle`` or ``keys``
        (redis-py routes it by its keys)."""
        name = text(command[0]).upper()
        if name == "PGCACHE.INVALIDATE" and len(command) > 1 and text(command[1]).upper() == "TAG":
            # Each primary drops the tag's entries it holds, and says how many; all again
            # while a slot holding some moves (TRYAGAIN).
            return "settle"
        if name in _BY_PK:
            return "pk"
        if name == "PGCACHE.QUERY":
            return "query"
        if name in _ANY_NODE:
            return "any"
        if name == "PGCACHE.FLUSH":
            return "primaries"
        if name in ("PGCACHE.STATS", "PGCACHE.HOOK", "PGCACHE.SLOWLOG", "PGCACHE.SOURCE"):
            changes = len(command) > 1 and text(command[1]).upper() in (
                "RESET",
                "ADD",
                "SET",
                "DEL",
            )
            return "primaries" if changes else "each"
        if name in ("PGCACHE.HEALTH", "PGCACHE.QUERIES"):
            return "each"
        return "keys"

    def route(self, command: Sequence[Any]) -> str | None:
        """The name whose slot answers ``command``, or None for a QUERY whose statement is
        not known yet."""
        if self.kind(command) == "pk":
            # The first brace pair of the pk JSON (of the first pk of a MULTIREAD's array)
            # is the key's hash tag.
            return text(command[2])
        statement = self.statement(command[1])
        return None if statement is None else result_route(statement, query_params(command))


# A call made of several routed commands: yields each (route, command), is sent its reply.
Split = Generator[tuple[str, tuple], Any, Any]


def multiread_split(command: Sequence[Any]) -> Split:
    """A MULTIREAD whose keys span slots (the server refuses those: CROSSSLOT) as one per
    slot, the rows put back in the order asked; where the server spells a key's slot
    otherwise than guessed, one per key."""
    table, pks, options = command[1], json.loads(text(command[2])), tuple(command[3:])
    spelled = [json.dumps(pk, separators=(",", ":")) for pk in pks]
    groups: dict[int, list[int]] = {}
    for i, pk in enumerate(spelled):
        groups.setdefault(key_slot(pk.encode()), []).append(i)
    rows: list[Any] = [None] * len(pks)
    for indices in groups.values():
        part = "[" + ",".join(spelled[i] for i in indices) + "]"
        try:
            replies = yield part, ("PGCACHE.MULTIREAD", table, part, *options)
        except ResponseError as error:
            if "CROSSSLOT" not in str(error):
                raise
            replies = []
            for i in indices:
                one = "[" + spelled[i] + "]"
                replies += yield one, ("PGCACHE.MULTIREAD", table, one, *options)
        for i, row in zip(indices, replies):
            rows[i] = row
    return rows


def redirected_to(error: Exception) -> tuple[str, int, bool] | None:
    """Where a ``MOVED`` (or ``ASK``: the third value) sends a command, or None."""
    if isinstance(error, MovedError):  # a subclass of AskError
        return error.host, int(error.port), False
    if isinstance(error, AskError):
        return error.host, int(error.port), True
    return None


def too_many_redirects(command: Sequence[Any]) -> RedisClusterException:
    return RedisClusterException(
        f"pgcache: {text(command[0])} was redirected {_MOST_REDIRECTS} times: the cluster's "
        "slots keep moving"
    )


# How long INVALIDATE TAG goes on asking while a slot holding the tags' entries moves.
_SETTLE_SECONDS = 60.0


class _Settling:
    """Rounds of INVALIDATE TAG over every primary until none answers TRYAGAIN (a slot
    moving between nodes: an entry on one, its tag's set on the other, until it has moved)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._deadline = time.monotonic() + _SETTLE_SECONDS
        self._pause = 0.01
        self._unsettled: TryAgainError | None = None

    def counted(self, node: str, dropped: Any) -> None:
        self.counts[node] = self.counts.get(node, 0) + int(dropped)

    def unsettled(self, node: str, error: TryAgainError) -> None:
        # What the node dropped before it could not go on, as its error says.
        dropped = re.search(r"\((\d+) dropped\)", str(error))
        if dropped is not None:
            self.counted(node, dropped[1])
        self._unsettled = error

    def done(self) -> bool:
        """Whether the round settled every primary (raises past the deadline)."""
        unsettled, self._unsettled = self._unsettled, None
        if unsettled is None:
            return True
        if time.monotonic() > self._deadline:
            raise unsettled
        return False

    def pause(self) -> float:
        pause, self._pause = self._pause, min(self._pause * 2, 0.5)
        return pause


class ClusterClient:
    """A ``RedisCluster`` that routes pgcache's commands; anything else goes to it as is."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.router = Router()

    def execute_command(self, *command: Any) -> Any:
        kind = self.router.kind(command)
        if kind == "keys":
            return self.cluster.execute_command(*command)
        if kind == "any":
            reply = self._node_client(self.cluster.get_default_node()).execute_command(*command)
            if text(command[0]).upper() == "PGCACHE.EXPLAIN":
                self.router.learn(text(command[1]), reply)
            return reply
        if kind in ("primaries", "each"):
            replies = self.each_primary(*command)
            return next(iter(replies.values())) if kind == "primaries" else replies
        if kind == "settle":
            return self._settled(command)
        if text(command[0]).upper() == "PGCACHE.MULTIREAD":
            return self._split(multiread_split(command))
        route = self.router.route(command)
        if route is None:
            self.execute_command("PGCACHE.EXPLAIN", command[1])
            route = self.router.route(command)
        if route is None:  # a statement pgcache refuses: any node says why
            return self._on(self.cluster.get_default_node(), command)
        return self._on(self.cluster.get_node_from_key(route), command)

    def _split(self, split: Split) -> Any:
        try:
            route, command = next(split)
            while True:
                try:
                    reply = self._on(self.cluster.get_node_from_key(route), command)
                except ResponseError as error:
                    route, command = split.throw(error)
                else:
                    route, command = split.send(reply)
        except StopIteration as done:
            return done.value

    def each_primary(self, *command: Any) -> dict[str, Any]:
        """``command``'s reply from every primary, by node name (``host:port``)."""
        return {
            node.name: self._node_client(node).execute_command(*command)
            for node in self.cluster.get_primaries()
        }

    def _settled(self, command: Sequence[Any]) -> dict[str, int]:
        """``command`` (INVALIDATE TAG) on every primary, all again while any answers
        TRYAGAIN: each primary's count, summed over the rounds."""
        settling = _Settling()
        while True:
            for node in self.cluster.get_primaries():
                try:
                    settling.counted(node.name, self._node_client(node).execute_command(*command))
                except TryAgainError as error:
                    settling.unsettled(node.name, error)
            if settling.done():
                return settling.counts
            time.sleep(settling.pause())
            self.cluster.nodes_manager.initialize()  # the slot has moved: its new primary

    def _node_client(self, node: Any) -> Any:
        return self.cluster.get_redis_connection(node)

    def _on(self, node: Any, command: Sequence[Any]) -> Any:
        """``command``'s reply from ``node``, following ``MOVED`` and ``ASK``."""
        asking = False
        for _ in range(_MOST_REDIRECTS):
            client = self._node_client(node)
            try:
                if not asking:
                    return client.execute_command(*command)
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("ASKING")
                pipe.execute_command(*command)
                return pipe.execute()[1]
            except (MovedError, AskError) as error:
                host, port, asking = redirected_to(error)  # type: ignore[misc]
                node = self._node_at(host, port)
        raise too_many_redirects(command)

    def _node_at(self, host: str, port: int) -> Any:
        node = self.cluster.get_node(host=host, port=port)
        if node is None:  # a node the client has not met: the cluster's map is old
            self.cluster.nodes_manager.initialize()
            node = self.cluster.get_node(host=host, port=port)
        if node is None:
            raise RedisClusterException(f"pgcache: redirected to {host}:{port}, not a node")
        return node

    def nodes(self) -> list[Any]:
        """Every node's own client (primaries and replicas)."""
        return [self._node_client(node) for node in self.cluster.get_nodes()]


class AsyncClusterClient:
    """``ClusterClient`` for ``redis.asyncio``'s ``RedisCluster``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.router = Router()
        self._ready = False

    async def execute_command(self, *command: Any) -> Any:
        if not self._ready:
            # The asyncio cluster meets its nodes at its first command.
            await self.cluster.initialize()
            self._ready = True
        kind = self.router.kind(command)
        if kind == "keys":
            return await self.cluster.execute_command(*command)
        if kind == "any":
            reply = await self.cluster.get_default_node().execute_command(*command)
            if text(command[0]).upper() == "PGCACHE.EXPLAIN":
                self.router.learn(text(command[1]), reply)
            return reply
        if kind in ("primaries", "each"):
            replies = await self.each_primary(*command)
            return next(iter(replies.values())) if kind == "primaries" else replies
        if kind == "settle":
            return await self._settled(command)
        if text(command[0]).upper() == "PGCACHE.MULTIREAD":
            return await self._split(multiread_split(command))
        route = self.router.route(command)
        if route is None:
            await self.execute_command("PGCACHE.EXPLAIN", command[1])
            route = self.router.route(command)
        if route is None:
            return await self._on(self.cluster.get_default_node(), command)
        return await self._on(self.cluster.get_node_from_key(route), command)

    async def _split(self, split: Split) -> Any:
        try:
            route, command = next(split)
            while True:
                try:
                    reply = await self._on(self.cluster.get_node_from_key(route), command)
                except ResponseError as error:
                    route, command = split.throw(error)
                else:
                    route, command = split.send(reply)
        except StopIteration as done:
            return done.value

    async def _settled(self, command: Sequence[Any]) -> dict[str, int]:
        settling = _Settling()
        while True:
            for node in self.cluster.get_primaries():
                try:
                    settling.counted(node.name, await node.execute_command(*command))
                except TryAgainError as error:
                    settling.unsettled(node.name, error)
            if settling.done():
                return settling.counts
            await asyncio.sleep(settling.pause())
            await self.cluster.nodes_manager.initialize()

    async def each_primary(self, *command: Any) -> dict[str, Any]:
        return {
            node.name: await node.execute_command(*command) for node in self.cluster.get_primaries()
        }

    async def _on(self, node: Any, command: Sequence[Any]) -> Any:
        asking = False
        for _ in range(_MOST_REDIRECTS):
            try:
                if not asking:
                    return await node.execute_command(*command)
                return await _asking(node, command)
            except (MovedError, AskError) as error:
                host, port, asking = redirected_to(error)  # type: ignore[misc]
                node = self.cluster.get_node(host=host, port=port)
                if node is None:
                    await self.cluster.nodes_manager.initialize()
                    node = self.cluster.get_node(host=host, port=port)
                if node is None:
                    raise RedisClusterException(
                        f"pgcache: redirected to {host}:{port}, not a node"
                    ) from error
        raise too_many_redirects(command)

    async def nodes(self) -> list[Any]:
        await self.cluster.initialize()
        return list(self.cluster.get_nodes())


async def _asking(node: Any, command: Sequence[Any]) -> Any:
    """``ASKING`` and ``command`` on one connection of ``node`` (an asyncio ClusterNode
    lends a connection per command, so the two must share one by hand)."""
    connection = node.acquire_connection()
    try:
        await connection.send_packed_command(connection.pack_commands([("ASKING",), command]))
        await connection.read_response()
        return await connection.read_response()
    finally:
        node.release(connection)


def per_node(replies: Mapping[str, Any], parse: Any) -> dict[str, Any]:
    """Each node's reply, parsed."""
    return {name: parse(reply) for name, reply in replies.items()}
