"""Replies as Python values, whether the client decodes them (``decode_responses``) or not,
under RESP2 or RESP3."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
