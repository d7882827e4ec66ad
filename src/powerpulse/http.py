"""ASGI middleware guarding the HTTP surface: request ids, security headers, CSRF
preflight, content types, upload size and shape, rate limits and query timeouts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid
from html.parser import HTMLParser
from typing import TypeVar
from urllib.parse import urlsplit

from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, ServiceBusy
from .ratelimit import RateLimiter, retry_after_seconds
from .services.tenants import Principal

logger = logging.getLogger("powerpulse.http")

_E = TypeVar("_E", bound=BaseException)

PREFLIGHT_HEADERS = (b"apollo-require-preflight", b"graphql-require-preflight")


async def send_json_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Tags each request with an id, returned in X-Request-ID and logged with any failure."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class _Refused(Exception):
    """Raised while the body streams in: answer `status` with a coded error instead."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


JSON_CONTENT_TYPE = b"application/json"
MULTIPART_CONTENT_TYPE = b"multipart/form-data"


def _content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value.split(b";")[0].strip().lower())
    return b""


def is_multipart(scope: Scope) -> bool:
    return scope["method"] == "POST" and _content_type(scope) == MULTIPART_CONTENT_TYPE


class _MultipartInspector:
    """Watches a multipart body go by and notes the first part that breaks the rules.

    The GraphQL multipart request has small JSON fields (operations, map) and the files;
    PowerPulse's one upload takes one file. Malformed bodies are left to the form parser.
    """

    def __init__(self, boundary: bytes, *, max_files: int, max_field_bytes: int) -> None:
        self.max_files = max_files
        self.max_field_bytes = max_field_bytes
        self.files = 0
        self.violation: _Refused | None = None
        self._broken = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._is_file = False
        self._field_name = ""
        self._field_bytes = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_part,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
            },
        )

    def feed(self, chunk: bytes) -> None:
        if self._broken or self.violation is not None or not chunk:
            return
        try:
            self._parser.write(chunk)
        except Exception:
            self._broken = True  # not multipart as we know it: the form parser will say so

    def _part_begin(self) -> None:
        self._disposition = b""
        self._header_name = self._header_value = b""
        self._is_file = False
        self._field_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        self._field_name = params.get(b"name", b"").decode("latin-1")
        self._is_file = b"filename" in params
        if self._is_file:
            self.files += 1
            if self.files > self.max_files and self.violation is None:
                self.violation = _Refused(
                    400,
                    "TOO_MANY_FILES",
                    f"an upload request may carry at most {self.max_files} file(s)",
                )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            return
        self._field_bytes += end - start
        if self._field_bytes > self.max_field_bytes and self.violation is None:
            self.violation = _Refused(
                413,
                "FIELD_TOO_LARGE",
                f"the multipart field {self._field_name!r} is larger than "
                f"{self.max_field_bytes} bytes",
            )


class GraphQLRequestGuard:
    """Checks GraphQL HTTP requests before the GraphQL view reads them.

    POST bodies must be JSON or multipart (a form post or text/plain body gets 415, so a
    cross-site form cannot send one), multipart bodies must carry a preflight header
    (browsers cannot add one to a cross-site form post, so this stops CSRF) and at most
    `max_files` files and `max_field_bytes` per other field, and no body may exceed the
    upload limit: the limits are enforced on the bytes as they arrive, not after
    buffering them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_body_bytes: int,
        max_files: int = 1,
        max_field_bytes: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.max_files = max_files
        self.max_field_bytes = max_field_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = _content_type(scope)
        if scope["method"] == "POST" and content_type not in (
            JSON_CONTENT_TYPE,
            MULTIPART_CONTENT_TYPE,
        ):
            await send_json_error(
                send,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "send GraphQL requests as application/json (uploads as multipart/form-data)",
            )
            return
        if content_type == MULTIPART_CONTENT_TYPE and not any(
            name in headers for name in PREFLIGHT_HEADERS
        ):
            await send_json_error(
                send,
                400,
                "PREFLIGHT_REQUIRED",
                "multipart requests must carry an Apollo-Require-Preflight or "
                "GraphQL-Require-Preflight header",
            )
            return
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json_error(send, 413, PayloadTooLarge.code, _too_large(limit))
            return

        inspector = None
        if content_type == MULTIPART_CONTENT_TYPE:
            boundary = parse_options_header(headers.get(b"content-type"))[1].get(b"boundary")
            if boundary:
                inspector = _MultipartInspector(
                    boundary, max_files=self.max_files, max_field_bytes=self.max_field_bytes
                )
        received = 0
        started = False

        async def checking_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise _Refused(413, PayloadTooLarge.code, _too_large(limit))
                if inspector is not None:
                    inspector.feed(chunk)
                    if inspector.violation is not None:
                        raise inspector.violation
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, checking_receive, tracking_send)
        except Exception as exc:  # the form parser wraps errors raised while reading
            refusal = _cause(exc, _Refused)
            if refusal is None or started:
                raise
            await send_json_error(send, refusal.status, refusal.code, refusal.message)


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _too_large(limit: int) -> str:
    return f"the request body is larger than the upload limit of {limit} bytes"


class AuthenticationMiddleware:
    """Finds the principal of every API request: its API key's tenant, or the default tenant.

    Requests without a valid key get a 401 with a JSON error before any work is done. The
    GraphiQL page itself (a plain browser GET) needs no key; the queries it sends do.
    """

    def __init__(self, app: ASGIApp, *, protected: tuple[str, ...]) -> None:
        self.app = app
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.protected):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        # Servers copy the lifespan state per request, but nothing from an earlier request
        # may ever stand in for this one's credentials.
        state.pop("principal", None)
        app_state = state["powerpulse"]
        if app_state.settings.auth_disabled:
            state["principal"] = Principal(app_state.default_tenant_id, read_only=False)
            await self.app(scope, receive, send)
            return
        if _is_ide_page(scope):
            await self.app(scope, receive, send)
            return
        principal = None
        key = bearer_token(dict(scope["headers"]).get(b"authorization"))
        if key is not None:
            try:
                principal = await app_state.authenticator.authenticate(key)
            except (SQLAlchemyError, OSError, ServiceBusy):
                logger.exception("authentication could not reach the database")
                await send_json_error(
                    send,
                    503,
                    "SERVICE_UNAVAILABLE",
                    "the database is unavailable; try again shortly",
                    headers=[(b"retry-after", b"5")],
                )
                return
        if principal is None:
            message = (
                "this API key is not valid (unknown or revoked)"
                if key is not None
                else "send an API key as `Authorization: Bearer pp_…`"
            )
            await send_json_error(
                send,
                401,
                "UNAUTHENTICATED",
                message,
                headers=[(b"www-authenticate", b'Bearer realm="powerpulse"')],
            )
            return
        state["principal"] = principal
        await self.app(scope, receive, send)


def bearer_token(header: bytes | str | None) -> str | None:
    if not header:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _is_ide_page(scope: Scope) -> bool:
    # Parsed like the GraphQL view parses it, so an encoded name (%71uery) is still seen.
    parameters = QueryParams(scope.get("query_string", b""))
    if scope["method"] != "GET" or "query" in parameters:
        return False
    accept = dict(scope["headers"]).get(b"accept", b"")
    return b"text/html" in accept


# -- security headers --------------------------------------------------------------------

# Every response: no MIME sniffing, no framing, no referrer; CSP for anything but HTML.
COMMON_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
NON_HTML_CSP = "default-src 'none'; frame-ancestors 'none'"
# GraphiQL's stylesheet imports its fonts from Google Fonts.
GRAPHIQL_FONT_STYLES = "https://fonts.googleapis.com"
GRAPHIQL_FONTS = "https://fonts.gstatic.com"


class _PageResources(HTMLParser):
    """The external scripts and stylesheets of a page, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.script_origins: set[str] = set()
        self.style_origins: set[str] = set()
        self.inline_scripts: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "script":
            if attributes.get("src"):
                self.script_origins.add(_origin(attributes["src"]))
            else:
                self._inline = []
        elif tag == "link" and "stylesheet" in attributes.get("rel", "").split():
            self.style_origins.add(_origin(attributes.get("href", "")))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "'self'"


def ide_content_security_policy(html: str) -> str:
    """A CSP for the GraphQL IDE page that allows what the page loads, and nothing else.

    Scripts: the origins the page loads them from, and its inline scripts by hash (no
    'unsafe-inline', no 'unsafe-eval'). Styles: the page's stylesheet origins, Google Fonts
    (GraphiQL's stylesheet imports its fonts from there) and inline styles, which the
    editor sets at runtime. Requests go to this server only; nothing may frame the page.
    """
    page = _PageResources()
    page.feed(html)
    page.close()
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in page.inline_scripts
    ]
    script_src = " ".join(["'self'", *sorted(page.script_origins - {"'self'"}), *hashes])
    style_src = " ".join(
        [
            "'self'",
            "'unsafe-inline'",
            *sorted(page.style_origins - {"'self'"}),
            GRAPHIQL_FONT_STYLES,
        ]
    )
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {script_src}",
            f"style-src {style_src}",
            f"font-src 'self' data: {GRAPHIQL_FONTS}",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, the IDE's CSP to HTML pages."""

    def __init__(self, app: ASGIApp, *, html_csp: str | None = None) -> None:
        self.app = app
        self.html_csp = (html_csp or NON_HTML_CSP).encode()
        self.other_csp = NON_HTML_CSP.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next(
                    (value for name, value in headers if name.lower() == b"content-type"), b""
                )
                csp = self.html_csp if content_type.startswith(b"text/html") else self.other_csp
                for name, value in (*COMMON_SECURITY_HEADERS, (b"content-security-policy", csp)):
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- rate limits ---------------------------------------------------------------------------


class RateLimitMiddleware:
    """Answers 429 with Retry-After once a client has spent its budget.

    The client is the request's API key (its tenant when authentication is off; its
    address before it has authenticated, e.g. the GraphiQL page). Uploads (multipart
    requests to the GraphQL path) spend their own budget, queries and downloads the other.
    Runs after authentication, which puts the principal into the scope.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        requests: RateLimiter | None,
        uploads: RateLimiter | None,
        upload_path: str,
        exempt: tuple[str, ...] = ("/health",),
    ) -> None:
        self.app = app
        self.requests = requests
        self.uploads = uploads
        self.upload_path = upload_path
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        upload = scope["path"].rstrip("/") == self.upload_path and is_multipart(scope)
        limiter = self.uploads if upload else self.requests
        if limiter is not None:
            wait = limiter.acquire(client_key(scope))
            if wait > 0:
                seconds = retry_after_seconds(wait)
                what = "uploads" if upload else "requests"
                await send_json_error(
                    send,
                    429,
                    "RATE_LIMITED",
                    f"too many {what}: this client's budget is spent; retry in {seconds} s",
                    headers=[(b"retry-after", str(seconds).encode())],
                )
                return
        await self.app(scope, receive, send)


def client_key(scope: Scope) -> str:
    principal: Principal | None = scope.get("state", {}).get("principal")
    if principal is not None:
        if principal.key_id is not None:
            return f"key:{principal.key_id}"
        return f"tenant:{principal.tenant_id}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


# -- timeouts ------------------------------------------------------------------------------


class QueryTimeoutMiddleware:
    """Answers 503 REQUEST_TIMEOUT when a GraphQL query has not answered within `seconds`.

    The query is cancelled. Uploads (multipart requests) are not timed: their size is
    bounded instead, and a large upload may rightly take long.
    """

    def __init__(self, app: ASGIApp, *, path: str, seconds: float) -> None:
        self.app = app
        self.path = path
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path or is_multipart(scope):
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.seconds)

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)  # answering: let the response go out
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not deadline.expired() or started:
                raise
            await send_json_error(
                send,
                503,
                "REQUEST_TIMEOUT",
                f"the query did not finish within {self.seconds:g} seconds; ask for less "
                "(smaller pages, fewer fields) or narrow the filter",
            )
