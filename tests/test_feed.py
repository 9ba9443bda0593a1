"""The live feed: a watcher too slow to keep up loses events (counted) and never slows a publisher; a
client's watcher is given its own events only; the last failure of each key is kept; closing the feed
ends every watch."""

from __future__ import annotations

import json

import trio

from proxycast.accounting.clients import UNLIMITED, UNNAMED, Client, ClientConfig
from proxycast.accounting.feed import Feed, KeyFailure

ALICE = Client(ClientConfig(name="alice", api_key="a"))


def _event(n: int, attempts: list[str] | None = None) -> dict[str, object]:
    return {"time": float(n), "request_id": str(n), "attempts": attempts or []}


async def test_a_slow_watcher_loses_what_does_not_fit() -> None:
    feed = Feed(lambda text: text.replace("sk-secret", "[redacted]"), queue=2)
    with feed.watch() as slow, feed.watch() as quick:
        feed.publish(ALICE, _event(1))
        assert json.loads(await quick.receive.receive())["request_id"] == "1"
        for n in range(2, 6):
            feed.publish(UNLIMITED, _event(n, ["p#1:sk-secret"]))
            await quick.receive.receive()
        assert slow.dropped == 3
        assert quick.dropped == 0
        kept = [slow.receive.receive_nowait(), slow.receive.receive_nowait()]
        assert [json.loads(event)["request_id"] for event in kept] == ["1", "2"]
        assert "sk-secret" not in kept[1]


async def test_a_client_is_given_its_own_events_only() -> None:
    # filtered when published: others' traffic never fills a client's queue
    impostor = Client(ClientConfig(name=UNNAMED, api_key="i"))  # a name is not an identity
    feed = Feed(str, queue=2)
    with feed.watch(ALICE) as alice, feed.watch(impostor) as other, feed.watch() as admin:
        feed.publish(ALICE, _event(1))
        for n in range(2, 12):
            feed.publish(UNLIMITED, _event(n))
        feed.publish(ALICE, _event(12))
        assert alice.dropped == 0
        assert [json.loads(alice.receive.receive_nowait())["request_id"] for _ in range(2)] == [
            "1",
            "12",
        ]
        assert other.dropped == 0
        assert other.receive.statistics().current_buffer_used == 0
        assert admin.dropped == 10


def test_the_last_failure_of_each_key_is_kept() -> None:
    feed = Feed(str)
    feed.publish(UNLIMITED, _event(1, ["p#1:429", "p#2:200"]))
    feed.publish(UNLIMITED, _event(2, ["p#2:timeout", "p#1:200"]))
    assert feed.last_failures == {"p#1": KeyFailure(1.0, "429"), "p#2": KeyFailure(2.0, "timeout")}


async def test_closing_the_feed_ends_every_watch() -> None:
    feed = Feed(str)
    with feed.watch() as watcher:
        feed.close()
        with trio.move_on_after(5) as guard:
            async for _ in watcher.receive:
                raise AssertionError("nothing was published")
        assert not guard.cancel_called
    with feed.watch() as late:  # a watch that starts after the close ends at once
        assert [item async for item in late.receive] == []


async def test_a_reload_hides_the_old_and_the_new_secrets_from_the_feed_it_keeps() -> None:
    """Requests in flight may still publish the old configuration's secrets: after a reload the
    feed hides both; a reload prepared and not (yet) put in effect changes nothing."""
    import httpx

    from proxycast.config import Config, ServerConfig
    from proxycast.server import reload
    from proxycast.server.app import GENERATION, create_app

    old_key, new_key = "sk-gateway-old-5678", "sk-gateway-new-1234"
    async with httpx.AsyncClient() as client:
        app = create_app(Config(server=ServerConfig(api_keys=(old_key,))), client)
        running = app.extensions[GENERATION]
        feed = running.accounts.feed
        try:
            new = reload.prepare(app, Config(server=ServerConfig(api_keys=(new_key,))))
            with feed.watch() as watcher:
                feed.publish(UNLIMITED, _event(1, [f"p#1:{old_key}"]))
                assert old_key not in watcher.receive.receive_nowait()  # prepared only
                reload.commit(app, new)
                assert new.accounts.feed is feed  # its watchers stay
                feed.publish(UNLIMITED, _event(2, [f"p#1:{old_key}", f"p#2:{new_key}"]))
                event = watcher.receive.receive_nowait()
            assert old_key not in event
            assert new_key not in event
            assert json.loads(event)["request_id"] == "2"
        finally:
            await running.accounts.aclose()
