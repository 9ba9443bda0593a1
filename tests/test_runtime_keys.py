"""Client keys made at run time (``proxycast keys``, ``/admin/keys``), against real servers: a key made
by the CLI (a real process on the data directory) or the admin API is used by an SDK, counted under its
name and limited; a revocation is refused by both workers of ``serve --workers 2``, and by two
instances on one Redis, within a second; rotation, expiry, a reload that keeps them; the admin API
refuses a client key; no listing shows a key; a ``[[clients]]`` name is refused."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING

import attrs
import httpx
import openai
import psycopg
import pytest
import trio

from proxycast.state.keys import (
    KeyExistsError,
    KeyStore,
    KeyStoreUnavailableError,
    PostgresKeys,
    RedisKeys,
    SQLiteKeys,
    StoredKey,
)
from tests.postgres import free_port, running_cluster
from tests.support import CLIENT_KEY
from tests.test_cli import serve
from tests.test_reload import ALICE, metric, reload, statuses, write_config
from tests.test_scale_out import instances

if TYPE_CHECKING:
    from pathlib import Path

    from proxycast.testing import FakeOpenAI
    from tests.redis_server import RedisServer
    from tests.support import Gateway

ADMIN = {"authorization": f"Bearer {CLIENT_KEY}"}
MODEL = "llama3.2"


async def keys_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``proxycast keys ARGS`` as a user runs it: exit status, stdout, stderr."""
    import os

    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "keys", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def created(*args: str, env: dict[str, str] | None = None) -> str:
    code, out, err = await keys_cli("create", *args, env=env)
    assert code == 0, err
    return out.splitlines()[-1]  # the key, alone on the last line


async def until_status(url: str, key: str, status: int, seconds: float = 5.0) -> None:
    """Wait until a request with ``key`` gets ``status`` (a new key reaches the other workers
    within a poll)."""
    with trio.fail_after(seconds):
        while True:
            if set(await statuses(url, MODEL, key, 4)) == {status}:
                return
            await trio.sleep(0.1)


def chat(url: str, key: str, model: str = MODEL) -> str:
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    return answer.choices[0].message.content or ""


async def test_a_cli_key_works_on_both_workers_is_counted_limited_and_revoked_within_a_second(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config)]) as served:
        key = await created(
            "--config", str(config), "--name", "carol", "--models", MODEL, "--rpm", "30"
        )
        assert key.startswith("pc-")
        await until_status(served.url, key, 200)
        assert await trio.to_thread.run_sync(chat, served.url, key)
        # the model allowlist: any other model does not exist for carol
        with pytest.raises(openai.NotFoundError):
            await trio.to_thread.run_sync(chat, served.url, key, "qwen3")
        counted = await metric(served.url, 'proxycast_requests_total{client="carol"')
        assert counted >= 5  # until_status's requests and the SDK's, under carol's name
        # a reload keeps them (they are not the file's)
        done = await reload(config)
        assert done.returncode == 0, done.stderr
        assert set(await statuses(served.url, MODEL, key)) == {200}

        code, out, _ = await keys_cli("revoke", "carol", "--config", str(config))
        assert code == 0
        assert "revoked" in out
        await trio.sleep(1.0)
        assert set(await statuses(served.url, MODEL, key)) == {401}  # every worker
        assert set(await statuses(served.url, MODEL, ALICE, 4)) == {200}


async def test_limits_of_a_runtime_key_hold_across_two_workers(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config)]) as served:
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                served.url + "/admin/keys", json={"name": "dave", "rpm": 3}, headers=ADMIN
            )
        assert answer.status_code == 201, answer.text
        key = answer.json()["key"]
        await trio.sleep(1.0)  # known to the other worker
        found = await statuses(served.url, MODEL, key, 8)
        assert sorted(found) == [200] * 3 + [429] * 5


async def test_revocation_reaches_two_instances_on_one_redis_within_a_second(
    fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with instances(fake.base_url, redis_server.url, 1000) as urls:
        config = tmp_path / "cli.toml"  # the CLI needs only [state]: the same Redis
        config.write_text(f'[state]\nredis_url = "{redis_server.url}"\n')
        key = await created("--config", str(config), "--name", "erin")
        for url in urls:
            await until_status(url, key, 200)
        code, _, err = await keys_cli("revoke", "erin", "--config", str(config))
        assert code == 0, err
        await trio.sleep(1.0)
        for url in urls:
            assert set(await statuses(url, MODEL, key, 8)) == {401}


async def test_revocation_reaches_two_instances_on_one_postgres_within_a_second(
    fake: FakeOpenAI, postgres_url: str, tmp_path: Path
) -> None:
    """No Redis: the ledger's Postgres database keeps the keys, and every instance sees them."""
    urls = []
    async with contextlib.AsyncExitStack() as stack:
        for name in ("one", "two"):  # two data directories, as on two machines
            home = tmp_path / name
            home.mkdir()
            config = write_config(home / "proxycast.toml", fake.base_url, workers=1)
            config.write_text(config.read_text() + f'\n[ledger]\nurl = "{postgres_url}"\n')
            env = {"PROXYCAST_HOME": str(home)}
            served = await stack.enter_async_context(serve(["--config", str(config)], env=env))
            urls.append(served.url)
        cli = tmp_path / "cli.toml"  # the CLI needs only the database
        cli.write_text(f'[ledger]\nurl = "{postgres_url}"\n')
        key = await created("--config", str(cli), "--name", "erin", "--rpm", "100")
        for url in urls:
            await until_status(url, key, 200)
        code, out, err = await keys_cli("list", "--json", "--config", str(cli))
        assert code == 0, err
        assert [k["name"] for k in json.loads(out)] == ["erin"]
        code, _, err = await keys_cli("revoke", "erin", "--config", str(cli))
        assert code == 0, err
        await trio.sleep(1.0)
        for url in urls:
            assert set(await statuses(url, MODEL, key, 8)) == {401}
        # the admin API of either instance writes where the other reads
        async with httpx.AsyncClient() as client:
            made = await client.post(urls[0] + "/admin/keys", json={"name": "fay"}, headers=ADMIN)
            assert made.status_code == 201, made.text
            await until_status(urls[1], made.json()["key"], 200, seconds=1.5)
            listed = await client.get(urls[1] + "/admin/keys", headers=ADMIN)
        assert [k["name"] for k in listed.json()["keys"]] == ["fay"]


def _stores(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> list[KeyStore]:
    """Two stores on one place of ``kind`` (two processes' views of it)."""
    if kind == "sqlite":
        return [SQLiteKeys(tmp_path / "limits.db") for _ in range(2)]
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
        return [RedisKeys(url) for _ in range(2)]
    url = request.getfixturevalue("postgres_url")
    return [PostgresKeys(url) for _ in range(2)]


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_every_store_keeps_keys_alike(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    one, two = _stores(kind, request, tmp_path)
    try:
        start = two.version()
        key = StoredKey(name="ann", digest="a" * 64, models=("gpt-*",), rpm=5, created=1.0)
        one.add(key)
        with pytest.raises(KeyExistsError):
            two.add(attrs.evolve(key, digest="b" * 64))
        assert two.load() == [key]  # the first one's, whole
        assert two.version() != start
        seen = two.version()
        assert one.replace(attrs.evolve(key, digest="c" * 64))
        assert two.version() != seen
        assert two.load()[0].digest == "c" * 64
        assert not one.replace(attrs.evolve(key, name="nobody"))
        assert two.remove("ann")
        assert not one.remove("ann")
        assert one.load() == two.load() == []
    finally:
        one.close()
        two.close()


def test_a_postgres_store_says_it_is_away_and_comes_back() -> None:
    """Stopped: a clear error that names the database without its password; started again: the
    same store works (a new connection)."""
    with running_cluster() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER USER postgres PASSWORD 'pw-s3cret'")
        url = f"postgresql://postgres:pw-s3cret@127.0.0.1:{cluster.port}/postgres"
        store = PostgresKeys(url)
        try:
            store.add(StoredKey(name="ann", digest="a" * 64, created=1.0))
            cluster.stop()
            with pytest.raises(KeyStoreUnavailableError) as away:
                store.load()
            assert "127.0.0.1" in str(away.value)
            assert "s3cret" not in str(away.value)
            assert "s3cret" not in repr(store)
            cluster.start()
            assert [k.name for k in store.load()] == ["ann"]
        finally:
            store.close()


async def test_an_unreachable_store_is_a_clear_503_and_exit_status(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    dead = f"postgresql://postgres:pw-s3cret@127.0.0.1:{free_port()}/keys"
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    config.write_text(config.read_text() + f'\n[ledger]\nurl = "{dead}"\n')
    code, out, err = await keys_cli("create", "--name", "ann", "--config", str(config))
    assert code == 1
    assert "cannot reach the client keys' store" in err
    assert "s3cret" not in out + err
    async with serve(["--config", str(config)]) as served, httpx.AsyncClient() as client:
        made = await client.post(served.url + "/admin/keys", json={"name": "ann"}, headers=ADMIN)
        listed = await client.get(served.url + "/admin/keys", headers=ADMIN)
        page = await client.get(served.url + "/ui/api/keys", headers=ADMIN)  # the dashboard's
        # the file's clients are served meanwhile
        assert set(await statuses(served.url, MODEL, ALICE, 2)) == {200}
    for answer in (made, listed, page):
        assert answer.status_code == 503
        assert "client keys' store cannot be reached" in answer.json()["error"]["message"]
        assert "s3cret" not in answer.text


async def test_the_admin_api_creates_lists_rotates_and_refuses_client_keys(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    async with serve(["--config", str(config)]) as served, httpx.AsyncClient() as client:
        url = served.url + "/admin/keys"
        # a named client's key may not manage keys: 403, in OpenAI's error shape
        refused = await client.post(
            url, json={"name": "x"}, headers={"authorization": f"Bearer {ALICE}"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_error"
        assert (
            await client.get(url, headers={"authorization": f"Bearer {ALICE}"})
        ).status_code == 403
        assert (await client.get(url)).status_code == 401

        # a [[clients]] name is refused, and a bad field is a clear 400
        clash = await client.post(url, json={"name": "alice"}, headers=ADMIN)
        assert clash.status_code == 409
        assert "[[clients]]" in clash.json()["error"]["message"]
        bad = await client.post(url, json={"name": "frank", "rpm": "many"}, headers=ADMIN)
        assert bad.status_code == 400
        assert "rpm" in bad.json()["error"]["message"]
        unknown = await client.post(url, json={"name": "frank", "rmp": 3}, headers=ADMIN)
        assert unknown.status_code == 400
        assert "'rmp'" in unknown.json()["error"]["message"]

        made = await client.post(
            url,
            json={"name": "frank", "models": [MODEL], "max_usd_per_day": 5, "expires": "30d"},
            headers=ADMIN,
        )
        assert made.status_code == 201
        key = made.json()["key"]
        assert made.json()["name"] == "frank"
        again = await client.post(url, json={"name": "frank"}, headers=ADMIN)
        assert again.status_code == 409
        assert await trio.to_thread.run_sync(chat, served.url, key)

        listed = await client.get(url, headers=ADMIN)
        assert listed.status_code == 200
        (entry,) = listed.json()["keys"]
        assert entry["name"] == "frank"
        assert entry["models"] == [MODEL]
        assert entry["max_usd_per_day"] == 5
        assert entry["expires"] > entry["created"]
        code, out, _ = await keys_cli("list", "--config", str(config))
        code_json, out_json, _ = await keys_cli("list", "--json", "--config", str(config))
        assert code == code_json == 0
        assert "frank" in out
        assert json.loads(out_json)[0]["name"] == "frank"
        for text in (listed.text, out, out_json):
            assert key not in text
            assert key[3:12] not in text  # no part of it either
            assert "digest" not in text

        # rotate (the CLI): the old key is refused at once, the new one works
        code, out, err = await keys_cli("rotate", "frank", "--config", str(config))
        assert code == 0, err
        new = out.splitlines()[-1]
        await until_status(served.url, new, 200)
        assert set(await statuses(served.url, MODEL, key, 2)) == {401}

        gone = await client.delete(url + "/frank", headers=ADMIN)
        assert gone.status_code == 200
        assert (await client.delete(url + "/frank", headers=ADMIN)).status_code == 404
        assert set(await statuses(served.url, MODEL, new, 2)) == {401}


async def test_an_expired_key_is_refused_and_says_so(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    async with serve(["--config", str(config)]) as served:
        key = await created("--config", str(config), "--name", "gina", "--expires", "8s")
        await until_status(served.url, key, 200)
        await until_status(served.url, key, 401, seconds=15)
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                served.url + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}"},
            )
        assert "expired" in answer.json()["error"]["message"]
        assert key not in answer.text


async def test_the_cli_refuses_what_it_cannot_make(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    code, _, err = await keys_cli("create", "--name", "alice", "--config", str(config))
    assert code == 1
    assert "[[clients]]" in err
    code, _, err = await keys_cli(
        "create", "--name", "hal", "--expires", "2001-01-01", "--config", str(config)
    )
    assert code == 1
    assert "in the past" in err
    code, _, err = await keys_cli("create", "--name", "hal", "--expires", "soon")
    assert code == 1
    assert "duration" in err
    code, _, err = await keys_cli("revoke", "nobody")
    assert code == 1
    assert "No runtime key" in err


def test_a_runtime_key_never_shadows_the_file_and_stops_at_its_expiry() -> None:
    from proxycast.accounting import keystore
    from proxycast.accounting.clients import ClientConfig, Directory, RuntimeClients
    from proxycast.state.keys import StoredKey

    now = time.time()
    stored = [
        StoredKey(name="alice", digest=keystore.digest_of("runtime-alice"), created=now),
        StoredKey(name="ivy", digest=keystore.digest_of("ivy-key"), created=now, expires=now + 60),
        StoredKey(name="old", digest=keystore.digest_of("old-key"), created=now, expires=now - 1),
    ]
    runtime = RuntimeClients()
    runtime.set([keystore.client_of(k) for k in stored])
    directory = Directory.of((CLIENT_KEY,), (ClientConfig(name="alice", api_key=ALICE),), runtime)
    found = directory.find(ALICE)
    assert found is not None
    assert not found.runtime  # the file's alice
    assert directory.find("runtime-alice") is None  # a file name: the runtime key is not used
    ivy = directory.find("ivy-key")
    assert ivy is not None
    assert ivy.name == "ivy"
    assert directory.find("old-key") is None
    expired = directory.expired("old-key")
    assert expired is not None
    assert expired.name == "old"
    assert keystore.parse_expires("2030-01-02", now) == 1893542400.0
    assert keystore.parse_expires("30d", now) == now + 30 * 86400


async def test_the_admin_api_refuses_values_no_key_could_keep(gateway: Gateway) -> None:
    """NaN and 1e999 (Python's JSON reads both) are no limit, and the listing would no longer be
    JSON; an expiry past the year 9999 breaks ``keys list``; a huge one, a body that is no UTF-8
    or nested past Python's recursion limit, was a 500. Each is a 400 naming what to fix, and
    nothing is stored."""
    url = gateway.url + "/admin/keys"
    refused = {
        b'{"name": "a", "max_usd_per_day": NaN}': "max_usd_per_day",
        b'{"name": "a", "max_usd_per_month": 1e999}': "max_usd_per_month",
        b'{"name": "a", "expires": "1' + b"0" * 400 + b'd"}': "expires",
        b'{"name": "a", "expires": "' + b"9" * 5000 + b'd"}': "expires",
        b'{"name": "a", "expires": "9999-12-31T23:59:59-05:00"}': "expires",
        b'{"name": "a", "expires": "3000000d"}': "expires",
        b"\xff\xfe{": "JSON",
        b'{"name": "a", "models": ' + b"[" * 5000 + b"]" * 5000 + b"}": "JSON",
    }
    async with httpx.AsyncClient() as client:
        for body, field in refused.items():
            answer = await client.post(url, content=body, headers=ADMIN)
            assert answer.status_code == 400, (body[:60], answer.text)
            assert field in answer.json()["error"]["message"]
        listed = await client.get(url, headers=ADMIN)
    assert listed.json() == {"keys": []}


async def test_the_cli_says_which_store_holds_the_keys(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """``keys create`` without the server's ``--config`` (it names Redis) keeps the key in the
    machine's SQLite file, where the server never looks: it said only "created key", and
    ``keys revoke`` then "No runtime key": each now names the store it used."""
    config = tmp_path / "cli.toml"
    config.write_text(f'[state]\nredis_url = "{redis_server.url}"\n')
    code, out, err = await keys_cli("create", "--name", "lee", "--config", str(config))
    assert code == 0, err
    assert f"in Redis at {redis_server.url}" in out
    code, _, err = await keys_cli("revoke", "lee")  # no --config: the data directory's file
    assert code == 1
    assert "No runtime key is named 'lee'" in err
    assert "Looked in the SQLite file " in err
    assert "limits.db." in err
    code, out, err = await keys_cli("revoke", "lee", "--config", str(config))
    assert code == 0, err
    assert f"revoked key 'lee' in Redis at {redis_server.url}" in out


async def test_a_reload_that_gives_a_file_client_a_runtime_keys_name_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from proxycast.accounting import keystore
    from proxycast.accounting.clients import ClientConfig
    from proxycast.accounting.records import Accounting
    from proxycast.config import Config, ServerConfig
    from proxycast.core.redact import Redactor

    config = Config(server=ServerConfig(api_keys=(CLIENT_KEY,)))
    accounting = Accounting(config, Redactor([]))
    try:
        zoe = StoredKey(name="zoe", digest=keystore.digest_of("pc-zoe"), created=time.time())
        accounting.keys.clients.set([keystore.client_of(zoe)])
        same = accounting.reconfigured(config, Redactor([]))
        assert "runtime key" not in caplog.text
        clients = (ClientConfig(name="zoe", api_key="zoe-file-key"),)
        taken = accounting.reconfigured(attrs.evolve(config, clients=clients), Redactor([]))
        assert "[[clients]] now names zoe, a runtime key's name too" in caplog.text
        assert same.directory.find("pc-zoe") is not None
        assert taken.directory.find("pc-zoe") is None  # the file wins
    finally:
        await accounting.aclose()


def test_the_sqlite_store_says_when_it_may_have_changed_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll reads the store (a thread and a query) only when its keys were changed: by another
    process (the CLI), or so recently that a coarse file clock could hide a change after the look.
    The limiter's counts, written to the same file under load, are no change of the keys."""
    import os

    from proxycast.accounting import keystore
    from proxycast.state import Ask, Limits, keys
    from proxycast.state.keys import SQLiteKeys, StoredKey
    from proxycast.state.local import LocalLimiter

    path = tmp_path / "limits.db"
    server, cli = SQLiteKeys(path), SQLiteKeys(path)
    stamp = tmp_path / "limits.db-keys"

    aged = time.time_ns() - 60 * 10**9

    def age() -> None:  # the stamp as if last written a minute ago: always the same time
        if stamp.exists():
            os.utime(stamp, ns=(aged, aged))

    assert server.changed()  # the first look
    assert not server.changed()
    limiter = LocalLimiter(path)
    trio.run(limiter.admit, Ask(client="c", tokens=5, usd=0.0), Limits(rpm=10))
    trio.run(limiter.flush)
    assert (tmp_path / "limits.db-wal").stat().st_mtime > time.time() - 60  # written just now
    assert not server.changed()  # counts, not keys
    cli.add(StoredKey(name="ivy", digest=keystore.digest_of("ivy-key"), created=time.time()))
    assert server.changed()  # just changed (whatever the stamp's size)
    age()
    assert server.changed()  # changed since the last look
    assert not server.changed()
    assert not cli.remove("nobody")  # no change
    assert not server.changed()
    assert cli.remove("ivy")
    age()  # a change whose time is hidden: the inode still tells
    assert server.changed()
    assert [k.name for k in server.load()] == []
    assert not server.changed()
    # a change whose stamp could not be replaced: read all the same, every RECHECK_SECONDS
    monkeypatch.setattr(keys, "RECHECK_SECONDS", 0.0)
    assert server.changed()
    server.close()
    cli.close()


class _Flaky(SQLiteKeys):
    """The SQLite store, whose next read of the version fails when told (locked, say)."""

    fail = False

    def version(self) -> int:
        if self.fail:
            self.fail = False
            raise KeyStoreUnavailableError("database is locked")
        return super().version()


async def test_a_change_whose_read_failed_is_read_at_the_next_poll(tmp_path: Path) -> None:
    """The stamp told of the change once; the read that failed is tried again, not left until the
    next change (a revocation would stay unread)."""
    import os

    from proxycast.accounting.keystore import RuntimeKeys, digest_of

    path = tmp_path / "limits.db"
    flaky, cli = _Flaky(path), SQLiteKeys(path)
    keys = RuntimeKeys(flaky, lambda names: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keys.run)
        await trio.sleep(0.7)  # the first poll read the (empty) store
        flaky.fail = True
        cli.add(StoredKey(name="ivy", digest=digest_of("ivy-key"), created=time.time()))
        stamp = tmp_path / "limits.db-keys"
        os.utime(stamp, (time.time() - 60, time.time() - 60))  # told once, by the stamp's time
        with trio.fail_after(5):
            while "ivy" not in keys.clients.names:  # noqa: ASYNC110 - the poller's own pace
                await trio.sleep(0.1)
        assert not flaky.fail  # the read failed once, then was tried again
        nursery.cancel_scope.cancel()
    flaky.close()
    cli.close()


def test_a_stamp_that_cannot_be_written_is_said_and_the_change_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from proxycast.accounting.keystore import digest_of

    path = tmp_path / "limits.db"
    (tmp_path / "limits.db-keys").mkdir()  # where the stamp goes: not a file it can replace
    (tmp_path / "limits.db-keys" / "x").write_text("")
    cli = SQLiteKeys(path)
    cli.add(StoredKey(name="ivy", digest=digest_of("ivy-key"), created=time.time()))
    assert [k.name for k in cli.load()] == ["ivy"]
    assert "the client keys changed, but" in caplog.text
    assert "they read the keys within 30 s" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("limits.db-keys")) == [
        "limits.db-keys"
    ]  # no temporary file left
    cli.close()
