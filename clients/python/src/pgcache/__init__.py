"""pgcache for Python: the read-through cache of PostgreSQL rows and query results that
runs inside Redis or Valkey, through redis-py.

    from pgcache import load_pgcache_module, PGCacheManager
    load_pgcache_module(redis_client, pg_config)
    cache = PGCacheManager(redis_client, pg_config)
    result = cache.get("SELECT * FROM users WHERE id = ?", [user_id])
"""

from ._flows import Explained
from ._local import LocalCache
from .aio import AsyncPGCacheManager
from .client import PGCacheManager
from .decoders import list_decoders, register_decoder, unregister_decoder
from .events import Event, events
from .loader import ModuleLoadError, load_pgcache_module
from .rows import class_row, dict_row, namedtuple_row, tuple_row
from .writes import ReadYourWrites

__all__ = [
    "AsyncPGCacheManager",
    "Event",
    "Explained",
    "LocalCache",
    "ModuleLoadError",
    "PGCacheManager",
    "ReadYourWrites",
    "class_row",
    "dict_row",
    "events",
    "list_decoders",
    "load_pgcache_module",
    "namedtuple_row",
    "register_decoder",
    "tuple_row",
    "unregister_decoder",
]

__version__ = "0.1.0"
