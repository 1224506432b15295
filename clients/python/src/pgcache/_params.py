"""Python values as pgcache takes them: QUERY parameters as the text PostgreSQL's input of
the parameter's type reads, primary keys as JSON objects."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID


def param_text(value: Any) -> str:
    """How a Python value is sent as a QUERY parameter: the text PostgreSQL's input of the
    parameter's type reads (a None is written into the statement instead: ``nulls_written``)."""
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
    if isinstance(value, _IP_TYPES):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        if isinstance(value, (list, tuple)) and not any(
            isinstance(v, (dict, list, tuple)) for v in value
        ):
            return _array_text(value)
        return json.dumps(value, default=str)
    wrapped = _driver_json(value)
    if wrapped is not None:
        return wrapped
    raise TypeError(
        f"pgcache: cannot send a {type(value).__name__} as a QUERY parameter; pass the text "
        "PostgreSQL's input of the parameter's type reads"
    )


_IP_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


def _driver_json(value: Any) -> str | None:
    """The text of a driver's parameter wrapper, as the driver would send it: psycopg's
    ``Json``/``Jsonb`` (``obj`` and its ``dumps``), psycopg2's ``Json`` (``adapted`` and
    ``dumps``) and ``Inet`` (``addr``), and their subclasses (Django's psycopg2 ``Jsonb``);
    None for anything else. Told apart by module, so neither driver is imported."""
    for kind in type(value).__mro__:
        if kind.__module__ == "psycopg.types.json":
            dumps = value.dumps or json.dumps
            return _text(dumps(value.obj))
        if kind.__module__ == "psycopg2._json":
            return _text(value.dumps(value.adapted))
        if (kind.__module__, kind.__name__) == ("psycopg2.extras", "Inet"):
            return str(value.addr)
    return None


def _text(dumped: str | bytes) -> str:
    # psycopg's dumps may return bytes (orjson's, say).
    return dumped.decode() if isinstance(dumped, bytes) else dumped


def _array_text(values: Sequence[Any]) -> str:
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        else:
            item = param_text(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{item}"')
    return "{" + ",".join(items) + "}"


def pk_json(pk: Mapping[str, Any]) -> str:
    """A primary key (a dict of its columns) as READ takes it."""
    if not isinstance(pk, Mapping):
        raise TypeError("pgcache: a primary key is a dict of its columns, such as {'id': 7}")
    return json.dumps({k: _json_value(v) for k, v in pk.items()}, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return param_text(value)
