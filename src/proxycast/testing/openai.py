"""A fake OpenAI-compatible upstream (``POST /v1/chat/completions``, and ``POST /v1/responses`` as OpenAI
serves it), scriptable per test.

Its answers have the shapes real OpenAI traffic has: the role chunk first, content deltas, tool calls
whose first delta carries ``index``/``id``/``type``/``name`` and ``arguments: ""`` and whose later deltas
carry only ``index`` and argument fragments, a ``delta: {}`` chunk with the finish reason, the usage chunk
(``choices: []``) when ``stream_options.include_usage`` is set, then ``data: [DONE]``.

``FakeOpenAI(local=LocalServer())`` behaves as a local server (llama-cpp-python's) instead: see
:mod:`proxycast.testing.local`.

Usage::

    fake = FakeOpenAI()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(fake.serve)      # http://127.0.0.1:PORT/v1
        fake.script(Script(text="Hi there", chunks=3, interval=0.01))
        ...
        fake.requests[-1].json()                          # what the upstream received
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast.formats import internal
from proxycast.testing import local as localserver
from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder, fake_vector

if TYPE_CHECKING:
    from proxycast.testing.local import LocalServer


def ratelimit_headers(
    requests: int,
    tokens: int,
    reset_requests: str = "1s",
    reset_tokens: str = "1s",
    limit_requests: int = 500,
    limit_tokens: int = 30000,
) -> tuple[tuple[str, str], ...]:
    """The ``x-ratelimit-*`` headers OpenAI sends with every answer (resets as Go durations: ``6m0s``,
    ``20ms``), for a script's ``headers``."""
    return (
        ("x-ratelimit-limit-requests", str(limit_requests)),
        ("x-ratelimit-limit-tokens", str(limit_tokens)),
        ("x-ratelimit-remaining-requests", str(requests)),
        ("x-ratelimit-remaining-tokens", str(tokens)),
        ("x-ratelimit-reset-requests", reset_requests),
        ("x-ratelimit-reset-tokens", reset_tokens),
    )


@attrs.frozen(kw_only=True)
class FakeToolCall:
    name: str
    arguments: str = "{}"
    """The arguments' JSON text, streamed in fragments."""
    id: str | None = None


@attrs.frozen(kw_only=True)
class Script:
    """How the fake answers one request."""

    text: str = "Hello! How can I help you today?"
    reasoning: str = ""
    """Reasoning text (``reasoning_content``, as DeepSeek and vLLM send it), before the answer."""
    tool_calls: tuple[FakeToolCall, ...] = ()
    chunks: int = 0
    """Content deltas to split ``text`` into; 0: one per word."""
    interval: float = 0.0
    """Seconds between two chunks of a stream."""
    headers_delay: float = 0.0
    """Seconds to wait before answering at all."""
    status: int = 200
    error_message: str = "The fake upstream failed."
    error_type: str = "invalid_request_error"
    error_body: bytes | None = None
    """The exact body to send with :attr:`status` instead of an answer (an error that is not
    OpenAI-shaped, or with status 200, an answer that is not one: a proxy's HTML page, say)."""
    headers: tuple[tuple[str, str], ...] = ()
    drop_after: int | None = None
    """Cut the connection after this many chunks (streams) or before the body (non-streaming)."""
    stall_after: int | None = None
    """Fall silent after this many chunks of a stream, for :attr:`stall_seconds`, then go on."""
    stall_seconds: float = 60.0
    finish_reason: str | None = None
    """Default: ``tool_calls`` when there are tool calls, else ``stop``."""
    prompt_tokens: int = 11
    cached_tokens: int = 0
    """Of the prompt tokens, read from the prompt cache (``prompt_tokens_details.cached_tokens``)."""
    completion_tokens: int | None = None
    """Default: one per word of the text plus one per tool call."""
    error_after: int | None = None
    """Send an OpenAI error frame (``data: {"error": ...}``) after this many chunks, then end."""
    send_finish: bool = True
    """False: the stream ends (cleanly) without the chunk that carries the finish reason."""
    send_done: bool = True


def _split(text: str, chunks: int) -> list[str]:
    if not text:
        return []
    if chunks <= 0:
        words = text.split(" ")
        return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
    size = max(1, -(-len(text) // chunks))
    return [text[i : i + size] for i in range(0, len(text), size)]


def problem(body: dict[str, Any], max_tool_id: int, reasoning_echo: bool) -> tuple[str, str] | None:
    """What the upstream refuses in this request (message, param), in its own words; None if nothing.

    OpenAI: a tool call id longer than ``max_tool_id`` (``string_above_max_length``). DeepSeek's
    thinking mode (``reasoning_echo``): an assistant message with tool calls but no
    ``reasoning_content``.
    """
    for i, message in enumerate(body.get("messages") or []):
        ids = [c.get("id", "") for c in message.get("tool_calls") or ()]
        for j, ident in enumerate(ids):
            if len(ident) > max_tool_id:
                return (
                    f"Invalid 'messages[{i}].tool_calls[{j}].id': string too long. Expected a string "
                    f"with maximum length {max_tool_id}, but got a string with length "
                    f"{len(ident)} instead.",
                    f"messages[{i}].tool_calls[{j}].id",
                )
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str) and len(call_id) > max_tool_id:
            return (
                f"Invalid 'messages[{i}].tool_call_id': string too long. Expected a string with "
                f"maximum length {max_tool_id}, but got a string with length {len(call_id)} "
                "instead.",
                f"messages[{i}].tool_call_id",
            )
        if reasoning_echo and ids and "reasoning_content" not in message:
            return (
                f"Missing `reasoning_content` field in the assistant message at message index {i}. "
                "For more information, please refer to "
                "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls",
                f"messages[{i}]",
            )
    return None


class FakeOpenAI(FakeUpstream[Script]):
    """A scriptable OpenAI-compatible upstream; see the module docstring.

    Args:
        max_tool_id: the longest tool call id it accepts (OpenAI's Chat Completions: 40).
        reasoning_echo: behave as DeepSeek's thinking mode, which refuses an assistant message with
            tool calls that does not carry its ``reasoning_content`` back.
        local: behave as a local server (llama-cpp-python's), set up so: :mod:`.local`.
        prompt_cache: count prompt tokens (a token per four characters of the messages) and
            report as cached the longest run of leading messages this key was sent before, as
            OpenAI's automatic prompt caching does per organisation.
    """

    url_suffix = "/v1"

    def __init__(
        self,
        default: Script | None = None,
        *,
        max_tool_id: int = 40,
        reasoning_echo: bool = False,
        local: LocalServer | None = None,
        prompt_cache: bool = False,
    ) -> None:
        super().__init__(default or Script())
        self.max_tool_id = max_tool_id
        self.reasoning_echo = reasoning_echo
        self.local = local
        self.prompt_cache = prompt_cache
        self._prefixes: dict[str, set[str]] = {}
        """Prompt cache: per key, the digests of every run of leading messages it was sent."""
        self.embedding_failures: list[Script] = []
        """Errors (``Script(status=...)``) the embeddings route answers, one a request, before it
        answers vectors again."""
        self.counted: list[tuple[int, int]] = []
        """Local mode: ``(prompt tokens, completion tokens)`` the server computed for each answer it
        generated (streamed ones included, though it does not report them there)."""
        self.stored: dict[str, list[dict[str, Any]]] = {}
        """The Responses route's stored responses: id -> the items of its conversation."""
        self._streaming: list[trio.Event] = []
        """Local mode: the interruption flag of each stream being served."""

    async def side_route(self, request: RecordedRequest, respond: Responder) -> bool:
        if request.method in ("GET", "HEAD") and request.route == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"}
                for m in self.models
            ]
            await respond.json(200, {"object": "list", "data": data})
            return True
        if request.method == "POST" and request.route == "/v1/embeddings":
            if self.embedding_failures:  # scripted errors first, one a request
                await self._error(self.embedding_failures.pop(0), respond)
                return True
            await respond.json(200, embeddings(request.json()))
            return True
        if request.method == "POST" and request.route == "/v1/responses/input_tokens":
            # OpenAI counts with its tokenizer; the fake, a token a word of the request's input
            body = request.json()
            words = len(json.dumps(body.get("input", "")).split()) + len(
                str(body.get("instructions") or "").split()
            )
            await respond.json(200, {"object": "response.input_tokens", "input_tokens": words})
            return True
        return False

    def takes_script(self, request: RecordedRequest) -> bool:
        return not _warm_up(request)

    async def answer(self, script: Script, request: RecordedRequest, respond: Responder) -> None:
        if script.headers_delay:
            await trio.sleep(script.headers_delay)
        path = request.path.split("?")[0]
        if request.method == "POST" and path == "/v1/responses/compact" and script.status < 300:
            await self._compact(script, request, respond)
            return
        if request.method == "POST" and path == "/v1/responses" and script.status < 300:
            await self._responses(script, request, respond)
            return
        if request.method != "POST" or path not in ("/v1/chat/completions", "/v1/responses"):
            await respond.json(
                404,
                {
                    "error": {
                        "message": "no such route",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
            return
        if script.status >= 300 or script.error_body is not None:
            await self._error(script, respond)
            return
        body = request.json()
        if self.local is not None:
            await self._local(script, body, respond)
            return
        refused = problem(body, self.max_tool_id, self.reasoning_echo)
        if refused:
            error = {
                "message": refused[0],
                "type": "invalid_request_error",
                "param": refused[1],
                "code": "string_above_max_length" if "too long" in refused[0] else None,
            }
            await respond.json(400, {"error": error})
            return
        ident = f"chatcmpl-fake{len(self.requests)}"
        if self.prompt_cache:
            script = self._cached(script, request, body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            await self._stream(script, body["model"], ident, include_usage, respond)
        else:
            if script.drop_after is not None:
                await respond.drop()
                return
            await respond.json(200, completion(script, body["model"], ident), list(script.headers))

    def _cached(self, script: Script, request: RecordedRequest, body: dict[str, Any]) -> Script:
        """``script`` with the prompt's tokens, and those its key had cached."""
        seen = self._prefixes.setdefault(request.headers.get("authorization", ""), set())
        messages = body.get("messages") or []
        cached = total = 0
        for count in range(1, len(messages) + 1):
            text = json.dumps(messages[:count], sort_keys=True)
            digest = hashlib.sha256(text.encode()).hexdigest()
            total = len(text) // 4
            if digest in seen and count < len(messages):
                cached = total
            seen.add(digest)
        return attrs.evolve(script, prompt_tokens=max(total, 1), cached_tokens=cached)

    async def _local(self, script: Script, body: dict[str, Any], respond: Responder) -> None:
        """A chat completion as llama-cpp-python's server answers it (see :mod:`.local`)."""
        assert self.local is not None
        if self.local.interrupt_requests:  # the model is wanted: the stream being served ends
            for interrupted in self._streaming:
                interrupted.set()
        refused = localserver.refusal(body)
        if refused is not None:
            error = {
                "message": refused,
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
            await respond.json(500, {"error": error})
            return
        prompt = localserver.prompt_tokens(body)
        too_long = localserver.too_long(body, self.local, prompt)
        ident = f"chatcmpl-{len(self.requests)}"
        if not body.get("stream"):
            if too_long is not None:
                error = {
                    "message": too_long,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
                await respond.json(400, {"error": error})
                return
            answer = completion(script, body["model"], ident)
            output = _local_completion_tokens(script)
            self.counted.append((prompt, output))
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
            }
            for key in ("service_tier", "system_fingerprint"):
                del answer[key]
            await respond.json(200, answer, list(script.headers))
            return
        await respond.start(200, [("content-type", "text/event-stream"), *script.headers])
        if too_long is not None:  # the failure came once the stream had begun: nothing in it
            await respond.end()
            return
        interrupted = trio.Event()
        self._streaming.append(interrupted)
        sent = 0
        try:
            for index, (chunk, tokens) in enumerate(local_chunks(script, body["model"], ident)):
                if index and script.interval:
                    await trio.sleep(script.interval)
                if interrupted.is_set():
                    break
                if script.drop_after is not None and index >= script.drop_after:
                    await respond.drop()
                    return
                await respond.send(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
                sent += tokens
        finally:
            self._streaming.remove(interrupted)
            self.counted.append((prompt, sent))
        await respond.send(b"data: [DONE]\r\n\r\n")
        await respond.end()

    async def _responses(
        self, script: Script, request: RecordedRequest, respond: Responder
    ) -> None:
        """The Responses API (as OpenAI serves it, for providers with ``responses = true``): a
        response continues a stored one (``previous_response_id``; an unknown id is OpenAI's 400
        ``previous_response_not_found``), is kept unless ``store`` is false, and a tool output
        whose call is not in the conversation is refused."""
        # proxycast's own encoder writes the events; the tests read them with the openai SDK.
        from proxycast.formats.responses import inbound as responses

        body = request.json()
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            if previous not in self.stored:
                missing = {
                    "message": f"Previous response with id '{previous}' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
                await respond.json(400, {"error": missing})
                return
            history = self.stored[previous]
        parsed = responses.validate(body)
        items = [*history, *responses.input_items(parsed)]
        unmatched = _unmatched_output(items)
        if unmatched is not None:
            error: dict[str, Any] = {
                "message": f"No tool call found for function call output with call_id {unmatched}.",
                "type": "invalid_request_error",
                "param": "input",
                "code": None,
            }
            await respond.json(400, {"error": error})
            return
        conversation = responses.request_to_internal(
            responses.Request(body=parsed, history=tuple(history))
        )
        reply = _reply(script, len(self.requests))
        if body.get("generate") is False:  # a warm-up: an empty response, no model run
            reply = internal.Reply(id="", model="", parts=(), stop="end", usage=internal.Usage())
        if not body.get("stream"):
            answer = responses.response_from_internal(reply, body["model"], conversation)
            self._keep(body, items, answer)
            await respond.json(200, answer, list(script.headers))
            return
        await respond.start(
            200,
            [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *script.headers],
        )
        encoder = responses.StreamEncoder(body["model"], conversation)
        for event in responses.events_of(reply):
            await respond.send(encoder.encode(event))
        if encoder.response is not None:
            self._keep(body, items, encoder.response)
        await respond.end()

    def _keep(
        self, body: dict[str, Any], items: list[dict[str, Any]], response: dict[str, Any]
    ) -> None:
        if body.get("store") is not False:
            self.stored[response["id"]] = [*items, *response["output"]]

    async def _compact(self, script: Script, request: RecordedRequest, respond: Responder) -> None:
        """``POST /v1/responses/compact``: the window's user messages and a compaction item (the
        fake's summary: the script's text; its ``encrypted_content`` in proxycast's format, which
        the fake's Responses route expands as proxycast does)."""
        from proxycast.formats.responses import inbound as responses

        body = request.json()
        if not isinstance(body.get("model"), str):
            error = {
                "message": "Missing required parameter: 'model'.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "missing_required_parameter",
            }
            await respond.json(400, {"error": error})
            return
        history = self.stored.get(body.get("previous_response_id") or "", [])
        parsed = responses.Request(
            body=responses.validate(body), history=tuple(history), compact=True
        )
        await respond.json(200, responses.compacted(_reply(script, len(self.requests)), parsed))

    async def _error(self, script: Script, respond: Responder) -> None:
        body = script.error_body
        if body is None:
            body = json.dumps(
                {
                    "error": {
                        "message": script.error_message,
                        "type": script.error_type,
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
        await respond.start(
            script.status,
            [
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                *script.headers,
            ],
        )
        await respond.send(body)
        await respond.end()

    async def _stream(
        self, script: Script, model: str, ident: str, include_usage: bool, respond: Responder
    ) -> None:
        await respond.start(
            200,
            [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *script.headers],
        )
        for index, chunk in enumerate(stream_chunks(script, model, ident, include_usage)):
            if script.drop_after is not None and index >= script.drop_after:
                await respond.drop()
                return
            if index and script.interval:
                await trio.sleep(script.interval)
            if index == script.stall_after:
                await trio.sleep(script.stall_seconds)
            if script.error_after is not None and index >= script.error_after:
                error = {"message": script.error_message, "type": script.error_type, "code": None}
                await respond.send(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
                await respond.end()
                return
            await respond.send(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if script.send_done:
            await respond.send(b"data: [DONE]\n\n")
        await respond.end()


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``/v1/embeddings`` answer: one :func:`fake_vector` per input (``base64``: float32
    little-endian, as OpenAI encodes them)."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dimensions = body.get("dimensions") or 8
    data = []
    for index, text in enumerate(inputs):
        vector: Any = fake_vector(str(text), dimensions)
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(str(text).split()) for text in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _usage(script: Script) -> dict[str, Any]:
    completion_tokens = script.completion_tokens
    if completion_tokens is None:
        completion_tokens = len(script.text.split()) + len(script.tool_calls)
    return {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": script.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _finish(script: Script) -> str:
    return script.finish_reason or ("tool_calls" if script.tool_calls else "stop")


def _call_id(call: FakeToolCall, index: int) -> str:
    return call.id or f"call_fake{index}"


def completion(script: Script, model: str, ident: str) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` the script describes."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": script.text or None,
        "refusal": None,
        "annotations": [],
    }
    if script.reasoning:
        message["reasoning_content"] = script.reasoning
    if script.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(call, i),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for i, call in enumerate(script.tool_calls)
        ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(script)}
        ],
        "usage": _usage(script),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def stream_chunks(
    script: Script, model: str, ident: str, include_usage: bool
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of the streamed answer, in order."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"reasoning_content": piece}) for piece in _split(script.reasoning, 0)]
    chunks += [chunk({"content": piece}) for piece in _split(script.text, script.chunks)]
    for index, call in enumerate(script.tool_calls):
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": _call_id(call, index),
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in _split(call.arguments, 3):
            chunks.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    if script.send_finish:
        chunks.append(chunk({}, _finish(script)))
    if include_usage:
        usage_chunk = chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(script)
        chunks.append(usage_chunk)
    return chunks


def _local_completion_tokens(script: Script) -> int:
    calls = sum(localserver.tokens(c.name + c.arguments) for c in script.tool_calls)
    return localserver.tokens(script.reasoning) + localserver.tokens(script.text) + calls


def local_chunks(script: Script, model: str, ident: str) -> list[tuple[dict[str, Any], int]]:
    """A local server's streamed answer: the role chunk, one chunk per token, the finish chunk; no
    usage. Each chunk with the number of tokens it carries."""
    created = int(time.time())

    def chunk(
        delta: dict[str, Any], finish: str | None = None, tokens: int = 1
    ) -> tuple[dict[str, Any], int]:
        body = {
            "id": ident,
            "model": model,
            "created": created,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return body, tokens

    chunks = [chunk({"role": "assistant"}, tokens=0)]
    chunks += [chunk({"reasoning_content": p}) for p in localserver.pieces(script.reasoning)]
    chunks += [chunk({"content": p}) for p in localserver.pieces(script.text)]
    for index, call in enumerate(script.tool_calls):
        name = localserver.tokens(call.name)
        head = {"index": index, "id": _call_id(call, index), "type": "function"}
        function = {"name": call.name, "arguments": ""}
        chunks.append(chunk({"tool_calls": [{**head, "function": function}]}, tokens=name))
        for piece in localserver.pieces(call.arguments):
            arguments = {"index": index, "function": {"arguments": piece}}
            chunks.append(chunk({"tool_calls": [arguments]}))
    if script.send_finish:
        chunks.append(chunk({}, _finish(script), tokens=0))
    return chunks


def _warm_up(request: RecordedRequest) -> bool:
    """A Responses request with ``generate: false`` (WebSocket mode's warm-up)."""
    if request.route != "/v1/responses" or b'"generate"' not in request.body:
        return False
    try:
        return request.json().get("generate") is False
    except ValueError:
        return False


def _unmatched_output(items: list[dict[str, Any]]) -> str | None:
    """The call id of the first tool output whose call is not among ``items``, or None."""
    calls = {
        i.get("call_id") for i in items if i.get("type") in ("function_call", "custom_tool_call")
    }
    for item in items:
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            if item.get("call_id") not in calls:
                return str(item.get("call_id"))
    return None


def _reply(script: Script, number: int) -> internal.Reply:
    """The script as the hub reply it describes (for the Responses route)."""
    parts: list[internal.Part] = []
    if script.reasoning:
        parts.append(internal.Reasoning(text=script.reasoning))
    if script.text:
        parts.append(internal.Text(script.text))
    for index, call in enumerate(script.tool_calls):
        arguments = json.loads(call.arguments or "{}")
        parts.append(
            internal.ToolCall(id=_call_id(call, index), name=call.name, arguments=arguments)
        )
    usage = _usage(script)
    stop: internal.Stop = "tool_use" if script.tool_calls else "end"
    if _finish(script) == "length":
        stop = "length"
    return internal.Reply(
        id=f"resp_fake{number}",
        model="",
        parts=tuple(parts),
        stop=stop,
        usage=internal.Usage(input=usage["prompt_tokens"], output=usage["completion_tokens"]),
    )
