"""The browser tests' fixtures: Debian's chromium driven by Playwright (never a browser download), and
the gateway with a fake upstream running in a thread of its own, so that the tests are plain
synchronous code, as Playwright's sync API wants."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

import proxycast
from proxycast.config import Config
from proxycast.testing import FakeOpenAI
from tests.ui.support import seed_ledger, team_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, Page

    from proxycast.ledger.rows import Row

CHROMIUM_PATHS = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")


def _find_chromium() -> str | None:
    for name in CHROMIUM_PATHS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _install_chromium() -> None:
    """Debian's chromium, when this process may install packages (root, apt-get)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, check=False)


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the browser tests must run)")
    pytest.skip(message)


@pytest.fixture(name="browser", scope="session")
def _browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    executable = _find_chromium()
    if executable is None:
        _install_chromium()
        executable = _find_chromium()
    if executable is None:
        _unavailable("no chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@attrs.define
class Clock:
    """The key pools' clock: monotonic time, plus what the test skips ahead."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@attrs.define(eq=False)
class BackgroundGateway:
    """The gateway and its fake upstream, served by ``trio.run`` in a thread."""

    make_config: Callable[[str], Config]
    clock: Clock = attrs.field(factory=Clock)
    url: str = ""
    config: Config | None = None
    fake: FakeOpenAI = attrs.field(factory=FakeOpenAI)
    _token: trio.lowlevel.TrioToken | None = None
    _scope: trio.CancelScope | None = None
    _ready: threading.Event = attrs.field(factory=threading.Event)
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.fake.serve)
                    self.config = self.make_config(self.fake.base_url)
                    serve = partial(proxycast.serve, self.config, clock=self.clock)
                    self.url = (await nursery.start(serve))[0]
                    self._ready.set()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the gateway did not start"
        if self._error is not None:
            raise RuntimeError("the gateway failed to start") from self._error

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the gateway's trio thread (the fake's scripts, say)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._scope is not None and self._thread is not None and self._thread.is_alive():
            self.call(self._scope.cancel)
        if self._thread is not None:
            self._thread.join(30)


@pytest.fixture(name="ledger_file")
def _ledger_file(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


@pytest.fixture(name="seeded")
def _seeded(ledger_file: Path) -> list[Row]:
    return seed_ledger(ledger_file)


@pytest.fixture(name="gateway")
def _gateway(ledger_file: Path) -> Iterator[BackgroundGateway]:
    gateway = BackgroundGateway(
        lambda url: team_config(url, ledger_file, shutdown_grace=1.0, access_log="off")
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


class Tab:
    """A page of a fresh browser context, and what its console said that was an error."""

    def __init__(self, page: Page, errors: list[str]) -> None:
        self.page = page
        self.errors = errors

    def sign_in(self, url: str, key: str) -> None:
        self.page.goto(url + "/ui")
        self.page.fill("#key", key)
        self.page.click("#signin-form button[type=submit]")
        self.page.wait_for_selector("#nav", state="visible")


def open_tab(browser: Browser, **context: Any) -> Iterator[Tab]:
    """A page in a new browser context (``context``: its options) that records console errors."""
    opened = browser.new_context(**context)
    page = opened.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield Tab(page, errors)
    finally:
        opened.close()


@pytest.fixture(name="tab")
def _tab(browser: Browser) -> Iterator[Tab]:
    yield from open_tab(browser, viewport={"width": 1280, "height": 900}, accept_downloads=True)
