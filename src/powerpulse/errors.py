"""Domain errors. Each carries a stable code that the API layer maps once to a client error."""

from __future__ import annotations

from typing import Any


class PowerPulseError(Exception):
    """Base of every error whose message is safe to show to a client."""

    code = "INTERNAL_SERVER_ERROR"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadUserInput(PowerPulseError):
    code = "BAD_USER_INPUT"


class InvalidUpload(PowerPulseError):
    """The uploaded file cannot be read as a grouped_chats export; nothing was stored."""

    code = "INVALID_UPLOAD"


class PayloadTooLarge(PowerPulseError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class NotFound(PowerPulseError):
    code = "NOT_FOUND"
    http_status = 404


class Forbidden(PowerPulseError):
    code = "FORBIDDEN"
    http_status = 403


class Unauthenticated(PowerPulseError):
    code = "UNAUTHENTICATED"
    http_status = 401


class ServiceBusy(PowerPulseError):
    """The server could not take the request on now; the client should retry shortly."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class ConfigurationError(PowerPulseError):
    code = "CONFIGURATION_ERROR"
