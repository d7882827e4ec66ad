"""ASGI middleware guarding the HTTP surface: request ids, CSRF preflight, upload size."""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge
from .services.tenants import Principal

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


class _BodyTooLarge(Exception):
    pass


class GraphQLRequestGuard:
    """Checks GraphQL HTTP requests before the GraphQL view reads them.

    Multipart bodies must carry a preflight header (browsers cannot add one to a
    cross-site form post, so this stops CSRF), and no body may exceed the upload limit:
    the limit is enforced on the bytes as they arrive, not after buffering them.
    """

    def __init__(self, app: ASGIApp, *, path: str, max_body_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            scope["method"] == "POST"
            and content_type == b"multipart/form-data"
            and not any(name in headers for name in PREFLIGHT_HEADERS)
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

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await send_json_error(send, 413, PayloadTooLarge.code, _too_large(limit))
        except Exception as exc:  # the form parser wraps errors raised while reading
            if _caused_by(exc, _BodyTooLarge) and not started:
                await send_json_error(send, 413, PayloadTooLarge.code, _too_large(limit))
            else:
                raise


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


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
            principal = await app_state.authenticator.authenticate(key)
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
    if scope["method"] != "GET" or b"query=" in scope.get("query_string", b""):
        return False
    accept = dict(scope["headers"]).get(b"accept", b"")
    return b"text/html" in accept
