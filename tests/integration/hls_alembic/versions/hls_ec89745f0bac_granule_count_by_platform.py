"""Stand-in for HLS's second revision: granule_count per day and platform (shared fixture)

Revision ID: ec89745f0bac
Revises: 1c8c38951d47

Written for these tests from the table shape HLS's alembic leaves (a ``platform`` column,
varchar, not null, default 'S2A+S2B', in the primary key), not taken from HLS's code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ec89745f0bac"
down_revision = "1c8c38951d47"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """granule_count's key becomes (date, platform)."""
    op.drop_constraint("granule_count_pkey", "granule_count", type_="primary")
    op.add_column(
        "granule_count", sa.Column("platform", sa.String(), nullable=False, server_default="S2A+S2B")
    )
    op.create_primary_key("granule_count_pkey", "granule_count", ["date", "platform"])


def downgrade() -> None:
    """granule_count's key is the date again."""
    op.drop_constraint("granule_count_pkey", "granule_count", type_="primary")
    op.drop_column("granule_count", "platform")
    op.create_primary_key("granule_count_pkey", "granule_count", ["date"])
