"""``load_pgcache_module``: loads pgcache into a running Redis or Valkey (MODULE LOAD)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Union

from ._cluster import ClusterClient, is_cluster
from ._flows import Flow, run
from ._replies import plain, text

PgConfig = Union[Mapping[str, Any], str]

# The keys of a psycopg-style config dict, by the pgcache setting each is.
_ALIASES = {
    "host": "pg_host",
    "port": "pg_port",
    "database": "pg_database",
    "dbname": "pg_database",
    "user": "pg_user",
    "password": "pg_password",
    "sslmode": "pg_sslmode",
    "sslrootcert": "pg_sslrootcert",
    "passfile": "pg_passfile",
    "url": "pg_url",
}

# Settings whose values an error must not show.
_SECRET = {"pg_password", "pg_url"}


class ModuleLoadError(Exception):
    """The server refused to load pgcache, or it is loaded with other settings."""


def settings(pg_config: PgConfig) -> dict[str, str]:
    """pgcache's settings from ``pg_config``: a dict with ``host``, ``port``,
    ``database`` (or ``dbname``), ``user``, ``password`` and any pgcache setting by its
    name, or a libpq URL / conninfo string."""
    if isinstance(pg_config, str):
        return {"pg_url": pg_config}
    out: dict[str, str] = {}
    for key, value in pg_config.items():
        if value is None:
            continue
        name = _ALIASES.get(key, key)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        out[name] = str(value)
    return out


Sources = Mapping[str, PgConfig]


def source_command(
    verb: str, name: str, pg_config: PgConfig | None, overrides: Mapping[str, Any]
) -> list[str]:
    """``PGCACHE.SOURCE <verb> <name> setting value ...``: the settings of ``pg_config`` (as
    ``load_pgcache_module`` takes it), then ``overrides`` (pgcache's settings by name)."""
    pairs = {**settings(pg_config or {}), **settings(overrides)}
    url = pairs.get("pg_url", "")
    if "pg_password" in pairs or "password=" in url or re.match(r"^\w+://[^/@]*:[^/@]*@", url):
        # Refused here, so the password never reaches the server's MONITOR or SLOWLOG.
        raise ValueError(
            f"source {name}: a password is never sent with PGCACHE.SOURCE (the server saves "
            f"sources in redis.conf): give it in redis-server's environment as "
            f"PGCACHE_{name.upper()}_PG_PASSWORD, or in a passfile"
        )
    return ["PGCACHE.SOURCE", verb, name, *(word for pair in pairs.items() for word in pair)]


def load_pgcache_module(
    redis_client: Any,
    pg_config: PgConfig,
    module_path: str | None = None,
    *,
    sources: Sources | None = None,
) -> bool:
    """Loads pgcache into the server ``redis_client`` talks to with the settings of
    ``pg_config``; the library is at ``module_path``, else at ``$PGCACHE_MODULE``. Returns
    False when pgcache was already loaded with the same settings (nothing done), True when
    it was loaded now. On a ``RedisCluster``, every node (True when loaded on any).
    ``sources`` (``{"analytics": {...}}``, each a ``pg_config``) are the databases served
    besides ``pg_config``'s, each a ``source <name> ...`` block (see ``PGCacheManager``'s
    ``source``); without ``sources``, whatever sources pgcache was loaded with are left
    unjudged. ``aio.load_pgcache_module`` is the same for ``redis.asyncio``."""
    if is_cluster(redis_client):
        nodes = ClusterClient(redis_client).nodes()
        return any([run(node, load_flow(pg_config, module_path, sources)) for node in nodes])
    return run(redis_client, load_flow(pg_config, module_path, sources))


def load_flow(
    pg_config: PgConfig, module_path: str | None, sources: Sources | None = None
) -> Flow[bool]:
    wanted = settings(pg_config)
    wanted_sources = {name: settings(config) for name, config in (sources or {}).items()}
    loaded = yield from _loaded_args()
    if loaded is not None:
        loaded_with, loaded_sources = loaded
        differing = yield from _differing(loaded_with, wanted)
        if sources is not None:
            differing += _differing_sources(loaded_sources, wanted_sources)
        if differing:
            raise ModuleLoadError(
                "pgcache: already loaded with other settings ("
                + "; ".join(differing)
                + "): MODULE UNLOAD pgcache first, or CONFIG SET what may change at run time"
            )
        return False
    path = module_path or os.environ.get("PGCACHE_MODULE")
    if not path:
        raise ModuleLoadError(
            "pgcache: no module path: pass module_path or set PGCACHE_MODULE to the path of "
            "libpgcache.so"
        )
    args: list[str] = []
    for name, value in wanted.items():
        args += [name, value]
    for source, configured in wanted_sources.items():
        args += ["source", source]
        for name, value in configured.items():
            args += [name, value]
    try:
        yield ("MODULE", "LOAD", path, *args)
    except Exception as error:  # redis-py raises ResponseError; clusters may wrap it.
        message = str(error)
        for secret in [
            given.get(name) for given in (wanted, *wanted_sources.values()) for name in _SECRET
        ]:
            if secret:
                message = message.replace(secret, "***")
        raise ModuleLoadError(
            f"pgcache: the server refused MODULE LOAD {path}: {message} (the server's log "
            "says why; the server must allow MODULE LOAD: enable-module-command yes)"
        ) from None
    return True


Loaded = tuple[dict[str, str], dict[str, dict[str, str]]]


def _loaded_args() -> Flow[Loaded | None]:
    """The arguments pgcache was loaded with (MODULE LIST): the default source's and each
    ``source`` block's, by name; None when it is not loaded."""
    for module in (yield ("MODULE", "LIST")):
        entry = plain(module if isinstance(module, dict) else dict(zip(module[::2], module[1::2])))
        entry = {text(k): v for k, v in entry.items()}
        if entry.get("name") == "pgcache":
            return _blocks([str(a) for a in entry.get("args") or []])
    return None


def _blocks(args: list[str]) -> Loaded:
    """Module arguments as the default source's settings and each block's: ``source
    <name>`` starts a block wherever a setting's name is due."""
    default: dict[str, str] = {}
    blocks: dict[str, dict[str, str]] = {}
    into = default
    for name, value in zip(args[::2], args[1::2]):
        if name == "source":
            into = blocks.setdefault(value, {})
        else:
            into[name] = value
    return default, blocks


def _differing_sources(
    loaded: Mapping[str, Mapping[str, str]], wanted: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """How the sources loaded differ from those wanted (a named source's values are its
    block's: CONFIG GET reads the default source's)."""
    differing = []
    for source in sorted(set(loaded) | set(wanted)):
        if source not in wanted:
            differing.append(f"source {source} is served, and not wanted")
        elif source not in loaded:
            differing.append(f"source {source} is not served")
        else:
            for name, value in wanted[source].items():
                current = loaded[source].get(name)
                if current != value:
                    shown = "differs" if name in _SECRET else f"is {current!r}, not {value!r}"
                    differing.append(f"source {source}: {name} {shown}")
    return differing


def _differing(loaded_with: Mapping[str, str], wanted: Mapping[str, str]) -> Flow[list[str]]:
    differing = []
    for name, value in wanted.items():
        current = loaded_with.get(name)
        if current is None:
            # Not among the load arguments: a setting that may change at run time has its
            # value in CONFIG GET.
            reply = plain((yield ("CONFIG", "GET", f"pgcache.{name}")))
            pairs = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))
            current = pairs.get(f"pgcache.{name}")
        if current != value:
            if name in _SECRET:
                differing.append(f"{name} differs")
            else:
                differing.append(f"{name} is {current!r}, not {value!r}")
    return differing
