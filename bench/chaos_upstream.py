"""The chaos run's upstreams: proxycast's own fakes (which speak each provider's wire format exactly),
wrapped so that each request they receive may fail at a random point, as a seeded plan draws it.

The faults act on the bytes of the answer as the fake writes them (status line, headers, chunked
body), below HTTP: a reset (RST) or a clean close (FIN) at a random byte offset, a stall at an
offset, random bytes written into the answer, headers that come late, or no answer at all but a 5xx
or a burst of 429s (with ``Retry-After``). A fault counts as injected only once it fired (an offset
past the end of a short answer does nothing).
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections import Counter
from typing import TYPE_CHECKING, Any

import h11
import trio

from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeToolCall,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg

if TYPE_CHECKING:
    from proxycast.testing._server import RecordedRequest, Responder

FAULTS: tuple[tuple[str, float], ...] = (
    # (kind, weight); what is left of 1.0 answers as the fake would
    ("reset", 0.06),  # RST at a random byte offset of the answer
    ("truncate", 0.05),  # FIN at a random byte offset
    ("stall", 0.05),  # silent at an offset, 1-5 s (upstream_timeout is 3 s)
    ("garbage", 0.04),  # random bytes written at an offset
    ("slow_headers", 0.05),  # the status line after 0.5-4.5 s
    ("5xx", 0.06),  # 500, 502, 503 or 529, in the provider's error shape
    ("429_burst", 0.015),  # this request and the next 3-12 are 429 with Retry-After: 1
)


def draw(rng: random.Random) -> str:
    roll = rng.random()
    for kind, weight in FAULTS:
        if roll < weight:
            return kind
        roll -= weight
    return "none"


def error_body(flavour: str, status: int) -> dict[str, Any]:
    """An error answer as each provider writes it."""
    text = f"chaos: upstream answered {status}"
    if flavour == "anthropic":
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": text}}
    if flavour == "gemini":
        state = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
        return {"error": {"code": status, "message": text, "status": state}}
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return {"error": {"message": text, "type": kind, "code": None}}


class ChaosResponder:
    """Stands in for the fake's :class:`Responder`: the same calls, each event's bytes written by
    itself, with the request's fault applied at its offset."""

    def __init__(self, inner: Responder, kind: str, rng: random.Random, fired: Counter[str]):
        self._inner = inner
        self._kind = kind
        self._fired = fired
        self._offset = rng.randrange(0, 1600)  # the answers are 0.3-2 KB
        self._stall = rng.uniform(1.0, 5.0)
        self._garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        self._sent = 0
        self._done = False
        self.headers_delay = rng.uniform(0.5, 4.5) if kind == "slow_headers" else 0.0

    @property
    def dropped(self) -> bool:
        return self._inner.dropped

    async def _write(self, data: bytes) -> None:
        inner = self._inner
        if (
            self._done
            or self._kind == "none"
            or not (self._sent <= self._offset < self._sent + len(data))
        ):
            self._sent += len(data)
            await inner._stream.send_all(data)
            return
        cut = self._offset - self._sent
        self._sent += len(data)
        self._done = True
        self._fired[self._kind] += 1
        if cut:
            await inner._stream.send_all(data[:cut])
        if self._kind == "reset":
            inner.dropped = True
            inner._stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await inner._stream.aclose()
            raise trio.ClosedResourceError("chaos: reset")
        if self._kind == "truncate":
            inner.dropped = True
            await inner._stream.aclose()
            raise trio.ClosedResourceError("chaos: truncated")
        if self._kind == "stall":
            await trio.sleep(self._stall)
        elif self._kind == "garbage":
            await inner._stream.send_all(self._garbage)
        await inner._stream.send_all(data[cut:])

    async def _send(self, event: h11.Event) -> None:
        inner = self._inner
        if inner.head and isinstance(event, h11.Data):
            return
        data = inner._conn.send(event)
        if data:
            await self._write(data)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self.headers_delay:
            self._fired["slow_headers"] += 1
            await trio.sleep(self.headers_delay)
        await self._send(h11.Response(status_code=status, headers=headers))

    async def send(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def json(self, status: int, body: Any, headers: Any = ()) -> None:
        data = json.dumps(body).encode()
        await self.start(
            status,
            [("content-type", "application/json"), ("content-length", str(len(data))), *headers],
        )
        await self.send(data)
        await self.end()

    async def drop(self) -> None:
        await self._inner.drop()


class Chaos:
    """The fault plan of one upstream: a seeded draw per request, the 429 burst in progress, and
    what was injected."""

    def __init__(self, flavour: str, seed: int) -> None:
        self.flavour = flavour
        self.rng = random.Random(seed)
        self.fired: Counter[str] = Counter()
        self.burst = 0
        self.enabled = True

    async def handle(self, request: RecordedRequest, respond: Responder, answer: Any) -> None:
        kind = draw(self.rng) if self.enabled else "none"
        if self.burst or kind == "429_burst":
            if not self.burst:
                self.burst = self.rng.randrange(4, 14)
            self.burst -= 1
            self.fired["429"] += 1
            await respond.json(429, error_body(self.flavour, 429), [("retry-after", "1")])
            return
        if kind == "5xx":
            status = self.rng.choice((500, 502, 503, 529))
            self.fired[f"{status}"] += 1
            await respond.json(status, error_body(self.flavour, status))
            return
        await answer(request, ChaosResponder(respond, kind, self.rng, self.fired))


TEXT = "chaos " * 30
WEATHER = {"city": "Paris"}


class ChaosOpenAI(FakeOpenAI):
    """Answers text, reasoning and text, or a tool call, each in 12 chunks 10 ms apart."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.chaos = Chaos("openai", seed)
        paced: dict[str, Any] = {"chunks": 12, "interval": 0.01}
        self.variants = (
            Script(text=TEXT, **paced),
            Script(text=TEXT, reasoning="Let me think. " * 5, **paced),
            Script(
                text="",
                tool_calls=(FakeToolCall(name="get_weather", arguments=json.dumps(WEATHER)),),
                **paced,
            ),
        )

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        await self.chaos.handle(request, respond, self._answer)

    async def _answer(self, request: RecordedRequest, respond: Any) -> None:
        if not await self.side_route(request, respond):
            await self.answer(self.chaos.rng.choice(self.variants), request, respond)


class ChaosAnthropic(FakeAnthropic):
    """Answers text, thinking and text, or text and a tool use, each block in 12 pieces."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.chaos = Chaos("anthropic", seed)
        paced: dict[str, Any] = {"pieces": 12, "interval": 0.01}
        self.variants = (
            AnthropicScript(blocks=(fa.Text(TEXT),), **paced),
            AnthropicScript(blocks=(fa.Thinking("Let me think. " * 5), fa.Text(TEXT)), **paced),
            AnthropicScript(
                blocks=(fa.Text("Checking."), fa.ToolUse("get_weather", WEATHER)), **paced
            ),
        )

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        await self.chaos.handle(request, respond, self._answer)

    async def _answer(self, request: RecordedRequest, respond: Any) -> None:
        if not await self.side_route(request, respond):
            await self.answer(self.chaos.rng.choice(self.variants), request, respond)


class ChaosGemini(FakeGemini):
    """Answers text, a thought and text, or a function call, each text in 12 pieces."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.chaos = Chaos("gemini", seed)
        paced: dict[str, Any] = {"pieces": 12, "interval": 0.01}
        self.variants = (
            GeminiScript(parts=(fg.Text(TEXT),), **paced),
            GeminiScript(parts=(fg.Thought("Let me think. " * 5), fg.Text(TEXT)), **paced),
            GeminiScript(parts=(fg.Call("get_weather", WEATHER),), **paced),
        )

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        await self.chaos.handle(request, respond, self._answer)

    async def _answer(self, request: RecordedRequest, respond: Any) -> None:
        if not await self.side_route(request, respond):
            await self.answer(self.chaos.rng.choice(self.variants), request, respond)
