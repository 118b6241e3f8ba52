"""A stand-in for HLS's alembic_migration/env.py, as it runs migrations: one connection without
a pool, every pending revision inside one transaction (``begin_transaction`` around
``run_migrations``), no ``transaction_per_migration``. The URL comes from the config instead of
HLS's Secrets Manager secret.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online() -> None:
    """Run the pending revisions on one connection, in one transaction, as HLS's env does."""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
