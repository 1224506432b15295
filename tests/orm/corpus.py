"""The ORM corpus: statements Django and SQLAlchemy generate for a small shop and blog.

Run by the integration test `orm_corpus` (`.tools/venv/bin/python tests/orm/corpus.py`):
prints JSON with the schema (DDL SQLAlchemy emits for PostgreSQL) and each statement as the
ORM spells it for PostgreSQL, its placeholders numbered `$n` (Django's `%s` renumbered,
SQLAlchemy's asyncpg dialect as is) and its parameters as the text a client would pass.
Nothing here is written as SQL by hand: each statement comes from an ORM call.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sys
from typing import Any

import django
from django.conf import settings

settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "unused",
        }
    },
    INSTALLED_APPS=["shop"],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
sys.path.insert(0, __file__.rsplit("/", 1)[0])
django.setup()

import tables as t
from django.db.models import (
    Avg,
    Count,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
)
from shop.models import Category, Customer, Order, OrderLine, Post, Product
from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

WHEN = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def text_of(value: Any) -> str:
    """A parameter as a client passes it to PGCACHE.QUERY: text PostgreSQL reads by type."""
    # psycopg's Jsonb wrapper, as Django hands JSON to the driver.
    if hasattr(value, "obj"):
        return json.dumps(value.obj)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "{" + ",".join(json.dumps(text_of(v)) for v in value) + "}"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def django_statement(name: str, queryset: Any) -> dict[str, Any]:
    sql, params = queryset.query.sql_with_params()
    numbered = iter(range(1, len(params) + 1))
    sql = re.sub(r"%s", lambda _: f"${next(numbered)}", sql).replace("%%", "%")
    return {
        "orm": "django",
        "name": name,
        "sql": sql,
        "params": [text_of(p) for p in params],
    }


def django_statements() -> list[dict[str, Any]]:
    c = Customer.objects
    o = Order.objects
    p = Product.objects
    queries = {
        "customer_by_pk": c.filter(pk=7),
        "customer_get_email": c.filter(email="a@example.com"),
        "customers_active": c.filter(active=True).order_by("name"),
        "customers_not_active": c.exclude(active=True),
        "customers_country_in": c.filter(country__in=["FR", "DE", "IT"]),
        "customers_name_icontains": c.filter(name__icontains="ann"),
        "customers_name_startswith": c.filter(name__startswith="Jo"),
        "customers_name_iexact": c.filter(name__iexact="anna"),
        "customers_email_endswith": c.filter(email__endswith="@example.com"),
        "customers_created_range": c.filter(
            created_at__range=(WHEN, WHEN + dt.timedelta(days=30))
        ),
        "customers_created_gte": c.filter(created_at__gte=WHEN).order_by("-created_at"),
        "customers_or": c.filter(Q(country="FR") | Q(active=False)),
        "customers_and_not": c.filter(Q(country="FR") & ~Q(name="x")),
        "customers_page": c.order_by("-created_at", "id")[20:40],
        "customers_first": c.filter(country="FR").order_by("id")[:1],
        "customers_count": c.filter(active=True).values("id").order_by(),
        "customer_exists": c.filter(email="a@example.com")[:1].values("id"),
        "products_price_range": p.filter(
            price__range=(decimal.Decimal(10), decimal.Decimal(50))
        ),
        "products_price_lt": p.filter(price__lt=decimal.Decimal("9.99")).order_by(
            "price"
        ),
        "products_in_category": p.filter(category_id=3, discontinued_at__isnull=True),
        "products_discontinued": p.filter(discontinued_at__isnull=False),
        "products_stock_zero_or_discontinued": p.filter(
            Q(stock=0) | Q(discontinued_at__isnull=False)
        ),
        "products_name_contains": p.filter(name__contains="Pro"),
        "products_attrs_has_key": p.filter(attrs__has_key="color"),
        "products_attrs_contains": p.filter(attrs__contains={"color": "red"}),
        "products_attrs_has_any": p.filter(attrs__has_any_keys=["color", "size"]),
        "products_attrs_key": p.filter(attrs__color="red"),
        "products_search_page": p.filter(name__istartswith="pro").order_by("name")[:10],
        "products_category_name": p.filter(category__name="Books"),
        "products_select_related": p.select_related("category").filter(pk=5),
        "orders_by_customer": o.filter(customer_id=7).order_by("-placed_at")[:10],
        "orders_by_status": o.filter(status="paid").order_by("-placed_at")[:20],
        "orders_status_in": o.filter(status__in=["paid", "shipped"]),
        "orders_total_gt": o.filter(total__gt=decimal.Decimal(100)),
        "orders_note_null": o.filter(note__isnull=True, customer_id=3),
        "orders_placed_year": o.filter(placed_at__year=2024),
        "orders_placed_date": o.filter(placed_at__date=dt.date(2024, 5, 1)),
        "orders_of_french": o.filter(customer__country="FR"),
        "orders_select_related": o.select_related("customer").filter(customer_id=7),
        "orders_select_related_pk": o.select_related("customer").filter(pk=11),
        "orders_count": o.filter(customer_id=7)
        .values("status")
        .annotate(n=Count("id")),
        "orders_aggregate": o.filter(customer_id=7)
        .values("customer_id")
        .annotate(s=Sum("total"), a=Avg("total"), lo=Min("total"), hi=Max("total")),
        "orders_by_status_count": o.values("status")
        .annotate(n=Count("id"))
        .order_by("status"),
        "orders_f_expression": o.filter(total__gt=F("id")),
        "orders_in_subquery": o.filter(
            customer_id__in=Subquery(c.filter(country="FR").values("id"))
        ),
        "orders_exists_line": o.filter(
            Exists(OrderLine.objects.filter(order_id=OuterRef("pk"), quantity__gt=5))
        ),
        "orderlines_prefetch": OrderLine.objects.filter(order_id__in=[1, 2, 3]),
        "orderlines_of_order": OrderLine.objects.filter(order_id=4).select_related(
            "product"
        ),
        "orderlines_quantity": OrderLine.objects.filter(quantity__gte=2, order_id=4),
        "categories_all": Category.objects.all().order_by("name"),
        "categories_prefetch": Category.objects.filter(pk__in=[1, 2]),
        "posts_published": Post.objects.filter(published=True).order_by(
            "-published_at"
        )[:10],
        "posts_by_author": Post.objects.filter(author_id=7, published=True),
        "posts_tag": Post.objects.filter(tags__contains=["rust"]),
        "posts_title_search": Post.objects.filter(
            Q(title__icontains="cache") | Q(body__icontains="cache")
        ),
        "posts_unpublished_or_old": Post.objects.filter(
            Q(published=False) | Q(published_at__lt=WHEN)
        ),
        "posts_regex": Post.objects.filter(title__regex=r"^[A-Z]"),
        "posts_with_author": Post.objects.select_related("author").filter(
            published=True
        )[:5],
        "posts_count_by_author": Post.objects.values("author_id").annotate(
            n=Count("id")
        ),
    }
    return [django_statement(name, qs) for name, qs in queries.items()]


DIALECT = postgresql.asyncpg.dialect()


def sqlalchemy_statement(name: str, statement: Any) -> dict[str, Any]:
    compiled = statement.compile(
        dialect=DIALECT, compile_kwargs={"render_postcompile": True}
    )
    params = [text_of(compiled.params[key]) for key in compiled.positiontup or []]
    return {"orm": "sqlalchemy", "name": name, "sql": str(compiled), "params": params}


def sqlalchemy_statements() -> list[dict[str, Any]]:
    c, o, p, line, post, cat = (
        t.customer,
        t.order,
        t.product,
        t.orderline,
        t.post,
        t.category,
    )
    statements = {
        "customer_by_pk": select(c).where(c.c.id == 7),
        "customers_active": select(c).where(c.c.active.is_(True)).order_by(c.c.name),
        "customers_country_in": select(c).where(c.c.country.in_(["FR", "DE"])),
        "customers_name_ilike": select(c).where(c.c.name.ilike("%ann%")),
        "customers_name_contains": select(c).where(c.c.name.contains("ann")),
        "customers_name_startswith": select(c).where(c.c.name.startswith("Jo")),
        "customers_created_between": select(c).where(
            c.c.created_at.between(WHEN, WHEN + dt.timedelta(days=30))
        ),
        "customers_or": select(c).where(
            or_(c.c.country == "FR", c.c.active.is_(False))
        ),
        "customers_not": select(c).where(not_(c.c.active)),
        "customers_page": select(c)
        .order_by(c.c.created_at.desc(), c.c.id)
        .limit(20)
        .offset(40),
        "customers_count": select(func.count())
        .select_from(c)
        .where(c.c.active.is_(True)),
        "products_price_between": select(p).where(p.c.price.between(10, 50)),
        "products_cheap_in_category": select(p.c.id, p.c.name).where(
            and_(p.c.category_id == 3, p.c.price < 20)
        ),
        "products_discontinued_null": select(p).where(p.c.discontinued_at.is_(None)),
        "products_discontinued_not_null": select(p).where(
            p.c.discontinued_at.is_not(None)
        ),
        "products_attrs_contains": select(p).where(
            p.c.attrs.contains({"color": "red"})
        ),
        "products_attrs_has_key": select(p).where(p.c.attrs.has_key("color")),
        "products_attrs_key_text": select(p).where(p.c.attrs["color"].astext == "red"),
        "products_name_lower": select(p).where(func.lower(p.c.name) == "pro x"),
        "products_any": select(p).where(
            p.c.id == func.any(postgresql.array([1, 2, 3]))
        ),
        "products_with_category": select(p, cat.c.name)
        .join(cat, p.c.category_id == cat.c.id)
        .where(p.c.id == 5),
        "orders_by_customer": select(o)
        .where(o.c.customer_id == 7)
        .order_by(o.c.placed_at.desc())
        .limit(10),
        "orders_by_status_page": select(o)
        .where(o.c.status == "paid")
        .order_by(o.c.placed_at.desc())
        .limit(20),
        "orders_total_gt": select(o).where(o.c.total > 100),
        "orders_count_by_status": select(o.c.status, func.count())
        .where(o.c.customer_id == 7)
        .group_by(o.c.status),
        "orders_sum_having": select(o.c.customer_id, func.sum(o.c.total))
        .where(o.c.status == "paid")
        .group_by(o.c.customer_id)
        .having(func.sum(o.c.total) > 100),
        "orders_with_customer": select(o, c.c.name)
        .join(c, o.c.customer_id == c.c.id)
        .where(o.c.customer_id == 7),
        "orders_left_lines": select(o.c.id, line.c.quantity)
        .outerjoin(line, line.c.order_id == o.c.id)
        .where(o.c.id == 4),
        "orders_three_tables": select(o.c.id, c.c.name, line.c.product_id)
        .join(c, o.c.customer_id == c.c.id)
        .join(line, line.c.order_id == o.c.id)
        .where(c.c.country == "FR"),
        "orders_in_subquery": select(o).where(
            o.c.customer_id.in_(select(c.c.id).where(c.c.country == "FR"))
        ),
        "orders_exists": select(o).where(
            select(line.c.id).where(line.c.order_id == o.c.id).exists()
        ),
        "lines_of_order": select(line).where(line.c.order_id == 4),
        "lines_in": select(line).where(line.c.order_id.in_([1, 2, 3])),
        "posts_published_page": select(post)
        .where(post.c.published.is_(True))
        .order_by(post.c.published_at.desc())
        .limit(10),
        "posts_search": select(post).where(
            or_(post.c.title.ilike("%cache%"), post.c.body.ilike("%cache%"))
        ),
        "posts_by_author": select(post).where(post.c.author_id == 7),
        "posts_union": select(post.c.id)
        .where(post.c.author_id == 1)
        .union_all(select(post.c.id).where(post.c.author_id == 2)),
        "posts_regexp": select(post).where(post.c.title.regexp_match("^[A-Z]")),
        "categories_all": select(cat).order_by(cat.c.name),
        "category_schema_qualified": select(t.tag).where(t.tag.c.name == "rust"),
    }
    return [sqlalchemy_statement(name, s) for name, s in statements.items()]


def main() -> None:
    schema = [
        str(CreateTable(table).compile(dialect=postgresql.dialect())).strip()
        for table in t.metadata.sorted_tables
    ]
    json.dump(
        {
            "schema": schema,
            "statements": django_statements() + sqlalchemy_statements(),
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
