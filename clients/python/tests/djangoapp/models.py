from django.db import models

from pgcache.django import CachedManager


class Author(models.Model):
    name = models.CharField(max_length=50)
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"


class Tag(models.Model):
    name = models.CharField(max_length=50)
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"


class Book(models.Model):
    title = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    published = models.DateTimeField()
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    tags = models.ManyToManyField(Tag, related_name="books")
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"
        ordering = ["id"]


class Doc(models.Model):
    """A JSONField and a GenericIPAddressField (issue #51), in two databases."""

    doc = models.JSONField()
    ip = models.GenericIPAddressField()
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"
        ordering = ["id"]


class WalkParent(models.Model):
    """The random walk's rows (tests/test_orm_random.py): a column of each common type."""

    name = models.TextField()
    score = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    flag = models.BooleanField()
    day = models.DateField()
    at = models.DateTimeField()
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"
        db_table = "ro_django_parent"


class WalkChild(models.Model):
    """Rows joined to ``WalkParent``; no constraint (the walk deletes parents freely)."""

    parent = models.ForeignKey(
        WalkParent, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    label = models.TextField()
    qty = models.IntegerField()
    objects = CachedManager()

    class Meta:
        app_label = "djangoapp"
        db_table = "ro_django_child"
