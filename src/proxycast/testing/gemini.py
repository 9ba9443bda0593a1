"""A fake Gemini upstream (``generateContent`` and ``streamGenerateContent?alt=sse``), scriptable.

Its answers have real Gemini shapes: text in increments over several chunks, each ``functionCall`` whole
in one chunk with ``finishReason: STOP``, thought parts (``thought: true``), cumulative ``usageMetadata``,
a final chunk with an empty text part carrying a ``thoughtSignature``, blocked prompts
(``promptFeedback.blockReason`` and no candidates), ``{"error": {code, message, status}}`` bodies.

Like Gemini, it rejects (400 INVALID_ARGUMENT) tool schemas with keywords Gemini does not accept, an
OBJECT with empty ``properties``, empty ``parts``, and a turn of function responses that does not
answer every function call of the turn before.

    fake = FakeGemini()
    base_url = await nursery.start(fake.serve)             # http://127.0.0.1:PORT
    fake.script(GeminiScript(parts=(Thought("hm"), Text("Hi"), Call("get", {"a": 1}))))
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio

from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder


@attrs.frozen
class Text:
    text: str


@attrs.frozen
class Thought:
    text: str


@attrs.frozen
class Call:
    name: str
    args: dict[str, Any] = attrs.field(factory=dict)
    thought_signature: str | None = None


Part = Text | Thought | Call


@attrs.frozen(kw_only=True)
class GeminiScript:
    """How the fake answers one request."""

    parts: tuple[Part, ...] = (Text("Hello from Gemini."),)
    candidates: int = 1
    """Answer this many candidates (non-streaming), each with the same parts."""
    finish_reason: str = "STOP"
    block_reason: str | None = None
    """Block the prompt: no candidates, ``promptFeedback.blockReason``."""
    prompt_tokens: int = 8
    cached_tokens: int = 0
    thoughts_tokens: int | None = None
    candidates_tokens: int | None = None
    pieces: int = 3
    """Chunks per text or thought part, streamed."""
    final_signature: str | None = None
    """End the answer with an empty text part carrying this ``thoughtSignature``."""
    interval: float = 0.0
    headers_delay: float = 0.0
    status: int = 200
    error_status: str = "INVALID_ARGUMENT"
    error_message: str = "The fake upstream failed."
    headers: tuple[tuple[str, str], ...] = ()
    error_after: int | None = None
    """Send ``{"error": …}`` (UNAVAILABLE) as the chunk after this many, then end."""
    drop_after: int | None = None
    end_without_finish: bool = False
    """End the stream cleanly without a finishReason."""


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _wire_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Thought):
        return {"text": part.text, "thought": True}
    out: dict[str, Any] = {"functionCall": {"name": part.name, "args": part.args}}
    if part.thought_signature:
        out["thoughtSignature"] = part.thought_signature
    return out


def _usage(script: GeminiScript) -> dict[str, Any]:
    words = sum(len(p.text.split()) for p in script.parts if isinstance(p, Text))
    candidates = script.candidates_tokens if script.candidates_tokens is not None else words + 1
    thoughts = script.thoughts_tokens
    if thoughts is None:
        thoughts = sum(len(p.text.split()) for p in script.parts if isinstance(p, Thought))
    usage = {
        "promptTokenCount": script.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": script.prompt_tokens + candidates + thoughts,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if script.cached_tokens:
        usage["cachedContentTokenCount"] = script.cached_tokens
    return usage


def response(script: GeminiScript, model: str) -> dict[str, Any]:
    """The non-streaming ``GenerateContentResponse`` the script describes."""
    base: dict[str, Any] = {
        "usageMetadata": _usage(script),
        "modelVersion": model,
        "responseId": "resp-fake",
    }
    if script.block_reason:
        return {"promptFeedback": {"blockReason": script.block_reason}, **base}
    parts = [_wire_part(p) for p in script.parts]
    if script.final_signature:
        parts.append({"text": "", "thoughtSignature": script.final_signature})
    candidate = {
        "content": {"role": "model", "parts": parts},
        "finishReason": script.finish_reason,
    }
    return {
        "candidates": [{**candidate, "index": i} for i in range(script.candidates)],
        **base,
    }


def stream_chunks(script: GeminiScript, model: str) -> list[dict[str, Any]]:
    """The chunks of ``streamGenerateContent?alt=sse``; usage grows, the last carries the finish."""
    full = _usage(script)
    if script.block_reason:
        return [response(script, model)]
    pieces: list[dict[str, Any]] = []
    for part in script.parts:
        if isinstance(part, Call):
            pieces.append(_wire_part(part))
        else:
            pieces += [{**_wire_part(part), "text": p} for p in _split(part.text, script.pieces)]
    if script.final_signature:
        pieces.append({"text": "", "thoughtSignature": script.final_signature})
    chunks = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [piece]}, "index": 0}
        if last and not script.end_without_finish:
            candidate["finishReason"] = script.finish_reason
        fraction = (index + 1) / len(pieces)
        usage = {
            "promptTokenCount": full["promptTokenCount"],
            "candidatesTokenCount": round(full["candidatesTokenCount"] * fraction),
            "totalTokenCount": full["promptTokenCount"]
            + round((full["totalTokenCount"] - full["promptTokenCount"]) * fraction),
        }
        if last:
            usage = full
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": "resp-fake",
            }
        )
    return chunks


# Schema keywords Gemini answers "Unknown name" for (docs/mappings.md, "To Gemini upstreams", and
# public reports of those errors); kept apart from the sanitiser's own list so that the fake checks it
# rather than repeats it.
REJECTED_KEYWORDS = frozenset(
    {
        "$schema", "$id", "$comment", "$ref", "$defs", "definitions", "additionalProperties",
        "strict", "exclusiveMinimum", "exclusiveMaximum", "propertyNames", "patternProperties",
        "if", "then", "else", "not", "examples", "const", "oneOf",
    }
)  # fmt: skip


def _schema_problem(schema: Any, path: str) -> str | None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in REJECTED_KEYWORDS:
                return f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}'"
            if key == "type" and not isinstance(value, str):
                return f"Invalid value at '{path}.type'"
            problem = _schema_problem(value, f"{path}.{key}")
            if problem:
                return problem
        if schema.get("type") == "OBJECT" and schema.get("properties") == {}:
            return f"{path}.properties: should be non-empty for OBJECT type"
        if schema.get("format") and schema.get("type") == "STRING":
            if schema["format"] not in ("enum", "date-time"):
                return f"{path}.format: only 'enum' and 'date-time' are supported for STRING"
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            problem = _schema_problem(item, f"{path}[{i}]")
            if problem:
                return problem
    return None


def validate(body: dict[str, Any]) -> str | None:
    """What real Gemini would reject in this request, or None."""
    previous_calls = 0
    for i, content in enumerate(body.get("contents") or []):
        parts = content.get("parts") or []
        if not parts:
            return f"contents[{i}].parts must not be empty"
        if content.get("role") not in ("user", "model"):
            return f"contents[{i}].role must be user or model"
        responses = sum("functionResponse" in p for p in parts)
        if responses and responses != previous_calls:
            return (
                "Please ensure that the number of function response parts is equal to the number "
                "of function call parts of the function call turn."
            )
        previous_calls = sum("functionCall" in p for p in parts)
    for t, tool in enumerate(body.get("tools") or []):
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            problem = _schema_problem(
                declaration.get("parameters"), f"tools[{t}].function_declarations[{d}].parameters"
            )
            if problem:
                return problem
    schema = (body.get("generationConfig") or {}).get("responseSchema")
    return _schema_problem(schema, "generation_config.response_schema") if schema else None


class FakeGemini(FakeUpstream[GeminiScript]):
    """A scriptable Gemini upstream; see the module docstring."""

    url_suffix = ""

    def __init__(self, default: GeminiScript | None = None) -> None:
        super().__init__(default or GeminiScript())

    async def answer(
        self, script: GeminiScript, request: RecordedRequest, respond: Responder
    ) -> None:
        if script.headers_delay:
            await trio.sleep(script.headers_delay)
        path, _, query = request.path.partition("?")
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if request.method == "POST" and method == "countTokens":
            inner = request.json().get("generateContentRequest", {})
            problem = validate(inner)
            if problem:
                await respond.json(400, _error(400, "INVALID_ARGUMENT", problem))
                return
            counted = [inner.get("systemInstruction"), inner.get("contents"), inner.get("tools")]
            await respond.json(200, {"totalTokens": max(1, len(json.dumps(counted)) // 4)})
            return
        known = ("generateContent", "streamGenerateContent")
        if (
            request.method != "POST"
            or not path.startswith("/v1beta/models/")
            or method not in known
        ):
            await respond.json(404, _error(404, "NOT_FOUND", "no such route"))
            return
        if script.status >= 400:
            await respond.json(
                script.status,
                _error(script.status, script.error_status, script.error_message),
                list(script.headers),
            )
            return
        problem = validate(request.json())
        if problem:
            await respond.json(400, _error(400, "INVALID_ARGUMENT", problem))
            return
        if method == "generateContent":
            if script.drop_after is not None:
                await respond.drop()
                return
            await respond.json(200, response(script, model))
            return
        assert query == "alt=sse", "proxycast always streams with alt=sse"
        await respond.start(200, [("content-type", "text/event-stream")])
        for index, chunk in enumerate(stream_chunks(script, model)):
            if script.drop_after is not None and index >= script.drop_after:
                await respond.drop()
                return
            if script.error_after is not None and index >= script.error_after:
                error = _error(503, "UNAVAILABLE", "The model is overloaded.")
                await respond.send(b"data: " + json.dumps(error).encode() + b"\r\n\r\n")
                break
            if index and script.interval:
                await trio.sleep(script.interval)
            await respond.send(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
        await respond.end()


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
