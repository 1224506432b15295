"""pgcache's events (the ``pg_cache_events`` channel by default) as typed values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._replies import text

DEFAULT_CHANNEL = "pg_cache_events"


@dataclass(frozen=True)
class Event:
    """One event: ``type`` (``cache_miss``, ``cache_invalidate``, ``query_invalidated``...),
    the ``table``, the ``key`` as sent (a canonical primary key, or for
    ``query_invalidated`` the statement), when it happened, and the type's own fields
    (``command``, ``error``, ``duration_us``, ``count``...) in ``extra``."""

    type: str
    table: str
    key: str
    timestamp: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pk(self) -> dict[str, Any] | None:
        """The row's primary key as a dict, for the events of a row."""
        if not self.key.startswith("{"):
            return None
        try:
            value = json.loads(self.key)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def parse_event(message: str | bytes) -> Event:
    """An event from its JSON text, as pgcache publishes it."""
    fields = json.loads(text(message))
    return Event(
        type=fields.pop("type"),
        table=fields.pop("table", ""),
        key=fields.pop("key", ""),
        timestamp=datetime.fromtimestamp(fields.pop("timestamp", 0) / 1000, tz=timezone.utc),
        extra=fields,
    )


def events(
    redis_client: Any, channel: str = DEFAULT_CHANNEL, *, poll_seconds: float = 1.0
) -> Iterator[Event]:
    """Yields each event published on ``channel`` from now on (the ``event_channel``
    setting), until the iterator is closed (``break`` out of the loop)."""
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    try:
        while True:
            message = pubsub.get_message(timeout=poll_seconds)
            if message is not None and message.get("type") == "message":
                yield parse_event(message["data"])
    finally:
        pubsub.close()
