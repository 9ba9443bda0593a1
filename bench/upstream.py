"""The benchmarks' upstream: nginx answering OpenAI, Anthropic and Gemini requests with fixed bodies
(JSON, and SSE streams of a given number of chunks, all sent at once), on loopback.

Locations (the path before ``/v1`` is the provider's ``base_url``):

- ``/json/v1/chat/completions``, ``/sse/v1/chat/completions``: OpenAI, JSON and a 20-chunk stream;
- ``/anth-json/v1/messages``, ``/anth-sse/v1/messages``: Anthropic, JSON and a 21-event stream;
- ``/gem-json/v1beta/models/{model}:generateContent`` and ``/gem-sse/.../{model}:streamGenerateContent``
  (Gemini; nginx ignores the ``?alt=sse`` query): JSON for any model, a 20-chunk stream for the
  model ``gemini-bench-sse``;
- ``/sse{N}/v1/chat/completions``, ``/anth-sse{N}/v1/messages`` for each N of ``chunks``: streams of N
  chunks (events), for the relay cost (a long body is served from a file: nginx's configuration
  parser takes at most 4 KB in one string);
- ``/pool/v1/chat/completions``, ``/pool-sse/v1/chat/completions``: the OpenAI JSON and stream, but
  a 429 with a one-day ``Retry-After`` to the key ``cooled`` (a key pool with one key cooling).

Every stream's first content is the text ``word0``: the time-to-first-chunk probe looks for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

FIRST_CONTENT = b"word0"
GEMINI_SSE_MODEL = "gemini-bench-sse"
COOLED_KEY = "cooled"

OPENAI_JSON = json.dumps(
    {
        "id": "chatcmpl-b",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-json",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from nginx."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
)
ANTHROPIC_JSON = json.dumps(
    {
        "id": "msg_b",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench-json",
        "content": [{"type": "text", "text": "Hello from nginx."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }
)
GEMINI_JSON = json.dumps(
    {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hello from nginx."}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9},
        "modelVersion": "gemini-bench-json",
        "responseId": "resp-b",
    }
)


def openai_chunks(chunks: int = 20) -> str:
    """A role chunk, ``chunks - 2`` content chunks, a finish chunk (with usage), then ``[DONE]``."""
    base = {
        "id": "chatcmpl-b",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-sse",
    }
    out: list[dict[str, Any]] = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for i in range(chunks - 2):
        out.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
            }
        )
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in out) + "data: [DONE]\n\n"


def anthropic_events(events: int = 21) -> str:
    """``message_start``, a text block of ``events - 5`` deltas, ``message_delta``, ``message_stop``."""
    deltas = events - 5
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_b", "type": "message", "role": "assistant", "model": "claude-bench-sse",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }  # fmt: skip
    out: list[tuple[str, dict[str, Any]]] = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    for i in range(deltas):
        delta = {"type": "text_delta", "text": f"word{i} "}
        out.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    out += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": deltas + 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in out)


def gemini_chunks(chunks: int = 20) -> str:
    """``chunks`` text chunks with growing usage; the last carries ``finishReason: STOP``."""
    out = []
    for i in range(chunks):
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": f"word{i} "}]},
            "index": 0,
        }
        if i == chunks - 1:
            candidate["finishReason"] = "STOP"
        usage = {"promptTokenCount": 5, "candidatesTokenCount": i + 1, "totalTokenCount": 6 + i}
        out.append(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": "gemini-bench-sse",
                "responseId": "resp-b",
            }
        )
    return "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in out)


def _inline(path: str, content_type: str, body: str, exact: bool = True) -> str:
    if "'" in body or "$" in body or len(body) >= 4000:  # nginx: quoting, variables, 4 KB strings
        raise ValueError(f"{path}: serve this body from a file")
    match = "=" if exact else "~"
    return f"location {match} {path} {{ default_type {content_type}; return 200 '{body}'; }}\n"


def _from_file(folder: Path, path: str, content_type: str, body: str) -> str:
    """A POST answered with a file's content: nginx's static module refuses POST (405), and an
    ``error_page`` redirect turns the request into a GET of the same URI, served from ``root``."""
    root = folder / "static"
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body)
    return (
        f"location = {path} {{ root {root}; default_type {content_type}; "
        f"error_page 405 =200 $uri; }}\n"
    )


def nginx_config(folder: Path, port: int, chunks: tuple[int, ...] = ()) -> Path:
    """nginx's configuration file (in ``folder``) listening on ``port``; ``chunks``: the lengths of
    the extra streams (``/sse{N}``, ``/anth-sse{N}``)."""

    def pool(path: str, content_type: str, body: str) -> str:
        return (
            f"location = {path} {{ default_type {content_type}; "
            f'if ($http_authorization = "Bearer {COOLED_KEY}") {{ add_header retry-after 86400 always; '
            'return 429 \'{"error": {"message": "slow down", "type": "rate_limit_error"}}\'; } '
            f"return 200 '{body}'; }}\n"
        )

    locations = [
        _inline("/json/v1/chat/completions", "application/json", OPENAI_JSON),
        _inline("/sse/v1/chat/completions", "text/event-stream", openai_chunks()),
        _inline("/anth-json/v1/messages", "application/json", ANTHROPIC_JSON),
        _inline("/anth-sse/v1/messages", "text/event-stream", anthropic_events()),
        _inline("^/gem-json/v1beta/models/[^/]+:generateContent$", "application/json", GEMINI_JSON, False),
        _from_file(folder, f"/gem-sse/v1beta/models/{GEMINI_SSE_MODEL}:streamGenerateContent", "text/event-stream", gemini_chunks()),
        pool("/pool/v1/chat/completions", "application/json", OPENAI_JSON),
        pool("/pool-sse/v1/chat/completions", "text/event-stream", openai_chunks()),
    ]  # fmt: skip
    for n in chunks:
        locations.append(
            _from_file(
                folder, f"/sse{n}/v1/chat/completions", "text/event-stream", openai_chunks(n)
            )
        )
        locations.append(
            _from_file(
                folder, f"/anth-sse{n}/v1/messages", "text/event-stream", anthropic_events(n)
            )
        )
    config = folder / "nginx.conf"
    body = "        ".join(locations)
    config.write_text(
        f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 16384; }}
worker_rlimit_nofile 40000;
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {folder};
    etag off;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        {body}
    }}
}}
"""
    )
    return config
