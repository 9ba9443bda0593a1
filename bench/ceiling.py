"""The framework's ceiling: bare Quart-Trio answering a fixed chat completion (no upstream, no work),
or, when the request asks for a stream, bench/upstream.py's fixed 20-chunk stream as a streamed response
(an async generator, chunked encoding). The generator yields the stream in one piece, as proxycast
relays nginx's fixed stream: it arrives in one read, and the relay sends what one read translates to
in one piece. With ``CEILING_PIECES=each`` it yields chunk by chunk instead (one send per chunk: what a
real, paced LLM stream costs the framework).

hypercorn --worker-class trio --bind 127.0.0.1:PORT ceiling:app    (from this folder)
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio
from upstream import openai_chunks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

app = QuartTrio("ceiling")
BODY = json.dumps(
    {
        "id": "chatcmpl-ceiling",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-json",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the ceiling."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
)
if os.environ.get("CEILING_PIECES") == "each":
    CHUNKS = [c.encode() + b"\n\n" for c in openai_chunks(20).split("\n\n") if c]
else:
    CHUNKS = [openai_chunks(20).encode()]


async def stream() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


@app.post("/v1/chat/completions")
async def chat() -> Response:
    data = await request.get_data()
    if b'"stream": true' in data or b'"stream":true' in data:
        response = Response(stream(), content_type="text/event-stream")
        response.timeout = None
        return response
    return Response(BODY, content_type="application/json")
