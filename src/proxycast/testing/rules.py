"""A rule-based model for the fake upstreams: it reads each request in the upstream's own format and
answers by a few fixed rules, for suites that send their own prompts (the Open Responses compliance
suite, a client's smoke test) where no per-test script can be queued.

The rules, in order:

1. The last message carries a tool result: answer with text that quotes it
   (``The tool answered: ...``).
2. Tools are offered (and ``tool_choice`` allows a call): call the first one (or the one
   ``tool_choice`` forces) with arguments made from its JSON schema (:func:`arguments`).
3. Otherwise answer with text: what ``Reply with exactly: X`` asks (``X``); a summary of the
   conversation when the last message asks to summarise or compact it; a code word remembered from
   the conversation (``code word: W``) when asked for it; the word of ``Reply with OK``; else
   ``You said: <the last message>``.

Usage::

    fake = rules.follow(FakeAnthropic())   # answers by rule whenever no script is queued

``python -m proxycast.testing --rules`` serves the three fakes so.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import attrs

from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from proxycast.testing._server import FakeUpstream, RecordedRequest
from proxycast.testing.anthropic import AnthropicScript, FakeAnthropic
from proxycast.testing.gemini import FakeGemini, GeminiScript
from proxycast.testing.openai import FakeOpenAI, FakeToolCall, Script

FakeT = TypeVar("FakeT", bound=FakeUpstream[Any])


@attrs.frozen(kw_only=True)
class Seen:
    """What the rules read of a request, whatever its format."""

    texts: tuple[str, ...] = ()
    """Every text of the conversation, in order (system first)."""
    last: str = ""
    """The text of the last message."""
    tool_result: str | None = None
    """The output of the tool result(s) the last message carries, if it carries one."""
    tools: tuple[tuple[str, dict[str, Any]], ...] = ()
    """The functions offered: (name, JSON schema of the arguments)."""
    forced: str | None = None
    """The function ``tool_choice`` names."""
    no_calls: bool = False
    """``tool_choice`` forbids calls."""


@attrs.frozen
class Decision:
    """The answer the rules chose: a text, or a call of ``call`` with ``arguments``."""

    text: str = ""
    call: str | None = None
    arguments: dict[str, Any] = attrs.field(factory=dict)


_EXACTLY = re.compile(r"reply with exactly:\s*(.+)", re.IGNORECASE)
_SHORT = re.compile(r"reply with ([A-Z]+)\b")
_CODE_WORD = re.compile(r"code word(?: is|:)\s*([A-Za-z0-9_-]+)", re.IGNORECASE)


def decide(seen: Seen) -> Decision:
    """The rules (the module docstring), applied to what was seen."""
    if seen.tool_result is not None:
        return Decision(text=f"The tool answered: {seen.tool_result}")
    if seen.tools and not seen.no_calls:
        schemas = dict(seen.tools)
        name = seen.forced if seen.forced in schemas else seen.tools[0][0]
        return Decision(call=name, arguments=arguments(schemas[name]))
    last = seen.last.strip()
    exactly = _EXACTLY.search(last)
    if exactly:
        return Decision(text=exactly.group(1).strip().rstrip("."))
    lowered = last.lower()
    if "summar" in lowered or "compact" in lowered or "compress" in lowered:
        return Decision(text=summary(seen.texts[:-1]))
    if "what is the code word" in lowered:
        words = [m.group(1) for t in seen.texts for m in _CODE_WORD.finditer(t)]
        if words:
            return Decision(text=words[-1])
    short = _SHORT.search(last)
    if short:
        return Decision(text=short.group(1))
    return Decision(text=f"You said: {last}" if last else "Hello.")


def summary(texts: tuple[str, ...]) -> str:
    """The rules' summary of a conversation: its texts, joined."""
    return "Summary of the conversation: " + " / ".join(t.strip() for t in texts if t.strip())


def arguments(schema: Any) -> dict[str, Any]:
    """Arguments that fit a function's JSON schema: each property (the required ones, or all when
    none is required) with a plain value of its type (its first ``enum`` value if it has one)."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = [p for p in schema.get("required") or () if p in properties]
    return {name: _value(properties[name]) for name in required or list(properties)}


def _value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini's schemas write OBJECT, STRING, ...
    if kind == "object":
        return arguments(schema)
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(
        str(kind), "example"
    )


# Each format's requests, read


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            _text_of(p.get("text") or p.get("content")) for p in content if isinstance(p, dict)
        ]
        return "\n".join(t for t in texts if t)
    return ""


def _output_text(value: Any) -> str:
    return value if isinstance(value, str) else _text_of(value) or json.dumps(value)


def read_chat(body: dict[str, Any]) -> Seen:
    """An OpenAI Chat Completions request."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    texts = tuple(_text_of(m.get("content")) for m in messages)
    last = messages[-1] if messages else {}
    tool_result = None
    if last.get("role") == "tool":
        trailing = []
        for m in reversed(messages):
            if m.get("role") != "tool":
                break
            trailing.append(_output_text(m.get("content")))
        tool_result = "; ".join(reversed(trailing))
    tools = tuple(
        (t["function"]["name"], t["function"].get("parameters") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    )
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        forced = choice["function"].get("name")
    return Seen(
        texts=texts,
        last=texts[-1] if texts else "",
        tool_result=tool_result,
        tools=tools,
        forced=forced,
        no_calls=choice == "none",
    )


def read_responses(body: dict[str, Any]) -> Seen:
    """An OpenAI Responses request (``input``, after its instructions)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    items = [i for i in items or () if isinstance(i, dict)]
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    for item in items:
        if item.get("type", "message") == "message":
            texts.append(_text_of(item.get("content")))
    tool_result = None
    trailing = []
    for item in reversed(items):
        if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
            break
        trailing.append(_output_text(item.get("output")))
    if trailing:
        tool_result = "; ".join(reversed(trailing))
    tools = tuple(
        (t["name"], t.get("parameters") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    )
    choice = body.get("tool_choice")
    forced = choice.get("name") if isinstance(choice, dict) else None
    last = items[-1] if items else {}
    return Seen(
        texts=tuple(texts),
        last=_text_of(last.get("content")) if last.get("type", "message") == "message" else "",
        tool_result=tool_result,
        tools=tools,
        forced=forced,
        no_calls=choice == "none",
    )


def read_anthropic(body: dict[str, Any]) -> Seen:
    """An Anthropic Messages request."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    texts = [_text_of(body.get("system"))]
    texts += [_text_of([b for b in _blocks(m) if b.get("type") == "text"]) for m in messages]
    last = _blocks(messages[-1]) if messages else []
    results = [b for b in last if b.get("type") == "tool_result"]
    tools = tuple(
        (t["name"], t.get("input_schema") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict) and "input_schema" in t
    )
    choice = body.get("tool_choice") or {}
    return Seen(
        texts=tuple(texts),
        last=texts[-1],
        tool_result="; ".join(_output_text(b.get("content")) for b in results) if results else None,
        tools=tools,
        forced=choice.get("name") if choice.get("type") == "tool" else None,
        no_calls=choice.get("type") == "none",
    )


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or () if isinstance(b, dict)]


def read_gemini(body: dict[str, Any]) -> Seen:
    """A Gemini ``generateContent`` request."""
    contents = [c for c in body.get("contents") or () if isinstance(c, dict)]
    system = body.get("systemInstruction") or {}
    texts = [_text_of(system.get("parts"))]
    texts += [_text_of(c.get("parts")) for c in contents]
    last = [p for p in (contents[-1].get("parts") or ()) if isinstance(p, dict)] if contents else []
    results = [p["functionResponse"] for p in last if isinstance(p.get("functionResponse"), dict)]
    tools = tuple(
        (d["name"], d.get("parameters") or d.get("parametersJsonSchema") or {})
        for t in body.get("tools") or ()
        if isinstance(t, dict)
        for d in t.get("functionDeclarations") or ()
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    )
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = config.get("allowedFunctionNames") or ()
    return Seen(
        texts=tuple(texts),
        last=texts[-1],
        tool_result=(
            "; ".join(_output_text(r.get("response")) for r in results) if results else None
        ),
        tools=tools,
        forced=allowed[0] if allowed else None,
        no_calls=config.get("mode") == "NONE",
    )


# Decisions as each fake's scripts


def _number(request: RecordedRequest) -> int:
    return abs(hash((request.received_at, request.body))) % 10**8


def openai_script(request: RecordedRequest) -> Script:
    """The rules' answer to a request of the OpenAI fake (Chat Completions or Responses)."""
    body = _body(request)
    if request.route.endswith("/responses/compact"):  # the window to summarise, all of it
        return Script(text=summary(read_responses(body).texts))
    seen = read_responses(body) if request.route.endswith("/responses") else read_chat(body)
    decision = decide(seen)
    if decision.call is None:
        return Script(text=decision.text)
    call = FakeToolCall(
        name=decision.call,
        arguments=json.dumps(decision.arguments),
        id=f"call_rule{_number(request)}",
    )
    return Script(text="", tool_calls=(call,))


def anthropic_script(request: RecordedRequest) -> AnthropicScript:
    """The rules' answer to a request of the Anthropic fake."""
    decision = decide(read_anthropic(_body(request)))
    if decision.call is None:
        return AnthropicScript(blocks=(fa.Text(decision.text),))
    use = fa.ToolUse(decision.call, decision.arguments, id=f"toolu_rule{_number(request)}")
    return AnthropicScript(blocks=(use,))


def gemini_script(request: RecordedRequest) -> GeminiScript:
    """The rules' answer to a request of the Gemini fake."""
    decision = decide(read_gemini(_body(request)))
    if decision.call is None:
        return GeminiScript(parts=(fg.Text(decision.text),))
    return GeminiScript(parts=(fg.Call(decision.call, decision.arguments),))


def _body(request: RecordedRequest) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def follow(fake: FakeT) -> FakeT:
    """Make ``fake`` answer by the rules whenever no script is queued; returns it."""
    if isinstance(fake, FakeOpenAI):
        fake.rules = openai_script
    elif isinstance(fake, FakeAnthropic):
        fake.rules = anthropic_script
    elif isinstance(fake, FakeGemini):
        fake.rules = gemini_script
    else:
        raise TypeError(f"no rules for {type(fake).__name__}")
    return fake
