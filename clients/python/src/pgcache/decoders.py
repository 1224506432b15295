"""Decoders of PostgreSQL types of your own: a function per type, by name or oid.

pgcache decodes the types PostgreSQL ships (``numeric`` as ``Decimal``, ``timestamptz`` as
an aware ``datetime``, a composite as a ``dict`` ...); a type of an application's own (a
PostGIS geometry, a composite, a domain) comes as pgcache decodes what PostgreSQL's JSON makes
of it. A decoder turns that value into the application's::

    pgcache.register_decoder("point3", lambda v: Point3(**v))

applies to every column of type ``point3``, to arrays of it (each element) and to domains over
it (a decoder of the domain itself, or of a higher priority, wins). A type is named as
``pg_type`` names it (``int4``, ``geo_point``; no schema: the name matches in every schema, an
oid only its own type). A domain is known for a column read from a table or view; an
expression's (a cast to the domain, a function's result) is its base type; a domain over an
array type is not one a decoder applies to (its elements' type is). A decoder receives the value
as pgcache would return it without one (never ``None``: a NULL stays ``None``).

Decoders registered here apply to every manager; a manager's own (``cache.register_decoder``)
apply to it alone and win over these at the same priority. Between several decoders that
match one column: the highest ``priority``, then the one of the type nearest the column's
own (a domain's before its base type's), then the manager's, then the newest.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Decode = Callable[[Any], Any]

_ORDER = itertools.count()


@dataclass(frozen=True)
class Registered:
    """One decoder: the type it decodes (a ``pg_type`` name, or an oid), the function, its
    priority, and where it was registered (``"global"`` or ``"manager"``)."""

    type: str | int
    decode: Decode
    priority: int
    scope: str
    order: int


def _checked_type(type_name_or_oid: str | int) -> str | int:
    if isinstance(type_name_or_oid, bool) or not isinstance(type_name_or_oid, (str, int)):
        raise TypeError(
            f"pgcache: a decoder's type is a type name or an oid, not {type_name_or_oid!r}"
        )
    if isinstance(type_name_or_oid, int):
        if type_name_or_oid <= 0:
            raise ValueError(f"pgcache: {type_name_or_oid} is no type oid")
        return type_name_or_oid
    name = type_name_or_oid.strip()
    if not name or name.endswith("[]"):
        raise ValueError(
            f"pgcache: {type_name_or_oid!r} cannot name a decoder's type: give the element's "
            "type (a decoder of a type applies to arrays of it)"
        )
    if "." in name or " " in name:
        raise ValueError(
            f"pgcache: {type_name_or_oid!r} cannot name a decoder's type: give its pg_type "
            "name alone (geo_point, int4, not public.geo_point or integer), or its oid to "
            "tell apart types of one name in two schemas"
        )
    return name


class Decoders:
    """A set of decoders (the process's, or one manager's on top of it: ``parent``)."""

    def __init__(self, scope: str, parent: Decoders | None = None) -> None:
        self._scope = scope
        self._parent = parent
        self._entries: list[Registered] = []
        self._lock = threading.Lock()
        self._version = 0

    def register(self, type_name_or_oid: str | int, decode: Decode, priority: int = 0) -> None:
        """Decodes columns of the type (and arrays of it, and domains over it) with
        ``decode``. The same function registered again for the type takes the new priority."""
        if not callable(decode):
            raise TypeError(f"pgcache: a decoder is a function, not {decode!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"pgcache: a decoder's priority is an int, not {priority!r}")
        type_ = _checked_type(type_name_or_oid)
        entry = Registered(type_, decode, priority, self._scope, next(_ORDER))
        with self._lock:
            self._entries = [
                e for e in self._entries if not (e.type == type_ and e.decode == decode)
            ] + [entry]
            self._version += 1

    def unregister(self, type_name_or_oid: str | int, decode: Decode | None = None) -> bool:
        """Removes the type's decoders (only ``decode`` when given); whether any was."""
        type_ = _checked_type(type_name_or_oid)
        with self._lock:
            kept = [
                e
                for e in self._entries
                if not (e.type == type_ and (decode is None or e.decode == decode))
            ]
            removed = len(kept) != len(self._entries)
            if removed:
                self._entries = kept
                self._version += 1
        return removed

    def listed(self) -> list[Registered]:
        """Every decoder that applies here (a manager's and the process's), the ones that
        win first."""
        entries = list(self._entries)
        if self._parent is not None:
            entries += self._parent.listed()
        return sorted(entries, key=lambda e: (-e.priority, e.scope != "manager", -e.order))

    def state(self) -> tuple[int, ...]:
        """Changes whenever what applies here changes (what was decoded before is stale)."""
        own = (id(self), self._version)
        return own if self._parent is None else own + self._parent.state()

    def choose(self, types: Sequence[tuple[str, int]]) -> Decode | None:
        """The decoder of a column of ``types`` (EXPLAIN's ``column_types``: its own type,
        then each domain's base), or None."""
        if not types:
            return None
        best: tuple[Any, ...] | None = None
        chosen: Decode | None = None
        for entry in self.listed():
            for nearness, (name, oid) in enumerate(types):
                if entry.type == name or entry.type == oid:
                    rank = (entry.priority, -nearness, entry.scope == "manager", entry.order)
                    if best is None or rank > best:
                        best, chosen = rank, entry.decode
                    break
        return chosen


DECODERS = Decoders("global")


def register_decoder(type_name_or_oid: str | int, decode: Decode, priority: int = 0) -> None:
    """Decodes columns of the type (arrays of it, domains over it) with ``decode``, for every
    manager of this process."""
    DECODERS.register(type_name_or_oid, decode, priority)


def unregister_decoder(type_name_or_oid: str | int, decode: Decode | None = None) -> bool:
    """Removes the process's decoders of the type (only ``decode`` when given)."""
    return DECODERS.unregister(type_name_or_oid, decode)


def list_decoders() -> list[Registered]:
    """The process's decoders, the ones that win first."""
    return DECODERS.listed()
