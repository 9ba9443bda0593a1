"""A signature Gemini 3 puts on an answer's text part comes back to that part on the next turn for
the clients whose API has no place for it (Anthropic, Responses): the gateway remembers it
(``proxycast.core.signatures``), streamed or not, and the client sees only the text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.core.signatures import StreamedText, TextSignatures
from proxycast.formats import internal
from proxycast.testing import FakeGemini, GeminiScript
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway

if TYPE_CHECKING:
    import trio

ANSWER = "The number you saved is four."
SIGNATURE = "c2lnbmVkLXRleHQtcGFydA=="
MODEL = "gemini-3-pro-preview"


def _signed_texts(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The model turns' text parts the upstream got, with their signatures."""
    return [
        (part["text"], part.get("thoughtSignature"))
        for content in body["contents"]
        if content.get("role") == "model"
        for part in content["parts"]
        if part.get("text")
    ]


@pytest.fixture(name="gemini")
async def _gemini(nursery: trio.Nursery) -> FakeGemini:
    fake = FakeGemini(GeminiScript(parts=(fg.Text("Noted."),)))
    fake.script(GeminiScript(parts=(fg.Text(ANSWER, thought_signature=SIGNATURE),)))
    await nursery.start(fake.serve)
    return fake


async def _gateway(nursery: trio.Nursery, fake: FakeGemini) -> str:
    provider = ProviderConfig(
        name="gemini",
        type="gemini",
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    return (await start_gateway(nursery, config)).url


@pytest.mark.parametrize("stream", [False, True])
async def test_an_anthropic_client_gets_the_text_and_gemini_its_signature_back(
    nursery: trio.Nursery, gemini: FakeGemini, stream: bool
) -> None:
    url = await _gateway(nursery, gemini)
    first: list[Any] = [{"role": "user", "content": "What number did I save?"}]
    async with anthropic.AsyncAnthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0) as client:
        answer: Any
        if stream:
            async with client.messages.stream(model=MODEL, max_tokens=100, messages=first) as s:
                answer = await s.get_final_message()
        else:
            answer = await client.messages.create(model=MODEL, max_tokens=100, messages=first)
        assert [block.type for block in answer.content] == ["text"]  # the text alone, and last
        text = answer.content[0].text  # type: ignore[union-attr]
        assert text == ANSWER
        await client.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[
                *first,
                {"role": "assistant", "content": [{"type": "text", "text": text}]},
                {"role": "user", "content": "Thanks."},
            ],
        )
    assert _signed_texts(gemini.requests[-1].json()) == [(ANSWER, SIGNATURE)]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_responses_client_gets_the_text_and_gemini_its_signature_back(
    nursery: trio.Nursery, gemini: FakeGemini, stream: bool
) -> None:
    url = await _gateway(nursery, gemini)
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0
    ) as client:
        if stream:
            text = ""
            async for event in await client.responses.create(
                model=MODEL, input="What number did I save?", stream=True, store=False
            ):
                if event.type == "response.completed":
                    kinds = [item.type for item in event.response.output]
                    text = event.response.output_text
        else:
            response = await client.responses.create(
                model=MODEL, input="What number did I save?", store=False
            )
            kinds, text = [item.type for item in response.output], response.output_text
        assert kinds == ["message"]  # no reasoning item after the message
        assert text == ANSWER
        history: Any = [
            {"role": "user", "content": "What number did I save?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": text}]},
            {"role": "user", "content": "Thanks."},
        ]
        await client.responses.create(model=MODEL, store=False, input=history)
    assert _signed_texts(gemini.requests[-1].json()) == [(ANSWER, SIGNATURE)]


def test_the_memory_is_bounded_and_restores_only_what_it_saw() -> None:
    memory = TextSignatures(size=2)
    follow = StreamedText(memory)
    for event in (
        internal.TextDelta("one "),
        internal.TextDelta("two", signature="s1", source="gemini"),
        internal.ReasoningDelta(text="thinking"),
        internal.TextDelta("three", signature="s2", source="gemini"),
        internal.TextDelta("unsigned"),
        internal.ToolCallStart(index=0, id="c", name="f"),
    ):
        follow.see(event)
    conversation = internal.Conversation(
        messages=(
            internal.Message(role="user", parts=(internal.Text("one two"),)),
            internal.Message(
                role="assistant",
                parts=(internal.Text("one two"), internal.Text("three"), internal.Text("unsigned")),
            ),
        )
    )
    restored = memory.restore(conversation)
    assert [(p.signature, p.source) for p in restored.messages[1].parts] == [  # type: ignore[union-attr]
        ("s1", "gemini"),
        ("s2", "gemini"),
        (None, None),
    ]
    assert restored.messages[0] is conversation.messages[0]  # a user's text is never signed
    memory.remember("four", "s4", "gemini")  # the oldest goes
    assert len(memory) == 2
    assert memory.restore(conversation).messages[1].parts[0].signature is None  # type: ignore[union-attr]
