"""The dashboard's Keys page in a real browser: the runtime keys listed with their settings (never a
key), a revoke button that stops the key at once, and no such page for a named client."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.support import CLIENT_KEY
from tests.ui.support import ALICE_KEY

if TYPE_CHECKING:
    from tests.ui.conftest import BackgroundGateway, Tab

ADMIN = {"authorization": f"Bearer {CLIENT_KEY}"}


def _status(gateway: BackgroundGateway, key: str) -> int:
    answer = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    return answer.status_code


def test_the_keys_page_lists_and_revokes(gateway: BackgroundGateway, tab: Tab) -> None:
    made = httpx.post(
        gateway.url + "/admin/keys",
        json={"name": "ci-bot", "models": ["llama3.2"], "rpm": 60, "expires": "30d"},
        headers=ADMIN,
    )
    assert made.status_code == 201
    key = made.json()["key"]
    assert _status(gateway, key) == 200

    page = tab.page
    tab.sign_in(gateway.url, CLIENT_KEY)
    page.click("nav a[data-page=keys]")
    row = page.wait_for_selector("tr[data-key='ci-bot']")
    assert row is not None
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[:4] == ["ci-bot", "llama3.2", "60", ""]
    assert cells[7] != "never"  # it expires
    assert key not in page.content()

    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button[data-revoke='ci-bot']")
    page.wait_for_selector("tr[data-key='ci-bot']", state="detached")
    assert page.is_visible("#keys-body p.note")  # "No runtime keys"
    assert _status(gateway, key) == 401
    assert tab.errors == []


def test_a_named_client_has_no_keys_page(gateway: BackgroundGateway, tab: Tab) -> None:
    tab.sign_in(gateway.url, ALICE_KEY)
    assert not tab.page.is_visible("nav a[data-page=keys]")
    refused = httpx.get(
        gateway.url + "/ui/api/keys", headers={"authorization": f"Bearer {ALICE_KEY}"}
    )
    assert refused.status_code == 403
    assert tab.errors == []
