"""Alembic migrations of the durable records, shipped in the package and run by `bot.store.migrate`."""
