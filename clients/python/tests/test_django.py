"""Django: a small app whose QuerySets, read with ``.cached()``, return the same objects as
without it, before and after writes; queries pgcache refuses, and reads inside
``transaction.atomic()``, go to the database."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from fidelity import COLUMNS, create_sql, differences, outcome
from servers import Postgres, Server, pgcache_server, wait_for

from pgcache import PGCacheManager


@pytest.fixture(scope="module")
def shop(pg: Postgres, server: Server, django_configured: None):
    from django.db import connection
    from djangoapp.models import Author, Book, Tag

    from pgcache import django as pgcache_django

    with connection.schema_editor() as editor:
        for model in (Author, Tag, Book):
            editor.create_model(model)
    tags = [Tag.objects.create(name=f"tag{i}") for i in range(3)]
    for a in range(3):
        author = Author.objects.create(name=f"author{a}")
        for b in range(4):
            book = Book.objects.create(
                title=f"book{a}{b}",
                price=Decimal(f"{a}{b}.99"),
                published=datetime.datetime(2020, 1, b + 1, 12, tzinfo=datetime.timezone.utc),
                author=author,
            )
            book.tags.set(tags[: b % 4])
    for table in ("author", "book", "tag", "book_tags"):
        pg.execute(f"SELECT pgcache_watch('djangoapp_{table}')")
    cache = PGCacheManager(server.client())
    wait_for(
        "replication", lambda: cache.health().get("invalidation_source") == "replication" or None
    )
    pgcache_django.use_pgcache(cache)
    return Author, Book, Tag, pgcache_django.state


def fields(value):
    if isinstance(value, list):
        return [fields(v) for v in value]
    if hasattr(value, "_meta"):
        out = {f.attname: getattr(value, f.attname) for f in value._meta.concrete_fields}
        cache = value._state.fields_cache
        for name, related in cache.items():
            out[name] = fields(related)
        return out
    return value


QUERIES = {
    "filter": lambda A, B, T: B.objects.filter(author__name="author1"),
    "select_related": lambda A, B, T: B.objects.select_related("author").filter(price__gt=10),
    "values": lambda A, B, T: B.objects.filter(tags__name="tag1").values("id", "title"),
    "values_list": lambda A, B, T: B.objects.values_list("title", "author__name").order_by("-id"),
    "slice": lambda A, B, T: B.objects.all()[3:6],
    "m2m": lambda A, B, T: T.objects.filter(books__author__name="author2")
    .distinct()
    .order_by("id"),
}


def listed(qs):
    return fields(list(qs))


@pytest.mark.parametrize("name", list(QUERIES))
def test_cached_querysets_return_what_uncached_ones_do(shop, name: str) -> None:
    Author, Book, Tag, state = shop
    before = state.answered
    expected = listed(QUERIES[name](Author, Book, Tag))
    assert listed(QUERIES[name](Author, Book, Tag).cached()) == expected
    assert listed(QUERIES[name](Author, Book, Tag).cached()) == expected
    assert state.answered == before + 2


def test_count_exists_and_get(shop) -> None:
    Author, Book, Tag, state = shop
    before = state.answered
    assert (
        Book.objects.filter(price__gt=10).cached().count()
        == Book.objects.filter(price__gt=10).count()
    )
    assert Book.objects.filter(title="book21").cached().exists()
    assert not Book.objects.filter(title="none").cached().exists()
    assert fields(Book.objects.cached().get(title="book21")) == fields(
        Book.objects.get(title="book21")
    )
    with pytest.raises(Book.DoesNotExist):
        Book.objects.cached().get(title="none")
    assert state.answered >= before + 5


def test_a_write_is_read_back_by_its_thread(shop) -> None:
    Author, Book, Tag, state = shop
    book = Book.objects.get(title="book00")
    for n in range(20):
        book.price = Decimal(f"{n}.50")
        book.save()
        assert Book.objects.filter(id=book.id).cached().get().price == Decimal(f"{n}.50")


def test_a_write_through_a_writable_cte_is_read_back_by_its_thread(shop) -> None:
    from django.db import connection

    Author, Book, Tag, state = shop
    book = Book.objects.get(title="book01")
    for n in range(200):
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH changed AS (UPDATE djangoapp_book SET price = %s WHERE id = %s"
                " RETURNING id) SELECT count(*) FROM changed",
                [Decimal(f"{n}.25"), book.id],
            )
        assert Book.objects.filter(id=book.id).cached().get().price == Decimal(f"{n}.25")


def test_refused_queries_and_transactions_go_to_the_database(shop) -> None:
    from django.db import transaction
    from django.db.models.functions import Now

    Author, Book, Tag, state = shop
    fell_back = state.fell_back
    answered = state.answered
    recent = Book.objects.filter(published__lt=Now())
    assert listed(recent.cached()) == listed(recent)
    assert state.fell_back == fell_back + 1
    assert any("STABLE" in reason for reason in state.refused().values())
    with transaction.atomic():
        Book.objects.filter(title="book11").update(title="inside")
        assert Book.objects.filter(title="inside").cached().count() == 1
        transaction.set_rollback(True)
    assert state.answered == answered


@pytest.fixture(scope="module")
def docs(shop):
    """Documents (a JSONField, a GenericIPAddressField): one in the default database, another
    in "other"."""
    from django.db import connections
    from djangoapp.models import Doc

    for alias, pk, ip in (("default", 1, "10.0.0.1"), ("other", 7, "10.0.0.2")):
        with connections[alias].schema_editor() as editor:
            editor.create_model(Doc)
        Doc.objects.using(alias).create(id=pk, doc={"p": 1, "r": 1.5, "q": [1, {"s": None}]}, ip=ip)
    return Doc, shop[3]


def test_a_write_with_autocommit_off_is_read_by_its_connection(shop) -> None:
    """#51 item 2."""
    from django.db import transaction

    Author, Book, Tag, state = shop
    title = Book.objects.filter(id=Book.objects.get(title="book12").id)
    assert title.cached().get().title == "book12"
    transaction.set_autocommit(False)
    try:
        Book.objects.filter(title="book12").update(title="uncommitted")
        assert Book.objects.filter(title="uncommitted").cached().count() == 1
        assert title.cached().get().title == "uncommitted"
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    assert title.cached().get().title == "book12"


def test_json_fields_read_as_django_reads_them(docs) -> None:
    """#51 item 8: model instances, values() and iterator()."""
    Doc, state = docs
    answered = state.answered
    assert fields(list(Doc.objects.cached())) == fields(list(Doc.objects.all()))
    assert list(Doc.objects.values("doc", "ip").cached()) == list(Doc.objects.values("doc", "ip"))
    assert fields(list(Doc.objects.cached().iterator())) == fields(list(Doc.objects.all()))
    assert state.answered == answered + 3, state.refused()


def test_json_and_ip_lookups_are_answered(docs) -> None:
    """#51 items 9 and 10."""
    Doc, state = docs
    for lookup in ({"doc__p": 1}, {"doc__contains": {"p": 1}}, {"ip": "10.0.0.1"}):
        answered = state.answered
        assert fields(list(Doc.objects.filter(**lookup).cached())) == fields(
            list(Doc.objects.filter(**lookup))
        )
        assert state.answered == answered + 1, (lookup, state.refused())


def test_another_database_is_never_answered_by_pgcache(docs) -> None:
    """#51 item 11: ``using()`` (a router's choice is the same alias)."""
    Doc, state = docs
    ids = Doc.objects.values_list("id", flat=True)
    assert list(ids.cached()) == [1]
    fell_back = state.fell_back
    assert list(ids.using("other").cached()) == [7]
    assert list(ids.cached().using("other")) == [7]
    assert state.fell_back == fell_back + 2


def test_aliases_map_to_sources(docs, pg: Postgres) -> None:
    """Issue #53: ``use_pgcache({alias: manager})``, the "other" alias's database served as
    pgcache's source "other": each alias's reads are answered through its own manager, with
    its own database's rows."""
    from pgcache import django as pgcache_django

    Doc, state = docs
    saved = dict(state.caches)
    served = pgcache_server(
        pg,
        *("source", "other", "pg_host", "127.0.0.1", "pg_port", str(pg.port)),
        *("pg_database", "django_other", "pg_user", "postgres"),
    )
    try:
        other = PGCacheManager(served.client(), source="other")
        # Its answers are cached once its change feed vouches for the cache.
        wait_for("the other source's hits served", lambda: other.stats()["hits_served"] or None)
        pgcache_django.use_pgcache({"default": PGCacheManager(served.client()), "other": other})
        ids = Doc.objects.values_list("id", "ip")
        answered = state.answered
        assert list(ids.using("other").cached()) == [(7, "10.0.0.2")]
        assert list(ids.cached()) == [(1, "10.0.0.1")]
        assert state.answered == answered + 2, state.refused()
        keys = served.client().keys("pg_cache:@other:*")
        assert keys, "the other alias's result is cached under its source"
    finally:
        state.caches = saved
        served.stop()


@pytest.fixture(scope="module")
def everything(shop, pg: Postgres):
    """A model of every type the client types (``fidelity.COLUMNS``), each column a plain
    ``Field`` (its values are what the driver gives Django, unconverted) but jsonb's, a
    ``JSONField`` (pgcache writes a jsonb null and SQL NULL alike: both read None)."""
    from django.db import models

    from pgcache.django import CachedManager

    table = "dj51_everything"
    pg.execute(create_sql(table))
    meta = type("Meta", (), {"app_label": "djangoapp", "db_table": table, "managed": False})
    attrs = {name: models.Field(null=True) for name in COLUMNS}
    attrs["jb"] = models.JSONField(null=True)
    model = type(
        "Everything",
        (models.Model,),
        {
            "__module__": "djangoapp.models",
            "Meta": meta,
            "id": models.IntegerField(primary_key=True),
            "objects": CachedManager(),
            **attrs,
        },
    )
    return model, shop[3]


@pytest.mark.parametrize("use_tz", [True, False])
def test_every_type_reads_as_django_reads_it(everything, use_tz: bool) -> None:
    """Value by value and type by type, with USE_TZ on (UTC) and off (America/Chicago, not
    pgcache's zone): #51 items 12, 13, 16 and 17."""
    from django.test import override_settings

    Everything, state = everything
    wrong, fell_back = {}, set()
    with override_settings(USE_TZ=use_tz, TIME_ZONE="America/Chicago"):
        for name in COLUMNS:
            query = Everything.objects.order_by("id").values_list("id", name)
            plain = outcome(query.all)
            before = state.fell_back
            cached = outcome(query.cached)
            if state.fell_back > before:
                fell_back.add(name)
            if differences(cached, plain):
                wrong[name] = differences(cached, plain)
    assert wrong == {}
    # Arrays of the types Django has psycopg leave as text (jsonb, inet; enums, unregistered),
    # a time of 24:00:00 (psycopg raises).
    assert fell_back == {"jb_a", "ip_a", "e_a", "tm"}, state.refused()


def test_without_use_tz_datetimes_are_naive_and_filters_read_local_time(shop) -> None:
    """#51 items 13 and 14: with USE_TZ off, a DateTimeField reads the connection's
    wall-clock time, naive, and a naive datetime filter means that time (here
    America/Chicago, where pgcache's sessions run in UTC)."""
    from django.test import override_settings

    Author, Book, Tag, state = shop
    with override_settings(USE_TZ=False, TIME_ZONE="America/Chicago"):
        published = Book.objects.filter(title="book20").values_list("published", flat=True)
        expected = list(published)
        answered = state.answered
        assert differences(list(published.cached()), expected) == []
        assert expected[0].tzinfo is None
        # 12:00 UTC on 1 January 2020: 06:00 in Chicago.
        morning = Book.objects.filter(published=datetime.datetime(2020, 1, 1, 6))
        assert morning.count() == 3
        assert morning.cached().count() == 3
        assert state.answered == answered + 2, state.refused()
