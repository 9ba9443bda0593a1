"""What the inbound APIs share: reading bodies, reading upstream answers, streaming responses."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from quart import Response

from proxycast._json import NotAnObjectError, RejectedJSONError, parse_object
from proxycast.app import request_resources
from proxycast.errors import InvalidRequestError, UpstreamUnavailableError
from proxycast.providers._http import aclose_shielded, iter_body, mapped_errors
from proxycast.relay import Relay

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from proxycast.providers._http import Upstream
    from proxycast.relay import Translator

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


def parse_body(raw: bytes) -> tuple[str, dict[str, Any], dict[str, tuple[int, int]]]:
    """The body's text, its top-level object and value spans; 400 when it is not a JSON object."""
    try:
        text = raw.decode("utf-8")
        body, spans = parse_object(text)
    except UnicodeDecodeError:
        raise InvalidRequestError("The request body is not valid UTF-8.") from None
    except NotAnObjectError as exc:
        raise InvalidRequestError(
            f"The request body must be a JSON object, not a JSON {exc}."
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from None
    except RejectedJSONError as exc:
        raise InvalidRequestError(f"The request body is refused: {exc}.") from None
    return text, body, spans


OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed and validated in a worker thread, not on the event loop."""

T = TypeVar("T")


async def parse_and_validate(
    raw: bytes, validate: Callable[[dict[str, Any]], T]
) -> tuple[str, dict[str, tuple[int, int]], T]:
    """:func:`parse_body`, then ``validate`` on the object: in a worker thread for a large body, so
    that a costly one (a million invalid items) does not stall every other client."""

    def work() -> tuple[str, dict[str, tuple[int, int]], T]:
        text, body, spans = parse_body(raw)
        return text, spans, validate(body)

    if len(raw) <= OFF_LOOP_BYTES:
        return work()
    return await trio.to_thread.run_sync(work)


def json_object(upstream: Upstream, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamUnavailableError(
            f"Provider {upstream.provider.name!r} answered with a body that is not a JSON object."
        )
    return value


async def read_all(upstream: Upstream, response: httpx.Response) -> bytes:
    try:
        with mapped_errors(upstream.provider, upstream.server):
            return await response.aread()
    finally:
        await aclose_shielded(response)  # noqa: ASYNC102 - shielded inside


def stream_response(
    upstream: Upstream, response: httpx.Response, translator: Translator
) -> Response:
    """The streamed answer: upstream pieces relayed through ``translator`` as they arrive."""
    chunks = iter_body(response, upstream.provider, upstream.server)

    async def close() -> None:
        await chunks.aclose()
        await aclose_shielded(response)

    # quart closes the body once it sends it; the request's stack closes it if that never happens
    request_resources().push_async_callback(close)
    relay = Relay(chunks, translator, close)
    result = Response(relay, status=200, content_type="text/event-stream", headers=SSE_HEADERS)
    result.timeout = None
    return result
