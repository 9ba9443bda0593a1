"""A request's resources: closed when the request ends, last pushed first, every one of them even
when another fails or the request was cancelled."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from proxycast.core.scope import request_resources, request_scope


async def test_closed_last_first_sync_and_async() -> None:
    closed: list[str] = []

    async def close_stream() -> None:
        await trio.lowlevel.checkpoint()
        closed.append("stream")

    async with request_scope():
        request_resources().callback(lambda: closed.append("body"))
        request_resources().push_async_callback(close_stream)
        assert closed == []
    assert closed == ["stream", "body"]


async def test_every_one_closed_when_one_fails() -> None:
    closed: list[str] = []

    def broken() -> None:
        raise RuntimeError("cannot close")

    scope = request_scope()
    await scope.__aenter__()
    request_resources().callback(lambda: closed.append("first"))
    request_resources().callback(broken)
    request_resources().callback(lambda: closed.append("last"))
    with pytest.raises(RuntimeError, match="cannot close"):
        await scope.__aexit__(None, None, None)
    assert closed == ["last", "first"]


async def test_closed_in_a_cancelled_request() -> None:
    closed: list[str] = []

    async def close_stream() -> None:
        await trio.lowlevel.checkpoint()  # runs although the request was cancelled (shielded)
        closed.append("stream")

    with trio.CancelScope() as scope:
        async with request_scope():
            request_resources().push_async_callback(close_stream)
            scope.cancel()
            await trio.sleep_forever()
    assert closed == ["stream"]


async def test_each_request_its_own() -> None:
    async with request_scope():
        outer = request_resources()
        async with request_scope():
            assert request_resources() is not outer
        assert request_resources() is outer
    with pytest.raises(LookupError):
        request_resources()


async def test_a_closer_past_the_time_limit_does_not_leak_its_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    closed: list[str] = []

    async def stuck() -> None:
        await trio.sleep(3600)

    leaked: BaseException | None = None
    try:  # caught here: a stray Cancelled could be swallowed by the test runner's own scopes
        async with request_scope():
            request_resources().callback(lambda: closed.append("body"))
            request_resources().push_async_callback(stuck)
    except BaseException as exc:
        leaked = exc
    assert leaked is None  # nothing outside was cancelled
    assert closed == ["body"]


async def test_a_stuck_closer_does_not_starve_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done: list[str] = []

    async def finish() -> None:  # as the accounting record: pushed first, closed last
        await trio.sleep(1)  # it needs time of its own, after the stuck one was cut
        done.append("finished")

    async def stuck() -> None:
        await trio.sleep(3600)

    async with request_scope():
        request_resources().push_async_callback(finish)
        request_resources().push_async_callback(stuck)
    assert done == ["finished"]


async def test_a_callback_s_result_is_not_awaited() -> None:
    box = [1, 2]
    async with request_scope():
        request_resources().callback(box.pop)  # type: ignore[arg-type]  # returns an int
    assert box == [1]
