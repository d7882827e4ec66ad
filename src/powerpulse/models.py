"""Database tables. Every row carries the tenant it belongs to."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from .kinds import SenderKind

__all__ = ["SenderKind"]  # defined with the other plain values, used with the tables

# SQLite has no 64-bit autoincrement type distinct from INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # Naive UTC text sorts chronologically in SQLite.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _id_column() -> Any:
    return Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))


def _tenant_column() -> Any:
    return Field(
        sa_column=Column(BigIntId, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    )


def _conversation_tenant_column() -> Any:
    """The tenant of a row that belongs to a conversation: the conversation's tenant.

    It is repeated on the row so every query filters by tenant directly, but it has no
    foreign key of its own: the row's conversation_id (_conversation_column) already ties
    it to a conversation, which cascades from its tenant. A second check per row would only
    prove that some tenant of that id exists, and on PostgreSQL it cost about as much as the
    conversation's check (see migration 0004).
    """
    return Field(sa_column=Column(BigIntId, nullable=False))


def _conversation_column() -> Any:
    """The conversation a row belongs to, deleted with it.

    SQLite enforces the foreign key itself. On PostgreSQL, triggers of migration 0005
    enforce the same rules in its place, once per statement (migrate.POSTGRES_TRIGGERS): a
    key is checked row by row there, and that was most of the server's work in storing an
    upload.
    """
    return Field(
        sa_column=Column(
            BigIntId, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        )
    )


def _changed_in_column() -> Any:
    return Field(
        default=0,
        sa_column=Column(
            BigInteger,
            nullable=False,
            server_default="0",
            comment="The tenant data_version of the write that last changed this row",
        ),
    )


def _timestamp(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class Tenant(SQLModel, table=True):
    """A company using PowerPulse; its own settings override the deployment's defaults."""

    __tablename__ = "tenants"

    id: int | None = _id_column()
    name: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    timezone: str | None = Field(default=None, sa_column=Column(String(64)))
    autoresponse_patterns: str | None = Field(
        default=None, sa_column=Column(Text, comment="JSON array of substrings")
    )
    topics_file: str | None = Field(default=None, sa_column=Column(Text))
    session_gap_hours: float | None = Field(default=None, sa_column=Column(Float))
    data_version: int = Field(
        default=0,
        sa_column=Column(
            BigInteger,
            nullable=False,
            server_default="0",
            comment="Raised by every write that changes analytics; keys cached answers",
        ),
    )


class ApiKey(SQLModel, table=True):
    """A tenant's API key, stored only as a SHA-256 hash of the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)

    id: int | None = _id_column()
    tenant_id: int = _tenant_column()
    key_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    read_only: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    last_used_at: datetime | None = _timestamp(nullable=True)
    revoked_at: datetime | None = _timestamp(nullable=True)


class Conversation(SQLModel, table=True):
    """One chat and its exactly measured metrics, recomputed whenever its messages change."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "chat_id", name="uq_conversations_tenant_chat"),
        Index("ix_conversations_tenant_last", "tenant_id", "last_message_at", "id"),
        Index("ix_conversations_tenant_first", "tenant_id", "first_message_at", "id"),
        Index("ix_conversations_tenant_version", "tenant_id", "data_version"),
    )

    id: int | None = _id_column()
    # SQLite enforces the key; on PostgreSQL triggers of migration 0006 do, once per
    # statement (migrate.POSTGRES_TRIGGER_KEYS): an upload's conversations all name one tenant.
    tenant_id: int = _tenant_column()
    chat_id: str = Field(sa_column=Column(String(255), nullable=False))
    platform: str | None = Field(default=None, sa_column=Column(String(50)))
    message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    customer_message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    agent_message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    bot_message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    first_message_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_message_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    duration_minutes: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    first_response_time_minutes: float | None = Field(default=None, sa_column=Column(Float))
    first_response_agent: str | None = Field(default=None, sa_column=Column(String(320)))
    avg_response_time_minutes: float | None = Field(default=None, sa_column=Column(Float))
    reply_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    contact_count: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    data_version: int = _changed_in_column()


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "conversation_id", "message_key", name="uq_messages_identity"
        ),
        Index("ix_messages_conversation_time", "conversation_id", "sent_at", "id"),
    )

    id: int | None = _id_column()
    tenant_id: int = _conversation_tenant_column()
    conversation_id: int = _conversation_column()
    message_key: str = Field(sa_column=Column(String(255), nullable=False))
    external_id: str | None = Field(default=None, sa_column=Column(String(255)))
    sender: str = Field(sa_column=Column(String(16), nullable=False))
    content: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    agent_username: str | None = Field(default=None, sa_column=Column(String(320)))
    agent_email: str | None = Field(default=None, sa_column=Column(String(320)))
    message_type: str | None = Field(default=None, sa_column=Column(String(50)))
    via: str | None = Field(default=None, sa_column=Column(String(50)))


class ReplyEvent(SQLModel, table=True):
    """An agent answering a waiting customer: the unit of response-time metrics."""

    __tablename__ = "reply_events"
    __table_args__ = (Index("ix_reply_events_conversation", "conversation_id"),)

    id: int | None = _id_column()
    tenant_id: int = _conversation_tenant_column()
    conversation_id: int = _conversation_column()
    agent: str = Field(sa_column=Column(String(320), nullable=False))
    waiting_since: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    replied_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    response_minutes: float = Field(sa_column=Column(Float, nullable=False))


class ConversationAgent(SQLModel, table=True):
    """Which agents wrote in a conversation, and how many messages each."""

    __tablename__ = "conversation_agents"
    __table_args__ = (Index("ix_conversation_agents_tenant_agent", "tenant_id", "agent"),)

    conversation_id: int = Field(
        sa_column=Column(
            BigIntId,
            ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    agent: str = Field(sa_column=Column(String(320), primary_key=True))
    tenant_id: int = _conversation_tenant_column()
    message_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class AnalysisStatus(enum.StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


class TaskState(enum.StrEnum):
    QUEUED = "QUEUED"
    LEASED = "LEASED"
    DONE = "DONE"


class ConversationAnalysis(SQLModel, table=True):
    """The current judgement of a conversation and the input it was made from."""

    __tablename__ = "conversation_analyses"
    __table_args__ = (
        Index("ix_conversation_analyses_tenant_status", "tenant_id", "status"),
        Index("ix_conversation_analyses_tenant_version", "tenant_id", "data_version"),
    )

    conversation_id: int = Field(
        sa_column=Column(
            BigIntId, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
        )
    )
    tenant_id: int = _conversation_tenant_column()
    status: str = Field(sa_column=Column(String(16), nullable=False))
    failure_reason: str | None = Field(default=None, sa_column=Column(Text))
    content_hash: str | None = Field(default=None, sa_column=Column(String(64)))
    fingerprint: str | None = Field(default=None, sa_column=Column(String(200)))
    satisfaction_score: int | None = Field(default=None, sa_column=Column(Integer))
    is_satisfied: bool | None = Field(default=None, sa_column=Column(Boolean))
    sentiment_score: int | None = Field(default=None, sa_column=Column(Integer))
    initial_sentiment: int | None = Field(default=None, sa_column=Column(Integer))
    final_sentiment: int | None = Field(default=None, sa_column=Column(Integer))
    sentiment_label: str | None = Field(default=None, sa_column=Column(String(16)))
    resolved: bool | None = Field(default=None, sa_column=Column(Boolean))
    first_contact_resolution: bool | None = Field(default=None, sa_column=Column(Boolean))
    effort_score: int | None = Field(default=None, sa_column=Column(Integer))
    summary: str | None = Field(default=None, sa_column=Column(Text))
    language: str | None = Field(default=None, sa_column=Column(String(8)))
    analyzer: str | None = Field(default=None, sa_column=Column(String(32)))
    model: str | None = Field(default=None, sa_column=Column(String(120)))
    prompt_version: str | None = Field(default=None, sa_column=Column(String(40)))
    input_tokens: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    output_tokens: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    cost_usd: float = Field(default=0.0, sa_column=Column(Float, nullable=False, default=0.0))
    analyzed_at: datetime | None = _timestamp(nullable=True)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    data_version: int = _changed_in_column()


class ConversationTopic(SQLModel, table=True):
    __tablename__ = "conversation_topics"
    __table_args__ = (Index("ix_conversation_topics_tenant_topic", "tenant_id", "topic"),)

    conversation_id: int = Field(
        sa_column=Column(
            BigIntId, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
        )
    )
    topic: str = Field(sa_column=Column(String(60), primary_key=True))
    tenant_id: int = _conversation_tenant_column()
    position: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class AnalysisJob(SQLModel, table=True):
    """The analysis of one upload's conversations; counters only ever grow atomically."""

    __tablename__ = "analysis_jobs"
    __table_args__ = (Index("ix_analysis_jobs_tenant_id", "tenant_id", "id"),)

    id: int | None = _id_column()
    tenant_id: int = _tenant_column()
    status: str = Field(sa_column=Column(String(16), nullable=False))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    analyzed: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    cached: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    failed: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    forced: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    input_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    output_tokens: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    cost_usd: float = Field(default=0.0, sa_column=Column(Float, nullable=False, default=0.0))
    analyzer: str | None = Field(default=None, sa_column=Column(String(200)))
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    started_at: datetime | None = _timestamp(nullable=True)
    finished_at: datetime | None = _timestamp(nullable=True)


class AnalysisTask(SQLModel, table=True):
    """One conversation waiting to be analysed for a job; leased while a worker has it."""

    __tablename__ = "analysis_tasks"
    __table_args__ = (
        Index("ix_analysis_tasks_claim", "state", "lease_expires_at", "id"),
        Index("ix_analysis_tasks_job", "job_id"),
    )

    id: int | None = _id_column()
    tenant_id: int = _conversation_tenant_column()
    # SQLite enforces the key; on PostgreSQL triggers of migration 0006 do, once per
    # statement (migrate.POSTGRES_TRIGGER_KEYS), as for conversations' tenant_id.
    job_id: int = Field(
        sa_column=Column(
            BigIntId, ForeignKey("analysis_jobs.id", ondelete="CASCADE"), nullable=False
        )
    )
    conversation_id: int = _conversation_column()
    force: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    leased_by: str | None = Field(default=None, sa_column=Column(String(100)))
    lease_expires_at: datetime | None = _timestamp(nullable=True)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
