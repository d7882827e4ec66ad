"""Streaming reader for grouped_chats exports: one chat at a time, memory flat as files grow."""

from __future__ import annotations

import io
import re
from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import IO, Any

import ijson

from ..errors import ConfigurationError, InvalidUpload

FAST_BACKENDS = ("yajl2_c",)
# An export nests three levels (object, chat array, record) plus whatever unknown fields
# hold. The parser's memory grows with the square of the depth, so deeper input is refused.
MAX_NESTING_DEPTH = 64
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


class PrefixedStream(io.RawIOBase):
    """A binary stream that first replays bytes already peeked from the source."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
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


# Structure only: quotes and brackets survive, everything else vanishes.
_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
# Opening brackets become +1, closing ones -1 (read as signed bytes).
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_STRING_WITH_BRACKETS = re.compile(rb'"[^"]*"')


class _DepthGuard(io.RawIOBase):
    """Passes bytes through while tracking JSON nesting depth outside strings.

    Every step is a C-speed bytes operation: escapes are removed, each chunk is reduced
    to its quotes and brackets, adjacent quote pairs (strings holding no bracket) drop
    out, the rare strings that hold brackets are cut, and the depth is a running sum.
    """

    def __init__(self, source: IO[bytes], max_depth: int = MAX_NESTING_DEPTH) -> None:
        self._source = source
        self._max_depth = max_depth
        self._depth = 0
        self._in_string = False
        self._escape_pending = False  # the previous chunk ended on an unpaired backslash

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        if size:
            self._inspect(bytes(data))
        return size

    def _inspect(self, chunk: bytes) -> None:
        if self._escape_pending:
            chunk = chunk[1:]
            self._escape_pending = False
        if b"\\" in chunk:
            chunk = chunk.replace(b"\\\\", b"")
            if chunk.endswith(b"\\"):
                chunk = chunk[:-1]
                self._escape_pending = True
            chunk = chunk.replace(b'\\"', b"")
        skeleton = chunk.translate(None, _STRUCTURE)
        if self._in_string:
            skeleton = b'"' + skeleton
        # Removing an adjacent pair of quotes never changes what lies outside strings.
        skeleton = skeleton.replace(b'""', b"")
        if b'"' in skeleton:
            skeleton = _STRING_WITH_BRACKETS.sub(b"", skeleton)
            opening = skeleton.find(b'"')
            self._in_string = opening != -1
            if self._in_string:
                skeleton = skeleton[:opening]
        else:
            self._in_string = False
        steps = array("b", skeleton.translate(_STEPS))
        if not steps:
            return
        deepest = max(accumulate(steps, initial=self._depth))
        if deepest > self._max_depth:
            raise InvalidUpload(
                f"the file nests JSON values more than {self._max_depth} levels deep"
            )
        self._depth += sum(steps)


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
    guarded = _DepthGuard(PrefixedStream(head, stream))
    return io.BufferedReader(guarded, buffer_size=_PEEK_BYTES)


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
