"""Hypercorn alone: a bare ASGI function answering bench/ceiling.py's fixed chat completion, no
framework. Against bench/ceiling.py (the same answer from Quart-Trio), what Quart's request dispatch
costs a request; proxycast's model routes no longer pay it (src/proxycast/direct.py).

    hypercorn --worker-class trio --bind 127.0.0.1:PORT asgi_ceiling:app    (from this folder)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ceiling import BODY

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

_BODY = BODY.encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the request's body, read and dropped
        message = await receive()
        more = message["type"] == "http.request" and bool(message.get("more_body"))
    await send(
        {"type": "http.response.start", "status": 200, "headers": _HEADERS, "trailers": False}
    )
    await send({"type": "http.response.body", "body": _BODY, "more_body": False})
