"""The ASGI application: lifespan-managed state, the GraphQL endpoint and health check."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from . import __version__, exports
from .analysis.base import Analyzer
from .db import Database, create_engine
from .errors import PowerPulseError
from .exports import ExportSlots
from .graphql.context import Context, Services
from .graphql.responses import ResponseCache
from .graphql.schema import build_schema
from .http import (
    AuthenticationMiddleware,
    GraphQLRequestGuard,
    QueryTimeoutMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    bearer_token,
    ide_content_security_policy,
)
from .ingest.stream import require_fast_json_backend
from .migrate import prepare_schema
from .ratelimit import RateLimiter
from .repositories.tenants import TenantRepository
from .services.analysis import AnalysisWorker, AnalyzerRegistry, WorkerBusy, build_analyzer
from .services.analytics import AnalyticsService
from .services.base import answer_cache, csi_parameters
from .services.conversations import ConversationService
from .services.exports import ExportService
from .services.facts import FactStore
from .services.ingest import IngestService
from .services.jobs import JobService
from .services.tenants import Authenticator, Principal, TenantDirectory
from .settings import DEFAULT_TENANT_NAME, Settings

logger = logging.getLogger("powerpulse")

GRAPHQL_PATH = "/graphql"
# Tenant ids start at 1: a context that is not authenticated yet matches no row at all.
NO_TENANT = 0


@dataclass
class AppState:
    """Everything a running PowerPulse process holds: opened once, closed once."""

    settings: Settings
    database: Database
    analyzers: AnalyzerRegistry
    worker: AnalysisWorker
    services: Services
    facts: FactStore
    default_tenant_id: int
    authenticator: Authenticator
    export_slots: ExportSlots
    responses: ResponseCache

    @property
    def analyzer(self) -> Analyzer:
        return self.analyzers.default

    _preloading: asyncio.Task[None] | None = None

    def start_preloading_facts(self) -> None:
        """Read every tenant's analytics facts in the background (FactStore.preload)."""

        async def preload() -> None:
            try:
                async with self.database.read() as connection:
                    tenants = await TenantRepository(connection).all()
                await self.facts.preload([row["id"] for row in tenants])
            except (PowerPulseError, OSError, SQLAlchemyError) as exc:
                # The facts are read on the first question instead; nothing is lost.
                logger.warning("analytics facts not read ahead: %s", type(exc).__name__)

        self._preloading = asyncio.create_task(preload())

    async def close(self) -> None:
        if self._preloading is not None:
            self._preloading.cancel()
            await asyncio.gather(self._preloading, return_exceptions=True)
        await self.worker.stop()
        await self.analyzers.aclose()
        await self.database.dispose()


def settle_heap() -> None:
    """Leave everything alive now (imported modules, the app) out of garbage collection.

    Long-running commands call this once they are set up. A full collection otherwise walks
    every object the imports created (over 100,000), and bulk work such as an upload
    triggers many of them: freezing made ingest about 20% faster (BENCHMARKS.md). Garbage
    is collected first, so none of it is kept.
    """
    gc.collect()
    gc.freeze()


# How long a thread may hold the interpreter lock while another waits for it, in seconds.
SERVING_SWITCH_INTERVAL = 0.001


def favour_the_event_loop() -> None:
    """Let the event loop take the interpreter lock back sooner from busy threads.

    An upload is parsed, the lexicon analyzer judges and SQLite binds rows in threads, which
    hold the lock for up to the switch interval while the event loop, with requests ready
    to run, waits for it. 1 ms instead of Python's 5 ms: in the mixed load (BENCHMARKS.md)
    p95 fell by a sixth while an upload was stored and analysed, throughput rose as much.
    """
    sys.setswitchinterval(SERVING_SWITCH_INTERVAL)


async def open_state(settings: Settings, *, migrate: bool | None = None) -> AppState:
    """Connect, check the schema and the default tenant, and build the services.

    The analysis worker is built but not started; `serve`, `worker` and `ingest` start it.
    `migrate` follows powerpulse.migrate.prepare_schema: None migrates SQLite only.
    """
    require_fast_json_backend()
    database = Database(create_engine(settings))
    try:
        await prepare_schema(database.engine, migrate=migrate)
        async with database.write() as connection:
            tenant_id = await TenantRepository(connection).ensure(DEFAULT_TENANT_NAME)
        analyzers = AnalyzerRegistry(settings, build_analyzer(settings))
    except BaseException:
        await database.dispose()
        raise
    tenants = TenantDirectory(database, settings)
    worker = AnalysisWorker(database, settings, analyzers, tenants=tenants)
    # One cache of analytics answers and counts, and one store of the tenants' conversation
    # facts, for the process's read services.
    answers = answer_cache(settings)
    facts = FactStore(
        database, csi_parameters(settings), memory_bytes=settings.analytics_memory_mib << 20
    )
    services = Services(
        conversations=ConversationService(database, settings, tenants, cache=answers, facts=facts),
        analytics=AnalyticsService(database, settings, tenants, cache=answers, facts=facts),
        ingest=IngestService(
            database,
            settings,
            analyzer_fingerprint=analyzers.fingerprint_for,
            on_work_queued=worker.notify,
            tenants=tenants,
        ),
        jobs=JobService(database, settings),
        exports=ExportService(database, settings, tenants),
        tenants=tenants,
    )
    return AppState(
        settings,
        database,
        analyzers,
        worker,
        services,
        facts,
        tenant_id,
        Authenticator(database),
        ExportSlots(settings.export_concurrency, wait_seconds=settings.export_wait_seconds),
        ResponseCache(settings.response_cache_mib << 20),
    )


class PowerPulseGraphQL(GraphQL[Context, None]):
    """The GraphQL view; its context carries the request's tenant and the services."""

    def __init__(self, state_source: Any, schema: Any = None, **kwargs: Any) -> None:
        super().__init__(schema or build_schema(), **kwargs)
        self._state_source = state_source

    async def get_context(self, request: Any, response: Any = None) -> Context:
        state: AppState = self._state_source(request)
        principal: Principal | None = request.scope.get("state", {}).get("principal")
        if principal is None and state.settings.auth_disabled:
            principal = Principal(state.default_tenant_id, read_only=False)
        return Context(
            request=request,
            response=response,
            services=state.services,
            # A WebSocket authenticates in on_ws_connect; until then it may do nothing.
            tenant_id=principal.tenant_id if principal else NO_TENANT,
            read_only=principal.read_only if principal else True,
            request_id=request.scope.get("state", {}).get("request_id", ""),
            responses=state.responses,
        )

    async def on_ws_connect(self, context: Context) -> Any:
        """GraphQL over WebSocket carries its key in connection_params."""
        state: AppState = self._state_source(context.request)
        if state.settings.auth_disabled:
            return UNSET
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        raw = params.get("Authorization") or params.get("authorization") or params.get("apiKey")
        key = bearer_token(raw) if isinstance(raw, str) and " " in raw else raw
        principal = await state.authenticator.authenticate(key) if isinstance(key, str) else None
        if principal is None:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        context.tenant_id = principal.tenant_id
        context.read_only = principal.read_only
        return UNSET

    async def parse_http_body(self, request: Any) -> Any:
        """A JSON body that is not an object (5, "text", null) is a bad request, not a crash."""
        try:
            return await super().parse_http_body(request)
        except AttributeError as exc:  # strawberry calls .get() on whatever the JSON held
            raise HTTPException(
                400, "the request body must be a JSON object with a `query` member"
            ) from exc

    async def parse_multipart(self, request: Any) -> dict[str, str]:
        """A multipart `map` that does not fit `operations` is a bad request, not a crash.

        strawberry follows `map` without checking its shape: a list instead of an object, a
        path that is not text, or one leading into a string or past a list's end raise
        AttributeError, TypeError, ValueError or IndexError (a 500 until caught here).
        """
        try:
            return await super().parse_multipart(request)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise HTTPException(
                400,
                "the multipart `map` does not fit `operations`: it must be an object of file "
                "field name -> list of paths such as variables.file",
            ) from exc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            try:
                response = await self.run(request)
            except HTTPException as exc:
                # The view's own refusals (bad JSON, wrong method) as coded JSON, not plain text.
                response = JSONResponse(
                    {"errors": [{"message": exc.reason, "extensions": {"code": "BAD_REQUEST"}}]},
                    status_code=exc.status_code,
                )
            await response(scope, receive, send)
        finally:
            # Uploaded files no resolver closed (a refused or invalid request) are closed
            # here; left to the garbage collector, each leaks an open temporary file.
            await request.close()


def create_app(
    settings: Settings | None = None,
    *,
    run_worker: bool = True,
    migrate: bool | None = None,
) -> Starlette:
    """The ASGI app; with `run_worker` it also analyses queued conversations in-process."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        state = await open_state(settings, migrate=migrate)
        logger.info(
            "PowerPulse %s on %s, analyzer %s",
            __version__,
            settings.redacted_database_url(),
            state.analyzer.fingerprint.key(),
        )
        try:
            if run_worker:
                try:
                    await state.worker.start()
                except WorkerBusy as exc:
                    logger.warning("serving without an analysis worker: %s", exc)
            if settings.analytics_preload:
                state.start_preloading_facts()
            yield {"powerpulse": state}
        finally:
            await state.close()

    def state_of(request: Any) -> AppState:
        return request.state.powerpulse  # type: ignore[no-any-return]

    graphql_app = PowerPulseGraphQL(
        state_of,
        schema=build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        multipart_uploads_enabled=True,
        # GET runs queries only: strawberry refuses mutations sent by GET.
        allow_queries_via_get=True,
        # WebSocket handshakes from other origins: the same origins CORS lets in.
        allowed_origins=settings.cors_origins,
    )
    ide_csp = (
        ide_content_security_policy(graphql_app.graphql_ide_html)
        if settings.graphiql_enabled
        else None
    )

    async def health(request: Request) -> Response:
        state = state_of(request)
        try:
            await state.database.ping()
        except Exception:
            logger.exception("health check: database unreachable")
            return JSONResponse(
                {"status": "error", "database": "unreachable", "version": __version__},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ok",
                "database": "ok",
                "databaseEngine": state.database.engine.dialect.name,
                "version": __version__,
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/export/conversations.csv", exports.conversations_csv, methods=["GET"]),
            Route("/export/messages.csv", exports.messages_csv, methods=["GET"]),
            Route("/api/download", exports.download, methods=["GET"]),
            Route(GRAPHQL_PATH, graphql_app, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, graphql_app),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(SecurityHeadersMiddleware, html_csp=ide_csp),
            # Before authentication: a browser's preflight carries no API key.
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=settings.cors_allow_credentials,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Apollo-Require-Preflight",
                    "GraphQL-Require-Preflight",
                ],
                expose_headers=["X-Request-ID", "Retry-After"],
            ),
            Middleware(AuthenticationMiddleware, protected=(GRAPHQL_PATH, "/export/", "/api/")),
            # After authentication: budgets are per API key.
            Middleware(
                RateLimitMiddleware,
                requests=RateLimiter.per_period(
                    settings.rate_limit_per_minute, 60, burst=settings.rate_limit_burst
                )
                if settings.rate_limit_per_minute
                else None,
                uploads=RateLimiter.per_period(settings.upload_rate_limit_per_hour, 3600)
                if settings.upload_rate_limit_per_hour
                else None,
                upload_path=GRAPHQL_PATH,
            ),
            Middleware(
                GraphQLRequestGuard,
                path=GRAPHQL_PATH,
                max_body_bytes=settings.max_upload_bytes,
                max_files=settings.max_upload_files,
                max_field_bytes=settings.max_form_field_bytes,
            ),
            Middleware(
                QueryTimeoutMiddleware, path=GRAPHQL_PATH, seconds=settings.request_timeout_seconds
            ),
        ],
        lifespan=lifespan,
    )
