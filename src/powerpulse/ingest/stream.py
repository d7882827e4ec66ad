"""Streaming reader for grouped_chats exports: one chat at a time, memory flat as files grow."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any

import ijson

from ..errors import ConfigurationError, InvalidUpload

FAST_BACKENDS = ("yajl2_c",)
_PEEK_BYTES = 64 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def require_fast_json_backend() -> str:
    """Fail at start-up rather than parse uploads fifty times slower than expected."""
    if ijson.backend not in FAST_BACKENDS:
        raise ConfigurationError(
            f"ijson is using its {ijson.backend!r} backend; PowerPulse needs the C backend "
            "(yajl2_c). Reinstall ijson from a wheel for this platform."
        )
    return str(ijson.backend)


class _Prefixed(io.RawIOBase):
    """A binary stream that first replays bytes already peeked from the source."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _open_top_level(stream: IO[bytes]) -> IO[bytes]:
    head = stream.read(_PEEK_BYTES)
    if head.startswith(_UTF8_BOM):
        head = head[len(_UTF8_BOM) :]
    if head.startswith(_UTF16_BOMS) or (len(head) >= 2 and (head[0] == 0 or head[1] == 0)):
        raise InvalidUpload("the file is not UTF-8 (it looks like UTF-16); export it as UTF-8")
    stripped = head.lstrip()
    while not stripped:
        more = stream.read(_PEEK_BYTES)
        if not more:
            raise InvalidUpload("the file is empty; expected a JSON object of chat id → messages")
        head += more
        stripped = head.lstrip()
    first = stripped[:1]
    if first == b"[":
        raise InvalidUpload(
            "the top-level JSON value is an array; expected an object of chat id → messages"
        )
    if first != b"{":
        kind = "a string" if first == b'"' else "not a JSON object"
        raise InvalidUpload(
            f"the top-level JSON value is {kind}; expected an object of chat id → messages"
        )
    return io.BufferedReader(_Prefixed(head, stream), buffer_size=_PEEK_BYTES)


def iter_chats(stream: IO[bytes]) -> Iterator[tuple[str, list[Any]]]:
    """Yield (chat id, raw records) pairs in file order; raise InvalidUpload on broken files.

    Only one chat's records are in memory at a time. A chat id may appear twice (a
    duplicate key); both are yielded and merged downstream.
    """
    source = _open_top_level(stream)
    try:
        for chat_id, records in ijson.kvitems(source, "", use_float=True):
            if not isinstance(records, list):
                raise InvalidUpload(
                    f"chat {_shorten(chat_id)!r} holds {_describe(records)}, not an array of "
                    "messages; expected an object of chat id → messages",
                    chat_id=chat_id,
                )
            yield chat_id, records
    except ijson.IncompleteJSONError as exc:
        raise InvalidUpload(f"the file is not valid JSON: {_reason(exc)}") from exc
    except ijson.JSONError as exc:
        raise InvalidUpload(f"the file is not valid JSON: {_reason(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidUpload("the file is not valid UTF-8 text") from exc
    except RecursionError as exc:
        raise InvalidUpload("the file nests JSON values too deeply") from exc


def _reason(exc: Exception) -> str:
    """The parser's first line only: later lines quote the file, which is not ours to echo."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
