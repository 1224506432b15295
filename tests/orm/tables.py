"""The corpus schema as SQLAlchemy tables: its DDL is the schema the test creates."""

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

customer = Table(
    "shop_customer",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("email", String(254), nullable=False),
    Column("country", String(2), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False),
)

category = Table(
    "shop_category",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)

product = Table(
    "shop_product",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("price", Numeric(10, 2), nullable=False),
    Column("category_id", Integer, ForeignKey("shop_category.id"), nullable=False),
    Column("attrs", JSONB, nullable=False),
    Column("stock", Integer, nullable=False),
    Column("discontinued_at", DateTime(timezone=True), nullable=True),
)

order = Table(
    "shop_order",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("shop_customer.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("total", Numeric(10, 2), nullable=False),
    Column("note", Text, nullable=True),
)

orderline = Table(
    "shop_orderline",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("shop_order.id"), nullable=False),
    Column("product_id", Integer, ForeignKey("shop_product.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price", Numeric(10, 2), nullable=False),
)

post = Table(
    "blog_post",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("author_id", Integer, ForeignKey("shop_customer.id"), nullable=False),
    Column("published", Boolean, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("tags", JSONB, nullable=False),
)

tag = Table(
    "tag",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    schema="blog",
)
