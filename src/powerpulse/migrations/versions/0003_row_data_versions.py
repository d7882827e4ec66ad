"""conversations.data_version, conversation_analyses.data_version: what changed since

Each write of a tenant's conversations or analyses stamps the rows it changes with the
tenant data_version it commits, so a process holding the tenant's conversation facts in
memory reads only the rows changed since the version it holds.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENT = "The tenant data_version of the write that last changed this row"
TABLES = {
    "conversations": "ix_conversations_tenant_version",
    "conversation_analyses": "ix_conversation_analyses_tenant_version",
}


def upgrade() -> None:
    for table, index in TABLES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "data_version",
                    sa.BigInteger(),
                    server_default="0",
                    nullable=False,
                    comment=COMMENT,
                )
            )
        op.create_index(index, table, ["tenant_id", "data_version"], unique=False)


def downgrade() -> None:
    for table, index in TABLES.items():
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("data_version")
