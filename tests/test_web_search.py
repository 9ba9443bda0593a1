"""Web search through the real server with the official openai SDK: the Responses API's built-in
``web_search`` tool and chat completions' ``web_search_options`` become Claude's web search server
tool and Gemini's Google Search grounding; Claude's search blocks and citations, and Gemini's
grounding metadata, come back as ``web_search_call`` items and ``url_citation`` annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from proxycast.testing import AnthropicScript, GeminiScript
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.test_responses_api import DROPPED, MODEL, TOOLS, Start
from tests.test_responses_api import _start as _start  # the fixture

if TYPE_CHECKING:
    import openai

SEARCH: Any = [{"type": "web_search"}]
URL = "https://example.com/news"
CLAUDE_SEARCH = AnthropicScript(
    blocks=(
        fa.Text("Let me look. "),
        fa.WebSearch(query="proxycast news", results=((URL, "News"),)),
        fa.Text("It shipped.", citations=(fa.Citation(URL, "News", "It shipped today."),)),
    )
)
GROUNDED = GeminiScript(
    parts=(fg.Text("It shipped. Fine."),),
    grounding=fg.Grounding(
        queries=("proxycast news",), pages=((URL, "News"),), supports=(("It shipped.", (0,)),)
    ),
)


async def _create(sdk: openai.AsyncOpenAI, stream: bool, **fields: Any) -> tuple[Any, Any]:
    """The response (accumulated by the SDK when streamed) and the HTTP headers."""
    if not stream:
        raw = await sdk.responses.with_raw_response.create(model=MODEL, input="News?", **fields)
        return raw.parse(), raw.headers
    async with sdk.responses.with_streaming_response.create(
        model=MODEL, input="News?", stream=True, **fields
    ) as answer:
        final = None
        async for event in await answer.parse():
            if event.type == "response.completed":
                final = event.response
        return final, answer.headers


def _found(response: Any) -> tuple[list[Any], list[Any]]:
    calls = [i for i in response.output if i.type == "web_search_call"]
    texts = [c for i in response.output if i.type == "message" for c in i.content]
    return calls, [a for t in texts for a in t.annotations]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_claude_runs_the_responses_web_search(start: Start, stream: bool) -> None:
    setup = await start("anthropic")
    setup.fake.script(CLAUDE_SEARCH)
    location = {"type": "approximate", "city": "Paris", "country": "FR"}
    tools = [*TOOLS, {"type": "web_search", "user_location": location}]
    response, headers = await _create(setup.sdk, stream, tools=tools)
    assert DROPPED not in headers
    sent = setup.fake.requests[-1].json()
    assert sent["tools"][-1] == {
        "type": "web_search_20250305",
        "name": "web_search",
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
    }
    assert response.output_text == "Let me look. It shipped."
    calls, annotations = _found(response)
    assert [c.action.query for c in calls] == ["proxycast news"]
    assert [(a.type, a.url, a.title) for a in annotations] == [("url_citation", URL, "News")]
    text = [i for i in response.output if i.type == "message"][-1].content[0].text
    assert text[annotations[0].start_index : annotations[0].end_index] == "It shipped."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_gemini_grounds_the_responses_web_search(start: Start, stream: bool) -> None:
    setup = await start("gemini")
    setup.fake.script(GROUNDED)
    response, headers = await _create(setup.sdk, stream, tools=SEARCH)
    assert DROPPED not in headers
    assert setup.fake.requests[-1].json()["tools"] == [{"googleSearch": {}}]
    assert response.output_text == "It shipped. Fine."
    calls, annotations = _found(response)
    assert [c.action.query for c in calls] == ["proxycast news"]
    assert [(a.url, a.start_index, a.end_index) for a in annotations] == [(URL, 0, 11)]


async def test_gemini_leaves_the_search_out_beside_function_tools(start: Start) -> None:
    """Gemini refuses Google Search next to function declarations (the fake too)."""
    setup = await start("gemini")
    response, headers = await _create(setup.sdk, False, tools=[*TOOLS, *SEARCH])
    assert headers[DROPPED] == "web_search"
    sent = setup.fake.requests[-1].json()
    assert [list(t) for t in sent["tools"]] == [["functionDeclarations"]]
    assert response.status == "completed"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_chat_only_upstream_leaves_the_search_out_and_says_so(
    start: Start, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    setup = await start("openai-chat")
    tools = [*TOOLS, {"type": "web_search_preview"}]
    _, headers = await _create(setup.sdk, stream, tools=tools)
    assert headers[DROPPED] == "web_search_preview"
    sent = setup.fake.requests[-1].json()
    assert "web_search_options" not in sent
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "web_search_preview" in caplog.text


async def test_chat_web_search_options_reach_claude(start: Start) -> None:
    setup = await start("anthropic")
    setup.fake.script(CLAUDE_SEARCH)
    options: Any = {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"city": "Lyon"}},
    }
    answer = await setup.sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "News?"}], web_search_options=options
    )
    sent = setup.fake.requests[-1].json()
    assert sent["tools"] == [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "user_location": {"type": "approximate", "city": "Lyon"},
        }
    ]
    message = answer.choices[0].message
    assert message.content == "Let me look. It shipped."
    assert message.annotations is not None
    (annotation,) = message.annotations
    cited = annotation.url_citation
    assert (cited.url, cited.title) == (URL, "News")
    assert message.content[cited.start_index : cited.end_index] == "It shipped."
    setup.fake.script(CLAUDE_SEARCH)
    chunks = await setup.sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "News?"}],
        web_search_options={},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert text == "Let me look. It shipped."


async def test_the_fakes_refuse_what_the_providers_refuse() -> None:
    assert fa._server_tool_problem({"type": "web_search_20250305", "name": "search"}, "t") == (
        "t.web_search_20250305.name: Input should be 'web_search'"
    )
    both = {
        "type": "web_search_20250305",
        "name": "web_search",
        "allowed_domains": ["a.com"],
        "blocked_domains": ["b.com"],
    }
    assert "both" in (fa._server_tool_problem(both, "t") or "")
    assert fa._server_tool_problem({"type": "web_search_1999", "name": "web_search"}, "t")
    tools = [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f"}]}]
    assert "cannot be combined" in (fg.validate({"contents": [], "tools": tools}) or "")
    combined = {
        "contents": [],
        "tools": tools,
        "toolConfig": {"includeServerSideToolInvocations": True},
    }
    assert fg.validate(combined) is None
