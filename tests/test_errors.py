"""Bad input and failing upstreams: OpenAI-shaped errors with the right status, never a traceback."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from proxycast.config import ProviderConfig
from proxycast.testing import FakeAnthropic, FakeOpenAI, Script
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, make_config, start_gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert "Traceback" not in error["message"]
    return error  # type: ignore[no-any-return]


async def post(gateway: Gateway, body: bytes | dict[str, object]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient() as h:
        return await h.post(gateway.v1 + "/chat/completions", content=content, headers=AUTH)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b'{"model": "gpt-4o", "messages": [', "not valid JSON", id="truncated"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[1, 2]", "must be a JSON object", id="array"),
        pytest.param(b"\xff\xfe", "not valid UTF-8", id="binary"),
    ],
)
async def test_malformed_json_is_400(gateway: Gateway, body: bytes, fragment: str) -> None:
    error = assert_openai_error(await post(gateway, body), 400)
    assert fragment in str(error["message"])
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        pytest.param({"messages": MESSAGES}, "model", "'model' is required", id="no-model"),
        pytest.param({"model": "gpt-4o"}, "messages", "'messages' is required", id="no-messages"),
        pytest.param(
            {"model": 4, "messages": MESSAGES}, "model", "'model' expected a string", id="model-int"
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": MESSAGES, "temperature": "hot"},
            "temperature",
            "'temperature' expected a number",
            id="temperature-str",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": MESSAGES, "stream": "yes"},
            "stream",
            "'stream' expected a boolean",
            id="stream-str",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": [{"role": "user"}]},
            "messages[0].content",
            "'messages[0].content' is required",
            id="no-content",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": [{"content": "x"}]},
            "messages[0]",
            "needs a 'role' field",
            id="no-role",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1.5},
            "max_tokens",
            "'max_tokens' expected an integer",
            id="max-tokens-float",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": MESSAGES, "tool_choice": "sometimes"},
            "tool_choice",
            "'tool_choice' expected one of 'none', 'auto', 'required'",
            id="tool-choice",
        ),
        pytest.param(
            {"model": "gpt-4o", "messages": MESSAGES, "stop": [1]},
            "stop[0]",
            "'stop[0]' expected a string",
            id="stop-int",
        ),
    ],
)
async def test_missing_or_mistyped_field_is_400_naming_it(
    converting: Gateway,
    claude_fake: FakeAnthropic,
    body: dict[str, object],
    param: str,
    fragment: str,
) -> None:
    # converted, the request is validated in full (forwarded, only its model and stream:
    # tests/test_passthrough_scope.py)
    error = assert_openai_error(await post(converting, body), 400)
    assert error["param"] == param
    assert fragment in str(error["message"])
    assert claude_fake.requests == []


async def test_body_over_the_limit_is_413(nursery: trio.Nursery, fake: FakeOpenAI) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url, max_body_bytes=1000))
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 2000}]}
    error = assert_openai_error(await post(gateway, big), 413)
    assert "1000 bytes" in str(error["message"])
    small = {"model": "gpt-4o", "messages": MESSAGES}
    assert (await post(gateway, small)).status_code == 200
    assert len(fake.requests) == 1


async def test_unknown_route_is_404_json(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as h:
        response = await h.get(gateway.v1 + "/nothing-here", headers=AUTH)
        elsewhere = await h.get(gateway.url + "/nothing")
    assert "/v1/nothing-here" in str(assert_openai_error(response, 404)["message"])
    assert_openai_error(elsewhere, 404)


async def test_wrong_method_is_405_json(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as h:
        response = await h.get(gateway.v1 + "/chat/completions", headers=AUTH)
        delete = await h.delete(gateway.v1 + "/models", headers=AUTH)
    assert "POST" in str(assert_openai_error(response, 405)["message"])
    assert_openai_error(delete, 405)


async def test_unreachable_upstream_is_502(nursery: trio.Nursery) -> None:
    with trio.socket.socket() as s:  # a port nobody listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gateway = await start_gateway(nursery, make_config(f"http://127.0.0.1:{port}/v1"))
    error = assert_openai_error(await post(gateway, {"model": "gpt-4o", "messages": MESSAGES}), 502)
    assert "'local'" in str(error["message"])
    # the provider now sits out (routing.cooldown): the next request is not sent, and says why,
    # as the service unavailable (a 503), not a rate limit
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 503
    assert "local#*: unreachable (connection refused)" in info.value.message
    assert int(info.value.response.headers["retry-after"]) > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_timeout_is_504(
    nursery: trio.Nursery, fake: FakeOpenAI, stream: bool
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url, upstream_timeout=0.2))
    fake.script(Script(headers_delay=5))
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": stream}
    error = assert_openai_error(await post(gateway, body), 504)
    assert "did not answer within 0.2 s" in str(error["message"])


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_upstream_error_keeps_status_and_message(
    gateway: Gateway, fake: FakeOpenAI, status: int, exception: type[openai.APIStatusError]
) -> None:
    fake.script(Script(status=status, error_message=f"upstream says {status}"))
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
        with pytest.raises(exception) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == status
    prefix = "Provider 'local' answered 404 to POST /v1/chat/completions: " if status == 404 else ""
    assert info.value.body == {
        "message": f"{prefix}upstream says {status}",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


async def test_retry_after_is_forwarded_on_429(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(status=429, error_message="slow down", headers=(("retry-after", "7"),)))
    response = await post(gateway, {"model": "gpt-4o", "messages": MESSAGES})
    assert_openai_error(response, 429)
    assert response.headers["retry-after"] == "7"


async def test_non_json_upstream_error_is_wrapped(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(status=500, error_body=b"<html>Internal Server Error</html>"))
    error = assert_openai_error(await post(gateway, {"model": "gpt-4o", "messages": MESSAGES}), 500)
    assert "Internal Server Error" in str(error["message"])
    assert "'local'" in str(error["message"])


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_credential_failure_is_502_naming_the_provider(
    gateway: Gateway, fake: FakeOpenAI, status: int
) -> None:
    fake.script(
        Script(status=status, error_message=f"Incorrect API key provided: {UPSTREAM_KEY[:6]}***")
    )
    response = await post(gateway, {"model": "gpt-4o", "messages": MESSAGES})
    error = assert_openai_error(response, 502)
    message = str(error["message"])
    assert "'local'" in message
    assert "credentials" in message
    assert UPSTREAM_KEY[:6] not in response.text
    assert error["code"] != "invalid_api_key"


async def test_error_after_the_stream_started_is_an_sse_error_frame(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    fake.script(Script(text="one two three four five", drop_after=3))
    async with httpx.AsyncClient() as h:
        body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
        response = await h.post(gateway.v1 + "/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    frames = [f for f in response.text.split("\n\n") if f]
    assert len(frames) == 4  # three chunks relayed, then the error
    error = json.loads(frames[-1].removeprefix("data: "))["error"]
    assert "'local'" in error["message"]
    assert "broke off the connection" in error["message"]
    assert "[DONE]" not in response.text
    fake.script(Script(text="one two three four five", drop_after=2))
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_stream_ending_without_finish_is_an_error(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(text="cut", send_done=False, finish_reason="stop"))
    async with httpx.AsyncClient() as h:
        body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
        clean = await h.post(gateway.v1 + "/chat/completions", json=body, headers=AUTH)
        fake.script(Script(text="cut", send_done=False, send_finish=False))
        cut = await h.post(gateway.v1 + "/chat/completions", json=body, headers=AUTH)
    # a finish reason was sent, only [DONE] was missing: the client gets its [DONE]
    assert clean.text.endswith('"finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
    # no finish reason: the stream was cut short, and the client is told so
    last = json.loads(cut.text.split("\n\n")[-2].removeprefix("data: "))
    assert "ended the stream before the completion was finished" in last["error"]["message"]
    assert "[DONE]" not in cut.text


async def test_upstream_mid_stream_error_frame_is_passed_on(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    fake.script(Script(text="fine then", error_after=2, error_message="model overloaded"))
    async with httpx.AsyncClient() as h:
        body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
        response = await h.post(gateway.v1 + "/chat/completions", json=body, headers=AUTH)
    frames = [f for f in response.text.split("\n\n") if f]
    assert len(frames) == 3
    assert json.loads(frames[-1].removeprefix("data: "))["error"]["message"] == "model overloaded"
    assert "[DONE]" not in response.text


async def test_secrets_do_not_appear_in_reprs() -> None:
    provider = ProviderConfig(name="p", type="openai", api_keys=(UPSTREAM_KEY,))
    config = make_config("http://127.0.0.1:1/v1")
    assert UPSTREAM_KEY not in repr(provider)
    assert UPSTREAM_KEY not in repr(config)
    assert CLIENT_KEY not in repr(config)
