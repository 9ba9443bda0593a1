"""Anthropic models through Bedrock's InvokeModel (``/model/{modelId}/invoke``) and
InvokeModelWithResponseStream (``/invoke-with-response-stream``): the Messages body of the Anthropic
format with ``anthropic_version: "bedrock-2023-05-31"`` and no ``model`` (it is in the path); the
stream's ``chunk`` frames carry Anthropic's SSE events as base64 JSON (``{"bytes": ...}``)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

import attrs

from proxycast.formats import internal, sse
from proxycast.formats.anthropic import outbound as anthropic
from proxycast.formats.bedrock.converse import FrameStream, model_path
from proxycast.formats.contracts import UpstreamRequest

if TYPE_CHECKING:
    from proxycast.formats.bedrock.eventstream import Frame

ANTHROPIC_VERSION = "bedrock-2023-05-31"
_UNSENT = ("model", "stream", "service_tier", "metadata")
"""Messages fields InvokeModel does not take: the model and stream flag are in the path, and
Bedrock has neither service tiers nor ``metadata`` in its Anthropic body."""


def request_from_internal(conversation: internal.Conversation, model: str) -> UpstreamRequest:
    """The InvokeModel request: the Anthropic format's Messages body, made Bedrock's."""
    if conversation.params.web_search is not None and conversation.params.web_search.tool:
        # an offered search Bedrock cannot run: left out (the client is told which tools)
        conversation = attrs.evolve(
            conversation, params=attrs.evolve(conversation.params, web_search=None)
        )
    messages = anthropic.request_from_internal(conversation, model)
    body = {k: v for k, v in messages.body.items() if k not in _UNSENT}
    body["anthropic_version"] = ANTHROPIC_VERSION
    action = "invoke-with-response-stream" if conversation.stream else "invoke"
    return UpstreamRequest(path=model_path(model, action), body=body, stream=conversation.stream)


def response_to_internal(body: dict[str, Any], request: UpstreamRequest) -> internal.Reply:
    return anthropic.response_to_internal(body, request)


def count_body(request: UpstreamRequest) -> dict[str, Any]:
    """CountTokens' input for an InvokeModel body (the body as a blob: base64 in JSON)."""
    raw = json.dumps(dict(request.body)).encode()
    return {"input": {"invokeModel": {"body": base64.b64encode(raw).decode()}}}


class StreamDecoder(FrameStream):
    """InvokeModelWithResponseStream's ``chunk`` frames, each one Anthropic stream event, read by the
    Anthropic format's own decoder."""

    def __init__(self, request: UpstreamRequest) -> None:
        super().__init__()
        self._messages = anthropic.StreamDecoder(request)

    def frame(self, frame: Frame) -> list[internal.StreamEvent]:
        if frame.event_type != "chunk":
            return []
        try:
            part = json.loads(frame.payload)
            data = base64.b64decode(part["bytes"], validate=True).decode()
            kind = json.loads(data).get("type", "message")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return []
        events = self._messages.event(sse.Event(data=data, event=str(kind)))
        self.finished = self._messages.finished
        return events
