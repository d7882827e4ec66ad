"""The one settings object: every configurable value PowerPulse reads, from the environment."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
        default=False,
        description="No API keys: every request acts as the default tenant, read-write "
        "(local development only; `serve` then binds to loopback addresses only).",
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
    ingest_parse_process: bool = Field(
        default=True,
        description=(
            "Parse big uploads in a child process, so that parsing and storing use a core "
            "each (false: always in a thread of the serving process)."
        ),
    )
    ingest_process_min_mib: int = Field(
        default=8,
        ge=0,
        description="Uploads at least this large (MiB) are parsed in a child process.",
    )
    analytics_cache_entries: int = Field(
        default=1000,
        ge=0,
        description=(
            "Analytics answers kept per process until the tenant's data changes (0: off)."
        ),
    )
    response_cache_mib: int = Field(
        default=32,
        ge=0,
        description=(
            "Memory per process for whole responses to conversation reads (`conversations`, "
            "`conversation`), each kept until the tenant's data changes (0: off)."
        ),
    )
    analytics_memory_mib: int = Field(
        default=1024,
        gt=0,
        description=(
            "Memory per process for tenants' conversation facts in analytics columns (about "
            "200 bytes a conversation); the least recently asked tenants are dropped beyond."
        ),
    )
    analytics_staleness_seconds: float = Field(
        default=1.0,
        ge=0,
        description="After a write, analytics answers whose computation began less than this "
        "long ago are still given, so that analysis storing batches does not recompute every "
        "answer for every batch (0: every write is seen by the next request).",
    )
    analytics_preload: bool = Field(
        default=True,
        description="Read the tenants' conversation facts in the background when a process "
        "starts, so the first dashboards do not wait for them.",
    )
    max_page_size: int = Field(default=100, gt=0, description="Largest allowed `first`.")
    db_pool_size: int = Field(
        default=20,
        gt=0,
        description="Database connections each process keeps open (one request may use "
        "two or three at once).",
    )
    db_max_overflow: int = Field(default=10, ge=0, description="Connections beyond the pool.")
    db_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a pooled connection."
    )
    postgres_jit: bool = Field(
        default=False,
        description="Let PostgreSQL compile costly plans to machine code (JIT) as the server "
        "is configured; off, PowerPulse's connections turn it off.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="How long SQLite waits for a lock before failing."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Log level of PowerPulse and its server."
    )

    # -- GraphQL limits ----------------------------------------------------------------
    graphql_max_depth: int = Field(
        default=10, ge=1, description="Deepest field nesting a GraphQL operation may have."
    )
    graphql_max_aliases: int = Field(
        default=15, ge=0, description="Field aliases a GraphQL document may use at most."
    )
    graphql_max_field_repeats: int = Field(
        default=20,
        ge=1,
        description="Times one field (response name) may be selected in one selection set, "
        "fragments included.",
    )
    graphql_max_tokens: int = Field(
        default=2000, ge=1, description="Lexical tokens a GraphQL document may have at most."
    )
    graphql_max_cost: int = Field(
        default=50_000,
        ge=1,
        description="Estimated cost a GraphQL operation may have at most: 1 per object "
        "field, multiplied by the page sizes (`first`, `limit`) of the lists around it.",
    )
    introspection: bool | None = Field(
        default=None,
        description="Whether schema introspection and field suggestions are allowed; unset "
        "means on in development and test, off in production.",
    )
    graphiql: bool | None = Field(
        default=None,
        description="Whether GET /graphql from a browser serves GraphiQL; unset means on in "
        "development and test, off in production.",
    )

    # -- HTTP hardening ------------------------------------------------------------------
    max_upload_files: int = Field(
        default=1, ge=1, description="Files one multipart upload request may carry."
    )
    max_form_field_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest non-file field (operations, map) of a multipart request in bytes.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins (scheme://host[:port]) whose pages may call the "
        "API from a browser; none by default. `*` allows every origin (never with "
        "credentials).",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let browsers send cookies and HTTP auth cross-origin; refused with `*` "
        "in POWERPULSE_CORS_ORIGINS. API keys travel in the Authorization header and do not "
        "need it.",
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description="Requests per minute per API key (per tenant without keys, per client IP "
        "when unauthenticated); 0 turns the limit off. Uploads have their own budget.",
    )
    rate_limit_burst: int | None = Field(
        default=None,
        ge=1,
        description="Requests one API key may make at once before the per-minute rate "
        "applies; unset means POWERPULSE_RATE_LIMIT_PER_MINUTE.",
    )
    upload_rate_limit_per_hour: int = Field(
        default=60,
        ge=0,
        description="Upload (multipart) requests per hour per API key, all at once at most; "
        "0 turns the limit off.",
    )
    export_concurrency: int = Field(
        default=2,
        gt=0,
        description="CSV exports one process streams at once; each holds a database "
        "connection and much of a core for seconds. More wait for a free slot.",
    )
    export_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an export waits for a free slot before it is answered 503 "
        "SERVICE_UNAVAILABLE (with Retry-After).",
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="GraphQL queries running longer are answered with 503 REQUEST_TIMEOUT; "
        "uploads are bounded by POWERPULSE_MAX_UPLOAD_BYTES instead.",
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="How long `serve` keeps an idle HTTP connection open for the next "
        "request. Longer than the idle timeout of the proxy or load balancer in front "
        "(60 s is common), so that the server never closes a connection the proxy is "
        "about to reuse.",
    )

    # -- Customer Satisfaction Index ---------------------------------------------------
    csi_frt_target_minutes: float = Field(
        default=5.0, gt=0, description="First response at or below this scores 100 efficiency."
    )
    csi_frt_limit_minutes: float = Field(
        default=240.0, gt=0, description="First response at or above this scores 0 efficiency."
    )
    csi_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "effectiveness": 0.40,
            "effort": 0.25,
            "efficiency": 0.15,
            "empathy": 0.20,
        },
        description="JSON object of the four CSI pillar weights; they must sum to 1.",
    )

    # -- analysis --------------------------------------------------------------------
    analyzer: Literal["auto", "openai", "lexicon"] = Field(
        default="auto",
        description="Which analyzer judges conversations; auto = openai when "
        "OPENAI_API_KEY is set, else lexicon.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="Key for the OpenAI-compatible endpoint (never logged).",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="OpenAI-compatible endpoint (Azure gateways, vLLM, Ollama); SDK default "
        "when unset.",
    )
    model: str = Field(default="gpt-4o-mini", description="Chat-completions model name.")
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"gpt-4o-mini": (0.15, 0.60)},
        description="JSON object: model -> [USD per 1M input tokens, USD per 1M output tokens].",
    )
    analysis_concurrency: int = Field(
        default=16, ge=1, le=512, description="Model requests in flight at most."
    )
    analysis_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Optional request budget per minute."
    )
    analysis_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Optional token budget per minute."
    )
    analysis_batch_size: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Short conversations packed into one model request at most.",
    )
    analysis_batch_max_tokens: int = Field(
        default=1200,
        ge=100,
        description="Transcript tokens one packed request may carry.",
    )
    analysis_max_input_tokens: int = Field(
        default=3000,
        ge=200,
        description="Token budget of one transcript; longer ones keep their start and end.",
    )
    analysis_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Timeout of one model request."
    )
    topics_file: str | None = Field(
        default=None,
        description="JSON keyword taxonomy for the lexicon analyzer; the shipped one when unset.",
    )
    analysis_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A claimed task returns to the queue this long after its worker stops "
        "renewing it (a crashed worker).",
    )
    worker_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle worker looks for queued analyses."
    )
    shutdown_grace_seconds: float = Field(
        default=20.0,
        ge=0,
        description="On shutdown, how long in-flight analyses may finish before they are "
        "handed back to the queue.",
    )

    @field_validator("database_url", mode="after")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("openai_api_key", "openai_base_url", "topics_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose files and shells pass unset variables as empty strings.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("autoresponse_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _plain_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            if origin == "*":
                origins.append(origin)
                continue
            parts = urlsplit(origin)
            if (
                parts.scheme not in {"http", "https"}
                or not parts.hostname
                or parts.path not in {"", "/"}
                or parts.query
                or parts.fragment
                or parts.username is not None
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
                    "https://dashboard.example.com"
                )
            origins.append(f"{parts.scheme}://{parts.netloc}".lower())
        return origins

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

    @model_validator(mode="after")
    def _csi_is_well_defined(self) -> Settings:
        if self.csi_frt_limit_minutes <= self.csi_frt_target_minutes:
            raise ValueError("POWERPULSE_CSI_FRT_LIMIT_MINUTES must exceed the target")
        pillars = {"effectiveness", "effort", "efficiency", "empathy"}
        if set(self.csi_weights) != pillars:
            raise ValueError(f"POWERPULSE_CSI_WEIGHTS needs exactly the keys {sorted(pillars)}")
        if any(weight < 0 for weight in self.csi_weights.values()):
            raise ValueError("POWERPULSE_CSI_WEIGHTS must not be negative")
        if abs(sum(self.csi_weights.values()) - 1.0) > 1e-9:
            raise ValueError("POWERPULSE_CSI_WEIGHTS must sum to 1")
        return self

    @model_validator(mode="after")
    def _no_credentials_for_every_origin(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "POWERPULSE_CORS_ALLOW_CREDENTIALS cannot be combined with `*` in "
                "POWERPULSE_CORS_ORIGINS: list the trusted origins instead"
            )
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def introspection_enabled(self) -> bool:
        """POWERPULSE_INTROSPECTION, else on everywhere but production."""
        return self.introspection if self.introspection is not None else not self.is_production

    @property
    def graphiql_enabled(self) -> bool:
        """POWERPULSE_GRAPHIQL, else on everywhere but production."""
        return self.graphiql if self.graphiql is not None else not self.is_production

    @property
    def use_openai(self) -> bool:
        if self.analyzer == "auto":
            return self.openai_api_key is not None
        return self.analyzer == "openai"

    def prices_for(self, model: str) -> tuple[float, float]:
        """USD per million input and output tokens; unknown models cost nothing."""
        return self.model_prices.get(model, (0.0, 0.0))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def redacted_database_url(self) -> str:
        """The database URL with any password replaced, safe to log or show."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)
