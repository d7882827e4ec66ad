"""One mapping from failures to GraphQL errors: coded, and never leaking internals."""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError
from strawberry.types import ExecutionContext

from ..errors import PowerPulseError
from .limits import limit_error_code

logger = logging.getLogger("powerpulse.graphql")

INTERNAL_ERROR_MESSAGE = "Internal server error"


def _request_id(execution_context: ExecutionContext | None) -> str | None:
    context: Any = execution_context.context if execution_context else None
    return getattr(context, "request_id", None)


def classify_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Give every error an extensions.code; mask and log anything unexpected, in place."""
    for error in errors:
        original = error.original_error
        extensions = dict(error.extensions or {})
        if isinstance(original, PowerPulseError):
            extensions["code"] = original.code
        elif original is None or isinstance(original, GraphQLError):
            if "code" not in extensions:
                extensions["code"] = _document_error_code(error.message)
        else:
            request_id = _request_id(execution_context)
            logger.error(
                "unexpected error in GraphQL request %s at %s",
                request_id,
                error.path,
                exc_info=(type(original), original, original.__traceback__),
            )
            error.message = INTERNAL_ERROR_MESSAGE
            error.original_error = None
            extensions = {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id}
        error.extensions = extensions


def _document_error_code(message: str) -> str:
    if limit_code := limit_error_code(message):
        return limit_code
    if message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if message.startswith("Variable '$"):
        return "BAD_USER_INPUT"
    return "GRAPHQL_VALIDATION_FAILED"
