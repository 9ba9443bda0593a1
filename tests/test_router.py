"""The router: every API surface through one table, path parameters, 404 against 405, HEAD, and
WebSocket upgrades refused cleanly (a 4xx in the path's dialect, never a 500) where no WebSocket
route is."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from proxycast import api, formats
from proxycast.core.exchange import Exchange
from proxycast.formats.contracts import InboundRoute
from proxycast.http.router import Mismatch, Route, Router, compile_path
from proxycast.upstream.catalog import Catalog
from tests.support import CLIENT_KEY, make_config

if TYPE_CHECKING:
    from proxycast.core.answer import Answer
    from proxycast.http.call import Call
    from tests.support import Gateway


async def _nothing(call: Call) -> Answer:
    raise AssertionError("not called")


def _route(method: str, path: str) -> Route:
    declared = InboundRoute(path=path, operation="generate", method=method)
    return Route(
        method=method, path=path, handler=_nothing, dialect=formats.DIALECTS[0], declared=declared
    )


def test_patterns_take_parameters() -> None:
    pattern = compile_path("/v1beta/models/{model}:generateContent")
    assert pattern is not None
    found = pattern.match("/v1beta/models/gemini-2.5-pro:generateContent")
    assert found is not None
    assert found.groupdict() == {"model": "gemini-2.5-pro"}
    assert pattern.match("/v1beta/models/a/b:generateContent") is None  # one segment
    rest = compile_path("/v1/models/{model:path}")
    assert rest is not None
    found = rest.match("/v1/models/local/llama3.2")
    assert found is not None
    assert found.groupdict() == {"model": "local/llama3.2"}
    assert compile_path("/v1/chat/completions") is None


def test_match_404_405_and_head() -> None:
    router = Router(
        [
            _route("POST", "/v1/responses"),
            _route("GET", "/v1/responses/{id}"),
            _route("DELETE", "/v1/responses/{id}"),
            _route("GET", "/v1/models"),
        ]
    )
    route, params = router.match("GET", "/v1/responses/resp_1")  # type: ignore[misc]
    assert (route.method, params) == ("GET", {"id": "resp_1"})
    assert router.match("PUT", "/v1/responses/resp_1") == Mismatch(("GET", "DELETE"))
    assert router.match("GET", "/v1/responses") == Mismatch(("POST",))
    assert router.match("GET", "/v1/nothing") == Mismatch(())
    head = router.match("HEAD", "/v1/models")
    assert not isinstance(head, Mismatch)
    assert head[0].method == "GET"
    assert router.owns("/v1/anything")
    assert router.owns("/v1")
    assert not router.owns("/v1x")
    assert not router.owns("/ui/api/overview")


def test_every_route_of_the_registry_has_its_handler() -> None:
    config = make_config("http://127.0.0.1:9/v1")
    exchange = Exchange(config)
    handlers = api.handlers(exchange, Catalog(config), None)
    router = Router.from_registry(formats.DIALECTS, handlers)  # a KeyError for a missing one
    declared = [(r.method, r.path) for d in formats.DIALECTS for r in d.routes]
    assert sorted((r.method, r.path) for r in router.routes()) == sorted(declared)
    assert len(set(declared)) == len(declared)  # no route is served twice


async def _handshake(
    gateway: Gateway, path: str, key: str | None = CLIENT_KEY
) -> tuple[int, bytes]:
    """A WebSocket opening handshake (RFC 6455 4.1) as a client sends it; the status and body of
    the HTTP answer."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        with trio.fail_after(10):
            while True:
                chunk = await stream.receive_some()
                if not chunk:
                    break
                data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        pytest.param("/v1/messages", 405, "invalid_request_error", id="messages"),
        pytest.param("/v1/chat/completions", 405, "invalid_request_error", id="chat"),
        pytest.param("/v1/nothing", 404, "not_found_error", id="unknown-v1"),
        pytest.param("/ui", 404, "not_found_error", id="ui"),
    ],
)
async def test_a_websocket_upgrade_without_a_route_is_a_clean_4xx(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, path: str, status: int, kind: str
) -> None:
    caplog.set_level(logging.INFO)
    answered, body = await _handshake(gateway, path)
    assert answered == status
    error = json.loads(body)["error"]
    assert path in error["message"]
    assert error["type"] in (kind, "invalid_request_error", "not_found_error")
    if status == 405:
        assert "WebSocket" in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_websocket_upgrade_needs_a_key(gateway: Gateway) -> None:
    answered, body = await _handshake(gateway, "/v1/responses", key=None)
    assert answered == 401
    assert "API key" in json.loads(body)["error"]["message"]


async def test_head_and_a_model_id_with_a_slash(gateway: Gateway) -> None:
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient() as client:
        listed = await client.get(gateway.v1 + "/models", headers=auth)
        head = await client.head(gateway.v1 + "/models", headers=auth)
        one = await client.get(gateway.v1 + "/models/local/llama3.2", headers=auth)
    assert listed.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == listed.headers["content-length"]
    assert one.status_code == 200
    assert one.json()["id"] == "local/llama3.2"
