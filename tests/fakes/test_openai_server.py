"""The fake OpenAI server, driven by the real openai client over HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from powerpulse.analysis.schema import SYSTEM_PROMPT, BatchJudgement, response_format

from .openai_server import FakeOpenAI, fake_openai_server, judge, parse_conversations

SCRIPT = Path(__file__).with_name("openai_server.py")

CHATS = {
    "c-happy": (
        "--- 2026-01-05 ---\n"
        "[05:48] Customer: I bought a token but it has not arrived\n"
        "[05:58] Agent (jane): I have resent it now\n"
        "[06:00] Customer: got it, thank you!"
    ),
    "c-angry": (
        "[09:00] Customer: power outage in my area since morning\n"
        "[09:01] Bot: We are looking into it.\n"
        "[11:30] Customer: still no power and my bill is due"
    ),
    "c-sw": "[10:00] Customer: habari, nataka kujua salio\n[10:02] Agent: Sawa, dakika moja",
}


def user_message(chats: dict[str, str]) -> str:
    blocks = [f"### chat_id: {chat_id}\n{transcript}" for chat_id, transcript in chats.items()]
    return "Analyse these conversations.\n\n" + "\n\n".join(blocks)


async def ask(client: openai.AsyncOpenAI, chats: dict[str, str] = CHATS, **kwargs: Any) -> Any:
    return await client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-test",
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_message(chats)},
        ],
        response_format=response_format(),
        **kwargs,
    )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from fake_openai_server()


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="test", base_url=fake_openai.base_url, max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def test_normal_reply_is_a_valid_batch_judgement(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    completion = await ask(client)

    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert choice.finish_reason == "stop"
    assert choice.message.refusal is None
    batch = BatchJudgement.model_validate_json(choice.message.content or "")
    by_id = {item.chat_id: item for item in batch.analyses}
    assert list(by_id) == list(CHATS)

    happy, angry, swahili = by_id["c-happy"], by_id["c-angry"], by_id["c-sw"]
    assert (happy.satisfaction_score, happy.resolved, happy.initial_sentiment) == (5, True, 1)
    assert happy.topics == ["token purchase"]
    assert happy.language == "en"
    assert (angry.satisfaction_score, angry.resolved, angry.final_sentiment) == (1, False, 1)
    assert angry.topics == ["outage", "billing"]
    assert (swahili.satisfaction_score, swahili.topics, swahili.language) == (3, ["enquiry"], "sw")
    assert all(item.summary for item in batch.analyses)

    usage = completion.usage
    assert usage is not None
    sent = len(SYSTEM_PROMPT) + len(user_message(CHATS))
    assert usage.prompt_tokens == sent // 4
    assert usage.completion_tokens == len(choice.message.content or "") // 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    assert fake_openai.requests == 1
    assert fake_openai.requests_by_chat == {chat_id: 1 for chat_id in CHATS}
    [(timestamp, chat_ids, status)] = fake_openai.request_log
    assert chat_ids == tuple(CHATS)
    assert status == 200
    assert timestamp <= time.monotonic()
    last = fake_openai.last_request
    assert last is not None
    assert last["response_format"]["json_schema"]["name"] == "conversation_analyses"


async def test_judgement_is_deterministic(client: openai.AsyncOpenAI) -> None:
    first = await ask(client)
    second = await ask(client)
    assert first.choices[0].message.content == second.choices[0].message.content


async def test_chat_completions_path_without_v1(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url.removesuffix("/v1")
    async with openai.AsyncOpenAI(api_key="test", base_url=url, max_retries=0) as client:
        completion = await ask(client, {"x": "[01:00] Customer: hello"})
    assert json.loads(completion.choices[0].message.content or "")["analyses"][0]["chat_id"] == "x"


async def test_rate_limit_carries_retry_after(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.fail_next("rate_limit", retry_after=2, retry_after_ms=1500)

    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.response.headers["retry-after-ms"] == "1500"

    await ask(client)  # the fault was used up
    assert [entry.status for entry in fake_openai.request_log] == [429, 200]


async def test_rate_limit_defaults_to_one_second(
    client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail_next("rate_limit")
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)
    assert caught.value.response.headers["retry-after"] == "1"
    assert "retry-after-ms" not in caught.value.response.headers

    fake_openai.fail_next("rate_limit", retry_after="Wed, 21 Oct 2037 07:28:00 GMT")
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)
    assert caught.value.response.headers["retry-after"] == "Wed, 21 Oct 2037 07:28:00 GMT"


async def test_client_retries_honour_retry_after_ms(fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("rate_limit", times=2, retry_after=None, retry_after_ms=20)
    async with openai.AsyncOpenAI(
        api_key="test", base_url=fake_openai.base_url, max_retries=2
    ) as client:
        await ask(client)
    assert [entry.status for entry in fake_openai.request_log] == [429, 429, 200]
    assert fake_openai.requests_by_chat["c-happy"] == 3


async def test_insufficient_quota(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("insufficient_quota")
    with pytest.raises(openai.RateLimitError) as caught:
        await ask(client)
    assert caught.value.code == "insufficient_quota"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "insufficient_quota"
    assert "retry-after" not in caught.value.response.headers


@pytest.mark.parametrize(
    ("kind", "options", "error", "status"),
    [
        ("server_error", {}, openai.InternalServerError, 500),
        ("bad_gateway", {}, openai.InternalServerError, 502),
        ("bad_gateway", {"status": 503}, openai.InternalServerError, 503),
        ("unauthorized", {}, openai.AuthenticationError, 401),
        ("forbidden", {}, openai.PermissionDeniedError, 403),
        ("bad_request", {}, openai.BadRequestError, 400),
    ],
)
async def test_error_statuses(
    fake_openai: FakeOpenAI,
    client: openai.AsyncOpenAI,
    kind: str,
    options: dict[str, Any],
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    fake_openai.fail_next(kind, **options)
    with pytest.raises(error) as caught:
        await ask(client)
    assert caught.value.status_code == status
    assert fake_openai.request_log[0].status == status


async def test_hang_times_the_client_out(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.fail_next("hang")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await ask(client, timeout=0.5)
    assert time.monotonic() - started < 5
    assert fake_openai.requests == 1
    assert fake_openai.in_flight == 1  # still hanging; stop() releases it
    await ask(client, timeout=5)


async def test_short_hang_then_answers(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("hang", seconds=0.2)
    started = time.monotonic()
    completion = await ask(client, timeout=5)
    assert time.monotonic() - started >= 0.2
    BatchJudgement.model_validate_json(completion.choices[0].message.content or "")


async def test_peak_concurrency_with_latency(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.latency = 0.3
    await asyncio.gather(*(ask(client, {f"chat-{n}": "[01:00] Customer: hi"}) for n in range(8)))
    assert fake_openai.peak_concurrency == 8
    assert fake_openai.in_flight == 0
    assert fake_openai.requests == 8
    assert sum(fake_openai.requests_by_chat.values()) == 8


async def test_malformed_json_and_length(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.fail_next("malformed_json")
    fake_openai.fail_next("length")
    malformed = await ask(client)
    truncated = await ask(client)
    for completion in (malformed, truncated):
        with pytest.raises(ValidationError):
            BatchJudgement.model_validate_json(completion.choices[0].message.content or "")
    assert malformed.choices[0].finish_reason == "stop"
    assert truncated.choices[0].finish_reason == "length"


async def test_out_of_range_score(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("out_of_range")
    content = (await ask(client)).choices[0].message.content or ""
    assert json.loads(content)["analyses"][0]["satisfaction_score"] == 9
    with pytest.raises(ValidationError):
        BatchJudgement.model_validate_json(content)


async def test_refusal(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("refusal")
    message = (await ask(client)).choices[0].message
    assert message.content is None
    assert message.refusal


async def test_missing_chat(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("missing_chat")
    fake_openai.fail_next("missing_chat", chat_id="c-happy")
    for missing in ("c-sw", "c-happy"):
        content = (await ask(client)).choices[0].message.content or ""
        ids = [item.chat_id for item in BatchJudgement.model_validate_json(content).analyses]
        assert ids == [chat_id for chat_id in CHATS if chat_id != missing]


async def test_faults_apply_in_order(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.fail_next("server_error", times=2)
    fake_openai.fail_next("unauthorized")
    assert fake_openai.pending_faults == [("server_error", 2, None), ("unauthorized", 1, None)]
    for error in (openai.InternalServerError, openai.InternalServerError):
        with pytest.raises(error):
            await ask(client)
    with pytest.raises(openai.AuthenticationError):
        await ask(client)
    await ask(client)
    assert fake_openai.pending_faults == []
    assert [entry.status for entry in fake_openai.request_log] == [500, 500, 401, 200]


async def test_fail_chat_targets_requests_with_that_chat(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.fail_chat("target", "server_error", times=2)
    fake_openai.fail_next("bad_request")
    other = {"other": "[01:00] Customer: hi"}
    target = {"target": "[01:00] Customer: my token", **other}

    with pytest.raises(openai.InternalServerError):
        await ask(client, target)  # the chat fault wins; the queued one stays
    with pytest.raises(openai.BadRequestError):
        await ask(client, other)
    await ask(client, other)
    with pytest.raises(openai.InternalServerError):
        await ask(client, target)
    await ask(client, target)
    assert fake_openai.requests_by_chat == {"target": 3, "other": 5}
    assert [entry.status for entry in fake_openai.request_log] == [500, 400, 200, 500, 200]


async def test_reset(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.latency = 0.05
    fake_openai.fail_next("server_error", times=3)
    with pytest.raises(openai.InternalServerError):
        await ask(client)
    fake_openai.reset()
    assert fake_openai.requests == 0
    assert fake_openai.requests_by_chat == {}
    assert fake_openai.request_log == []
    assert fake_openai.peak_concurrency == 0
    assert fake_openai.pending_faults == []
    assert fake_openai.latency == 0.05
    await ask(client)
    assert fake_openai.requests == 1


def test_bad_arguments() -> None:
    server = FakeOpenAI()
    with pytest.raises(ValueError, match="unknown fault kind"):
        server.fail_next("explode")
    with pytest.raises(ValueError, match="times"):
        server.fail_next("server_error", times=0)
    with pytest.raises(ValueError, match="latency"):
        server.latency = -1
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.stop()  # not started: nothing to do


def test_start_stop_and_restart() -> None:
    server = FakeOpenAI()
    with server:
        first = server.base_url
        assert server.running
    assert not server.running
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
    assert first.endswith("/v1")


async def test_invalid_body_and_unknown_path(fake_openai: FakeOpenAI) -> None:
    root = fake_openai.base_url
    async with httpx.AsyncClient() as http:
        bad = await http.post(f"{root}/chat/completions", content=b"{nope")
        missing = await http.post(f"{root}/embeddings", json={})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 404
    assert fake_openai.request_log[0].status == 400


async def test_control_endpoints(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    root = fake_openai.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        queued = await http.post("/_fake/fail_next", json={"kind": "rate_limit", "retry_after": 3})
        assert queued.status_code == 200
        assert (await http.post("/_fake/latency", json={"latency": 0.01})).status_code == 200
        with pytest.raises(openai.RateLimitError) as caught:
            await ask(client)
        assert caught.value.response.headers["retry-after"] == "3"
        stats = (await http.get("/_fake/stats")).json()
        assert stats["requests"] == 1
        assert stats["statuses"] == {"429": 1}
        assert stats["latency"] == 0.01
        assert (await http.post("/_fake/fail_next", json={"kind": "nope"})).status_code == 400
        assert (await http.post("/_fake/reset")).json()["requests"] == 0


def test_judge_rules() -> None:
    transcript = (
        "--- 2026-01-01 ---\n"
        "[05:48] Customer: Habari, is there an outage?\n"
        "[05:58] Agent (jane): yes\n"
        "[06:00] Customer: ok"
    )
    result = judge("z", transcript)
    assert result["chat_id"] == "z"
    assert (result["satisfaction_score"], result["resolved"]) == (3, False)
    assert (result["topics"], result["language"]) == (["outage"], "sw")
    assert judge("n", "[01:00] Customer: this is not working")["satisfaction_score"] == 1
    assert judge("a", "[01:00] Customer: another question")["satisfaction_score"] == 3
    empty = judge("e", "")
    assert empty["topics"] == ["enquiry"]
    assert BatchJudgement.model_validate({"analyses": [result, empty]})
    text = "intro\n### chat_id: a\n[01:00] Customer: x\n\n### chat_id: b b\n[01:00] Bot: y\n"
    assert list(parse_conversations(text)) == ["a", "b b"]


@pytest.mark.slow
def test_standalone_process() -> None:
    command = [sys.executable, str(SCRIPT), "--port", "0", "--latency", "0.05"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            assert base_url.endswith("/v1")
            with openai.OpenAI(api_key="test", base_url=base_url, max_retries=0) as client:
                completion = client.chat.completions.create(
                    model="gpt-test",
                    messages=[{"role": "user", "content": user_message(CHATS)}],
                )
            BatchJudgement.model_validate_json(completion.choices[0].message.content or "")
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert json.loads(stderr.strip().splitlines()[-1])["requests"] == 1
