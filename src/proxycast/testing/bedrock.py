"""A fake AWS Bedrock: the runtime (Converse, ConverseStream, InvokeModel,
InvokeModelWithResponseStream, CountTokens; InvokeModel on the embeddings models too: Titan Text
Embeddings v1/v2 and Cohere Embed v3/v4, their bodies checked as Bedrock checks them) and the
control plane's listings (ListFoundationModels, ListInferenceProfiles), on one loopback port,
scriptable per test.

Like AWS, it answers only requests signed with SigV4 for service ``bedrock`` and its region by a
credential it knows, recomputing the signature with botocore over the request's exact bytes (method,
path and query as sent, the signed headers, the body): anything else is refused with AWS's 403
(``InvalidSignatureException``, ``UnrecognizedClientException``, ``MissingAuthenticationTokenException``);
or with a Bedrock API key (``Authorization: Bearer``). Errors carry ``x-amzn-errortype`` and a
``{"message": ...}`` body. Streams are ``application/vnd.amazon.eventstream`` frames with CRCs,
re-cut into pieces of :attr:`BedrockScript.chunk_size` bytes (frame boundaries fall anywhere), each
payload padded with Bedrock's ``p`` field; a script can spoil a frame's CRC or end the stream with
an ``exception`` frame (``throttlingException``...).

Like Bedrock's Converse, it refuses (400 ``ValidationException``) a conversation that does not start
with a user turn or does not alternate roles, tool blocks without ``toolConfig``, a content block
with no or several members, tool use ids outside ``[a-zA-Z0-9_.:-]+``, document names with other
characters than letters, digits, single spaces, hyphens, parentheses and brackets, reasoning blocks
it did not sign, blank text blocks, and sampling settings with Claude's thinking on. InvokeModel
bodies must carry ``anthropic_version: "bedrock-2023-05-31"`` and no ``model``; the Messages checks
of :mod:`proxycast.testing.anthropic` apply to them.

    fake = FakeBedrock()
    base_url = await nursery.start(fake.serve)            # the provider's base_url
    fake.script(BedrockScript(blocks=(Thinking("hmm"), Text("Hi"), ToolUse("get", {"a": 1}))))
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs
import trio

from proxycast.formats.bedrock.eventstream import encode_frame
from proxycast.testing import anthropic as fake_anthropic
from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder, fake_vector
from proxycast.testing.anthropic import RedactedThinking as RedactedThinking
from proxycast.testing.anthropic import Text as Text
from proxycast.testing.anthropic import Thinking as Thinking
from proxycast.testing.anthropic import ToolUse as ToolUse

ACCESS_KEY = "AKIAFAKEBEDROCK00001"
SECRET_KEY = "fake+bedrock/secret/key/0000000000000000"
REGION = "us-east-1"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
EVENT_STREAM = "application/vnd.amazon.eventstream"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_.:-]+$")
_DOCUMENT_NAME = re.compile(r"^[A-Za-z0-9\-()\[\]]+( [A-Za-z0-9\-()\[\]]+)*$")
_CONVERSE_FIELDS = {
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
}
_BLOCKS = {"text", "image", "document", "toolUse", "toolResult", "reasoningContent", "cachePoint"}
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details."
)

Block = Text | Thinking | RedactedThinking | ToolUse


@attrs.frozen(kw_only=True)
class BedrockScript:
    """How the fake answers one request (Converse or InvokeModel, streamed or not)."""

    blocks: tuple[Block, ...] = (Text("Hello from Bedrock."),)
    stop_reason: str | None = None
    """Default: ``tool_use`` when there is a tool use, else ``end_turn``."""
    input_tokens: int = 12
    output_tokens: int = 9
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    pieces: int = 3
    """Deltas per text, reasoning or tool-input block."""
    chunk_size: int | None = 7
    """Bytes per piece of the streamed body, cutting frames anywhere (None: a piece per frame)."""
    interval: float = 0.0
    status: int = 200
    error_type: str = "ValidationException"
    """``x-amzn-errortype`` of an error answer (with :attr:`status`)."""
    error_message: str = "The fake upstream failed."
    headers: tuple[tuple[str, str], ...] = ()
    exception_after: int | None = None
    """End the stream with an ``exception`` frame (:attr:`exception_type`) after this many frames."""
    exception_type: str = "throttlingException"
    corrupt_after: int | None = None
    """Spoil the message CRC of the frame after this many frames (the stream goes on after it)."""
    drop_after: int | None = None
    """Cut the connection after this many frames (streams) or before the body."""


def _split(text: str, pieces: int) -> list[str]:
    return fake_anthropic._split(text, pieces)


def _tool_id(block: ToolUse, index: int) -> str:
    return block.id or f"tooluse_fake{index:02d}"


def _stop_reason(script: BedrockScript) -> str:
    has_tool = any(isinstance(b, ToolUse) for b in script.blocks)
    return script.stop_reason or ("tool_use" if has_tool else "end_turn")


def _usage(script: BedrockScript) -> dict[str, int]:
    usage = {
        "inputTokens": script.input_tokens,
        "outputTokens": script.output_tokens,
        "totalTokens": script.input_tokens
        + script.output_tokens
        + script.cache_read_input_tokens
        + script.cache_write_input_tokens,
    }
    if script.cache_read_input_tokens or script.cache_write_input_tokens:
        usage["cacheReadInputTokens"] = script.cache_read_input_tokens
        usage["cacheWriteInputTokens"] = script.cache_write_input_tokens
    return usage


def converse_content(script: BedrockScript) -> list[dict[str, Any]]:
    """The assistant message's content blocks the script describes."""
    content: list[dict[str, Any]] = []
    for index, block in enumerate(script.blocks):
        if isinstance(block, Text):
            content.append({"text": block.text})
        elif isinstance(block, Thinking):
            text = {"text": block.thinking, "signature": block.signature}
            content.append({"reasoningContent": {"reasoningText": text}})
        elif isinstance(block, RedactedThinking):
            data = base64.b64encode(block.data.encode()).decode()
            content.append({"reasoningContent": {"redactedContent": data}})
        else:
            use = {"toolUseId": _tool_id(block, index), "name": block.name, "input": block.input}
            content.append({"toolUse": use})
    return content


def converse_reply(script: BedrockScript) -> dict[str, Any]:
    """Converse's answer for the script."""
    return {
        "output": {"message": {"role": "assistant", "content": converse_content(script)}},
        "stopReason": _stop_reason(script),
        "usage": _usage(script),
        "metrics": {"latencyMs": 321},
    }


def converse_events(script: BedrockScript) -> list[tuple[str, dict[str, Any]]]:
    """ConverseStream's ``(event type, payload)`` pairs for the script."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(converse_content(script)):
        deltas: list[dict[str, Any]] = []
        if "text" in block:
            deltas = [{"text": p} for p in _split(block["text"], script.pieces)]
        elif "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(("contentBlockStart", {"start": start, "contentBlockIndex": index}))
            arguments = json.dumps(use["input"]) if use["input"] else ""
            deltas = [{"toolUse": {"input": p}} for p in _split(arguments, script.pieces)]
        else:
            reasoning = block["reasoningContent"]
            if "redactedContent" in reasoning:
                deltas = [{"reasoningContent": {"redactedContent": reasoning["redactedContent"]}}]
            else:
                text = reasoning["reasoningText"]
                deltas = [
                    {"reasoningContent": {"text": p}} for p in _split(text["text"], script.pieces)
                ]
                deltas.append({"reasoningContent": {"signature": text["signature"]}})
        events += [("contentBlockDelta", {"delta": d, "contentBlockIndex": index}) for d in deltas]
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": _stop_reason(script)}))
    events.append(("metadata", {"usage": _usage(script), "metrics": {"latencyMs": 321}}))
    return events


def _anthropic(script: BedrockScript) -> fake_anthropic.AnthropicScript:
    return fake_anthropic.AnthropicScript(
        blocks=script.blocks,
        stop_reason=script.stop_reason,
        input_tokens=script.input_tokens,
        output_tokens=script.output_tokens,
        cache_read_input_tokens=script.cache_read_input_tokens,
        cache_creation_input_tokens=script.cache_write_input_tokens,
        pieces=script.pieces,
    )


def invoke_events(full: dict[str, Any], pieces: int) -> list[tuple[str, dict[str, Any]]]:
    """InvokeModelWithResponseStream's ``chunk`` frames: each an Anthropic stream event as base64
    JSON; the last carries Bedrock's invocation metrics."""
    events = [data for _, data in fake_anthropic.stream_events(full, pieces)]
    events[-1] = {
        **events[-1],
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": full["usage"]["input_tokens"],
            "outputTokenCount": full["usage"]["output_tokens"],
            "invocationLatency": 321,
            "firstByteLatency": 123,
        },
    }
    return [("chunk", {"bytes": base64.b64encode(json.dumps(e).encode()).decode()}) for e in events]


def event_frame(event_type: str, payload: dict[str, Any], *, corrupt: bool = False) -> bytes:
    """One event frame as Bedrock sends it (its payload padded with ``p``, as Bedrock pads)."""
    padded = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(event_type) % 20]}
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_frame(headers, json.dumps(padded).encode(), corrupt=corrupt)


def exception_frame(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, json.dumps({"message": message}).encode())


def _error(
    status: int, kind: str, message: str
) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    return (
        status,
        {"message": message},
        [("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")],
    )


def _single(block: Any) -> str | None:
    if not isinstance(block, dict) or len(block) != 1:
        return None
    return str(next(iter(block)))


def converse_problem(body: dict[str, Any], issued: set[tuple[str, str]]) -> str | None:
    """What Converse refuses (``ValidationException``) in this request; None if nothing."""
    extra = sorted(set(body) - _CONVERSE_FIELDS)
    if extra:
        return f"Malformed input request: extraneous key [{extra[0]}] is not permitted"
    messages = body.get("messages") or []
    if not messages:
        return (
            "A conversation must start with a user message. Try again with a conversation that "
            "starts with a user message."
        )
    uses_tools = False
    for i, message in enumerate(messages):
        role = message.get("role")
        if (i == 0 and role != "user") or (i and role == messages[i - 1].get("role")):
            return (
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        for j, block in enumerate(message.get("content") or []):
            kind = _single(block)
            where = f"messages.{i}.content.{j}"
            if kind is None or kind not in _BLOCKS:
                return f"{where}: a content block must have exactly one member of {sorted(_BLOCKS)}"
            if kind == "text" and not str(block["text"]).strip():
                return (
                    f"The text field in the ContentBlock object at {where} is blank. Add text to "
                    "the text field, and try again."
                )
            inner = block["toolResult"].get("content") or [] if kind == "toolResult" else []
            if any(isinstance(c, dict) and c.get("text") == "" for c in inner):
                return (
                    f"The text field in the ContentBlock object at {where}.toolResult.content is "
                    "blank. Add text to the text field, and try again."
                )
            if kind in ("toolUse", "toolResult"):
                uses_tools = True
                if not _TOOL_ID.match(str(block[kind].get("toolUseId", ""))):
                    return (
                        f"1 validation error detected: Value at '{where}.{kind}.toolUseId' failed "
                        "to satisfy constraint: Member must satisfy regular expression pattern: "
                        "[a-zA-Z0-9_.:-]+"
                    )
            if kind == "document" and not _DOCUMENT_NAME.match(
                str(block["document"].get("name", ""))
            ):
                return (
                    "The document file name can only contain alphanumeric characters, whitespace "
                    "characters, hyphens, parentheses, and square brackets. The name can't contain "
                    "more than one consecutive whitespace character."
                )
            if kind == "reasoningContent":
                reasoning = block["reasoningContent"]
                text = reasoning.get("reasoningText") or {}
                signed = (
                    ("", reasoning["redactedContent"])
                    if "redactedContent" in reasoning
                    else (text.get("text"), text.get("signature"))
                )
                if signed not in issued:
                    return f"{where}: Invalid `signature` in `thinking` block"
    if uses_tools and not body.get("toolConfig"):
        return (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking") or {}
    inference = body.get("inferenceConfig") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        if "temperature" in inference or "topP" in inference:
            return "temperature may only be set to 1 when thinking is enabled."
        if "any" in ((body.get("toolConfig") or {}).get("toolChoice") or {}):
            return "Thinking may not be enabled when tool_choice forces tool use."
    return None


class FakeBedrock(FakeUpstream[BedrockScript]):
    """A scriptable Bedrock (runtime and control plane); see the module docstring.

    Args:
        default: the answer when no script is queued.
        credentials: access key id -> (secret key, session token or None) it accepts signatures of.
        api_keys: the Bedrock API keys it accepts as ``Authorization: Bearer`` (None: any key).
        region: the region signatures must be scoped to.
    """

    def __init__(
        self,
        default: BedrockScript | None = None,
        *,
        credentials: dict[str, tuple[str, str | None]] | None = None,
        api_keys: tuple[str, ...] | None = None,
        region: str = REGION,
    ) -> None:
        super().__init__(default or BedrockScript())
        self.credentials: dict[str, tuple[str, str | None]] = (
            credentials if credentials is not None else {ACCESS_KEY: (SECRET_KEY, None)}
        )
        self.api_keys = api_keys
        self.region = region
        self.models = ("anthropic.claude-sonnet-4-5-20250929-v1:0", "amazon.nova-pro-v1:0")
        self.profiles: tuple[str, ...] = ("us.anthropic.claude-sonnet-4-5-20250929-v1:0",)
        """The inference profile ids ListInferenceProfiles lists."""
        self.issued: set[tuple[str, str]] = set()
        """(text, signature) of every reasoning block answered (``("", data)`` for redacted)."""
        self.signed_by: list[str] = []
        """Per request accepted: ``sigv4:ACCESS_KEY`` or ``bearer``."""

    # authentication

    def refusal(
        self, request: RecordedRequest
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
        """Why AWS would refuse the request's credentials (its 403), or None: accepted."""
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            key = header.removeprefix("Bearer ").strip()
            if key and (self.api_keys is None or key in self.api_keys):
                self.signed_by.append("bearer")
                return None
            return _error(
                403,
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix",
            )
        if not header:
            return _error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        problem = self._signature_problem(request, header)
        if problem is not None:
            return problem
        return None

    def _signature_problem(
        self, request: RecordedRequest, header: str
    ) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        found = _AUTH.match(header)
        if found is None:
            return _error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters. Authorization={header.split(' ')[0]}",
            )
        known = self.credentials.get(found["key"])
        if known is None:
            return _error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        secret, token = known
        if token is not None and request.headers.get("x-amz-security-token") != token:
            return _error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if found["service"] != "bedrock" or found["region"] != self.region:
            return _error(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to a valid region and service 'bedrock' in region "
                f"'{self.region}'.",
            )
        stamp = request.headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            return _error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
            return _error(
                403,
                "InvalidSignatureException",
                "Signature expired: the request's date is more than 5 minutes away from the server's.",
            )
        names = found["signed"].split(";")
        if "host" not in names or any(n not in request.headers for n in names):
            return _error(403, "InvalidSignatureException", _SIGNATURE_MISMATCH)
        signed = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['host']}{request.path}",
            data=request.body,
            headers={n: request.headers[n] for n in names},
        )
        signed.context["timestamp"] = stamp
        signer = SigV4Auth(
            Credentials(found["key"], secret, token), found["service"], found["region"]
        )
        canonical = signer.canonical_request(signed)
        expected = signer.signature(signer.string_to_sign(signed, canonical), signed)
        if not hmac.compare_digest(expected, found["signature"]):
            return _error(403, "InvalidSignatureException", _SIGNATURE_MISMATCH)
        self.signed_by.append(f"sigv4:{found['key']}")
        return None

    # routes

    async def side_route(self, request: RecordedRequest, respond: Responder) -> bool:
        refused = self.refusal(request)
        if refused is not None:
            status, body, headers = refused
            await respond.json(status, body, headers)
            return True
        if request.method == "GET" and request.route == "/foundation-models":
            summaries = [_summary(m) for m in self.models]
            await respond.json(200, {"modelSummaries": summaries})
            return True
        if request.method == "GET" and request.route == "/inference-profiles":
            await respond.json(200, self._profiles(parse_qs(request.query)))
            return True
        if request.method == "POST" and request.route.endswith("/count-tokens"):
            body = request.json()
            counted = (body.get("input") or {}).get("converse") or (body.get("input") or {}).get(
                "invokeModel"
            )
            await respond.json(200, {"inputTokens": max(1, len(json.dumps(counted)) // 4)})
            return True
        return False

    def _profiles(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("maxResults", ["1000"])[0])
        start = int(query.get("nextToken", ["0"])[0])
        page = self.profiles[start : start + size]
        body: dict[str, Any] = {
            "inferenceProfileSummaries": [
                {
                    "inferenceProfileId": p,
                    "inferenceProfileName": p,
                    "inferenceProfileArn": (
                        f"arn:aws:bedrock:{self.region}:123456789012:inference-profile/{p}"
                    ),
                    "models": [],
                    "status": "ACTIVE",
                    "type": "SYSTEM_DEFINED",
                }
                for p in page
            ]
        }
        if start + size < len(self.profiles):
            body["nextToken"] = str(start + size)
        return body

    async def answer(
        self, script: BedrockScript, request: RecordedRequest, respond: Responder
    ) -> None:
        parts = request.route.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model":
            status, error, headers = _error(404, "UnknownOperationException", "no such route")
            await respond.json(status, error, headers)
            return
        model, action = unquote(parts[2]), parts[3]
        if action not in ("converse", "converse-stream", "invoke", "invoke-with-response-stream"):
            status, error, headers = _error(
                404, "UnknownOperationException", f"no operation {action}"
            )
            await respond.json(status, error, headers)
            return
        if script.status >= 300:
            status, error, headers = _error(script.status, script.error_type, script.error_message)
            await respond.json(status, error, [*headers, *script.headers])
            return
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            status, error, headers = _error(
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            )
            await respond.json(status, error, headers)
            return
        if action == "invoke" and _embeds(model):
            await self._embed(body, model, respond)
            return
        if action.startswith("converse"):
            refused = converse_problem(body, self.issued)
        else:
            refused = self._invoke_problem(body, model)
        if refused:
            status, error, headers = _error(400, "ValidationException", refused)
            await respond.json(status, error, headers)
            return
        if action.startswith("converse"):
            await self._converse(script, action == "converse-stream", respond)
        else:
            await self._invoke(script, model, action == "invoke-with-response-stream", respond)

    async def _embed(self, body: dict[str, Any], model: str, respond: Responder) -> None:
        """InvokeModel on an embeddings model: Titan's or Cohere's body, checked as Bedrock does."""
        problem = embed_problem(body, model)
        if problem is not None:
            status, error, headers = _error(400, "ValidationException", problem)
            await respond.json(status, error, headers)
            return
        texts = [body["inputText"]] if "inputText" in body else list(body["texts"])
        tokens = sum(fake_tokens(t) for t in texts)
        headers = [
            ("x-amzn-requestid", "fake-request"),
            ("x-amzn-bedrock-input-token-count", str(tokens)),
        ]
        if "inputText" in body:
            dimensions = body.get("dimensions") or (1536 if "-v1" in model else 1024)
            vector = fake_vector(body["inputText"], dimensions)
            reply: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": tokens}
            if "-v1" not in model:
                reply["embeddingsByType"] = {"float": vector}
            await respond.json(200, reply, headers)
            return
        vectors = [fake_vector(t, body.get("output_dimension") or 1024) for t in texts]
        by_type = "embedding_types" in body
        await respond.json(
            200,
            {
                "id": f"fake-embed-{len(self.requests):04d}",
                "embeddings": {"float": vectors} if by_type else vectors,
                "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
                "texts": texts,
            },
            headers,
        )

    def _invoke_problem(self, body: dict[str, Any], model: str) -> str | None:
        if "model" in body:
            return _extraneous("model")
        if body.get("anthropic_version") != ANTHROPIC_VERSION:
            return f"Malformed input request: anthropic_version: expected {ANTHROPIC_VERSION!r}"
        if "stream" in body:
            return _extraneous("stream")
        return fake_anthropic.problem({**body, "model": model}, self.issued)

    def _remember(self, content: list[dict[str, Any]]) -> None:
        for block in content:
            reasoning = block.get("reasoningContent")
            if reasoning is None:
                continue
            if "redactedContent" in reasoning:
                self.issued.add(("", reasoning["redactedContent"]))
            else:
                text = reasoning["reasoningText"]
                self.issued.add((text["text"], text["signature"]))

    async def _converse(self, script: BedrockScript, stream: bool, respond: Responder) -> None:
        self._remember(converse_content(script))
        if not stream:
            if script.drop_after is not None:
                await respond.drop()
                return
            await respond.json(
                200, converse_reply(script), [("x-amzn-requestid", "fake-request"), *script.headers]
            )
            return
        await self._stream(script, converse_events(script), respond)

    async def _invoke(
        self, script: BedrockScript, model: str, stream: bool, respond: Responder
    ) -> None:
        full = fake_anthropic.message(
            _anthropic(script), model, f"msg_bdrk_fake{len(self.requests):04d}"
        )
        for block in full["content"]:
            if block["type"] == "thinking":
                self.issued.add((block["thinking"], block["signature"]))
            elif block["type"] == "redacted_thinking":
                self.issued.add(("", block["data"]))
        if not stream:
            await respond.json(200, full, [("x-amzn-requestid", "fake-request"), *script.headers])
            return
        await self._stream(script, invoke_events(full, script.pieces), respond)

    async def _stream(
        self, script: BedrockScript, events: list[tuple[str, dict[str, Any]]], respond: Responder
    ) -> None:
        frames: list[bytes] = []
        for index, (name, data) in enumerate(events):
            if script.exception_after is not None and index >= script.exception_after:
                frames.append(exception_frame(script.exception_type, script.error_message))
                break
            frames.append(event_frame(name, data, corrupt=index == script.corrupt_after))
        await respond.start(
            200,
            [("content-type", EVENT_STREAM), ("x-amzn-requestid", "fake-request"), *script.headers],
        )
        for index, frame in enumerate(frames):
            if script.drop_after is not None and index >= script.drop_after:
                await respond.drop()
                return
            if index and script.interval:
                await trio.sleep(script.interval)
            size = script.chunk_size or len(frame)
            for at in range(0, len(frame), size):
                await respond.send(frame[at : at + size])
        await respond.end()


_TITAN_V2_FIELDS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
_COHERE_V3_FIELDS = {"texts", "images", "input_type", "truncate", "embedding_types"}
_COHERE_V4_FIELDS = _COHERE_V3_FIELDS | {"inputs", "output_dimension", "max_tokens"}
_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")


def _embeds(model: str) -> bool:
    base = re.sub(r"^(us|eu|apac|global)\.", "", model)
    return base.startswith(("amazon.titan-embed-text", "cohere.embed"))


def fake_tokens(text: str) -> int:
    """The fake's token count of an input: a token a word (at least one)."""
    return max(1, len(text.split()))


def embed_problem(body: dict[str, Any], model: str) -> str | None:
    """What Bedrock refuses (``ValidationException``) in an embeddings model's InvokeModel body."""
    if "titan-embed-text" in model:
        allowed = {"inputText"} if "-v1" in model else _TITAN_V2_FIELDS
        extra = sorted(set(body) - allowed)
        if extra:
            return _extraneous(extra[0])
        if not isinstance(body.get("inputText"), str):
            return "Malformed input request: #: required key [inputText] not found, please " + (
                "reformat your input and try again."
            )
        if "dimensions" in body and body["dimensions"] not in (256, 512, 1024):
            return (
                f"Malformed input request: #/dimensions: {body['dimensions']} is not a valid enum "
                "value, please reformat your input and try again."
            )
        return None
    allowed = _COHERE_V3_FIELDS if "-v3" in model else _COHERE_V4_FIELDS
    extra = sorted(set(body) - allowed)
    if extra:
        return _extraneous(extra[0])
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return "Malformed input request: #: required key [texts] not found, please " + (
            "reformat your input and try again."
        )
    if len(texts) > 96:
        return (
            f"Malformed input request: #/texts: expected maxItems: 96, actual: {len(texts)}, "
            "please reformat your input and try again."
        )
    if body.get("input_type") not in _INPUT_TYPES:
        return (
            "Malformed input request: #: required key [input_type] not found, please reformat "
            "your input and try again."
        )
    if "output_dimension" in body and body["output_dimension"] not in (256, 512, 1024, 1536):
        return (
            f"Malformed input request: #/output_dimension: {body['output_dimension']} is not a "
            "valid enum value, please reformat your input and try again."
        )
    return None


def _extraneous(key: str) -> str:
    return (
        f"Malformed input request: #: extraneous key [{key}] is not permitted, please reformat "
        "your input and try again."
    )


def _summary(model: str) -> dict[str, Any]:
    provider = model.split(".")[0]
    return {
        "modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model}",
        "modelId": model,
        "modelName": model,
        "providerName": provider.capitalize(),
        "inputModalities": ["TEXT", "IMAGE"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    }
