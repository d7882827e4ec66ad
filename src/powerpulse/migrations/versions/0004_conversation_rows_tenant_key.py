"""Rows of a conversation keep their tenant_id without a foreign key of their own

messages, reply_events, conversation_agents, conversation_analyses, conversation_topics
and analysis_tasks each belong to a conversation, through a conversation_id foreign key
that cascades from the conversation, which cascades from its tenant. Their tenant_id also
had a foreign key to tenants. That second key proved only that some tenant of that id
exists, not that it is the conversation's, and PostgreSQL checks it row by row: storing an
upload's messages by COPY took 11.5 s per million with it and 7.1 s without
(BENCHMARKS.md). The column stays, indexed as before, for every query's tenant filter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "messages",
    "reply_events",
    "conversation_agents",
    "conversation_analyses",
    "conversation_topics",
    "analysis_tasks",
)
# SQLite keeps foreign keys without names; batch mode names them by this convention so
# that one can be dropped (the table is copied without it).
SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _names(table: str) -> tuple[str, str]:
    """The tenant foreign key's name on PostgreSQL (its default) and under SQLITE_NAMES."""
    return f"{table}_tenant_id_fkey", f"fk_{table}_tenant_id_tenants"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in TABLES:
        postgres_name, sqlite_name = _names(table)
        if sqlite:
            with op.batch_alter_table(table, naming_convention=SQLITE_NAMES) as batch_op:
                batch_op.drop_constraint(sqlite_name, type_="foreignkey")
        else:
            op.drop_constraint(postgres_name, table, type_="foreignkey")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in TABLES:
        postgres_name, sqlite_name = _names(table)
        if sqlite:
            with op.batch_alter_table(table, naming_convention=SQLITE_NAMES) as batch_op:
                batch_op.create_foreign_key(
                    sqlite_name, "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
                )
        else:
            op.create_foreign_key(
                postgres_name, table, "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
            )
