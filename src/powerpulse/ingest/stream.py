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


# A JSON escape of the UTF-16 high surrogate that pairs with a low one.
_HIGH_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
# A low surrogate escape that may be lone: not right after a high surrogate escape whose
# backslash follows another character than a backslash (a pair, the common case, which the
# search skips at C speed; what is left is judged byte by byte).
_LONE_LOW_CANDIDATE = re.compile(
    # Written to start with its literal "\u", which the search then looks for at C speed.
    rb"\\u(?<![^\\]\\u[dD][89abAB][0-9a-fA-F]{2}\\u)[dD][c-fC-F][0-9a-fA-F]{2}"
)
_ESCAPE_BYTES = 6  # a backslash, "u" and four hex digits
_REPLACEMENT_ESCAPE = b"\\ufffd"
_BACKSLASH = 0x5C
# Reads smaller than this go through a buffer of _PEEK_BYTES (held bytes must fit).
_SMALLEST_FILL = 64


class _LoneLowSurrogates(io.RawIOBase):
    """Rewrites each escaped low surrogate that does not follow an escaped high one
    (`\\udc00` alone) as `\\ufffd`, the replacement character clean_text makes of it.

    ijson's C backend decodes such an escape to bytes that are not UTF-8 and then refuses
    the whole file (a lone high surrogate it turns into "?" by itself). The rewrite keeps
    every byte offset: an escape is six bytes either way. An escape counts only where its
    backslash is not itself escaped, that is after an even run of backslashes, counted
    across reads. Bytes that may be the start of an escape, or a high surrogate escape the
    next bytes may pair with, wait for the next read.
    """

    def __init__(self, source: io.RawIOBase) -> None:
        self._source = source
        self._held = b""  # read, not yet passed on
        self._ready = b""  # rewritten already, for reads too small to rewrite into
        self._run = 0  # backslashes at the end of what was passed on
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._ready and len(view) < _SMALLEST_FILL:
            scratch = bytearray(_PEEK_BYTES)
            self._ready = bytes(scratch[: self._fill(memoryview(scratch))])
        if self._ready:
            size = min(len(view), len(self._ready))
            view[:size] = self._ready[:size]
            self._ready = self._ready[size:]
            return size
        return self._fill(view)

    def _fill(self, view: memoryview) -> int:
        """Read into `view`, rewrite what can be judged, hold back what cannot yet."""
        while True:
            total = len(self._held)
            view[:total] = self._held
            if not self._ended:
                got = self._source.readinto(view[total:])
                if got:
                    total += got
                else:
                    self._ended = True
            cut = total if self._ended else _safe_end(view, total)
            if cut or self._ended:
                break
            self._held = bytes(view[:total])
        if _LONE_LOW_CANDIDATE.search(view, 0, cut):  # rare: only then is anything copied
            view[:cut] = self._rewrite(bytes(view[:cut]))
        self._held = bytes(view[cut:total])
        self._run = self._run_before(view, cut)
        return cut

    def _run_before(self, data: Any, position: int) -> int:
        """The backslashes right before `position`, with those passed on before `data`."""
        start = position
        while start > 0 and data[start - 1] == _BACKSLASH:
            start -= 1
        return position - start + (self._run if start == 0 else 0)

    def _rewrite(self, data: bytes) -> bytes:
        fixed = bytearray(data)
        for match in _LONE_LOW_CANDIDATE.finditer(data):
            start = match.start()
            if self._run_before(data, start) % 2:
                continue  # an escaped backslash, then the text "udc00"
            high = start - _ESCAPE_BYTES
            if (
                high >= 0
                and _HIGH_SURROGATE_ESCAPE.match(data, high)
                and self._run_before(data, high) % 2 == 0
            ):
                continue  # the second half of a pair
            fixed[start : start + _ESCAPE_BYTES] = _REPLACEMENT_ESCAPE
        return bytes(fixed)


def _safe_end(view: memoryview, total: int) -> int:
    """How much of a read can be judged now: not an escape the read may have cut short
    (it starts with a backslash in the last five bytes), nor a high surrogate escape
    right before that point, which the next bytes may pair with."""
    tail = bytes(view[max(0, total - _ESCAPE_BYTES + 1) : total])
    backslash = tail.find(b"\\")
    cut = total if backslash == -1 else total - len(tail) + backslash
    if cut >= _ESCAPE_BYTES and _HIGH_SURROGATE_ESCAPE.match(view, cut - _ESCAPE_BYTES, cut):
        cut -= _ESCAPE_BYTES
    return cut


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

    def __init__(
        self, source: IO[bytes] | io.RawIOBase, max_depth: int = MAX_NESTING_DEPTH
    ) -> None:
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
    guarded = _DepthGuard(_LoneLowSurrogates(PrefixedStream(head, stream)))
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
