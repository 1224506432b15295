"""The application connection's TimeZone, where a value's meaning depends on it (issue #51,
items 13 and 14).

pgcache reads parameters and writes timestamptz values in its own sessions' TimeZone, which
need not be the application's (Django sets its connections' to ``TIME_ZONE`` when
``USE_TZ`` is off). Neither depends on it once made absolute: a naive ``datetime`` parameter
is sent with the offset the application's zone gives it (PostgreSQL reads a timestamptz
from that exactly, and a timestamp or a date ignoring the offset, as it would have read the
naive value), and a timestamptz value (an instant) is shown in the application's zone as
its driver shows it. A naive time that is ambiguous or skipped in that zone (a DST change),
which Python and PostgreSQL may resolve differently, is refused (the read then runs on the
database). Python's zone rules (``zoneinfo``, the system's tz database) are taken to be
PostgreSQL's, as in a PostgreSQL built with the system's (Debian's and PGDG's packages).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._fallback import Refusal


def zone_name(conn: Any) -> str:
    """The TimeZone of a psycopg 3 or psycopg2 connection, as the server last reported it
    (no round trip)."""
    conn = getattr(conn, "driver_connection", conn)
    info = getattr(conn, "info", None)
    if hasattr(info, "parameter_status"):
        name = info.parameter_status("TimeZone")  # psycopg 3: bytes
    else:
        name = conn.get_parameter_status("TimeZone")  # psycopg2: str
    if isinstance(name, bytes):
        name = name.decode()
    if not name:
        raise Refusal("the connection reports no TimeZone")
    return str(name)


def zone(conn: Any) -> tzinfo:
    """The connection's TimeZone as a ``tzinfo``; a zone Python does not know (a POSIX
    specification such as ``<+03>-03``) is refused."""
    name = zone_name(conn)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Refusal(f"TimeZone {name!r} is not one Python knows") from None


def localized(params: Sequence[Any], where: tzinfo) -> list[Any]:
    """``params`` with each naive ``datetime`` made aware in ``where``, as PostgreSQL reads
    it in a session of that TimeZone."""
    return [_aware(value, where) if _naive(value) else value for value in params]


def _naive(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is None


def _aware(value: datetime, where: tzinfo) -> datetime:
    earlier, later = value.replace(tzinfo=where, fold=0), value.replace(tzinfo=where, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        raise Refusal(f"{value.isoformat()} is ambiguous or skipped in TimeZone {where}")
    return earlier


def shown_in(where: tzinfo) -> Callable[[datetime], datetime]:
    """A timestamptz value as psycopg 3 shows it: in the connection's zone."""
    return lambda value: value.astimezone(where)


def fixed_offset_in(where: tzinfo) -> Callable[[datetime], datetime]:
    """As psycopg2 shows it: at the offset the connection's zone has then, a fixed one."""

    def shown(value: datetime) -> datetime:
        local = value.astimezone(where)
        offset = local.utcoffset()
        return local.replace(tzinfo=timezone(offset) if offset is not None else None)

    return shown


def wall_clock_in(where: tzinfo, label: tzinfo | None) -> Callable[[datetime], datetime]:
    """As Django shows it: the wall-clock time in the connection's zone, labelled with
    Django's zone (``connection.timezone``: UTC, or None with ``USE_TZ`` off: naive)."""
    return lambda value: value.astimezone(where).replace(tzinfo=label)
