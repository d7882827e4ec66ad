"""HTTP endpoints for CSV exports: query parameters in, a streamed CSV file out."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .errors import BadUserInput, PowerPulseError, ServiceBusy
from .services.filters import ConversationFilter

EXPORT_TYPES = ("conversations", "messages")
SENTIMENTS = ("NEGATIVE", "NEUTRAL", "POSITIVE")
ANALYSIS_STATUSES = ("PENDING", "DONE", "FAILED")
TRUE_WORDS = {"true", "1", "yes"}
FALSE_WORDS = {"false", "0", "no"}


def _date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadUserInput(f"{name} must be a date like 2025-08-31") from exc


def _boolean(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadUserInput(f"{name} must be true or false")


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise BadUserInput(f"{name} must be a whole number") from exc


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise BadUserInput(f"{name} must be a number") from exc
    if not math.isfinite(number):
        raise BadUserInput(f"{name} must be a finite number")
    return number


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        upper = value.strip().upper()
        if upper not in choices:
            raise BadUserInput(f"{name} must be one of {', '.join(choices)}")
        return upper

    return parse


def _text(name: str, value: str) -> str:
    return value


def _list(name: str, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


# Query parameter -> (ConversationFilter field, parser); names match the GraphQL filter.
FILTER_PARAMETERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "startDate": ("start_date", _date),
    "endDate": ("end_date", _date),
    "agent": ("agent", _text),
    "agents": ("agents", _list),
    "search": ("search", _text),
    "chatIds": ("chat_ids", _list),
    "satisfied": ("satisfied", _boolean),
    "minSatisfaction": ("min_satisfaction", _integer),
    "maxSatisfaction": ("max_satisfaction", _integer),
    "sentiment": ("sentiment", _choice(SENTIMENTS)),
    "topic": ("topic", _text),
    "topics": ("topics", _list),
    "resolved": ("resolved", _boolean),
    "analysisStatus": ("analysis_status", _choice(ANALYSIS_STATUSES)),
    "minFirstResponseTimeMinutes": ("min_first_response_time", _number),
    "maxFirstResponseTimeMinutes": ("max_first_response_time", _number),
    "minCsi": ("min_csi", _number),
    "maxCsi": ("max_csi", _number),
    "repeatContact": ("repeat_contact", _boolean),
    "language": ("language", _text),
}
OTHER_PARAMETERS = {"excel", "export_type"}


def parse_filter(request: Request) -> tuple[ConversationFilter, bool]:
    """The filter and the excel flag from query parameters; unknown names are refused."""
    values: dict[str, Any] = {}
    for name in request.query_params:
        if name not in FILTER_PARAMETERS and name not in OTHER_PARAMETERS:
            known = ", ".join(sorted(FILTER_PARAMETERS))
            raise BadUserInput(f"unknown parameter {name[:40]!r}; filters are: {known}")
        repeated = request.query_params.getlist(name)
        if len(repeated) > 1:
            raise BadUserInput(f"{name} is given more than once")
        if name in FILTER_PARAMETERS:
            field, parse = FILTER_PARAMETERS[name]
            values[field] = parse(name, repeated[0])
    excel = request.query_params.get("excel")
    return ConversationFilter(**values), _boolean("excel", excel) if excel else False


def _error(exc: PowerPulseError) -> Response:
    busy = isinstance(exc, ServiceBusy)
    return JSONResponse(
        {"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]},
        status_code=exc.http_status,
        headers={"Retry-After": "5"} if busy else None,
    )


class CsvResponse(StreamingResponse):
    """A streamed export that closes its chunks however the response ends.

    Starlette leaves the body iterator as it is when the client goes away mid-stream; the
    export's connection and slot would then wait for the garbage collector.
    """

    def __init__(self, first: str, chunks: AsyncGenerator[str, None], name: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        super().__init__(
            _starting_with(first, chunks),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"',
                "Cache-Control": "no-store",
            },
        )
        self._chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._chunks.aclose()


class ExportSlots:
    """At most `slots` CSV exports stream at once in a process; others wait their turn.

    A full export holds a database connection and much of a core for seconds: without a
    bound, a burst of exports would take every connection and starve the dashboards'
    queries. An export that finds no free slot within `wait_seconds` is answered 503
    SERVICE_UNAVAILABLE with Retry-After, before any byte of the file.
    """

    def __init__(self, slots: int, *, wait_seconds: float) -> None:
        self._free = asyncio.Semaphore(slots)
        self._wait_seconds = wait_seconds
        self.waiting = 0

    async def take(self) -> None:
        self.waiting += 1
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._free.acquire()
        except TimeoutError:
            raise ServiceBusy("the server is busy with other exports; try again shortly") from None
        finally:
            self.waiting -= 1

    def give_back(self) -> None:
        self._free.release()


async def export_csv(request: Request, export_type: str) -> Response:
    from .app import AppState  # the app module imports this one

    state: AppState = request.state.powerpulse
    tenant_id = request.state.principal.tenant_id
    exports = state.services.exports
    try:
        selection, excel = parse_filter(request)
        await exports.check(tenant_id, selection)
    except PowerPulseError as exc:  # a bad filter (400)
        return _error(exc)
    try:
        await state.export_slots.take()
    except ServiceBusy as exc:
        return _error(exc)
    if export_type == "messages":
        rows = exports.messages_csv(tenant_id, selection, excel=excel)
    else:
        rows = exports.conversations_csv(tenant_id, selection, excel=excel)
    chunks = _holding_slot(rows, state.export_slots)
    try:
        # The header comes once the export holds its connection: a busy server still
        # answers with a status instead of a response cut short.
        header = await anext(chunks)
    except PowerPulseError as exc:  # no free connection (503)
        return _error(exc)
    return CsvResponse(header, chunks, export_type)


async def _holding_slot(
    rows: AsyncGenerator[str, None], slots: ExportSlots
) -> AsyncGenerator[str, None]:
    """The export's chunks, its slot given back when they end, however they end.

    Started once (up to the header, which also takes the export's connection) before the
    response is made: an export refused then never sends a byte.
    """
    try:
        header = await anext(rows)
        yield ""  # started: the caller now builds the response
        yield header
        async for chunk in rows:
            yield chunk
    finally:
        try:
            await rows.aclose()
        finally:
            slots.give_back()


async def _starting_with(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for chunk in rest:
        yield chunk


async def conversations_csv(request: Request) -> Response:
    return await export_csv(request, "conversations")


async def messages_csv(request: Request) -> Response:
    return await export_csv(request, "messages")


async def download(request: Request) -> Response:
    """The older download address: /api/download?export_type=conversations|messages."""
    export_type = request.query_params.get("export_type", "conversations")
    if export_type not in EXPORT_TYPES:
        return _error(BadUserInput("export_type must be conversations or messages"))
    return await export_csv(request, export_type)
