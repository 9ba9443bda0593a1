"""The dashboard's JSON API and pages over HTTP: authentication like every route, what a named client
may see, the CSP of the pages, no secret in any answer, the live feed's stream."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio

from proxycast.accounting.clients import UNNAMED, ClientConfig
from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.rows import Row
from proxycast.testing.openai import Script
from proxycast.ui import api as ui_api
from tests.support import CLIENT_KEY, start_gateway
from tests.ui.support import ALICE_KEY, BOB_KEY, SECRETS, seed_ledger, team_config

if TYPE_CHECKING:
    from pathlib import Path

    from proxycast.testing import FakeOpenAI
    from tests.support import Gateway


@pytest.fixture(name="team")
async def _team(nursery: trio.Nursery, fake: FakeOpenAI, tmp_path: Path) -> Gateway:
    seed_ledger(tmp_path / "usage.db")
    return await start_gateway(nursery, team_config(fake.base_url, tmp_path / "usage.db"))


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _chat(http: httpx.AsyncClient, key: str, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = await http.post("/v1/chat/completions", json=body, headers=_auth(key))
    assert response.status_code == 200, response.text


async def test_the_pages_need_no_key_and_carry_a_strict_csp(team: Gateway) -> None:
    async with httpx.AsyncClient(base_url=team.url) as http:
        for path in ("/ui", "/ui/", "/ui/static/app.js", "/ui/static/app.css"):
            response = await http.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "script-src 'self';" in csp
            assert "connect-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert "set-cookie" not in response.headers
        page = (await http.get("/ui")).text
        assert "<script>" not in page  # no inline script, no style attribute or element
        assert "style=" not in page
        assert "<style" not in page
        assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from elsewhere
        assert "https://" not in page


async def _raw_get(url: str, path: str) -> bytes:
    """``GET path`` sent as it is: httpx would resolve ``..`` before sending."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                answer += chunk
    return answer


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/../app.py",
        "/ui/static/../../proxycast/config.py",
        "/ui/static/..%2fapp.py",
        "/ui/static/%2e%2e/app.py",
        "/ui/static/..%5capp.py",
        "/ui/static/",
    ],
)
async def test_no_path_reaches_beyond_the_assets(team: Gateway, path: str) -> None:
    answer = await _raw_get(team.url, path)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert b"import" not in answer  # no Python source


@pytest.mark.parametrize(
    "path",
    [
        "/ui/api/me",
        "/ui/api/overview",
        "/ui/api/usage",
        "/ui/api/providers",
        "/ui/api/config",
        "/ui/api/live",
    ],
)
async def test_every_api_route_needs_a_gateway_key(team: Gateway, path: str) -> None:
    async with httpx.AsyncClient(base_url=team.url) as http:
        response = await http.get(path)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        response = await http.get(path, headers=_auth("not-a-key"))
        assert response.status_code == 401


async def test_a_named_client_sees_its_own_usage_and_no_configuration(team: Gateway) -> None:
    async with httpx.AsyncClient(base_url=team.url) as http:
        await _chat(http, ALICE_KEY, "llama3.2")
        await _chat(http, BOB_KEY, "qwen3")
        me = (await http.get("/ui/api/me", headers=_auth(ALICE_KEY))).json()
        assert me == {"client": "alice", "admin": False}
        for path in ("/ui/api/providers", "/ui/api/config"):
            refused = await http.get(path, headers=_auth(ALICE_KEY))
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "permission_error"  # OpenAI's dialect
        everyone = await http.get("/ui/api/overview?range=24h&by=client", headers=_auth(CLIENT_KEY))
        assert set(everyone.json()["groups"]) == {"-", "alice", "bob"}
        hers = (await http.get("/ui/api/overview?by=client", headers=_auth(ALICE_KEY))).json()
        assert hers["groups"] == ["alice"]
        assert hers["totals"]["requests"] == sum(
            p["requests"] for p in everyone.json()["points"] if p["group"] == "alice"
        )
        usage = await http.get("/ui/api/usage?by=model", headers=_auth(ALICE_KEY))
        admin_usage = await http.get("/ui/api/usage?by=client", headers=_auth(CLIENT_KEY))
        alice_row = next(r for r in admin_usage.json() if r["client"] == "alice")
        assert sum(r["requests"] for r in usage.json()) == alice_row["requests"]


async def test_a_client_named_like_the_unnamed_keys_sees_nothing_of_theirs(
    nursery: trio.Nursery, fake: FakeOpenAI, tmp_path: Path
) -> None:
    # the configuration check refuses the name; a Config built in code is not checked
    seed_ledger(tmp_path / "usage.db")
    config = team_config(fake.base_url, tmp_path / "usage.db")
    impostor = ClientConfig(name=UNNAMED, api_key="impostor-key-7a1b")
    gateway = await start_gateway(nursery, attrs.evolve(config, clients=(impostor,)))
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth("impostor-key-7a1b")) as http:
        for path in ("overview?by=client", "usage", "usage?format=csv"):
            response = await http.get("/ui/api/" + path)
            assert response.status_code == 403, path
            assert "reserved" in response.json()["error"]["message"]


async def test_bad_parameters_are_400s(team: Gateway) -> None:
    async with httpx.AsyncClient(base_url=team.url, headers=_auth(CLIENT_KEY)) as http:
        for query in ("overview?range=2h", "overview?by=key", "usage?since=later", "usage?by=x"):
            response = await http.get("/ui/api/" + query)
            assert response.status_code == 400, query
            assert response.json()["error"]["type"] == "invalid_request_error"


ODD_MODELS = ("=cmd|x", "a,b", 'say "hi"', "two\nlines", "-", "@sum", "plain")


async def test_the_csv_export_is_the_json_rows(
    nursery: trio.Nursery, fake: FakeOpenAI, tmp_path: Path
) -> None:
    seed_ledger(tmp_path / "usage.db")
    odd = [
        Row(time=time.time() - 60, request_id=f"odd-{n}", client="alice", api="openai", model=m)
        for n, m in enumerate(ODD_MODELS)
    ]
    _insert(tmp_path / "usage.db", odd)
    gateway = await start_gateway(nursery, team_config(fake.base_url, tmp_path / "usage.db"))
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth(CLIENT_KEY)) as http:
        for by in ("client", "provider", "day"):  # exactly the JSON's rows ("-" as it is)
            rows = (await http.get(f"/ui/api/usage?by={by}")).json()
            text = (await http.get(f"/ui/api/usage?by={by}&format=csv")).text
            assert [_typed(r) for r in csv.DictReader(io.StringIO(text, newline=""))] == rows
        assert any(r["client"] == "-" for r in (await http.get("/ui/api/usage")).json())

        rows = (await http.get("/ui/api/usage?by=model")).json()
        text = (await http.get("/ui/api/usage?by=model&format=csv")).text
        exported = [_typed(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
        escaped = {"=cmd|x": "'=cmd|x", "@sum": "'@sum"}  # the formula-looking ones, not "-"
        assert exported == [{**r, "model": escaped.get(r["model"], r["model"])} for r in rows]
        assert {r["model"] for r in rows} >= set(ODD_MODELS)
        assert '"say ""hi"""' in text  # RFC 4180: quoted, quotes doubled
        assert '"two\nlines"' in text
        assert '"a,b"' in text


async def test_the_overview_stacks_ten_groups_at_most(
    nursery: trio.Nursery, fake: FakeOpenAI, tmp_path: Path
) -> None:
    # twelve models, m01 asked for once ... m12 twelve times, plus a model really named "other"
    now = time.time()
    rows = [
        Row(time=now - 30, request_id=f"r-{n}-{i}", client="-", api="openai", model=f"m{n:02}")
        for n in range(1, 13)
        for i in range(n)
    ]
    rows += [Row(time=now - 30, request_id="o", client="-", api="openai", model="other")]
    _insert(tmp_path / "usage.db", rows)
    gateway = await start_gateway(nursery, team_config(fake.base_url, tmp_path / "usage.db"))
    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth(CLIENT_KEY)) as http:
        data = (await http.get("/ui/api/overview?range=1h&by=model")).json()
    assert data["groups"] == [f"m{n:02}" for n in range(4, 13)] + ["other"]
    assert data["totals"]["requests"] == len(rows)
    other = [p for p in data["points"] if p["group"] == "other"]
    assert [p["requests"] for p in other] == [1 + 2 + 3 + 1]  # m01..m03 and "other"
    assert len({(p["bucket"], p["group"]) for p in data["points"]}) == len(data["points"])


async def test_overview_and_usage_answers_are_reused_until_a_request_is_recorded(
    nursery: trio.Nursery, fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_api, "CACHE_SECONDS", 60.0)  # a slow machine must not expire them
    gateway = await start_gateway(nursery, team_config(fake.base_url, tmp_path / "usage.db"))
    questions = ("overview?range=1h&by=client", "usage?by=client", "usage?by=client&format=csv")

    def requests(path: str, text: str) -> int:
        if path.startswith("overview"):
            return int(json.loads(text)["totals"]["requests"])
        if "csv" in path:
            return sum(int(r["requests"]) for r in csv.DictReader(io.StringIO(text)))
        return sum(r["requests"] for r in json.loads(text))

    async with httpx.AsyncClient(base_url=gateway.url, headers=_auth(CLIENT_KEY)) as http:
        await _chat(http, CLIENT_KEY, "llama3.2")
        for path in questions:
            assert requests(path, (await http.get("/ui/api/" + path)).text) == 1, path
        # another worker's row, written straight to the ledger: not read again within seconds
        elsewhere = Row(
            time=time.time(), request_id="w2", client="bob", api="openai", model="qwen3"
        )
        _insert(tmp_path / "usage.db", [elsewhere])
        for path in questions:
            assert requests(path, (await http.get("/ui/api/" + path)).text) == 1, path
        # a request this worker finished: the next answers are read afresh, and show it
        await _chat(http, ALICE_KEY, "llama3.2")
        for path in questions:
            assert requests(path, (await http.get("/ui/api/" + path)).text) == 3, path


def _insert(path: Path, rows: list[Row]) -> None:
    db = ledger_sqlite.open_db(path)
    try:
        ledger_sqlite.insert(db, rows)
    finally:
        db.close()


def _typed(row: dict[str, str]) -> dict[str, object]:
    numbers = {"requests", "errors", "input_tokens", "output_tokens", "estimated"}
    return {
        k: float(v) if k == "cost_usd" else int(v) if k in numbers else v for k, v in row.items()
    }


async def test_no_answer_holds_a_secret(team: Gateway, fake: FakeOpenAI) -> None:
    # an upstream that echoes a key in its error: the key is redacted wherever it goes
    fake.script(Script(status=429, error_message=f"slow down, {SECRETS[3]}"))
    async with httpx.AsyncClient(base_url=team.url, headers=_auth(CLIENT_KEY)) as http:
        await _chat(http, CLIENT_KEY, "llama3.2")
        texts = []
        for path in ("config", "providers", "overview", "usage", "usage?format=csv", "me"):
            response = await http.get("/ui/api/" + path)
            assert response.status_code == 200, path
            assert response.headers["cache-control"] == "no-store"
            texts.append(response.text)
        providers = json.loads(texts[1])["providers"][0]["keys"]
        assert [k["key"] for k in providers] == ["local#1", "local#2"]
        assert providers[0]["state"] == "cooling"
        assert providers[0]["last_error"] == "429"
        assert (providers[0]["attempts"], providers[0]["successes"]) == (1, 0)
        assert (providers[1]["attempts"], providers[1]["successes"]) == (1, 1)
        config = json.loads(texts[0])
        assert config["providers"][0]["keys"] == ["local#1", "local#2"]
        assert config["fallbacks"] == {"llama3.2": ["local/qwen2.5-coder"]}
        assert config["clients"][0] == {
            "name": "alice", "models": [], "rpm": 600, "tpm": None,
            "max_usd_per_day": None, "max_usd_per_month": None,
        }  # fmt: skip
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def _in_flight(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith("proxycast_in_flight_requests "))
    return float(line.split()[1])


async def test_an_open_live_stream_is_not_a_request_in_flight(team: Gateway) -> None:
    async with httpx.AsyncClient(base_url=team.url, headers=_auth(CLIENT_KEY)) as http:
        alone = _in_flight((await http.get("/metrics")).text)
        assert alone == 1.0  # the scrape itself
        async with http.stream("GET", "/ui/api/live") as stream:
            lines = stream.aiter_lines()
            with trio.move_on_after(10) as guard:
                assert (await anext(lines)) == "event: hello"
            assert not guard.cancel_called
            assert _in_flight((await http.get("/metrics")).text) == alone


async def test_the_live_feed_streams_finished_requests(team: Gateway) -> None:
    async with (
        httpx.AsyncClient(base_url=team.url) as http,
        http.stream("GET", "/ui/api/live", headers=_auth(ALICE_KEY)) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        with trio.move_on_after(10) as guard:
            assert (await anext(lines)) == "event: hello"
            await _chat(http, BOB_KEY, "qwen3")  # not hers: not shown to her
            await _chat(http, ALICE_KEY, "llama3.2")
            frames: list[str] = []
            while len(frames) < 2:
                line = await anext(lines)
                if line.startswith(("event: request", 'data: {"time"')):
                    frames.append(line)
        assert not guard.cancel_called
        event = json.loads(frames[1].removeprefix("data: "))
        assert event["client"] == "alice"
        assert event["model"] == "llama3.2"
        assert event["status"] == 200
        assert event["attempts"] == ["local#2:200"]  # the keys rotate: bob's had local#1
        assert set(event) >= {"time", "request_id", "provider", "tokens", "duration", "ttft"}
