"""The ASGI application: lifespan-managed state, the GraphQL endpoint and health check."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL

from . import __version__, exports
from .analysis.base import Analyzer
from .db import Database, create_engine
from .graphql.context import Context, Services
from .graphql.schema import build_schema
from .http import GraphQLRequestGuard, RequestIdMiddleware
from .ingest.stream import require_fast_json_backend
from .migrate import prepare_schema
from .repositories.tenants import TenantRepository
from .services.analysis import AnalysisWorker, WorkerBusy, build_analyzer
from .services.analytics import AnalyticsService
from .services.conversations import ConversationService
from .services.exports import ExportService
from .services.ingest import IngestService
from .services.jobs import JobService
from .settings import DEFAULT_TENANT_NAME, Settings

logger = logging.getLogger("powerpulse")

GRAPHQL_PATH = "/graphql"


@dataclass
class AppState:
    """Everything a running PowerPulse process holds: opened once, closed once."""

    settings: Settings
    database: Database
    analyzer: Analyzer
    worker: AnalysisWorker
    services: Services
    default_tenant_id: int

    async def close(self) -> None:
        await self.worker.stop()
        await self.analyzer.aclose()
        await self.database.dispose()


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
        analyzer = build_analyzer(settings)
    except BaseException:
        await database.dispose()
        raise
    worker = AnalysisWorker(database, settings, analyzer)
    services = Services(
        conversations=ConversationService(database, settings),
        analytics=AnalyticsService(database, settings),
        ingest=IngestService(
            database,
            settings,
            analyzer_fingerprint=analyzer.fingerprint.key(),
            on_work_queued=worker.notify,
        ),
        jobs=JobService(database, settings),
        exports=ExportService(database, settings),
    )
    return AppState(settings, database, analyzer, worker, services, tenant_id)


class PowerPulseGraphQL(GraphQL[Context, None]):
    """The GraphQL view; its context carries the request's tenant and the services."""

    def __init__(self, state_source: Any, **kwargs: Any) -> None:
        super().__init__(build_schema(), **kwargs)
        self._state_source = state_source

    async def get_context(self, request: Any, response: Any = None) -> Context:
        state: AppState = self._state_source(request)
        return Context(
            request=request,
            response=response,
            services=state.services,
            tenant_id=state.default_tenant_id,
            request_id=request.scope.get("state", {}).get("request_id", ""),
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            # The view's own refusals (bad JSON, wrong method) as coded JSON, not plain text.
            response = JSONResponse(
                {"errors": [{"message": exc.reason, "extensions": {"code": "BAD_REQUEST"}}]},
                status_code=exc.status_code,
            )
        await response(scope, receive, send)


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
            yield {"powerpulse": state}
        finally:
            await state.close()

    def state_of(request: Any) -> AppState:
        return request.state.powerpulse  # type: ignore[no-any-return]

    graphql_app = PowerPulseGraphQL(
        state_of,
        graphql_ide="graphiql",
        multipart_uploads_enabled=True,
        allow_queries_via_get=True,
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
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                GraphQLRequestGuard, path=GRAPHQL_PATH, max_body_bytes=settings.max_upload_bytes
            ),
        ],
        lifespan=lifespan,
    )
