"""A fake Gemini upstream (``generateContent`` and ``streamGenerateContent?alt=sse``), scriptable.

Its answers have real Gemini shapes: text in increments over several chunks, each ``functionCall`` whole
in one chunk with ``finishReason: STOP``, thought parts (``thought: true``), cumulative ``usageMetadata``,
text parts signed as Gemini 3 signs them (``Text(..., thought_signature=...)``: on the part, or
streamed on an empty text part after it), a final chunk with an empty text part carrying a
``thoughtSignature``, blocked prompts
(``promptFeedback.blockReason`` and no candidates), ``{"error": {code, message, status}}`` bodies.

Like Gemini, it rejects (400 INVALID_ARGUMENT) tool and response schemas with any key outside Gemini's
``Schema`` fields, an OBJECT with empty ``properties``, ``parameters`` beside ``parametersJsonSchema``,
empty ``parts``, a turn of function responses that does not answer every function call of the turn
before, a ``thoughtSignature`` it never issued (other than the FAQ's dummies), and, for ``gemini-3``
models, a model step of the current turn whose first function call has no signature.

    fake = FakeGemini()
    base_url = await nursery.start(fake.serve)             # http://127.0.0.1:PORT
    fake.script(GeminiScript(parts=(Thought("hm"), Text("Hi"), Call("get", {"a": 1}))))
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder, fake_vector


@attrs.frozen
class Text:
    text: str
    thought_signature: str | None = None
    """Sign the part as Gemini 3 does: non-streamed, on the part itself; streamed, on an empty text
    part right after its chunks (the last chunk, when the part ends the answer)."""


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
    grounding: Grounding | None = None
    """Answer as grounded by Google Search (``groundingMetadata`` on the candidate; streamed, on
    the last chunk)."""


@attrs.frozen(kw_only=True)
class Grounding:
    """Google Search grounding: the queries run, the pages found, the text spans they support."""

    queries: tuple[str, ...] = ("fake query",)
    pages: tuple[tuple[str, str], ...] = (("https://example.com/", "example.com"),)
    """(uri, title) of each ``groundingChunks[].web``."""
    supports: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """(segment text, indices of the pages supporting it)."""

    def metadata(self, text: str) -> dict[str, Any]:
        supports = []
        for segment, indices in self.supports:
            start = len(text[: text.find(segment)].encode())
            span = {"startIndex": start, "endIndex": start + len(segment.encode()), "text": segment}
            supports.append({"segment": span, "groundingChunkIndices": list(indices)})
        return {
            "webSearchQueries": list(self.queries),
            "searchEntryPoint": {"renderedContent": "<div>fake search chip</div>"},
            "groundingChunks": [{"web": {"uri": u, "title": t}} for u, t in self.pages],
            "groundingSupports": supports,
        }


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _wire_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        if part.thought_signature:
            return {"text": part.text, "thoughtSignature": part.thought_signature}
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
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts},
        "finishReason": script.finish_reason,
    }
    if script.grounding is not None:
        candidate["groundingMetadata"] = script.grounding.metadata(_text(script))
    return {
        "candidates": [{**candidate, "index": i} for i in range(script.candidates)],
        **base,
    }


def _text(script: GeminiScript) -> str:
    return "".join(p.text for p in script.parts if isinstance(p, Text))


def stream_chunks(script: GeminiScript, model: str) -> list[dict[str, Any]]:
    """The chunks of ``streamGenerateContent?alt=sse``; usage grows, the last carries the finish."""
    full = _usage(script)
    if script.block_reason:
        return [response(script, model)]
    pieces: list[dict[str, Any]] = []
    for part in script.parts:
        if isinstance(part, Call):
            pieces.append(_wire_part(part))
        elif isinstance(part, Text):
            pieces += [{"text": p} for p in _split(part.text, script.pieces)]
            if part.thought_signature:  # Gemini 3 streams a text part's signature after it
                pieces.append({"text": "", "thoughtSignature": part.thought_signature})
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
        if last and script.grounding is not None:
            candidate["groundingMetadata"] = script.grounding.metadata(_text(script))
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


# The fields of Gemini's ``Schema`` (generativelanguage v1beta): any other key is "Unknown name". Kept
# apart from the sanitiser's own list so that the fake checks it rather than repeats it.
SCHEMA_FIELDS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
        "maximum",
    }
)  # fmt: skip
TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
SKIP_SIGNATURES = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)
"""The dummy signatures Google's thought-signature FAQ documents: they skip the validation."""


def _unknown(key: str, path: str) -> str:
    return f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."


def _schema_problem(schema: Any, path: str) -> str | None:
    if not isinstance(schema, dict):
        return f"Invalid value at '{path}': a Schema must be an object"
    for key in schema:
        if key not in SCHEMA_FIELDS:
            return _unknown(key, path)
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in TYPES):
        return f"Invalid value at '{path}.type' ({kind!r})"
    if isinstance(kind, str) and kind.upper() == "OBJECT" and schema.get("properties") == {}:
        return f"{path}.properties: should be non-empty for OBJECT type"
    if schema.get("format") and isinstance(kind, str) and kind.upper() == "STRING":
        if schema["format"] not in ("enum", "date-time"):
            return f"{path}.format: only 'enum' and 'date-time' are supported for STRING"
    children: list[tuple[Any, str]] = []
    for name, sub in (schema.get("properties") or {}).items():
        children.append((sub, f"{path}.properties[{name!r}].value"))
    if "items" in schema:
        children.append((schema["items"], f"{path}.items"))
    for i, sub in enumerate(schema.get("anyOf") or ()):
        children.append((sub, f"{path}.any_of[{i}]"))
    for sub, where in children:
        problem = _schema_problem(sub, where)
        if problem:
            return problem
    return None


def _current_turn(contents: list[dict[str, Any]]) -> int:
    """Where Gemini 3's current turn starts: the last user content with more than function responses."""
    start = 0
    for index, content in enumerate(contents):
        parts = content.get("parts") or []
        if content.get("role") == "user" and any("functionResponse" not in p for p in parts):
            start = index
    return start


def signature_problem(body: dict[str, Any], model: str, issued: set[str]) -> str | None:
    """Gemini 3's rule: in the current turn, the first function call of each model step carries the
    signature it came with (or a documented dummy); a signature Gemini never issued is refused."""
    contents = body.get("contents") or []
    for index, content in enumerate(contents):
        for part in content.get("parts") or ():
            signature = part.get("thoughtSignature")
            if signature and signature not in issued and signature not in SKIP_SIGNATURES:
                return f"Corrupted thought signature in contents[{index}]."
    if not model.startswith("gemini-3"):
        return None
    for index, content in enumerate(contents[_current_turn(contents) :]):
        calls = [p for p in content.get("parts") or () if "functionCall" in p]
        if content.get("role") == "model" and calls and not calls[0].get("thoughtSignature"):
            name = calls[0]["functionCall"].get("name")
            return (
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead to "
                f"degraded model performance. Additional data, function call `{name}` , position "
                f"{index + _current_turn(contents) + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
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
    tools = body.get("tools") or []
    searching = any("googleSearch" in t for t in tools)
    declaring = any("functionDeclarations" in t for t in tools)
    combined = (body.get("toolConfig") or {}).get("includeServerSideToolInvocations")
    if searching and declaring and not combined:
        return (
            "Built-in tools ({google_search}) and Function Calling cannot be combined in the same "
            "request. Please set include_server_side_tool_invocations to true."
        )
    for t, tool in enumerate(tools):
        if "googleSearch" in tool and not isinstance(tool["googleSearch"], dict):
            return f"tools[{t}].google_search: Proto field is not repeating, cannot start list."
        unknown = set(tool) - {
            "functionDeclarations",
            "googleSearch",
            "googleSearchRetrieval",
            "codeExecution",
            "urlContext",
        }
        if unknown:
            return _unknown(sorted(unknown)[0], f"tools[{t}]")
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            where = f"tools[{t}].function_declarations[{d}]"
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return f"{where}: parameters and parameters_json_schema are mutually exclusive"
            if "parameters" in declaration:
                problem = _schema_problem(declaration["parameters"], f"{where}.parameters")
                if problem:
                    return problem
    config = body.get("generationConfig") or {}
    if "responseSchema" in config and "responseJsonSchema" in config:
        return "generation_config: response_schema and response_json_schema are mutually exclusive"
    schema = config.get("responseSchema")
    return _schema_problem(schema, "generation_config.response_schema") if schema else None


class FakeGemini(FakeUpstream[GeminiScript]):
    """A scriptable Gemini upstream; see the module docstring."""

    url_suffix = ""

    def __init__(self, default: GeminiScript | None = None) -> None:
        super().__init__(default or GeminiScript())
        self.issued_signatures: set[str] = set()
        """Every ``thoughtSignature`` this fake answered with: the only ones it accepts back."""

    def _issue(self, script: GeminiScript) -> None:
        for part in script.parts:
            if isinstance(part, (Call, Text)) and part.thought_signature:
                self.issued_signatures.add(part.thought_signature)
        if script.final_signature:
            self.issued_signatures.add(script.final_signature)

    async def side_route(self, request: RecordedRequest, respond: Responder) -> bool:
        if request.method in ("GET", "HEAD") and request.route == "/v1beta/models":
            await respond.json(200, models_page(self.models, parse_qs(request.query)))
            return True
        method = request.route.rpartition(":")[2]
        if request.method == "POST" and request.route.startswith("/v1beta/models/"):
            body = request.json()
            if method == "embedContent":
                await respond.json(200, {"embedding": _embedding(body)})
                return True
            if method == "batchEmbedContents":
                vectors = [_embedding(r) for r in body.get("requests") or ()]
                await respond.json(200, {"embeddings": vectors})
                return True
        return False

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
        body = request.json()
        problem = validate(body) or signature_problem(body, model, self.issued_signatures)
        if problem:
            await respond.json(400, _error(400, "INVALID_ARGUMENT", problem))
            return
        self._issue(script)
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


def _embedding(request: dict[str, Any]) -> dict[str, Any]:
    text = "".join(p.get("text", "") for p in request["content"]["parts"])
    return {"values": fake_vector(text, request.get("outputDimensionality") or 8)}


def models_page(models: tuple[str, ...], query: dict[str, list[str]]) -> dict[str, Any]:
    """A page of Gemini's ``GET /v1beta/models`` (``pageSize``, default 50, and ``pageToken``)."""
    size = int(query.get("pageSize", ["50"])[0])
    start = int(query.get("pageToken", ["0"])[0])
    page = models[start : start + size]
    out: dict[str, Any] = {
        "models": [
            {
                "name": f"models/{m}",
                "displayName": m,
                "supportedGenerationMethods": (
                    ["embedContent"] if "embedding" in m else ["generateContent", "countTokens"]
                ),
            }
            for m in page
        ]
    }
    if start + size < len(models):
        out["nextPageToken"] = str(start + size)
    return out


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
