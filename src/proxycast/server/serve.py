"""Serving the gateway with hypercorn's trio worker: one worker in-process, or several processes."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import queue
import signal
import socket
import tempfile
import time
from functools import partial
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import wrap_app

from proxycast.accounting.metrics import MULTIPROCESS_VARIABLE
from proxycast.core import allocator
from proxycast.core.overload import Overload
from proxycast.core.redact import RedactingFilter, Redactor, config_secrets
from proxycast.errors import BindError
from proxycast.http import loopguard
from proxycast.server.app import close_resources, create_app
from proxycast.server.connections import serve_connections
from proxycast.server.reload import REDACTING, Coordinator, control_single, control_worker
from proxycast.upstream.provider import ShardedTransport, make_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from multiprocessing.connection import Connection
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    import httpx
    from quart_trio import QuartTrio

    from proxycast.accounting.records import Accounting
    from proxycast.config import Config


def bind_socket(config: Config) -> socket.socket:
    """A listening TCP socket for the configured host and port (0: a free port).

    ``TCP_USER_TIMEOUT`` is set on it, and so on every accepted connection: a client that leaves sent
    data unread for ``stalled_client_timeout`` seconds has its connection dropped, so that it cannot
    hold a worker's shutdown forever (hypercorn's writes are shielded from cancellation).
    """
    host, port = config.server.host, config.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            timeout_ms = int(config.server.stalled_client_timeout * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        sock.bind((host, port))
        sock.listen(4096)  # the kernel caps it at net.core.somaxconn
    except OSError as exc:
        sock.close()
        reason = "it is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise BindError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.graceful_timeout = config.server.shutdown_grace
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = config.server.keepalive_timeout
    hc.include_server_header = False
    hc.websocket_max_message_size = int(config.responses.websocket_max_message_mb * 1024 * 1024)
    return hc


async def serve(
    config: Config,
    *,
    sock: socket.socket | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    control: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway until cancelled (or until ``shutdown_trigger`` returns, then drain).

    Args:
        config: the configuration (``load_config``).
        sock: an already-listening socket (the multi-process CLI); by default one is bound.
        shutdown_trigger: when it returns, stop accepting and let in-flight requests finish within
            ``server.shutdown_grace`` seconds.
        clock: monotonic seconds, for the key pools' cooldowns (tests pass one they advance).
        control: started (``nursery.start(control, app)``) once the app exists, and cancelled
            when the server stops: what drives reloads (:mod:`proxycast.server.reload`).
        task_status: gets the bound URLs, e.g. ``["http://127.0.0.1:41234"]``, once connections
            are accepted.
    """
    # The client is opened and closed here, not in the app's lifespan: a serve() that is cancelled
    # (as an embedding program stops it) never runs the lifespan's shutdown, and its pooled
    # connections must still be closed.
    client = make_client(config.server)
    # What proxycast and hypercorn log never shows a configured secret (an upstream's error text
    # quoted in a traceback, say).
    redacting = RedactingFilter(Redactor(config_secrets(config)))
    loggers = [logging.getLogger(name) for name in ("proxycast", "hypercorn.error")]
    for logger in loggers:
        logger.addFilter(redacting)
    app: QuartTrio | None = None
    try:
        sock = sock if sock is not None else bind_socket(config)
        host, port = sock.getsockname()[:2]
        loopguard.check_not_self(config, host, port)
        # every upstream request carries the gateway's mark: one that comes back is a loop (508)
        mark = loopguard.hop_mark(_url(sock), config.server.api_keys)
        loopguard.stamp(client, mark)
        overload = Overload(config.server.max_memory_mb) if config.server.max_memory_mb else None
        app = create_app(config, client, clock=clock, hop_mark=mark, overload=overload)
        app.extensions[REDACTING] = redacting
        accounts: Accounting = app.extensions["proxycast_accounting"]
        async with trio.open_nursery() as nursery:
            if control is not None:
                await nursery.start(control, app)
            nursery.start_soon(_sweep_idle_upstream_connections, client)
            _watch_memory(nursery, app, overload)
            await nursery.start(app.extensions["proxycast.catalog"].run, client)
            nursery.start_soon(accounts.run)  # the ledger's writer
            await serve_connections(
                wrap_app(app, 0, "asgi"),
                hypercorn_config(config),
                [sock],
                shutdown_trigger=_ending_feeds(shutdown_trigger, accounts),
                overload=overload,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()
    finally:
        if app is not None:  # after the drain: the last ledger rows are written (the accounting
            # in effect: a reload's shares the first's ledger writer, and may have opened a limiter)
            await app.extensions["proxycast_accounting"].aclose()
        if app is not None:
            close_resources(app)
        for logger in loggers:
            logger.removeFilter(redacting)
        with trio.move_on_after(5, shield=True):
            await client.aclose()


def _watch_memory(nursery: trio.Nursery, app: QuartTrio, overload: Overload | None) -> None:
    """The allocator tuned and trimmed after bursts of large bodies (``core.allocator``); the
    overload manager sampling, when there is one."""
    allocator.tune()
    exchange = app.extensions["proxycast"]
    trimmer = allocator.Trimmer(lambda: exchange.inflight_body_bytes)
    exchange.on_large_bodies = trimmer.wake
    nursery.start_soon(trimmer.run)
    if overload is not None:
        overload.report = app.extensions["proxycast_accounting"].metrics.overload_state.set
        nursery.start_soon(overload.run)


def _ending_feeds(
    trigger: Callable[[], Awaitable[None]] | None, accounts: Accounting
) -> Callable[[], Awaitable[None]] | None:
    """``trigger``, then the end of the live feed's streams, which would otherwise hold the drain
    up for ``shutdown_grace`` (a dashboard left open)."""
    if trigger is None:
        return None

    async def triggered() -> None:
        await trigger()
        accounts.feed.close()

    return triggered


SWEEP_SECONDS = 2.0
"""How often idle upstream connections past their keep-alive expiry are closed."""


async def _sweep_idle_upstream_connections(client: httpx.AsyncClient) -> None:
    # httpcore closes an expired keep-alive connection only when its pool is next used: after a burst,
    # hundreds of upstream connections (and fds) could stay open indefinitely.
    transport = client._transport  # the ShardedTransport make_client installed
    if not isinstance(transport, ShardedTransport):
        return
    while True:
        await trio.sleep(SWEEP_SECONDS)
        await transport.close_expired()


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def signal_trigger() -> None:
    """Returns at the first SIGINT or SIGTERM (a graceful shutdown)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def _worker(
    config: Config,
    sock: socket.socket,
    ready: Queue[bool],
    stop: Event,
    reloads: Connection | None = None,
) -> None:
    """The body of one worker process of ``proxycast serve --workers N``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # and when to reload (it tells the workers)

    async def stopped() -> None:
        await trio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)

    control = None if reloads is None else partial(control_worker, reloads)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve, config, sock=sock, shutdown_trigger=stopped, control=control)
            )
            ready.put(True)

    trio.run(main)


def run_workers(
    config: Config,
    sock: socket.socket,
    on_ready: Callable[[str], None],
    coordinator: Coordinator | None = None,
) -> int:
    """Run ``server.workers`` processes sharing ``sock`` until SIGINT/SIGTERM (reloading on SIGHUP
    with a ``coordinator``); the exit code."""
    # the workers' metrics are summed by prometheus-client's multiprocess mode (proxycast.accounting.metrics):
    # its directory must be in the environment before they start
    metrics_dir = tempfile.TemporaryDirectory(prefix="proxycast-metrics-")
    os.environ[MULTIPROCESS_VARIABLE] = metrics_dir.name
    try:
        return _run_workers(config, sock, on_ready, coordinator)
    finally:
        del os.environ[MULTIPROCESS_VARIABLE]
        metrics_dir.cleanup()


def _run_workers(
    config: Config,
    sock: socket.socket,
    on_ready: Callable[[str], None],
    coordinator: Coordinator | None,
) -> int:
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[bool] = ctx.Queue()
    stop = ctx.Event()
    pipes = [ctx.Pipe() if coordinator is not None else None for _ in range(config.server.workers)]
    processes = [
        ctx.Process(
            target=_worker,
            args=(config, sock, ready, stop, None if pipe is None else pipe[1]),
            daemon=True,
        )
        for pipe in pipes
    ]
    conns = [pipe[0] for pipe in pipes if pipe is not None]
    hangups: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if coordinator is not None:
        signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    for process in processes:
        process.start()
    started = 0
    while started < len(processes):
        if stop.is_set() or any(p.exitcode is not None for p in processes):
            stop.set()
            break
        try:
            ready.get(timeout=0.1)
        except queue.Empty:
            continue
        started += 1
    if started == len(processes):
        # every worker holds its own copy now: the parent's must go, so that the port closes (and new
        # connections are refused, not queued) as soon as the workers stop accepting on shutdown
        url = _url(sock)
        sock.close()
        on_ready(url)
    while not stop.is_set() and all(p.exitcode is None for p in processes):
        wait([p.sentinel for p in processes], timeout=0.2)
        if coordinator is not None and not stop.is_set():
            watched = coordinator.watcher is not None and coordinator.watcher.changed()
            if hangups or watched:
                hangups.clear()
                coordinator.reload_workers(conns)
    stop.set()
    for process in processes:
        process.join(config.server.shutdown_grace + 5)
        if process.exitcode is None:
            process.kill()
            process.join()
    sock.close()
    codes = [p.exitcode or 0 for p in processes]
    return next((c for c in codes if c), 0)


def run_single(
    config: Config,
    sock: socket.socket,
    on_ready: Callable[[str], None],
    coordinator: Coordinator | None = None,
) -> int:
    """Run one worker in this process until SIGINT/SIGTERM (reloading on SIGHUP with a
    ``coordinator``)."""
    control = None if coordinator is None else partial(control_single, coordinator)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve, config, sock=sock, shutdown_trigger=signal_trigger, control=control)
            )
            on_ready(_url(sock))

    trio.run(main)
    return 0
