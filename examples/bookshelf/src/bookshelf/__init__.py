"""The bookshelf service (examples/bookshelf)."""
