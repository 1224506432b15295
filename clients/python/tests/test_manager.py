"""PGCacheManager's calls against the real server: each with Python values in and out."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
import redis
from servers import Postgres, Server, module_path, wait_for

from pgcache import (
    ModuleLoadError,
    PGCacheManager,
    class_row,
    load_pgcache_module,
    namedtuple_row,
    tuple_row,
)


@pytest.fixture(scope="module")
def shop(pg: Postgres) -> Postgres:
    pg.execute(
        """
        CREATE TABLE shop_users (id integer PRIMARY KEY, name text NOT NULL);
        CREATE TABLE shop_orders (
            id integer PRIMARY KEY, user_id integer REFERENCES shop_users, total numeric(10, 2)
        );
        INSERT INTO shop_users VALUES (1, 'ann'), (2, 'bob');
        INSERT INTO shop_orders VALUES (10, 1, 9.99), (11, 1, 20.00), (12, 2, 5.50);
        """
    )
    return pg


def test_get_answers_typed_rows_with_either_placeholder(
    shop: Postgres, cache: PGCacheManager
) -> None:
    by_dollar = cache.get("SELECT id, total FROM shop_orders WHERE user_id = $1 ORDER BY id", [1])
    assert by_dollar == [
        {"id": 10, "total": Decimal("9.99")},
        {"id": 11, "total": Decimal("20.00")},
    ]
    by_question = cache.get("SELECT id, total FROM shop_orders WHERE user_id = ? ORDER BY id", (1,))
    assert by_question == by_dollar
    assert cache.get("SELECT id FROM shop_orders WHERE user_id = $1", [99]) == []


def test_rows_take_the_shape_the_row_factory_gives(shop: Postgres, server: Server) -> None:
    sql = (
        "SELECT o.id, u.id, u.name FROM shop_orders o JOIN shop_users u ON u.id = o.user_id "
        "WHERE o.id = $1"
    )
    assert PGCacheManager(server.client(), row_factory=tuple_row).get(sql, [12]) == [(12, 2, "bob")]
    (named,) = PGCacheManager(server.client(), row_factory=namedtuple_row).get(sql, [12])
    assert named == (12, 2, "bob") and named.name == "bob"

    @dataclasses.dataclass
    class Order:
        id: int
        total: Decimal

    (order,) = PGCacheManager(server.client()).get(
        "SELECT id, total FROM shop_orders WHERE id = $1", [10], row_factory=class_row(Order)
    )
    assert order == Order(10, Decimal("9.99"))


def test_explain_says_what_pgcache_makes_of_a_statement(
    shop: Postgres, cache: PGCacheManager
) -> None:
    explained = cache.explain("SELECT id, total FROM shop_orders WHERE user_id = $1")
    assert explained.cacheable
    assert explained.tables == ["shop_orders"]
    assert explained.parameters == ["integer"]
    assert explained.columns == [("id", "int4"), ("total", "numeric")]
    refused = cache.explain("SELECT now()")
    assert not refused.cacheable and "STABLE" in (refused.reason or "")


def test_a_refused_statement_is_an_error_that_says_why(
    shop: Postgres, cache: PGCacheManager
) -> None:
    with pytest.raises(redis.ResponseError, match="STABLE"):
        cache.get("SELECT id FROM shop_users WHERE id = $1 AND now() > now()", [1])


def test_a_none_parameter_is_read_as_null(shop: Postgres, cache: PGCacheManager) -> None:
    assert cache.get("SELECT id FROM shop_users WHERE id = $1", [None]) == []
    by_name = "SELECT id FROM shop_users WHERE name IS NOT DISTINCT FROM $1 OR id = $2"
    assert cache.get(by_name, [None, 2]) == [{"id": 2}]
    assert cache.get(by_name, ["ann", None]) == [{"id": 1}]
    assert cache.get("SELECT count(*) FROM shop_users WHERE coalesce(?, id) = ?", [None, 1]) == [
        {"count": 1}
    ]


def test_read_multiread_write_invalidate_and_flush(shop: Postgres, cache: PGCacheManager) -> None:
    assert cache.read("shop_users", {"id": 1}) == {"id": 1, "name": "ann"}
    assert cache.read("shop_users", {"id": 404}) is None
    assert cache.multiread("shop_users", [{"id": 2}, {"id": 404}, {"id": 1}]) == [
        {"id": 2, "name": "bob"},
        None,
        {"id": 1, "name": "ann"},
    ]
    assert cache.read("shop_orders", {"id": 11}) == {
        "id": 11,
        "user_id": 1,
        "total": Decimal("20.00"),
    }
    cache.write("shop_users", {"id": 1}, {"id": 1, "name": "written"})
    assert cache.read("shop_users", {"id": 1}) == {"id": 1, "name": "written"}
    cache.invalidate("shop_users", {"id": 1})
    assert cache.read("shop_users", {"id": 1}) == {"id": 1, "name": "ann"}
    cache.write("shop_users", {"id": 2}, {"id": 2, "name": "written"})
    cache.flush("shop_users")
    wait_for(
        "the flush to reach the row",
        lambda: cache.read("shop_users", {"id": 2}) == {"id": 2, "name": "bob"} or None,
    )
    assert cache.key("shop_users", {"id": 7}) == 'pg_cache:shop_users:{"id":7}'


def test_admin_calls_return_python_values(shop: Postgres, cache: PGCacheManager) -> None:
    cache.get("SELECT name FROM shop_users WHERE id = $1", [2])
    stats = cache.stats()
    assert isinstance(stats["hits"], int) and isinstance(stats["misses"], int)
    health = cache.health()
    assert health["status"] in ("ok", "degraded", "failing")
    statements = [q["statement"] for q in cache.queries()]
    assert any("shop_users" in s for s in statements)
    assert isinstance(cache.hooks(), list)


def test_replies_decoded_by_the_client_work_alike(shop: Postgres, server: Server) -> None:
    cache = PGCacheManager(server.client(decode_responses=True, protocol=3))
    assert cache.get("SELECT name FROM shop_users WHERE id = $1", [1]) == [{"name": "ann"}]
    assert cache.read("shop_users", {"id": 2}) == {"id": 2, "name": "bob"}
    assert cache.explain("SELECT name FROM shop_users WHERE id = $1").columns == [("name", "text")]
    assert isinstance(cache.stats()["hits"], int)


def test_load_pgcache_module_loads_once_and_refuses_other_settings(pg: Postgres) -> None:
    bare = Server(["--enable-module-command", "yes"])
    try:
        client = bare.client()
        assert load_pgcache_module(client, pg.config, module_path()) is True
        cache = PGCacheManager(client, pg.config, module_path=module_path())
        assert cache.get("SELECT 1 AS one") == [{"one": 1}]
        assert load_pgcache_module(client, pg.config, module_path()) is False
        other = dict(pg.config, port=1)
        with pytest.raises(ModuleLoadError, match="pg_port"):
            load_pgcache_module(client, other, module_path())
    finally:
        bare.stop()


def test_load_pgcache_module_says_why_the_server_refused(
    pg: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = Server(["--enable-module-command", "yes"])
    try:
        with pytest.raises(ModuleLoadError, match="refused MODULE LOAD"):
            load_pgcache_module(bare.client(), dict(pg.config, no_such_setting=1), module_path())
        monkeypatch.delenv("PGCACHE_MODULE", raising=False)
        with pytest.raises(ModuleLoadError, match="PGCACHE_MODULE"):
            load_pgcache_module(bare.client(), pg.config)
    finally:
        bare.stop()


def test_a_statement_refused_then_admitted_is_decoded(shop: Postgres, server: Server) -> None:
    cache = PGCacheManager(server.client())
    sql = "SELECT name FROM shop_users WHERE id = $1 AND name <> ''"
    server.client().config_set("pgcache.tables", "shop_orders")
    try:
        with pytest.raises(redis.ResponseError, match="allow"):
            cache.get(sql, [1])
    finally:
        server.client().config_set("pgcache.tables", "")
    assert cache.get(sql, [1]) == [{"name": "ann"}]


def test_tagged_entries_go_with_invalidate_tags(shop: Postgres, cache: PGCacheManager) -> None:
    sql = "SELECT name FROM shop_users WHERE id = $1"
    assert cache.get(sql, [1], tags="tenant:1") == [{"name": "ann"}]
    assert cache.read("shop_users", {"id": 2}, tags=["tenant:1", "plan"]) == {
        "id": 2,
        "name": "bob",
    }
    cache.write("shop_orders", {"id": 10}, {"id": 10, "total": 1}, tags=("tenant:1",))
    assert cache.read("shop_orders", {"id": 10})["total"] == 1
    # Another tag's entry stays.
    cache.read("shop_users", {"id": 1}, tags="tenant:2")
    assert cache.invalidate_tags("tenant:1") == 3
    assert cache.read("shop_orders", {"id": 10})["total"] == Decimal("9.99")
    assert cache.redis.exists('pg_cache:shop_users:{"id":1}') == 1
    assert cache.invalidate_tags("nobody", "plan") == 0
    with pytest.raises(ValueError, match="option words"):
        cache.read("shop_users", {"id": 1}, tags="TTL")
    with pytest.raises(ValueError, match="at least one tag"):
        cache.invalidate_tags()
