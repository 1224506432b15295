"""The RESP3 replies of one connection the client drives itself (the local cache's tracking
connection: it reads pushes and replies as they come, which redis-py's connections leave to
version-dependent internals)."""

from __future__ import annotations

from typing import Any, BinaryIO


class Push(list):  # type: ignore[type-arg]
    """A push message (``>``): the server's own, not a reply."""


class ErrorReply(Exception):
    """An error reply (``-``)."""


def command(*args: Any) -> bytes:
    """``args`` as a RESP command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read(stream: BinaryIO) -> Any:
    """One reply or push from ``stream``: strings as bytes, maps as dicts; an error reply
    comes back as an ``ErrorReply`` (not raised: the caller decides whose it is)."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("pgcache: the connection closed")
    kind, body = line[:1], line[1:-2]
    if kind in (b"+", b"("):
        return body
    if kind == b"-":
        return ErrorReply(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b",":
        return float(body)
    if kind == b"#":
        return body == b"t"
    if kind == b"_":
        return None
    if kind in (b"$", b"="):
        size = int(body)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("pgcache: the connection closed")
        return data[:-2] if kind == b"$" else data[4:-2]  # verbatim: "txt:" first
    if kind in (b"*", b"~", b">"):
        size = int(body)
        if size < 0:
            return None
        items = [read(stream) for _ in range(size)]
        return Push(items) if kind == b">" else items
    if kind == b"%":
        return {read(stream): read(stream) for _ in range(int(body))}
    if kind == b"|":  # attributes: read and dropped, the reply follows
        for _ in range(2 * int(body)):
            read(stream)
        return read(stream)
    raise ConnectionError(f"pgcache: unexpected reply {line[:40]!r}")
