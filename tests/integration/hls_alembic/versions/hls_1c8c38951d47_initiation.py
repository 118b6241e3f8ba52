"""Stand-in for HLS's first revision, as its table is today (shared fixture hls_today_facts.json)

Revision ID: 1c8c38951d47
Revises:

Written for these tests from the table shapes HLS's alembic builds (column names, SQL types,
nullability and server defaults), not taken from HLS's code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "1c8c38951d47"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """granule (today's form), granule_count (per day) and status."""
    op.create_table(
        "granule",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("tileid", sa.String(5), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("beginposition", sa.DateTime, nullable=False),
        sa.Column("endposition", sa.DateTime, nullable=False),
        sa.Column("ingestiondate", sa.DateTime, nullable=False),
        sa.Column("download_url", sa.String(256), nullable=False),
        sa.Column("checksum", sa.String(256), nullable=False, server_default=""),
        sa.Column("downloaded", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("download_retries", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("expired", sa.Boolean, nullable=False, server_default="false"),
    )
    op.create_table(
        "granule_count",
        sa.Column("date", sa.Date, primary_key=True),
        sa.Column("available_links", sa.BigInteger, nullable=False),
        sa.Column("fetched_links", sa.BigInteger, nullable=False),
        sa.Column("last_fetched_time", sa.DateTime, nullable=False),
    )
    op.create_table(
        "status",
        sa.Column("key_name", sa.String(256), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    """The three tables go."""
    for table in ("status", "granule_count", "granule"):
        op.drop_table(table)
