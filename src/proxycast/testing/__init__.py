"""Fake upstream servers that speak each provider's wire format, for tests (ours and yours).

Each fake is served on a free loopback port with ``await nursery.start(fake.serve)``, answers as its
queued script says, and records every request it received, including whether and when the client
abandoned it (:attr:`RecordedRequest.abandoned_at`).
"""

from proxycast.testing._server import FakeUpstream, RecordedRequest
from proxycast.testing.anthropic import AnthropicScript, FakeAnthropic
from proxycast.testing.bedrock import BedrockScript, FakeBedrock
from proxycast.testing.gemini import FakeGemini, GeminiScript
from proxycast.testing.local import LocalServer
from proxycast.testing.openai import FakeOpenAI, FakeToolCall, Script
from proxycast.testing.vertex import FakeVertex

__all__ = (
    "AnthropicScript",
    "BedrockScript",
    "FakeAnthropic",
    "FakeBedrock",
    "FakeGemini",
    "FakeOpenAI",
    "FakeToolCall",
    "FakeUpstream",
    "FakeVertex",
    "GeminiScript",
    "LocalServer",
    "RecordedRequest",
    "Script",
)
