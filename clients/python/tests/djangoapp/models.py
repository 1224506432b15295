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
