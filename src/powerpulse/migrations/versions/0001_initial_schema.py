"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 07:34:31.280836
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import powerpulse.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column(
            "autoresponse_patterns", sa.Text(), nullable=True, comment="JSON array of substrings"
        ),
        sa.Column("topics_file", sa.Text(), nullable=True),
        sa.Column("session_gap_hours", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "analysis_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("analyzed", sa.Integer(), nullable=False),
        sa.Column("cached", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("forced", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("analyzer", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("analysis_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_analysis_jobs_tenant_id", ["tenant_id", "id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_tenant", ["tenant_id"], unique=False)

    op.create_table(
        "conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chat_id", sa.String(length=255), nullable=False),
        sa.Column("platform", sa.String(length=50), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("customer_message_count", sa.Integer(), nullable=False),
        sa.Column("agent_message_count", sa.Integer(), nullable=False),
        sa.Column("bot_message_count", sa.Integer(), nullable=False),
        sa.Column("first_message_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_message_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Float(), nullable=False),
        sa.Column("first_response_time_minutes", sa.Float(), nullable=True),
        sa.Column("first_response_agent", sa.String(length=320), nullable=True),
        sa.Column("avg_response_time_minutes", sa.Float(), nullable=True),
        sa.Column("reply_count", sa.Integer(), nullable=False),
        sa.Column("contact_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "chat_id", name="uq_conversations_tenant_chat"),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversations_tenant_first", ["tenant_id", "first_message_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_conversations_tenant_last", ["tenant_id", "last_message_at", "id"], unique=False
        )

    op.create_table(
        "analysis_tasks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("leased_by", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["analysis_jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("analysis_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_analysis_tasks_claim", ["state", "lease_expires_at", "id"], unique=False
        )
        batch_op.create_index("ix_analysis_tasks_job", ["job_id"], unique=False)

    op.create_table(
        "conversation_agents",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("agent", sa.String(length=320), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "agent"),
    )
    with op.batch_alter_table("conversation_agents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_agents_tenant_agent", ["tenant_id", "agent"], unique=False
        )

    op.create_table(
        "conversation_analyses",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("fingerprint", sa.String(length=200), nullable=True),
        sa.Column("satisfaction_score", sa.Integer(), nullable=True),
        sa.Column("is_satisfied", sa.Boolean(), nullable=True),
        sa.Column("sentiment_score", sa.Integer(), nullable=True),
        sa.Column("initial_sentiment", sa.Integer(), nullable=True),
        sa.Column("final_sentiment", sa.Integer(), nullable=True),
        sa.Column("sentiment_label", sa.String(length=16), nullable=True),
        sa.Column("resolved", sa.Boolean(), nullable=True),
        sa.Column("first_contact_resolution", sa.Boolean(), nullable=True),
        sa.Column("effort_score", sa.Integer(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("analyzer", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=120), nullable=True),
        sa.Column("prompt_version", sa.String(length=40), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("analyzed_at", powerpulse.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    with op.batch_alter_table("conversation_analyses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_analyses_tenant_status", ["tenant_id", "status"], unique=False
        )

    op.create_table(
        "conversation_topics",
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("topic", sa.String(length=60), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "topic"),
    )
    with op.batch_alter_table("conversation_topics", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_topics_tenant_topic", ["tenant_id", "topic"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_key", sa.String(length=255), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("sender", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("sent_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("agent_username", sa.String(length=320), nullable=True),
        sa.Column("agent_email", sa.String(length=320), nullable=True),
        sa.Column("message_type", sa.String(length=50), nullable=True),
        sa.Column("via", sa.String(length=50), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "tenant_id", "conversation_id", "message_key", name="uq_messages_identity"
        ),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_conversation_time", ["conversation_id", "sent_at", "id"], unique=False
        )

    op.create_table(
        "reply_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("agent", sa.String(length=320), nullable=False),
        sa.Column("waiting_since", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("replied_at", powerpulse.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("response_minutes", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reply_events", schema=None) as batch_op:
        batch_op.create_index("ix_reply_events_conversation", ["conversation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reply_events", schema=None) as batch_op:
        batch_op.drop_index("ix_reply_events_conversation")

    op.drop_table("reply_events")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_conversation_time")

    op.drop_table("messages")
    with op.batch_alter_table("conversation_topics", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_topics_tenant_topic")

    op.drop_table("conversation_topics")
    with op.batch_alter_table("conversation_analyses", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_analyses_tenant_status")

    op.drop_table("conversation_analyses")
    with op.batch_alter_table("conversation_agents", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_agents_tenant_agent")

    op.drop_table("conversation_agents")
    with op.batch_alter_table("analysis_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_analysis_tasks_job")
        batch_op.drop_index("ix_analysis_tasks_claim")

    op.drop_table("analysis_tasks")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_tenant_last")
        batch_op.drop_index("ix_conversations_tenant_first")

    op.drop_table("conversations")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_tenant")

    op.drop_table("api_keys")
    with op.batch_alter_table("analysis_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_analysis_jobs_tenant_id")

    op.drop_table("analysis_jobs")
    op.drop_table("tenants")
