"""The dashboard in a real browser (Debian's chromium, driven by Playwright): sign in, the overview
follows the requests just made, a slow answer never overwrites a newer one, each page shows its own
errors, a group keeps its colour, day buckets are labelled as UTC days, a live request shows up within
a second, a key cools after a 429 and comes back, the CSV export is ``proxycast usage --json``, a named
client sees its own rows only, and the page works at a phone's width. No test may leave an error on the
browser's console (a CSP violation is one)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest

from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.rows import Row
from proxycast.testing.openai import Script, ratelimit_headers
from tests.support import CLIENT_KEY
from tests.ui.conftest import Tab, open_tab
from tests.ui.support import ALICE_KEY, BOB_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Route

    from tests.ui.conftest import BackgroundGateway

SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard-overview.png"


def _chat(gateway: BackgroundGateway, key: str, model: str, request_id: str | None = None) -> None:
    headers = {"x-request-id": request_id} if request_id else None
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )


def _chart_values(tab: Tab, chart: str) -> dict[str, float]:
    values: dict[str, float] = tab.page.eval_on_selector_all(
        f"#chart-{chart} rect[data-group]",
        """rects => rects.reduce((sums, r) => {
            sums[r.dataset.group] = (sums[r.dataset.group] || 0) + Number(r.dataset.value);
            return sums; }, {})""",
    )
    return values


def _usage_json(gateway: BackgroundGateway, tmp_path: Path, by: str) -> list[dict[str, Any]]:
    """``proxycast usage --json`` on the gateway's ledger, as a user runs it."""
    assert gateway.config is not None
    config = tmp_path / "usage.toml"
    config.write_text(f'[ledger]\nurl = "{gateway.config.ledger.url}"\n')
    since = ("--since", "24h", "--by", by)
    out = subprocess.run(
        [sys.executable, "-m", "proxycast", "usage", "--config", str(config), *since, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def _typed(row: dict[str, str]) -> dict[str, Any]:
    return {k: float(v) if k == "cost_usd" else int(v) if k != next(iter(row)) else v
            for k, v in row.items()}  # fmt: skip


def test_overview_reflects_the_requests_just_made(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab, tmp_path: Path
) -> None:
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    assert page.inner_text("#client-name") == "signed in: gateway key"
    page.wait_for_selector("#chart-requests svg")
    before = _chart_values(tab, "requests")
    assert sum(before.values()) == len(seeded)
    assert page.inner_text("#total-requests") == f"{len(seeded):,}"

    for model in ("llama3.2", "llama3.2", "qwen2.5-coder"):
        _chat(gateway, CLIENT_KEY, model)
    page.click("#overview-refresh")
    page.wait_for_function(
        "n => document.querySelector('#total-requests').textContent === n",
        arg=f"{len(seeded) + 3:,}",
    )
    after = _chart_values(tab, "requests")
    assert after["llama3.2"] == before["llama3.2"] + 2
    assert after["qwen2.5-coder"] == before["qwen2.5-coder"] + 1
    assert sum(_chart_values(tab, "tokens").values()) > 0
    assert page.inner_text("#legend").split() == ["llama3.2", "qwen2.5-coder"]

    page.select_option("#by", "client")  # stacked by client: the unnamed key is "-"
    page.wait_for_selector("#legend li[data-group='alice']")
    by_client = _chart_values(tab, "requests")
    assert set(by_client) == {"-", "alice", "bob"}
    assert sum(by_client.values()) == len(seeded) + 3

    page.select_option("#by", "model")
    page.wait_for_selector("#legend li[data-group='llama3.2']")
    shot = SCREENSHOT if os.environ.get("PROXYCAST_UPDATE_SCREENSHOT") else tmp_path / "o.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tab.errors == []


def _insert(gateway: BackgroundGateway, rows: list[Row]) -> None:
    """Rows written straight to the gateway's ledger (as another worker would)."""
    assert gateway.config is not None
    db = ledger_sqlite.open_db(Path(gateway.config.ledger.url.removeprefix("sqlite:///")))
    try:
        ledger_sqlite.insert(db, rows)
    finally:
        db.close()


def _hold(tab: Tab, needle: str) -> list[Route]:
    """Hold back the page's requests whose URL holds ``needle`` (released with ``continue_()``)."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    tab.page.route(lambda url: needle in url, hold)
    return held


def _wait_held(tab: Tab, held: list[Route]) -> None:
    for _ in range(200):
        if held:
            return
        tab.page.wait_for_timeout(25)  # route handlers run while Playwright is called
    raise AssertionError("the page did not ask")


def test_a_slow_answer_never_overwrites_a_newer_one(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab
) -> None:
    _chat(gateway, CLIENT_KEY, "llama3.2")  # something in the last hour
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.wait_for_selector("#totals[data-range='24h']")

    held = _hold(tab, "range=30d")
    page.click("#range button[data-range='30d']")
    _wait_held(tab, held)
    page.click("#range button[data-range='1h']")
    page.wait_for_selector("#totals[data-range='1h']")
    shown = page.inner_text("#total-requests")
    assert int(shown.replace(",", "")) < len(seeded)
    with page.expect_response(lambda r: "range=30d" in r.url):
        held[0].continue_()  # the 30 d answer arrives last
    page.wait_for_timeout(300)
    assert page.get_attribute("#totals", "data-range") == "1h"
    assert page.inner_text("#total-requests") == shown

    page.click("nav a[data-page=export]")
    page.wait_for_selector("#export-table td")
    held = _hold(tab, "since=30d")
    page.select_option("#export-since", "30d")
    _wait_held(tab, held)
    page.select_option("#export-since", "1h")
    total = "rs => rs.reduce((n, r) => n + Number(r.cells[1].textContent), 0)"
    page.wait_for_function(
        f"() => ({total})([...document.querySelectorAll('#export-table tbody tr')]) < {len(seeded)}"
    )
    recent = page.eval_on_selector_all("#export-table tbody tr", total)
    with page.expect_response(lambda r: "since=30d" in r.url):
        held[0].continue_()
    page.wait_for_timeout(300)
    assert page.eval_on_selector_all("#export-table tbody tr", total) == recent
    assert tab.errors == []


def test_each_page_shows_its_own_errors(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab
) -> None:
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    down = json.dumps({"error": {"message": "The usage ledger cannot be read now: gone fishing"}})
    for name, path in (("export", "/ui/api/usage"), ("providers", "/ui/api/providers")):

        def refuse(route: Route) -> None:
            route.fulfill(status=503, content_type="application/json", body=down)

        page.route(re.compile(re.escape(path)), refuse)
        page.click(f"nav a[data-page={name}]")
        page.wait_for_selector(f"#{name}-error", state="visible")
        assert "gone fishing" in page.inner_text(f"#{name}-error")
        page.unroute_all()
    page.wait_for_selector("#providers-error", state="hidden")  # the next answer clears it
    page.wait_for_selector("tr[data-key='local#1']")
    assert [e for e in tab.errors if "503" not in e] == []  # chromium logs each failed load


def _fills(tab: Tab) -> dict[str, str]:
    fills: dict[str, str] = tab.page.eval_on_selector_all(
        "#legend li",
        "items => Object.fromEntries(items.map(i => [i.dataset.group, "
        "i.querySelector('rect').getAttribute('fill')]))",
    )
    return fills


def test_a_group_keeps_its_colour(gateway: BackgroundGateway, seeded: list[Row], tab: Tab) -> None:
    # a model seen 5 h ago sorts first in the 24 h legend and is absent from the 1 h one
    _insert(gateway, [Row(time=time.time() - 5 * 3600, request_id="a", client="-", api="openai",
                          model="aaa-model")])  # fmt: skip
    _chat(gateway, CLIENT_KEY, "llama3.2")
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.wait_for_selector("#legend li[data-group='aaa-model']")
    day = _fills(tab)
    assert list(day)[:2] == ["aaa-model", "llama3.2"]
    assert len(set(day.values())) == len(day)
    bars = page.eval_on_selector_all(
        "#chart-requests rect[data-group='llama3.2']",
        "rs => [...new Set(rs.map(r => r.getAttribute('fill')))]",
    )
    assert bars == [day["llama3.2"]]
    page.click("#range button[data-range='1h']")
    page.wait_for_selector("#totals[data-range='1h']")
    hour = _fills(tab)
    assert next(iter(hour)) == "llama3.2"
    assert hour["llama3.2"] == day["llama3.2"]
    assert tab.errors == []


@pytest.fixture(name="western_tab")
def _western_tab(browser: Browser) -> Iterator[Tab]:
    yield from open_tab(browser, timezone_id="America/Los_Angeles", locale="en-US")


def test_day_buckets_are_labelled_as_utc_days(
    gateway: BackgroundGateway, seeded: list[Row], western_tab: Tab
) -> None:
    tab = western_tab
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("#range button[data-range='30d']")
    page.wait_for_selector("#totals[data-range='30d']")
    labels = page.eval_on_selector_all(
        "#chart-requests svg text", "ts => ts.map(t => t.textContent)"
    )
    first_day = (math.floor(time.time() / 86400) - 29) * 86400  # the first bucket, a UTC midnight
    expected = {
        f"{day:%b} {day.day} UTC"
        for day in (datetime.fromtimestamp(s, timezone.utc) for s in (first_day, first_day + 86400))
    }  # (or the next, if a UTC day began since the page asked)
    assert labels[2] in expected, labels  # the x axis' first label, after the y axis' two
    assert tab.errors == []


def test_a_live_request_appears_within_a_second(gateway: BackgroundGateway, tab: Tab) -> None:
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("nav a[data-page=live]")
    page.wait_for_selector("#live-status[data-state=live]")

    _chat(gateway, CLIENT_KEY, "gpt-4o", request_id="live-1")
    answered = time.time() * 1000
    row = page.wait_for_selector("#live-table tr[data-request-id='live-1']", timeout=5000)
    assert row is not None
    latency = int(row.get_attribute("data-received") or 0) - answered
    assert latency < 1000, f"the live event arrived {latency:.0f} ms after the answer"
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[1:5] == ["-", "gpt-4o", "local#1", "200"]
    assert cells[5] == "11 / 7"  # the fake's usage: 11 prompt tokens, a word a token
    assert cells[7] == "local#1:200"

    page.click("#live-pause")
    _chat(gateway, CLIENT_KEY, "gpt-4o", request_id="live-2")
    page.wait_for_selector("#live-missed:has-text('1 not shown while paused')")
    assert page.query_selector("tr[data-request-id='live-2']") is None
    page.click("#live-pause")
    _chat(gateway, CLIENT_KEY, "gpt-4o", request_id="live-3")
    page.wait_for_selector("tr[data-request-id='live-3']")
    assert tab.errors == []


def test_a_key_cools_after_a_429_and_comes_back(gateway: BackgroundGateway, tab: Tab) -> None:
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("nav a[data-page=providers]")
    state = "tr[data-key='local#1'] .state"
    page.wait_for_selector(f"{state}:has-text('healthy')")

    gateway.call(
        gateway.fake.script, Script(status=429, error_type="rate_limit_error", error_message="slow")
    )
    _chat(gateway, CLIENT_KEY, "llama3.2")  # local#1 answers 429, local#2 serves the request
    page.wait_for_selector(f"{state}:has-text('cooling')")
    row = page.inner_text("tr[data-key='local#1']")
    assert "upstream 429" in row
    assert page.inner_text("tr[data-key='local#1'] .last-error").startswith("429 at ")
    assert page.inner_text("tr[data-key='local#1'] .attempts") == "1"
    assert page.inner_text("tr[data-key='local#2'] .state") == "healthy"
    assert page.inner_text("tr[data-key='local#2'] .attempts") == "1"

    gateway.clock.offset += 31  # past routing.cooldown (30 s)
    page.wait_for_selector(f"{state}:has-text('healthy')")
    assert tab.errors == []


def test_a_key_out_of_quota_shows_what_is_left(gateway: BackgroundGateway, tab: Tab) -> None:
    """The upstream's rate-limit headers said local#1 has no request left: the providers page shows
    it cooling for its quota, with the requests and tokens left and when they reset."""
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("nav a[data-page=providers]")
    page.wait_for_selector("tr[data-key='local#1'] .state:has-text('healthy')")
    headers = ratelimit_headers(0, 700, reset_requests="40s", reset_tokens="40s", limit_tokens=900)
    gateway.call(gateway.fake.script, Script(headers=headers))
    _chat(gateway, CLIENT_KEY, "llama3.2")
    row = "tr[data-key='local#1']"
    page.wait_for_selector(f"{row} .state:has-text('cooling')")
    assert "quota exhausted (no requests left, resets in 40 s)" in page.inner_text(row)
    assert page.inner_text(f"{row} .quota-requests").startswith("0 / 500 (resets ")
    assert page.inner_text(f"{row} .quota-tokens").startswith("700 / 900 (resets ")
    assert page.inner_text("tr[data-key='local#2'] .quota-requests") == ""
    gateway.clock.offset += 41
    page.wait_for_selector(f"{row} .state:has-text('healthy')")
    assert page.inner_text(f"{row} .quota-requests") == "500 / 500"
    assert tab.errors == []


def test_the_csv_export_is_usage_json(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab, tmp_path: Path
) -> None:
    for key, model in ((CLIENT_KEY, "llama3.2"), (ALICE_KEY, "qwen2.5-coder"), (BOB_KEY, "qwen3")):
        _chat(gateway, key, model)
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("nav a[data-page=export]")
    page.select_option("#export-by", "model")
    page.wait_for_selector("#export-table td:has-text('qwen3')")
    with page.expect_download() as info:
        page.click("#export-download")
    download = info.value
    assert download.suggested_filename == "proxycast-usage-by-model.csv"
    with open(download.path(), newline="") as file:
        exported = [_typed(row) for row in csv.DictReader(file)]
    expected = _usage_json(gateway, tmp_path, "model")
    assert exported == expected
    assert sum(r["requests"] for r in exported) == len(seeded) + 3
    assert tab.errors == []


def test_a_named_client_sees_only_its_own_rows(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab
) -> None:
    tab.sign_in(gateway.url, ALICE_KEY)
    page = tab.page
    assert page.inner_text("#client-name") == "signed in: alice"
    assert not page.is_visible("nav a[data-page=providers]")
    assert not page.is_visible("nav a[data-page=config]")
    page.goto(gateway.url + "/ui#config")  # not hers: the overview instead, and no request refused
    page.wait_for_selector("#page-overview", state="visible")
    page.select_option("#by", "client")
    page.wait_for_selector("#legend li[data-group='alice']")
    mine = sum(1 for r in seeded if r.client == "alice")
    assert _chart_values(tab, "requests") == {"alice": mine}
    assert page.inner_text("#total-requests") == f"{mine:,}"

    page.click("nav a[data-page=live]")
    page.wait_for_selector("#live-status[data-state=live]")
    _chat(gateway, BOB_KEY, "qwen3", request_id="bobs")
    _chat(gateway, ALICE_KEY, "qwen3", request_id="alices")
    page.wait_for_selector("tr[data-request-id='alices']")
    assert page.query_selector("tr[data-request-id='bobs']") is None

    page.click("nav a[data-page=export]")
    page.wait_for_selector("#export-table td:has-text('alice')")
    rows = page.eval_on_selector_all(
        "#export-table tbody tr", "rs => rs.map(r => r.cells[0].textContent)"
    )
    assert rows == ["alice"]
    assert tab.errors == []


@pytest.mark.parametrize(
    "page_name",
    ["overview", "providers", "live", "sessions", "requests", "config", "keys", "export"],
)
def test_every_page_fits_a_phone(
    gateway: BackgroundGateway, seeded: list[Row], tab: Tab, page_name: str
) -> None:
    now = time.time()
    _insert(gateway, [
        Row(time=now - 120, request_id=f"m{n}", client="-", api="openai",
            model=f"a-rather-long-model-name-{n:02}-instruct-preview")
        for n in range(12)
    ])  # fmt: skip
    page = tab.page
    page.set_viewport_size({"width": 390, "height": 844})
    tab.sign_in(gateway.url, CLIENT_KEY)
    page.click(f"nav a[data-page={page_name}]")
    page.wait_for_selector(f"#page-{page_name}", state="visible")
    ready = {
        "overview": "#chart-requests svg",
        "providers": "tr[data-key='local#1']",
        "live": "#live-status[data-state=live]",
        "config": "#config-body table",
        "export": "#export-table td",
        "sessions": "#sessions-table th",
        "requests": "#requests-table th",
        "keys": "#keys-body p.note",
    }[page_name]
    page.wait_for_selector(ready)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the {page_name} page is {overflow} px wider than the phone"
    tabs = page.eval_on_selector_all(
        "nav a:not([hidden])",
        "as => as.map(a => { const r = a.getBoundingClientRect(); return [r.left, r.right]; })",
    )
    assert (
        len(tabs) == 8
    )  # Overview, Providers, Live, Sessions, Requests, Configuration, Keys, Export
    for left, right in tabs:  # every tab on screen, none scrolled out of sight in the nav
        assert left >= 0, tabs
        assert right <= 390, tabs
    if page_name == "overview":  # the charts stack in one column, each as wide as the page allows
        width = page.eval_on_selector("#chart-requests svg", "s => s.getBoundingClientRect().width")
        assert 300 < width <= 390
        # twelve models with long names: ten groups ("other" last), in a compact legend
        page.wait_for_selector("#legend li[data-group='other']")
        assert page.eval_on_selector_all("#legend li", "items => items.length") == 10
        height = page.eval_on_selector("#legend", "l => l.getBoundingClientRect().height")
        assert height < 150, f"the legend is {height} px high"
    assert tab.errors == []


def test_the_sessions_page_lists_recent_sessions(gateway: BackgroundGateway, tab: Tab) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        for session, turns in (("agent-one", 3), ("agent-two", 1)):
            for _ in range(turns):
                client.chat.completions.create(
                    model="llama3.2",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-claude-code-session-id": session},
                )
    tab.sign_in(gateway.url, CLIENT_KEY)
    page = tab.page
    page.click("nav a[data-page=sessions]")
    page.wait_for_selector("#sessions-table td:has-text('agent-two')")
    rows = page.eval_on_selector_all(
        "#sessions-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    requests = {row[0]: int(row[1]) for row in rows}
    assert requests == {"agent-one": 3, "agent-two": 1}  # requests without a session are not listed
    assert tab.errors == []
