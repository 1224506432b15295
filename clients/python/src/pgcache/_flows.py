"""Each call of pgcache's client as a flow of commands, written once for the sync and the
asyncio client: a flow is a generator that yields each command (a tuple of arguments) and is
sent its reply; ``run`` and ``run_async`` drive it on a redis-py client."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Mapping, Sequence
from datetime import tzinfo
from typing import Any, TypeVar, Union

from . import _decode
from ._local import LocalCache
from ._params import param_text, pk_json
from ._placeholders import nulls_written
from ._replies import mapping, text
from .decoders import DECODERS, Decode, Decoders, Registered
from .rows import RowFactory, tuple_row

T = TypeVar("T")
Flow = Generator[tuple, Any, T]

# Statements (and tables) whose columns a client keeps; past this it starts over.
_MOST_DECODERS = 10_000


def run(client: Any, flow: Flow[T]) -> T:
    """Runs ``flow`` on a sync redis-py client; an error reply is raised inside the flow."""
    try:
        command = next(flow)
        while True:
            try:
                reply = client.execute_command(*command)
            except Exception as error:  # redis-py's errors, raised where the flow sent it
                command = flow.throw(error)
            else:
                command = flow.send(reply)
    except StopIteration as done:
        return done.value


async def run_async(client: Any, flow: Flow[T]) -> T:
    """Runs ``flow`` on a ``redis.asyncio`` client; as ``run``."""
    try:
        command = next(flow)
        while True:
            try:
                reply = await client.execute_command(*command)
            except Exception as error:
                command = flow.throw(error)
            else:
                command = flow.send(reply)
    except StopIteration as done:
        return done.value


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
        # Each column's types, for decoders of a type: its own, then each domain's base.
        self.column_types: list[list[tuple[str, int]]] = [
            [(text(name), int(oid)) for name, oid in types]
            for types in reply.get("column_types") or []
        ]
        self.raw: dict[str, Any] = dict(reply)

    def __repr__(self) -> str:
        if self.cacheable:
            return f"Explained(cacheable, columns={self.columns!r})"
        return f"Explained(not cacheable: {self.reason})"


# pgcache's option words: a tag cannot be one (each ends a TAG list).
_OPTION_WORDS = frozenset({"AFTER", "MAXSTALE", "SOURCE", "WITHAGE", "TTL", "WITHKEY", "TAG"})

Tags = Union[str, Sequence[str], None]


def tag_args(tags: Tags) -> list[str]:
    """``TAG <tag> ...`` for ``tags`` (one tag or several; None or none: nothing)."""
    if tags is None:
        return []
    listed = [tags] if isinstance(tags, str) else list(tags)
    for tag in listed:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"a tag is a non-empty str, got {tag!r}")
        if tag.upper() in _OPTION_WORDS:
            raise ValueError(f"{tag!r} is one of pgcache's option words and cannot be a tag")
    return ["TAG", *listed] if listed else []


def options(
    *, ttl: int | None = None, after: str | None = None, maxstale: int | None = None
) -> list[Any]:
    """QUERY's and READ's trailing options."""
    out: list[Any] = []
    if ttl is not None:
        out += ["TTL", ttl]
    if after is not None:
        out += ["AFTER", after]
    if maxstale is not None:
        out += ["MAXSTALE", maxstale]
    return out


class Flows:
    """What a client keeps (each statement's and table's columns) and its calls as flows.
    With ``source``, every call names that source (pgcache's ``SOURCE name``: a database
    other than the default one, declared where pgcache was loaded)."""

    def __init__(self, row_factory: RowFactory, source: str | None = None) -> None:
        self.row_factory = row_factory
        self.source = source
        # The arguments that name the source, after each command's own.
        self.sourced: tuple[str, ...] = () if source is None else ("SOURCE", source)
        # Results kept in this process (``local_cache=``), if any.
        self.local: LocalCache | None = None
        self._decoders: dict[tuple[Any, ...], _decode.Decoder] = {}
        self._tables: dict[str, _decode.TableDecoder] = {}
        self._lock = threading.Lock()
        # Decoders of types of the application's own: this manager's, over the process's.
        self.type_decoders = Decoders("manager", DECODERS)
        self._decoded_with = self.type_decoders.state()
        # The TimeZone of pgcache's sessions, asked once for frames (HEALTH).
        self.session_zone: tzinfo | None = None

    def register_decoder(
        self, type_name_or_oid: str | int, decode: Decode, priority: int = 0
    ) -> None:
        """Decodes this manager's columns of the type (arrays of it, domains over it) with
        ``decode`` (see ``pgcache.decoders``)."""
        self.type_decoders.register(type_name_or_oid, decode, priority)

    def unregister_decoder(self, type_name_or_oid: str | int, decode: Decode | None = None) -> bool:
        """Removes this manager's decoders of the type (only ``decode`` when given)."""
        return self.type_decoders.unregister(type_name_or_oid, decode)

    def list_decoders(self) -> list[Registered]:
        """The decoders that apply to this manager (its own and the process's), the ones
        that win first."""
        return self.type_decoders.listed()

    def _decoders_current(self) -> None:
        """Forgets the decoders made before a type decoder was registered or removed."""
        state = self.type_decoders.state()
        if state != self._decoded_with:
            with self._lock:
                self._decoders.clear()
                self._tables.clear()
                self._decoded_with = state

    def _handlers(self, explained: Explained) -> tuple[list[Decode | None], tuple[int, ...]]:
        """Each column's decoder of its type (None: none applies), and the registries' state
        they were chosen in (taken first: a decoder made from it is kept only if it holds)."""
        state = self.type_decoders.state()
        return [self.type_decoders.choose(types) for types in explained.column_types], state

    def forget(self, sql: str | None = None) -> None:
        """Forgets the columns learned of ``sql`` (of every statement and table with None):
        after DDL changed what a statement returns."""
        with self._lock:
            if sql is None:
                self._decoders.clear()
                self._tables.clear()
            else:
                for key in [k for k in self._decoders if k[0] == sql]:
                    del self._decoders[key]

    def _keep(self, kept: dict, key: Any, value: Any, made_with: tuple[int, ...] = ()) -> None:
        with self._lock:
            # Made under decoders registered or removed since: used once, never kept.
            if made_with and made_with != self.type_decoders.state():
                return
            if len(kept) >= _MOST_DECODERS:
                kept.clear()
            kept[key] = value

    def explain_flow(self, sql: str) -> Flow[Explained]:
        return Explained(mapping((yield ("PGCACHE.EXPLAIN", sql, *self.sourced))))

    def decoder_flow(
        self,
        sql: str,
        factory: RowFactory,
        as_text: frozenset[str] = frozenset(),
        exact: bool = False,
        typed: bool = True,
    ) -> Flow[_decode.Decoder]:
        """The decoder of ``sql``'s answers into ``factory``'s rows (the types in
        ``as_text`` as text; ``exact``: see ``_decode.converter``; ``typed``: the application's
        type decoders apply): kept, else made from what EXPLAIN says of its columns."""
        self._decoders_current()
        plain = not as_text and not exact and typed
        key = (sql, factory) if plain else (sql, factory, as_text, exact, typed)
        decoder = self._decoders.get(key)
        if decoder is None:
            explained = yield from self.explain_flow(sql)
            handlers, handled = self._handlers(explained) if typed else ([], ())
            decoder = _decode.Decoder(explained.columns, factory, as_text, exact, handlers, handled)
            decoder.explained = explained
            # A statement refused now may be admitted later (the allowlist): not kept.
            if explained.cacheable:
                self._keep(self._decoders, key, decoder, handled)
        return decoder

    def query_command(
        self,
        sql: str,
        params: Sequence[Any],
        ttl: int | None,
        after: str | None,
        maxstale: int | None,
        tags: Tags = None,
    ) -> tuple:
        """PGCACHE.QUERY's arguments, a None parameter written into the statement as
        ``NULL`` (``nulls_written``: the statement sent is ``command[1]``); a parameter that
        cannot be sent raises here, before anything is sent."""
        sql, params = nulls_written(sql, params)
        args = [sql, len(params), *(param_text(p) for p in params)]
        return (
            "PGCACHE.QUERY",
            *args,
            *options(ttl=ttl, after=after, maxstale=maxstale),
            *self.sourced,
            *tag_args(tags),
        )

    def get_flow(
        self,
        sql: str,
        params: Sequence[Any],
        ttl: int | None,
        after: str | None,
        maxstale: int | None,
        row_factory: RowFactory | None,
        tags: Tags = None,
    ) -> Flow[list[Any]]:
        command = self.query_command(sql, params, ttl, after, maxstale, tags)
        decoder = yield from self.decoder_flow(command[1], row_factory or self.row_factory)
        return (yield from self._answer(decoder, command, command[2]))

    def kept(self, sql: str, params: Sequence[Any], factory: RowFactory) -> list[Any] | None:
        """The rows the local cache keeps for ``sql`` with ``params``, made by ``factory``;
        None where it keeps none (the call then goes to pgcache, as a flow)."""
        sql, params = nulls_written(sql, params)
        self._decoders_current()
        decoder = self._decoders.get((sql, factory))
        if decoder is None or self.local is None:
            return None
        kept = self.local.get((sql, len(params), *(param_text(p) for p in params)))
        return None if kept is None else decoder.made(kept)

    def _answer(self, decoder: _decode.Decoder, command: tuple, nparams: int) -> Flow[list[Any]]:
        """The rows of ``command`` (a QUERY): from the process where its local cache keeps
        them (plain calls only: an AFTER, a TTL or a MAXSTALE goes to pgcache), else asked."""
        local = self.local
        explained = decoder.explained
        if local is None or explained is None or len(command) != 3 + nparams:
            return decoder.rows(text((yield command)))
        key = command[1:]
        kept = local.get(key)
        made = None if kept is None else decoder.made(kept)
        if made is not None:
            return made
        plan = local.plan(explained.statement) if explained.statement else None
        # WITHKEY: under which key pgcache holds the answer, over which generations.
        answer, held_by, generations = yield (*command, "WITHKEY")
        values = decoder.values(text(answer))
        if held_by is None:
            return decoder.rows_of(values)
        held_by, generations = text(held_by), [text(g) for g in generations]
        if plan is not None:
            kept = local.keep(key, plan, held_by, generations, values, decoder.shape)
            if kept is not None:
                local.learn(held_by, generations)
                return decoder.made(kept) or []
        local.learn(held_by, generations)
        return decoder.rows_of(values)

    def query_flow(
        self,
        sql: str,
        params: Sequence[Any],
        ttl: int | None,
        after: str | None,
        maxstale: int | None,
        as_text: frozenset[str] = frozenset(),
        tags: Tags = None,
    ) -> Flow[tuple[list[tuple[str, str]], list[tuple[Any, ...]]]]:
        command = self.query_command(sql, params, ttl, after, maxstale, tags)
        # A driver's rows: no type decoder of the application's (the ORM integrations and
        # frames read these, and their values are the drivers').
        decoder = yield from self.decoder_flow(
            command[1], tuple_row, as_text, exact=True, typed=False
        )
        rows = yield from self._answer(decoder, command, command[2])
        return list(zip(decoder.names, decoder.types)), rows

    def read_flow(
        self,
        command: str,
        table: str,
        keys: str,
        ttl: int | None,
        after: str | None,
        maxstale: int | None,
        tags: Tags = None,
    ) -> Flow[Any]:
        self._decoders_current()
        decoder = self._tables.get(table)
        if decoder is None:
            # A row is what `SELECT * FROM <table>` returns: its columns are the table's.
            explained = yield from self.explain_flow(f"SELECT * FROM {table}")
            # Kept even where QUERY refuses `SELECT *` of the table (its rows then come as
            # parsed): READ may still serve it, and must not ask again at each call.
            handlers, handled = self._handlers(explained)
            decoder = _decode.TableDecoder(explained.columns, handlers)
            self._keep(self._tables, table, decoder, handled)
        args: list[Any] = [table, keys]
        if ttl is not None:
            args.append(ttl)
        args += options(after=after, maxstale=maxstale)
        reply = yield (command, *args, *self.sourced, *tag_args(tags))
        if command == "PGCACHE.MULTIREAD":
            return [None if r is None else decoder.row(text(r)) for r in reply]
        return None if reply is None else decoder.row(text(reply))

    @staticmethod
    def pk(pk: Mapping[str, Any]) -> str:
        return pk_json(pk)

    @staticmethod
    def pks(pks: Sequence[Mapping[str, Any]]) -> str:
        return "[" + ",".join(pk_json(pk) for pk in pks) + "]"

    def write_args(
        self,
        table: str,
        pk: Mapping[str, Any],
        row: Mapping[str, Any],
        ttl: int | None,
        tags: Tags = None,
    ) -> tuple:
        args: list[Any] = ["PGCACHE.WRITE", table, pk_json(pk), json.dumps(row, default=str)]
        if ttl is not None:
            args.append(ttl)
        return (*args, *self.sourced, *tag_args(tags))

    @staticmethod
    def invalidate_tags_args(tags: Tags) -> tuple:
        args = tag_args(tags)
        if not args:
            raise ValueError("invalidate_tags needs at least one tag")
        return ("PGCACHE.INVALIDATE", *args)

    @staticmethod
    def dropped(reply: Any) -> int:
        """INVALIDATE TAG's count; on a cluster, the sum of every primary's."""
        if isinstance(reply, dict):
            return sum(int(n) for n in reply.values())
        return int(reply)

    @staticmethod
    def queries_of(reply: Any) -> list[dict[str, Any]]:
        return [mapping(line) for line in reply]
