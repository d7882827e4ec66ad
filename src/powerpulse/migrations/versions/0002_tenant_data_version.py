"""tenants.data_version: keys cached analytics answers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "data_version",
                sa.BigInteger(),
                server_default="0",
                nullable=False,
                comment="Raised by every write that changes analytics; keys cached answers",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("data_version")
