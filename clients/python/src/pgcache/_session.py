"""The application connection's session settings, where a value's meaning depends on them
(issue #51, items 13 and 14): a statement is answered as that session would have been
answered, or runs on the database.

TimeZone. pgcache reads parameters and writes timestamptz values in its own sessions'
TimeZone, which need not be the application's (Django sets its connections' to
``TIME_ZONE`` when ``USE_TZ`` is off). Neither depends on it once made absolute: a naive
``datetime`` parameter is sent with the offset the application's zone gives it (PostgreSQL
reads a timestamptz from that exactly, and a timestamp or a date ignoring the offset, as it
would have read the naive value), and a timestamptz value (an instant) is shown in the
application's zone as its driver shows it. A naive datetime that is ambiguous or skipped
in that zone (a DST change), which Python and PostgreSQL may resolve differently, runs on
the database. Python's zone rules (``zoneinfo``, the system's tz database) are taken to be
PostgreSQL's, as in a PostgreSQL built with the system's (Debian's and PGDG's packages).

DateStyle and IntervalStyle. The client writes dates and times in ISO 8601, which every
DateStyle reads alike; but a string parameter may be a date whose fields the application's
session orders otherwise than pgcache's (``DateStyle`` ``ISO, MDY``, ``src/pg/settings.rs``),
and an interval (a string, or a ``timedelta`` the client writes ``-1 days 3600 seconds``)
reads otherwise under ``IntervalStyle`` ``sql_standard`` (a leading sign for every field)
than under pgcache's ``postgres``. Where the session's field order or interval style is not
pgcache's, a statement with such a parameter runs on the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SessionDiffers(Exception):
    """A read whose parameters or values pgcache's session would give another meaning than
    the application's: it runs on the database. Not remembered as a refusal: the next call
    (other parameters, another connection) may be answered."""


def setting(conn: Any, name: str) -> str:
    """A setting of a psycopg 3 or psycopg2 connection's session, as the server last
    reported it (no round trip: PostgreSQL reports these whenever they change)."""
    conn = getattr(conn, "driver_connection", conn)
    info = getattr(conn, "info", None)
    if hasattr(info, "parameter_status"):
        value = info.parameter_status(name)  # psycopg 3: bytes
    else:
        value = conn.get_parameter_status(name)  # psycopg2: str
    if isinstance(value, bytes):
        value = value.decode()
    if not value:
        raise SessionDiffers(f"the connection reports no {name}")
    return str(value)


# How pgcache's sessions read a date's fields and an interval given as text.
_DATE_ORDER = "MDY"
_INTERVAL_STYLE = "postgres"


def check_styles(conn: Any, params: Sequence[Any]) -> None:
    """Raises ``SessionDiffers`` where a string or a ``timedelta`` among ``params`` (or in
    a list of them) may be read otherwise by ``conn``'s session than by pgcache's."""
    if not any(_styled(v) for v in params):
        return
    order = setting(conn, "DateStyle").rpartition(",")[2].strip()
    style = setting(conn, "IntervalStyle")
    if order != _DATE_ORDER or style != _INTERVAL_STYLE:
        raise SessionDiffers(
            f"the connection reads dates {order} and intervals {style}, pgcache "
            f"{_DATE_ORDER} and {_INTERVAL_STYLE}: a string parameter may mean another value"
        )


def _styled(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_styled(v) for v in value)
    return isinstance(value, (str, timedelta))


def zone(conn: Any) -> tzinfo:
    """The connection's TimeZone as a ``tzinfo``; a zone Python does not know (a POSIX
    specification such as ``<+03>-03``) runs on the database."""
    name = setting(conn, "TimeZone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SessionDiffers(f"TimeZone {name!r} is not one Python knows") from None


def localized(params: Sequence[Any], where: tzinfo) -> list[Any]:
    """``params`` with each naive ``datetime`` made aware in ``where``, as PostgreSQL reads
    it in a session of that TimeZone."""
    return [_aware(value, where) if _naive(value) else value for value in params]


def _naive(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is None


def _aware(value: datetime, where: tzinfo) -> datetime:
    earlier, later = value.replace(tzinfo=where, fold=0), value.replace(tzinfo=where, fold=1)
    if earlier.utcoffset() != later.utcoffset():
        raise SessionDiffers(f"{value.isoformat()} is ambiguous or skipped in TimeZone {where}")
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
