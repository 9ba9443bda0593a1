"""The local-server mode of :class:`~proxycast.testing.FakeOpenAI`: an OpenAI-compatible server as
llama-cpp-python's serves a model on one's own machine, with the habits that differ from OpenAI's.

- A request it cannot take is a **500** whose message is the exception's text: pydantic's validation
  listing (a ``null`` where a number or a flag goes), or the chat template's traceback (an assistant
  turn with ``content: null`` beside its ``tool_calls``, content given as a list of parts, an empty
  ``tools`` list). llama-cpp-python's route class turns every exception into a 500 that way.
- **No usage in streams**, ``stream_options.include_usage`` or not; non-streamed answers carry it.
- A prompt longer than the context (``n_ctx``) is a 400 ``context_length_exceeded`` when not streamed,
  and an **empty 200 stream** when streamed (the failure comes once the stream has begun).
- A stream that another request **interrupts** (``interrupt_requests``, llama-cpp-python's default)
  ends with ``data: [DONE]`` and no finish reason.
- One chunk per token; the role chunk is ``{"role": "assistant"}``.

Tokens are counted by :func:`tokens` (words and punctuation, a crude tokenizer but a fixed one) over
the prompt the chat template renders (:func:`prompt_tokens`), so a test can compare what the server
counted (:attr:`FakeOpenAI.counted`) with what the gateway recorded.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])")
_PER_MESSAGE = 5
"""``<|im_start|>``, the role, a newline, ``<|im_end|>``, a newline (ChatML, as Qwen's template)."""
_GENERATION_PROMPT = 3
"""``<|im_start|>assistant\\n``, which the template adds to ask for the answer."""

_NUMBERS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "seed")
_FLAGS = ("stream", "logprobs")


@attrs.frozen(kw_only=True)
class LocalServer:
    """How the local server is set up."""

    n_ctx: int = 2048
    """The context window in tokens: a prompt and ``max_tokens`` together must fit."""
    interrupt_requests: bool = True
    """A new request ends the stream being served with ``[DONE]`` (llama-cpp-python's default)."""


def pieces(text: str) -> list[str]:
    """``text`` as the server's tokens (each with the whitespace before it): words and punctuation."""
    return _TOKEN.findall(text)


def tokens(text: str) -> int:
    return len(pieces(text))


def _traceback(error: str, where: str) -> str:
    """An exception's text as llama-cpp-python's 500 carries it (the template's frames included)."""
    return (
        "Traceback (most recent call last):\n"
        '  File "llama_cpp/llama_chat_format.py", line 228, in __call__\n'
        "    prompt = self._environment.render(\n"
        f'  File "<template>", line 1, in {where}\n'
        f"{error}"
    )


def _validation(field: str, kind: str, value: Any) -> str:
    """Pydantic's listing of one invalid field (the 500's message, as ``str(exc)`` reads)."""
    article = "a valid number" if kind == "float" else "a valid boolean"
    return (
        "1 validation error for CreateChatCompletionRequest\n"
        f"{field}\n  Input should be {article} [type={kind}_type, "
        f"input_value={value!r}, input_type={type(value).__name__}]"
    )


def refusal(body: dict[str, Any]) -> str | None:
    """Why the server fails this request with a 500 (the exception's text), None if it takes it."""
    for field in _NUMBERS:
        if field in body and body[field] is None:
            return _validation(field, "float", None)
    for field in _FLAGS:
        if field in body and body[field] is None:
            return _validation(field, "bool", None)
    if "tools" in body and not body["tools"]:
        return _traceback("IndexError: list index out of range", "top-level template code")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _validation("messages", "list", messages)
    for message in messages:
        if not isinstance(message, dict):
            return _validation("messages", "dict", message)
        content = message.get("content", "")
        if content is None and message.get("role") == "assistant":
            return _traceback(
                'TypeError: can only concatenate str (not "NoneType") to str',
                "top-level template code",
            )
        if not isinstance(content, str):
            return _traceback(
                f'TypeError: can only concatenate str (not "{type(content).__name__}") to str',
                "top-level template code",
            )
    return None


def prompt_tokens(body: dict[str, Any]) -> int:
    """The tokens of the prompt the chat template renders: each message's role and content, its tool
    calls as JSON, the tools' definitions, the template's markers."""
    count = _GENERATION_PROMPT
    for message in body.get("messages") or ():
        count += _PER_MESSAGE + tokens(str(message.get("content") or ""))
        for call in message.get("tool_calls") or ():
            count += tokens(json.dumps(call.get("function") or {}))
    if body.get("tools"):
        count += tokens(json.dumps(body["tools"]))
    return count


def too_long(body: dict[str, Any], server: LocalServer, prompt: int) -> str | None:
    """llama-cpp-python's message for a prompt (and ``max_tokens``) over the context; None if it fits."""
    wanted = body.get("max_tokens") or 0
    if prompt + wanted <= server.n_ctx:
        return None
    return (
        f"This model's maximum context length is {server.n_ctx} tokens. However, you requested "
        f"{prompt + wanted} tokens ({prompt} in the messages, {wanted or None} in the completion). "
        "Please reduce the length of the messages or completion."
    )
