"""The framework's ceiling: bare Quart-Trio answering a fixed chat completion (no upstream, no work).

hypercorn --worker-class trio --bind 127.0.0.1:PORT ceiling:app    (from this folder)
"""

from __future__ import annotations

import json

from quart import Response, request
from quart_trio import QuartTrio

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


@app.post("/v1/chat/completions")
async def chat() -> Response:
    await request.get_data()
    return Response(BODY, content_type="application/json")
