"""The relay floor: the fixed stack alone relaying a request, with nothing of proxycast's in it.

Quart-Trio on Hypercorn (as bench/ceiling.py) forwarding the client's body to the upstream through
httpx's transport called directly (as proxycast does: no client layers), and the upstream's answer
back, streamed or not. No routing, validation, conversion, accounting or error handling: what any
gateway on this stack pays for one relayed request, the floor under proxycast's own cost.

    UPSTREAM=http://127.0.0.1:PORT hypercorn --worker-class trio --bind 127.0.0.1:PORT relay_floor:app
    UPSTREAM=http://127.0.0.1:PORT python bench/relay_floor.py 127.0.0.1:PORT   (one process)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx
from quart import Response, request
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

app = QuartTrio("relay_floor")
UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8080")
ROUTES = {  # the model -> the upstream path (bench/run.py's nginx)
    "bench-json": "/json/v1/chat/completions",
    "bench-sse": "/sse/v1/chat/completions",
    "slow": "/slow/v1/chat/completions",  # bench/streams.py --floor's upstream
    "fast": "/fast/v1/chat/completions",
}
_transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None))


@app.post("/v1/chat/completions")
async def chat() -> Response:
    body = await request.get_data()
    model = (await request.get_json())["model"]
    upstream = httpx.Request(
        "POST",
        UPSTREAM + ROUTES[model],
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer x"},
    )
    answer = await _transport.handle_async_request(upstream)
    if answer.headers.get("content-type", "").startswith("text/event-stream"):

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.stream:  # type: ignore[union-attr]
                    yield chunk
            finally:
                await answer.aclose()

        return Response(relay(), content_type="text/event-stream")
    data = await answer.aread()
    return Response(data, status=answer.status_code, content_type="application/json")


def main() -> None:
    """Serve in this process (the ``hypercorn`` command forks a worker: its RSS would not be this
    process's): ``python relay_floor.py HOST:PORT``."""
    import sys
    from functools import partial

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [sys.argv[1]]
    config.backlog = 4096
    config.accesslog = None
    trio.run(partial(serve, app, config, mode="asgi"))


if __name__ == "__main__":
    main()
