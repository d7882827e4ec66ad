"""Turning one raw export record into a normalised message, or a reason it is invalid."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..kinds import SenderKind

MAX_CHAT_ID_LENGTH = 255
MAX_IDENTIFIER_LENGTH = 255
# Post ids up to this long are their own de-duplication key ("p:" + id); longer ones hashed.
MAX_PLAIN_KEY_ID_LENGTH = 200
MAX_NAME_LENGTH = 320
MAX_LABEL_LENGTH = 50
EARLIEST_PLAUSIBLE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_PLAUSIBLE = datetime(2100, 1, 1, tzinfo=UTC)
# Epoch numbers above this are milliseconds (as seconds they would be past the year 5000).
EPOCH_MILLISECONDS_THRESHOLD = 100_000_000_000

_DIRECTIONS = {"to_company": True, "to_client": False}
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class InvalidRecord(ValueError):
    """A record the export cannot be trusted for; it is skipped and reported."""


STORED_FIELDS_START = 3


class NormalisedMessage(NamedTuple):
    """One valid record. A plain tuple underneath: cheap to build, sort and send."""

    chat_id: str
    index: int
    platform: str | None
    # From here on, the fields are the stored message columns in MessageRepository's
    # INSERT_COLUMNS order (after conversation_id): rows are built by slicing.
    message_key: str
    external_id: str | None
    sender: SenderKind
    content: str | None
    sent_at: datetime
    agent_username: str | None
    agent_email: str | None
    message_type: str | None
    via: str | None

    @property
    def agent(self) -> str | None:
        """The identity an agent is counted under: username, else email."""
        return self.agent_username or self.agent_email


def clean_text(value: str) -> str:
    """Make text storable in every database: no NUL bytes, no unpaired surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _LONE_SURROGATE.search(value):
        value = _LONE_SURROGATE.sub("\ufffd", value)
    return value


def _optional_text(record: dict[str, Any], field: str, max_length: int | None) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    # Every record passes through here several times: the common case (plain ASCII text)
    # takes the shortest path.
    if value.__class__ is not str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidRecord(f"{field} must be a string, not {type(value).__name__}")
        value = str(value)
    if not value.isascii() or "\x00" in value:
        value = clean_text(value)
    text = value.strip()
    if not text:
        return None
    if max_length is not None and len(text) > max_length:
        raise InvalidRecord(f"{field} is longer than {max_length} characters")
    return text


_labels: dict[str, str] = {}


def _label(record: dict[str, Any], field: str) -> str | None:
    """Descriptive labels are kept short rather than failing the message over them."""
    value = record.get(field)
    if value.__class__ is str:
        known = _labels.get(value)
        if known is not None:
            return known
    text = _optional_text(record, field, None)
    if not text:
        return None
    # Lower-case first: lower() can lengthen text ("İ" becomes two characters), and a label
    # longer than its column fails the whole upload on PostgreSQL.
    label = text.lower()[:MAX_LABEL_LENGTH]
    # Exports repeat a handful of labels ("facebook", "fb_chat"); remember a few.
    if value.__class__ is str and len(_labels) < 256:
        _labels[value] = label
    return label


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (offset or Z; none means UTC) or epoch seconds/milliseconds, returned in UTC."""
    if value is None:
        raise InvalidRecord("SOCIAL_CREATE_TIME is missing")
    if isinstance(value, bool):
        raise InvalidRecord("SOCIAL_CREATE_TIME must be a string or a number")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise InvalidRecord("SOCIAL_CREATE_TIME is not a finite number")
        if abs(seconds) >= EPOCH_MILLISECONDS_THRESHOLD:
            seconds /= 1000
        try:
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidRecord(f"SOCIAL_CREATE_TIME {value!r} is out of range") from exc
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidRecord("SOCIAL_CREATE_TIME is empty")
        shown = text if len(text) <= 40 else text[:40] + "…"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidRecord(f"SOCIAL_CREATE_TIME {shown!r} is not a valid timestamp") from exc
        try:
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except OverflowError as exc:  # e.g. 9999-12-31T23:00-05:00 is past datetime.max in UTC
            raise InvalidRecord(f"SOCIAL_CREATE_TIME {shown!r} is out of range") from exc
    else:
        raise InvalidRecord("SOCIAL_CREATE_TIME must be a string or a number")
    if not EARLIEST_PLAUSIBLE <= moment < LATEST_PLAUSIBLE:
        raise InvalidRecord(
            f"SOCIAL_CREATE_TIME {moment.isoformat()} is outside 1970-01-01 to 2100-01-01"
        )
    return moment


def message_identity(
    *,
    chat_id: str,
    external_id: str | None,
    direction: str,
    sent_at: datetime,
    content: str | None,
    agent_username: str | None,
) -> str:
    """The de-duplication key: the export's post id, else a hash of what the message is."""
    if external_id is not None:
        if len(external_id) <= MAX_PLAIN_KEY_ID_LENGTH:
            return "p:" + external_id
        return "P:" + hashlib.sha256(external_id.encode()).hexdigest()
    digest = hashlib.sha256(
        "\x1f".join(
            (chat_id, direction, sent_at.isoformat(), content or "", agent_username or "")
        ).encode("utf-8", "surrogatepass")
    ).hexdigest()
    return "h:" + digest[:40]


_BOT = SenderKind.BOT
_AGENT = SenderKind.AGENT
_CUSTOMER = SenderKind.CUSTOMER
_tuple_new = tuple.__new__
_from_iso = datetime.fromisoformat


def normalise_record(
    chat_id: str, index: int, record: Any, *, max_message_chars: int
) -> NormalisedMessage:
    """Validate one record; raises InvalidRecord with a reason a person can act on.

    This runs once per record of every upload, so the usual record (an exact direction,
    an ISO time in UTC, fields that are absent or plain text) takes the shortest path;
    anything else goes through the same checks written out in full.
    """
    if record.__class__ is not dict and not isinstance(record, dict):
        raise InvalidRecord(f"record must be an object, not {_json_type(record)}")
    get = record.get
    direction: Any = get("DIRECTION")
    to_company = _DIRECTIONS.get(direction) if direction.__class__ is str else None
    if to_company is None:
        direction, to_company = _direction(direction)
    value = get("SOCIAL_CREATE_TIME")
    sent_at = None
    if value.__class__ is str:
        try:
            sent_at = _from_iso(value)
        except ValueError:
            pass
        else:
            if sent_at.tzinfo is not UTC or not EARLIEST_PLAUSIBLE <= sent_at < LATEST_PLAUSIBLE:
                sent_at = None
    if sent_at is None:
        sent_at = parse_timestamp(value)
    content = get("MESSAGE_CONTENT")
    if content is not None:
        content = _optional_text(record, "MESSAGE_CONTENT", None)
        if content is not None and len(content) > max_message_chars:
            raise InvalidRecord(f"MESSAGE_CONTENT is longer than {max_message_chars} characters")
    agent_username = get("AGENT_USERNAME")
    if agent_username is not None:
        agent_username = _optional_text(record, "AGENT_USERNAME", MAX_NAME_LENGTH)
    agent_email = get("AGENT_EMAIL")
    if agent_email is not None:
        agent_email = _optional_text(record, "AGENT_EMAIL", MAX_NAME_LENGTH)
    external_id = get("UNIQUE_POST_ID")
    if external_id is not None:
        external_id = _optional_text(record, "UNIQUE_POST_ID", None)
    if to_company:
        sender = _CUSTOMER
    elif agent_username or agent_email:
        sender = _AGENT
    else:
        sender = _BOT
    if external_id is not None and len(external_id) <= MAX_PLAIN_KEY_ID_LENGTH:
        key = "p:" + external_id  # message_identity's first case, without the call
    else:
        key = message_identity(
            chat_id=chat_id,
            external_id=external_id,
            direction=direction,
            sent_at=sent_at,
            content=content,
            agent_username=agent_username,
        )
    # Positional, in field order, without NamedTuple's own constructor (a Python call).
    return _tuple_new(
        NormalisedMessage,
        (
            chat_id,
            index,
            _label(record, "PLATFORM"),
            key,
            external_id[:MAX_IDENTIFIER_LENGTH] if external_id else None,
            sender,
            content,
            sent_at,
            agent_username,
            agent_email,
            _label(record, "MESSAGE_TYPE"),
            _label(record, "VIA"),
        ),
    )


def _direction(value: Any) -> tuple[str, bool]:
    """A direction written other than exactly: (its normal form, whether it is to_company)."""
    if value is None:
        raise InvalidRecord("DIRECTION is missing")
    if not isinstance(value, str):
        raise InvalidRecord(f"DIRECTION must be a string, not {_json_type(value)}")
    direction = value.strip().lower()
    if direction not in _DIRECTIONS:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise InvalidRecord(f"unknown DIRECTION {shown!r} (expected to_company or to_client)")
    return direction, _DIRECTIONS[direction]


def is_autoresponse(message: NormalisedMessage, patterns: list[str]) -> bool:
    """Only bot messages are ever dropped: customers and agents quote the patterns for real."""
    if message.sender is not SenderKind.BOT or not message.content:
        return False
    text = message.content.casefold()
    return any(pattern.casefold() in text for pattern in patterns)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
