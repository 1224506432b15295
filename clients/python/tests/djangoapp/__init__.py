"""A small Django app for the Django integration's test: authors, books (a foreign key)
and tags (a many-to-many)."""
