"""A fake OpenAI-compatible chat-completions server for tests and benchmarks.

It is a real HTTP server on loopback (uvicorn in a background thread), so the real ``openai``
client talks to it over a socket exactly as it would to the real API.

Requests
    ``POST /v1/chat/completions`` (or ``/chat/completions``). Every user message is scanned for
    ``### chat_id: <id>`` headers; the lines after each header up to the next one are that
    conversation's transcript (``[HH:MM] Customer: ...``, ``[HH:MM] Agent (name): ...``,
    ``[HH:MM] Bot: ...``; anything else is ignored). The reply is a standard
    ``chat.completion`` whose message content is ``{"analyses": [...]}`` with one judgement per
    chat id, in request order, as :func:`judge` computes it.

Judgement rules (deterministic; see :func:`judge`)
    mood of a customer line: 5 if it contains "thank" or "asante", else 1 if it contains the
    word "still" or "not", else 3. satisfaction_score = final_sentiment = mood of the last
    customer line; initial_sentiment = mood of the first; sentiment_score = their mean, rounded
    down; resolved = satisfaction_score == 5; effort_score = 5 - (customer lines - 1) // 2
    (at least 1, at most 2 when the ending is unhappy). Topics from the customer text, in this
    order: "token" -> "token purchase", "power"/"outage" -> "outage", "bill" -> "billing",
    none of them -> "enquiry". language = "sw" if "asante" or "habari" appears, else "en".

Usage
    prompt_tokens = len(text of all messages) // 4, completion_tokens = len(content) // 4
    (each at least 1). ``usage_billed`` is the (prompt, completion) total of every answer
    that reported usage, valid or not.

Faults
    ``fail_next(kind, times=1, **options)`` queues a fault for the next ``times`` requests;
    ``fail_chat(chat_id, kind, times=1, **options)`` for the next requests that contain that
    chat id (chat faults are checked first; a request takes at most one fault). Kinds:

    ==================== =============================================================
    rate_limit           429, code rate_limit_exceeded; options retry_after (header
                         retry-after: a number, or a string sent as is; default 1 when
                         neither is given, None to omit) and retry_after_ms (header
                         retry-after-ms)
    insufficient_quota   429, type and code insufficient_quota, no retry headers
    server_error         500 (option status)
    bad_gateway          502 with an HTML body (option status, e.g. 503 with JSON)
    unauthorized         401, code invalid_api_key
    forbidden            403, code unsupported_country_region_territory
    bad_request          400, param response_format
    hang                 waits ``seconds`` (default 3600) before answering normally;
                         stop() releases every hung request
    malformed_json       200, content is the normal JSON cut in half (option content)
    length               200, finish_reason "length", content cut in half
    out_of_range         200, analyses[0].satisfaction_score = 9 (options field, value)
    refusal              200, message.refusal set and content null (option message)
    missing_chat         200, one chat id left out (option chat_id, default the last)
    ==================== =============================================================

    Every error kind also takes options status, message, type, code, param and headers
    (a dict of extra response headers, e.g. {"x-should-retry": "false"}).

Standalone (benchmarks)
    ``python tests/fakes/openai_server.py --port 0 --latency 0.3`` prints the base URL as its
    first stdout line and serves until SIGINT/SIGTERM. A separate process can be steered over
    HTTP: ``GET /_fake/stats``, ``POST /_fake/reset``, ``POST /_fake/latency``
    ``{"latency": 0.3}``, ``POST /_fake/fail_next`` ``{"kind": ..., "times": ..., **options}``,
    ``POST /_fake/fail_chat`` ``{"chat_id": ..., "kind": ..., "times": ..., **options}``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import uvicorn

__all__ = [
    "FAULT_KINDS",
    "FakeOpenAI",
    "LoggedRequest",
    "fake_openai_server",
    "judge",
    "parse_conversations",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})

# kind -> (status, message, type, code, param)
_ERRORS: dict[str, tuple[int, str, str, str | None, str | None]] = {
    "rate_limit": (
        429,
        "Rate limit reached for requests. Please try again later.",
        "requests",
        "rate_limit_exceeded",
        None,
    ),
    "insufficient_quota": (
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
        None,
    ),
    "server_error": (
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    ),
    "bad_gateway": (
        502,
        "The engine is currently overloaded, please try again later.",
        "server_error",
        None,
        None,
    ),
    "unauthorized": (
        401,
        "Incorrect API key provided. You can find your API key in your account settings.",
        "invalid_request_error",
        "invalid_api_key",
        None,
    ),
    "forbidden": (
        403,
        "Country, region, or territory not supported.",
        "request_forbidden",
        "unsupported_country_region_territory",
        None,
    ),
    "bad_request": (
        400,
        "Invalid schema for response_format 'conversation_analyses'.",
        "invalid_request_error",
        None,
        "response_format",
    ),
}
_REPLY_FAULTS = frozenset(
    {"hang", "malformed_json", "length", "out_of_range", "refusal", "missing_chat"}
)
FAULT_KINDS = frozenset(_ERRORS) | _REPLY_FAULTS

_HEADER = re.compile(r"^[ \t]*###[ \t]*chat_id:[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_LINE = re.compile(r"^\[(\d{1,2}:\d{2})\]\s+(Customer|Bot|Agent(?:\s*\([^)]*\))?):\s?(.*)$")
_HAPPY = re.compile(r"thank|asante", re.IGNORECASE)
_UNHAPPY = re.compile(r"\b(?:still|not)\b", re.IGNORECASE)
_SWAHILI = re.compile(r"asante|habari", re.IGNORECASE)
_TOPICS = (
    (("token",), "token purchase"),
    (("power", "outage"), "outage"),
    (("bill",), "billing"),
)


class LoggedRequest(NamedTuple):
    """One completion request: arrival (time.monotonic()), chat ids, status (None in flight)."""

    timestamp: float
    chat_ids: tuple[str, ...]
    status: int | None


@dataclass
class _Fault:
    kind: str
    remaining: int
    options: dict[str, Any] = field(default_factory=dict)
    chat_id: str | None = None


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


# ---------------------------------------------------------------------------- judging


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


def parse_conversations(text: str) -> dict[str, str]:
    """Chat id -> transcript section, in order of appearance (a repeated id is merged)."""
    conversations: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        chat_id = header.group(1)
        if not chat_id:
            continue
        section = text[header.end() : end].strip("\n")
        previous = conversations.get(chat_id)
        conversations[chat_id] = section if previous is None else f"{previous}\n{section}"
    return conversations


def _mood(text: str) -> int:
    if _HAPPY.search(text):
        return 5
    if _UNHAPPY.search(text):
        return 1
    return 3


def judge(chat_id: str, transcript: str) -> dict[str, Any]:
    """The deterministic judgement of one transcript, with every ConversationJudgement field."""
    customer: list[str] = []
    everything: list[str] = []
    for raw in transcript.splitlines():
        match = _LINE.match(raw.strip())
        if match is None:
            continue
        everything.append(match.group(3))
        if match.group(2) == "Customer":
            customer.append(match.group(3))
    first = customer[0] if customer else ""
    last = customer[-1] if customer else ""
    initial, final = _mood(first), _mood(last)
    resolved = final == 5
    effort = max(1, 5 - max(0, len(customer) - 1) // 2)
    if final == 1:
        effort = min(effort, 2)
    customer_text = " ".join(customer or everything).casefold()
    topics = [
        topic for words, topic in _TOPICS if any(word in customer_text for word in words)
    ] or ["enquiry"]
    language = "sw" if _SWAHILI.search(customer_text) else "en"
    if customer:
        plural = "" if len(customer) == 1 else "s"
        outcome = "resolved" if resolved else "not resolved"
        summary = (
            f"The customer wrote {len(customer)} message{plural} about "
            f"{', '.join(topics)}; the issue was {outcome}."
        )
    else:
        summary = "The customer wrote nothing; there was nothing to resolve."
    return {
        "chat_id": chat_id,
        "satisfaction_score": final,
        "sentiment_score": (initial + final) // 2,
        "initial_sentiment": initial,
        "final_sentiment": final,
        "resolved": resolved,
        "effort_score": effort,
        "topics": topics,
        "summary": summary,
        "language": language,
    }


# ---------------------------------------------------------------------------- the server


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    body = json.dumps(payload).encode()
    pairs = [(b"content-type", b"application/json")]
    pairs += [(key.lower().encode(), str(value).encode()) for key, value in (headers or {}).items()]
    return _Reply(status, body, pairs)


def _error_reply(
    status: int,
    message: str,
    type_: str | None = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> _Reply:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return _json_reply(status, {"error": error}, headers)


class FakeOpenAI:
    """A fake chat-completions server on 127.0.0.1; thread-safe controls and counters.

    ``with FakeOpenAI(latency=0.1) as server: AsyncOpenAI(base_url=server.base_url, ...)``
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        loop: str = "asyncio",
    ) -> None:
        self._host = host
        self._requested_port = port
        self._loop_kind = loop
        self._lock = threading.Lock()
        self._latency = 0.0
        self.latency = latency
        self._faults: collections.deque[_Fault] = collections.deque()
        self._chat_faults: list[_Fault] = []
        self._requests = 0
        self._by_chat: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self._peak = 0
        self._billed = (0, 0)
        self._log: list[LoggedRequest] = []
        self._generation = 0
        self._last_request: dict[str, Any] | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._port: int | None = None
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> FakeOpenAI:
        """Serve in a background thread; return once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the fake OpenAI server is already running")
        config = uvicorn.Config(
            self._asgi,
            host=self._host,
            port=self._requested_port,
            loop="none",
            http="auto",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._failure = None
        self._thread = threading.Thread(
            target=self._run, args=(server,), name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._abandon()
                raise RuntimeError("the fake OpenAI server did not start") from self._failure
            time.sleep(0.005)
        self._port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def _run(self, server: uvicorn.Server) -> None:
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if self._loop_kind == "uvloop":
            with contextlib.suppress(ImportError):
                import uvloop

                factory = uvloop.new_event_loop
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._serve(server))
        except BaseException as exc:  # uvicorn exits with SystemExit when it cannot bind
            self._failure = exc

    async def _serve(self, server: uvicorn.Server) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        await server.serve()

    def stop(self, timeout: float = 10.0) -> None:
        """Release hung requests, let in-flight ones finish, stop serving; idempotent."""
        thread, server, loop, release = self._thread, self._server, self._loop, self._release
        if thread is None or server is None:
            return
        if loop is not None and release is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(release.set)
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._abandon()

    def _abandon(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5)
        self._thread = self._server = self._loop = self._release = None
        self._port = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._port is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake OpenAI server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` — pass as ``base_url`` to the openai client."""
        return f"http://{self._host}:{self.port}/v1"

    # ------------------------------------------------------------------ controls

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        seconds = float(seconds)
        if not seconds >= 0:
            raise ValueError("latency must be zero or more seconds")
        with self._lock:
            self._latency = seconds

    def fail_next(self, kind: str, times: int = 1, **options: Any) -> None:
        """The next ``times`` requests (after earlier queued faults) fail as ``kind``."""
        self._queue(_Fault(self._checked(kind), self._count(times), dict(options)))

    def fail_chat(self, chat_id: str, kind: str, times: int = 1, **options: Any) -> None:
        """The next ``times`` requests that contain ``chat_id`` fail as ``kind``."""
        fault = _Fault(self._checked(kind), self._count(times), dict(options), str(chat_id))
        self._queue(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._chat_faults.clear()

    @property
    def pending_faults(self) -> list[tuple[str, int, str | None]]:
        """(kind, remaining, chat_id or None) for every fault not yet used up."""
        with self._lock:
            faults = [*self._chat_faults, *self._faults]
            return [(fault.kind, fault.remaining, fault.chat_id) for fault in faults]

    def reset(self) -> None:
        """Forget counters, the log and queued faults (latency is kept)."""
        with self._lock:
            self._faults.clear()
            self._chat_faults.clear()
            self._requests = 0
            self._by_chat = collections.Counter()
            self._peak = self._in_flight
            self._billed = (0, 0)
            self._log = []
            self._generation += 1
            self._last_request = None

    @staticmethod
    def _checked(kind: str) -> str:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        return kind

    @staticmethod
    def _count(times: int) -> int:
        if not isinstance(times, int) or times < 1:
            raise ValueError("times must be a positive integer")
        return times

    def _queue(self, fault: _Fault) -> None:
        with self._lock:
            if fault.chat_id is None:
                self._faults.append(fault)
            else:
                self._chat_faults.append(fault)

    def _take_fault(self, chat_ids: tuple[str, ...]) -> _Fault | None:
        # Called with the lock held.
        for index, fault in enumerate(self._chat_faults):
            if fault.chat_id in chat_ids:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._chat_faults[index]
                return fault
        if self._faults:
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.popleft()
            return fault
        return None

    # ------------------------------------------------------------------ counters

    @property
    def requests(self) -> int:
        """Completion requests received (including ones that were answered with a fault)."""
        with self._lock:
            return self._requests

    @property
    def requests_by_chat(self) -> collections.Counter[str]:
        """How many requests contained each chat id (a copy)."""
        with self._lock:
            return collections.Counter(self._by_chat)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def peak_concurrency(self) -> int:
        """The most completion requests in flight at once."""
        with self._lock:
            return self._peak

    @property
    def usage_billed(self) -> tuple[int, int]:
        """(prompt, completion) tokens reported by every answer so far, valid or not."""
        with self._lock:
            return self._billed

    @property
    def request_log(self) -> list[LoggedRequest]:
        """(timestamp, chat_ids, status) per request in arrival order (a copy)."""
        with self._lock:
            return list(self._log)

    @property
    def last_request(self) -> dict[str, Any] | None:
        """The JSON body of the latest completion request."""
        with self._lock:
            return self._last_request

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "requests_by_chat": dict(self._by_chat),
                "in_flight": self._in_flight,
                "peak_concurrency": self._peak,
                "latency": self._latency,
                "statuses": dict(collections.Counter(entry.status for entry in self._log)),
                "pending_faults": len(self._faults) + len(self._chat_faults),
            }

    # ------------------------------------------------------------------ ASGI

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope["path"].rstrip("/") or "/"
        method = scope["method"]
        if path in COMPLETION_PATHS:
            if method != "POST":
                reply = _error_reply(405, f"Method {method} not allowed for {path}.")
                await self._send(send, reply)
                return
            await self._completion(bytes(body), send)
            return
        if path.startswith("/_fake/"):
            reply = self._control(method, path, bytes(body))
        elif path in {"/v1/models", "/models"} and method == "GET":
            model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}
            reply = _json_reply(200, {"object": "list", "data": [model]})
        else:
            reply = _error_reply(404, f"Invalid URL ({method} {path})")
        await self._send(send, reply)

    @staticmethod
    async def _send(send: Send, reply: _Reply) -> None:
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _completion(self, raw: bytes, send: Send) -> None:
        arrived = time.monotonic()
        payload: Any = None
        with contextlib.suppress(ValueError):
            payload = json.loads(raw)
        messages: list[Any] = []
        if isinstance(payload, dict) and isinstance(payload.get("messages"), list):
            messages = payload["messages"]
        valid = bool(messages)
        texts = [_message_text(message) for message in messages]
        conversations: dict[str, str] = {}
        for message, text in zip(messages, texts, strict=True):
            if isinstance(message, dict) and message.get("role") == "user":
                for chat_id, section in parse_conversations(text).items():
                    previous = conversations.get(chat_id)
                    conversations[chat_id] = (
                        section if previous is None else f"{previous}\n{section}"
                    )
        chat_ids = tuple(conversations)
        with self._lock:
            self._requests += 1
            self._by_chat.update(chat_ids)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            generation, index = self._generation, len(self._log)
            self._log.append(LoggedRequest(arrived, chat_ids, None))
            fault = self._take_fault(chat_ids) if valid else None
            latency = self._latency
            if isinstance(payload, dict):
                self._last_request = payload
        still_in_flight = True
        try:
            if latency > 0:
                await asyncio.sleep(latency)
            if not valid:
                reply = _error_reply(
                    400,
                    "We could not parse the JSON body of your request, or 'messages' is missing.",
                    param="messages",
                )
            else:
                reply = await self._answer(payload, texts, conversations, fault)
            # Done before the reply leaves, so a client that has its answer sees the counts.
            with self._lock:
                if self._generation == generation:
                    self._log[index] = self._log[index]._replace(status=reply.status)
                self._in_flight -= 1
                still_in_flight = False
            await self._send(send, reply)
        finally:
            if still_in_flight:
                with self._lock:
                    self._in_flight -= 1

    async def _answer(
        self,
        payload: dict[str, Any],
        texts: list[str],
        conversations: dict[str, str],
        fault: _Fault | None,
    ) -> _Reply:
        kind = fault.kind if fault is not None else None
        options = fault.options if fault is not None else {}
        if kind in _ERRORS:
            return self._fault_error(kind, options)
        if kind == "hang":
            seconds = float(options.get("seconds", 3600))
            if self._release is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), seconds)
            else:
                await asyncio.sleep(seconds)
        analyses = [judge(chat_id, section) for chat_id, section in conversations.items()]
        if kind == "missing_chat" and analyses:
            drop = options.get("chat_id", analyses[-1]["chat_id"])
            analyses = [item for item in analyses if item["chat_id"] != drop]
        if kind == "out_of_range" and analyses:
            analyses[0][options.get("field", "satisfaction_score")] = options.get("value", 9)
        content: str | None = json.dumps({"analyses": analyses}, ensure_ascii=False)
        refusal: str | None = None
        finish_reason = "stop"
        if kind in {"malformed_json", "length"}:
            assert content is not None
            content = options.get("content", content[: max(1, len(content) // 2)])
            if kind == "length":
                finish_reason = "length"
        elif kind == "refusal":
            refusal = options.get("message", "I'm sorry, but I can't help with that request.")
            content = None
        prompt_tokens = max(1, sum(len(text) for text in texts) // 4)
        completion_tokens = max(1, len(content or refusal or "") // 4)
        with self._lock:
            self._billed = (self._billed[0] + prompt_tokens, self._billed[1] + completion_tokens)
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(payload.get("model") or "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }
        return _json_reply(200, completion, {"x-request-id": f"req_{uuid.uuid4().hex}"})

    @staticmethod
    def _fault_error(kind: str, options: dict[str, Any]) -> _Reply:
        status, message, type_, code, param = _ERRORS[kind]
        status = int(options.get("status", status))
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}"}
        if kind == "rate_limit":
            if "retry_after" not in options and "retry_after_ms" not in options:
                headers["retry-after"] = "1"
            if options.get("retry_after") is not None:
                headers["retry-after"] = _number(options["retry_after"])
            if options.get("retry_after_ms") is not None:
                headers["retry-after-ms"] = _number(options["retry_after_ms"])
            headers["x-ratelimit-remaining-requests"] = "0"
        headers.update({str(k): str(v) for k, v in (options.get("headers") or {}).items()})
        if kind == "bad_gateway" and status in {502, 504} and "message" not in options:
            title = f"{status} {'Bad Gateway' if status == 502 else 'Gateway Time-out'}"
            page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            pairs = [(b"content-type", b"text/html")]
            pairs += [(key.encode(), value.encode()) for key, value in headers.items()]
            return _Reply(status, page.encode(), pairs)
        return _error_reply(
            status,
            str(options.get("message", message)),
            options.get("type", type_),
            options.get("code", code),
            options.get("param", param),
            headers,
        )

    def _control(self, method: str, path: str, raw: bytes) -> _Reply:
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/_fake/stats" and method == "GET":
                return _json_reply(200, self.stats())
            if method != "POST":
                return _error_reply(405, f"Method {method} not allowed for {path}.")
            if path == "/_fake/reset":
                self.reset()
            elif path == "/_fake/latency":
                self.latency = float(body["latency"])
            elif path == "/_fake/fail_next":
                self.fail_next(body.pop("kind"), int(body.pop("times", 1)), **body)
            elif path == "/_fake/fail_chat":
                chat_id, kind = body.pop("chat_id"), body.pop("kind")
                self.fail_chat(chat_id, kind, int(body.pop("times", 1)), **body)
            else:
                return _error_reply(404, f"Invalid URL ({method} {path})")
        except (KeyError, TypeError, ValueError) as exc:
            return _error_reply(400, f"Bad control request: {exc!r}")
        return _json_reply(200, self.stats())


def _number(value: Any) -> str:
    """2 -> "2", 1.5 -> "1.5"; anything else (an HTTP date, garbage) is sent as given."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    return str(value)


def fake_openai_server(**options: Any) -> Iterator[FakeOpenAI]:
    """A started server, stopped afterwards; wrap it as a fixture::

    @pytest.fixture
    def fake_openai() -> Iterator[FakeOpenAI]:
        yield from fake_openai_server(latency=0.0)
    """
    with FakeOpenAI(**options) as server:
        yield server


# ---------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI chat-completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args(argv)

    finished = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        finished.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeOpenAI(host=args.host, port=args.port, latency=args.latency, loop=args.loop) as fake:
        print(fake.base_url, flush=True)
        while not finished.wait(0.5):
            pass
        stats = fake.stats()
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
