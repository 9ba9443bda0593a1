"""The dashboard's request inspector (``[capture]``) in Chromium: a streamed tool call captured, listed
on the Requests page, and shown whole when clicked (the conversation, the reply's tool call, the
upstream attempt and the request sent upstream); a named client lists only its own requests."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import attrs
import openai
import pytest

from proxycast.config import CaptureConfig
from proxycast.testing.openai import FakeToolCall, Script
from tests.support import CLIENT_KEY
from tests.ui.conftest import BackgroundGateway, open_tab
from tests.ui.support import ALICE_KEY, team_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser

TOOLS: list[object] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(name="capturing")
def _capturing(ledger_file: Path) -> Iterator[BackgroundGateway]:
    def configure(url: str):  # type: ignore[no-untyped-def]
        config = team_config(url, ledger_file, shutdown_grace=1.0, access_log="off")
        return attrs.evolve(config, capture=CaptureConfig(enabled=True))

    gateway = BackgroundGateway(configure)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _captured(path: Path, count: int) -> None:
    """Wait until the ledger holds ``count`` captures (the writer flushes every second)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        db = sqlite3.connect(path)
        try:
            if db.execute("SELECT COUNT(*) FROM captures").fetchone()[0] >= count:
                return
        except sqlite3.OperationalError:
            pass
        finally:
            db.close()
        time.sleep(0.1)
    raise AssertionError(f"{count} captures were not written")


def test_the_inspector_shows_a_streamed_tool_call(
    capturing: BackgroundGateway, ledger_file: Path, browser: Browser
) -> None:
    capturing.call(
        capturing.fake.script,
        Script(
            text="", tool_calls=(FakeToolCall(name="get_weather", arguments='{"city": "Paris"}'),)
        ),
    )
    with openai.OpenAI(base_url=capturing.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=TOOLS,  # type: ignore[arg-type]
            stream=True,
            extra_headers={"x-request-id": "inspect-me"},
        )
        for _ in stream:
            pass
    with openai.OpenAI(base_url=capturing.url + "/v1", api_key=ALICE_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "alices-request"},
        )
    _captured(ledger_file, 2)

    for tab in open_tab(browser, viewport={"width": 1280, "height": 900}):
        tab.sign_in(capturing.url, CLIENT_KEY)
        page = tab.page
        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#requests-table tr[data-request-id='alices-request']")
        page.click("#requests-table tr[data-request-id='inspect-me']")
        page.wait_for_selector("#request-detail", state="visible")
        assert "What is the weather in Paris?" in page.inner_text("#request-conversation")
        assert "Tools offered: get_weather" in page.inner_text("#request-conversation")
        reply = page.inner_text("#request-reply")
        assert "tool call get_weather(" in reply
        assert '"city": "Paris"' in reply
        assert "stop: tool_use" in reply
        attempts = page.eval_on_selector_all(
            "#request-detail table",
            "ts => [...ts[1].tBodies[0].rows[0].cells].map(c => c.textContent)",
        )
        assert attempts[:3] == ["1", "local#1", "200"]
        page.click("#request-upstream summary")
        assert '"stream": true' in page.inner_text("#request-upstream pre")
        assert CLIENT_KEY not in page.content()
        assert tab.errors == []

    for tab in open_tab(browser, viewport={"width": 1280, "height": 900}):
        tab.sign_in(capturing.url, ALICE_KEY)
        page = tab.page
        page.click("nav a[data-page=requests]")
        page.wait_for_selector("#requests-table tr[data-request-id='alices-request']")
        listed = page.eval_on_selector_all(
            "#requests-table tbody tr", "rs => rs.map(r => r.dataset.requestId)"
        )
        assert listed == ["alices-request"]
        page.click("#requests-table tr[data-request-id='alices-request']")
        page.wait_for_selector("#request-reply pre")
        assert tab.errors == []
