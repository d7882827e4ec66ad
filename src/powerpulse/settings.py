"""The one settings object: every configurable value PowerPulse reads, from the environment."""

from __future__ import annotations

from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./powerpulse.db"
DEFAULT_TENANT_NAME = "default"


def normalise_database_url(url: str) -> str:
    """Accept URLs as users write them and add the async driver PowerPulse talks through."""
    url = url.strip()
    for plain, async_prefix in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return async_prefix + url[len(plain) :]
    return url


class Settings(BaseSettings):
    """Configuration read once at start-up; tests build their own instance."""

    model_config = SettingsConfigDict(
        env_prefix="POWERPULSE_",
        env_file=None,
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str = Field(
        default=DEFAULT_SQLITE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "POWERPULSE_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; sqlite:/// and postgresql:// are accepted as written.",
    )
    env: Literal["development", "production", "test"] = Field(
        default="development", description="Deployment environment."
    )
    auth_disabled: bool = Field(
        default=True,
        description="Every request acts as the default tenant (local development).",
    )
    timezone: str = Field(
        default="UTC", description="IANA timezone used for date filters and day boundaries."
    )
    session_gap_hours: float = Field(
        default=24.0,
        gt=0,
        description="A silence at least this long between two messages starts a new contact.",
    )
    autoresponse_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*977#"],
        description="Comma-separated substrings; bot messages containing one are dropped.",
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest accepted HTTP upload body in bytes."
    )
    max_message_chars: int = Field(
        default=100_000,
        gt=0,
        description="Longest accepted message text; longer records are reported as invalid.",
    )
    max_reported_errors: int = Field(
        default=1000,
        ge=0,
        description="Invalid records listed one by one in an upload report (all are counted).",
    )
    ingest_batch_chats: int = Field(
        default=500, gt=0, description="Chats stored per database round trip during ingest."
    )
    max_page_size: int = Field(default=100, gt=0, description="Largest allowed `first`.")
    db_pool_size: int = Field(default=10, gt=0, description="PostgreSQL pool size.")
    db_max_overflow: int = Field(default=10, ge=0, description="PostgreSQL pool overflow.")
    db_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a pooled connection."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="How long SQLite waits for a lock before failing."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")

    @field_validator("database_url", mode="after")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("autoresponse_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("timezone", mode="after")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def redacted_database_url(self) -> str:
        """The database URL with any password replaced, safe to log or show."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)
