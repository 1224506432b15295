"""The corpus schema as Django models, on the tables `tables.py` defines."""

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.CharField(max_length=254)
    country = models.CharField(max_length=2)
    created_at = models.DateTimeField()
    active = models.BooleanField()

    class Meta:
        app_label = "shop"
        db_table = "shop_customer"


class Category(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "shop"
        db_table = "shop_category"


class Product(models.Model):
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    category = models.ForeignKey(Category, on_delete=models.CASCADE)
    attrs = models.JSONField()
    stock = models.IntegerField()
    discontinued_at = models.DateTimeField(null=True)

    class Meta:
        app_label = "shop"
        db_table = "shop_product"


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    status = models.CharField(max_length=20)
    placed_at = models.DateTimeField()
    total = models.DecimalField(max_digits=10, decimal_places=2)
    note = models.TextField(null=True)

    class Meta:
        app_label = "shop"
        db_table = "shop_order"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    quantity = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)

    class Meta:
        app_label = "shop"
        db_table = "shop_orderline"


class Post(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    author = models.ForeignKey(Customer, on_delete=models.CASCADE)
    published = models.BooleanField()
    published_at = models.DateTimeField(null=True)
    tags = models.JSONField()

    class Meta:
        app_label = "shop"
        db_table = "blog_post"
