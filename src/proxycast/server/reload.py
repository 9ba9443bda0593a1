"""Reloading the configuration of a running gateway: ``SIGHUP``, ``proxycast reload``, ``serve --watch``.

One process coordinates a reload: the parent of ``serve --workers N``, or the only one. It reads the
file again and validates it as ``proxycast check`` does (and as ``serve`` did at start); a file that
does not validate changes nothing anywhere. A valid one is applied by every worker in two steps: each
builds the new :class:`~proxycast.server.app.Generation` (the exchange and its providers, the
accounting, the gate, the router) beside the running one and says it is ready; once all are, each
installs it (:func:`~proxycast.server.app.install`, one step with no await: no request sees half of
it). A request takes the generation in effect when it starts and keeps it to its end, so requests in
flight finish on the configuration they started with. What the two share carries over: the limits'
counts (the same limiter), the key health (each provider's keys found again by their fingerprint),
the ledger writer, the metrics, the live feed, the Responses store and the pooled upstream client.

What only a restart changes (the listening socket, the worker count, the pooled client's timeouts,
the store, ``[ledger]``, ``[state]``, ``[telemetry]``: :data:`RESTART_NEEDED`) keeps its running
value, and the outcome names it. The outcome of each reload is logged and written to ``serve.json``
in the data directory, which ``proxycast reload`` reads after it signals the server
(``docs/operations.md``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast.config import Config, check_config, load_config
from proxycast.core.exchange import Exchange
from proxycast.core.redact import Redactor, config_secrets
from proxycast.errors import ConfigError
from proxycast.home import data_dir
from proxycast.http import loopguard
from proxycast.server.app import (
    CLIENT,
    GENERATION,
    HOP_MARK,
    STORE,
    Generation,
    assemble,
    install,
)
from proxycast.upstream import diagnostics
from proxycast.upstream.keys import KeyPool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from multiprocessing.connection import Connection
    from pathlib import Path

    from quart_trio import QuartTrio

    from proxycast.core.redact import RedactingFilter

log = logging.getLogger("proxycast")

REDACTING = "proxycast.redacting"
"""``app.extensions[REDACTING]``: the log filter that hides configured secrets (given the reloaded
configuration's too)."""

STATUS_FILE = "serve.json"
"""In the data directory: the running ``serve`` (pid, configuration file, URL) and its last reload."""

WATCH_SECONDS = 0.25
"""``serve --watch``: how often the file is looked at (a change is taken once it holds still for one
look: an editor's write is not read half-way)."""

WORKER_SECONDS = 10.0
"""How long the parent waits for each worker's step of a reload before calling it failed."""

RESTART_NEEDED: dict[str, tuple[str, ...]] = {
    "server": (
        "host",
        "port",
        "workers",
        "connect_timeout",  # the pooled upstream client's
        "upstream_timeout",
        "shutdown_grace",  # hypercorn's configuration, and the listening socket's
        "stalled_client_timeout",
        "keepalive_timeout",
    ),
    "responses": ("store", "store_days", "store_max_mb", "websocket_max_message_mb"),
    "ledger": ("url", "retention_days", "buffer_rows"),
    "state": ("redis_url", "scope", "redis_cluster", "fail_open", "redis_prefix"),
    "telemetry": ("otlp_endpoint", "service_name", "sample"),  # each worker's tracer and exporter
}
"""The settings a reload cannot change: they keep their running value, and the outcome names them."""


@attrs.frozen
class Outcome:
    """What a reload did."""

    result: str
    """``ok`` (in effect in every worker), ``invalid`` (the file was refused: nothing changed) or
    ``failed`` (a worker could not apply it: nothing changed)."""
    reason: str = ""
    restart_needed: tuple[str, ...] = ()
    """Settings that changed in the file and keep their running value until a restart."""

    def describe(self, source: str) -> str:
        if self.result != "ok":
            what = "refused" if self.result == "invalid" else "failed"
            return f"reload {what}, the configuration in effect is unchanged: {self.reason}"
        text = f"configuration reloaded from {source}"
        if self.restart_needed:
            text += (
                f"; these settings changed but need a restart, and keep their running value: "
                f"{', '.join(self.restart_needed)}"
            )
        return text


def restart_needed(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with ``running``'s values of :data:`RESTART_NEEDED`, and the names of those that
    differed (values are never named: a URL may hold a password)."""
    changed: list[str] = []
    sections: dict[str, Any] = {}
    for section, names in RESTART_NEEDED.items():
        was, now = getattr(running, section), getattr(new, section)
        kept = {n: getattr(was, n) for n in names if getattr(was, n) != getattr(now, n)}
        if kept:
            changed += [f"{section}.{name}" for name in kept]
            sections[section] = attrs.evolve(now, **kept)
    return attrs.evolve(new, **sections), changed


# --- one worker: building a generation and installing it --------------------------------------


def prepare(app: QuartTrio, config: Config) -> Generation:
    """The generation of ``config``, built beside the running one (nothing of it is in effect yet)."""
    old: Generation = app.extensions[GENERATION]
    exchange = Exchange(config, clock=old.exchange.clock, overload=old.exchange.overload)
    exchange.selector = old.exchange.selector.reconfigured(config.routing)  # sessions stay put
    exchange.signatures = old.exchange.signatures  # so do the texts' signatures
    exchange.connect(app.extensions[CLIENT])  # no accounting yet: its key health not shared yet
    accounts = old.accounts.reconfigured(config, exchange.redact)
    exchange.accounting = accounts
    store, mark = app.extensions[STORE], app.extensions[HOP_MARK]
    return assemble(config, exchange, accounts, old.catalog, store, mark)


def commit(app: QuartTrio, new: Generation) -> list[Callable[[], Awaitable[None]]]:
    """Put ``new`` in effect: the key health carried over, then the generation installed. Returns
    the background work it needs started (a limiter opened for limits that appeared)."""
    old: Generation = app.extensions[GENERATION]
    for name, before in old.exchange.providers.items():
        after = new.exchange.providers.get(name)
        if after is None:
            before.pool.listener = None
            continue
        found = after.pool.carry(before.pool, same_upstream=before.url == after.url)
        # a request in flight on the old pool that rests a key rests it here too
        before.pool.listener = _Forward(after.pool, found, before.url == after.url)
    new.accounts.share_health({n: p.pool for n, p in new.exchange.providers.items()})
    new.accounts.metrics.bound(new.config)
    new.catalog.reconfigure(new.config)
    # requests in flight may still log, or publish to the live feed, the old secrets
    both = Redactor([*config_secrets(old.config), *config_secrets(new.config)])
    redacting: RedactingFilter | None = app.extensions.get(REDACTING)
    if redacting is not None:
        redacting.use(both)
    new.accounts.feed.use(both)  # the feed outlives the reload (its watchers stay)
    install(app, new)
    return new.accounts.background(old.accounts)


async def discard(app: QuartTrio, new: Generation) -> None:
    """Close what :func:`prepare` opened for a generation that will not be installed."""
    old: Generation = app.extensions[GENERATION]
    limiter = new.accounts.limiter
    if limiter is not None and limiter is not old.accounts.limiter:
        await limiter.aclose()


@attrs.frozen
class _Forward:
    """The listener of a pool replaced by a reload: a rest seen on it is taken by the new pool."""

    pool: KeyPool
    found: dict[int, int]
    same_upstream: bool

    def __call__(self, index: int | None, seconds: float, reason: str) -> None:
        if index is None:
            if self.same_upstream:
                self.pool.bench(seconds, reason)
        elif index in self.found:
            self.pool.rest(self.found[index], seconds, reason)


def count(app: QuartTrio, result: str) -> None:
    """Count a reload in ``proxycast_reloads_total`` (one worker of a gateway counts them)."""
    generation: Generation = app.extensions[GENERATION]
    if generation.config.server.metrics:
        generation.accounts.metrics.reloads.labels(result).inc()


# --- the coordinator ------------------------------------------------------------------------


class Coordinator:
    """Reads and validates the file again, and records each outcome (the log, ``serve.json``).

    Args:
        config: the configuration the server started with (command-line overrides applied).
        overrides: the ``serve`` command line's ``--host``/``--port``/``--workers``, which win over
            the file at each reload as at start.
        watch: ``serve --watch``: reload when the file changes.
    """

    def __init__(self, config: Config, overrides: dict[str, Any], *, watch: bool = False) -> None:
        self.config = config
        self.overrides = overrides
        self.path = None if config.source == "environment" else config.source
        self.watcher = FileWatch(self.path) if watch and self.path is not None else None
        self.address: tuple[str, int] = (config.server.host, config.server.port)
        self.reloads = 0
        self._status: dict[str, Any] = {}
        self._displaced: dict[str, Any] | None = None
        """``serve.json`` of another server of the data directory, running when this one started."""

    def started(self, url: str, address: tuple[str, int]) -> None:
        """The server is serving: ``serve.json`` names it, for ``proxycast reload``."""
        self.address = address
        found = read_status()
        if found is not None and found.get("pid") != os.getpid() and _alive(found):
            self._displaced = found
            log.warning(
                "another proxycast serve (pid %s, %s) uses the data directory %s: `proxycast "
                "reload` signals this one (pid %s) until it stops; give each its own "
                "PROXYCAST_HOME",
                found.get("pid"),
                found.get("url"),
                status_path().parent,
                os.getpid(),
            )
        source = os.path.abspath(self.path) if self.path is not None else "environment"
        self._status = {"pid": os.getpid(), "config": source, "url": url, "reloads": 0}
        self._status["started"] = _started(os.getpid())
        self._write()

    def stopped(self) -> None:
        """``serve.json`` removed, or given back to the server it displaced (still running: else
        ``proxycast reload`` would no longer find it)."""
        path = status_path()
        found = read_status()
        if found is not None and found.get("pid") == os.getpid():
            displaced = self._displaced
            if displaced is not None and _alive(displaced):
                self._status = displaced
                self._write()
            else:
                path.unlink(missing_ok=True)

    def load(self) -> tuple[Config, list[str]]:
        """The file's configuration as it would run, and the settings that need a restart.

        Raises:
            ConfigError: the file does not validate (what ``proxycast check`` would say).
        """
        new = load_config(self.path)
        if self.overrides:
            server = attrs.evolve(new.server, **self.overrides)
            new = attrs.evolve(new, server=server)
            check_config(attrs.evolve(new, source="command line"))
        loopguard.check_not_self(new, *self.address)
        effective, changed = restart_needed(self.config, new)
        for problem in diagnostics.problems(effective):
            log.warning("reloaded configuration: %s", problem)
        return effective, changed

    def finish(self, outcome: Outcome, config: Config | None, started: float) -> None:
        """Record an outcome (``config``: the configuration now in effect, when it changed;
        ``started``: ``time.monotonic()`` when the reload began)."""
        if config is not None:
            self.config = config
        source = os.path.abspath(self.path) if self.path is not None else "the environment"
        text = outcome.describe(source)
        (log.info if outcome.result == "ok" and not outcome.restart_needed else log.warning)(text)
        self.reloads += 1
        self._status["reloads"] = self.reloads
        self._status["last"] = {
            "result": outcome.result,
            "reason": outcome.reason,
            "restart_needed": list(outcome.restart_needed),
            "message": text,
            "at": time.time(),
            "seconds": round(time.monotonic() - started, 4),
        }
        self._write()

    def _write(self) -> None:
        if not self._status:
            return
        path = status_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(self._status), encoding="utf-8")
        partial.replace(path)  # a reader sees the old file or the new one, never half of one

    def reload_here(self, app: QuartTrio) -> list[Callable[[], Awaitable[None]]]:
        """A reload of a one-process gateway: validated, built and installed here."""
        started = time.monotonic()
        try:
            config, changed = self.load()
        except ConfigError as exc:
            return self._refused(app, Outcome("invalid", str(exc)), started)
        try:
            generation = prepare(app, config)
        except Exception as exc:
            log.exception("could not build the reloaded configuration")
            return self._refused(app, Outcome("failed", str(exc)), started)
        tasks = commit(app, generation)
        count(app, "ok")
        self.finish(Outcome("ok", restart_needed=tuple(changed)), config, started)
        return tasks

    def _refused(
        self, app: QuartTrio, outcome: Outcome, started: float
    ) -> list[Callable[[], Awaitable[None]]]:
        count(app, outcome.result)
        self.finish(outcome, None, started)
        return []

    def reload_workers(self, conns: Sequence[Connection]) -> None:
        """A reload of ``serve --workers N``: validated here, then built by every worker; installed
        by all once all are ready, by none otherwise."""
        seq, started = self.reloads + 1, time.monotonic()
        try:
            config, changed = self.load()
        except ConfigError as exc:
            self._finish_workers(conns, Outcome("invalid", str(exc)), None, started)
            return
        problems = [p for p in (_send(conn, ("prepare", seq, config)) for conn in conns) if p]
        problems += [p for p in (_reply(conn, seq, "ready") for conn in conns) if p]
        if problems:
            for conn in conns:
                _send(conn, ("abort", seq, None))
            self._finish_workers(conns, Outcome("failed", "; ".join(problems)), None, started)
            return
        problems = [p for p in (_send(conn, ("commit", seq, None)) for conn in conns) if p]
        problems += [p for p in (_reply(conn, seq, "done") for conn in conns) if p]
        outcome = Outcome("ok", restart_needed=tuple(changed))
        if problems:  # a worker that died: the others run the new configuration
            outcome = Outcome("failed", "; ".join(problems))
        self._finish_workers(conns, outcome, config, started)

    def _finish_workers(
        self,
        conns: Sequence[Connection],
        outcome: Outcome,
        config: Config | None,
        started: float,
    ) -> None:
        if conns:  # the first worker counts it (the workers' metrics are summed)
            _send(conns[0], ("count", 0, outcome.result))
        self.finish(outcome, config, started)


def _send(conn: Connection, message: tuple[str, int, Any]) -> str:
    """Send a step of a reload to a worker: "" when sent, else why not."""
    try:
        conn.send(message)
    except OSError:
        return "a worker has stopped"
    return ""


def _reply(conn: Connection, seq: int, wanted: str) -> str:
    """A worker's answer to reload ``seq`` (``wanted``: ``ready`` after the build, ``done`` after
    the install): "" when it went well, else why not."""
    deadline = time.monotonic() + WORKER_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            if not conn.poll(left):
                break
            kind, answered, reason = conn.recv()
        except (EOFError, OSError):
            return "a worker has stopped"
        if answered != seq:  # an answer to an earlier reload that timed out is skipped
            continue
        if kind == "error":
            return str(reason)
        if kind == wanted:
            return ""
    return f"a worker did not answer within {WORKER_SECONDS:g} s"


class FileWatch:
    """Tells when a file changed (its modification time, size or inode), once the change holds
    still for one look."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._look()
        self._pending: tuple[int, int, int] | None = None

    def _look(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    def changed(self) -> bool:
        now = self._look()
        if now is None or now == self._seen:  # gone for a moment (an editor's rename): wait
            self._pending = None
            return False
        if now != self._pending:
            self._pending = now
            return False
        self._seen, self._pending = now, None
        return True


# --- the tasks that drive reloads in a worker ---------------------------------------------------


async def control_single(
    coordinator: Coordinator,
    app: QuartTrio,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reload on ``SIGHUP`` (and file changes with ``--watch``), in the one process of a gateway."""
    lock = trio.Lock()
    async with trio.open_nursery() as nursery:

        async def reload() -> None:
            async with lock:
                for task in coordinator.reload_here(app):
                    nursery.start_soon(task)

        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            if coordinator.watcher is not None:
                nursery.start_soon(_watch, coordinator.watcher, reload)
            task_status.started()
            async for _ in signals:
                await reload()


async def _watch(watcher: FileWatch, reload: Callable[[], Awaitable[None]]) -> None:
    while True:
        await trio.sleep(WATCH_SECONDS)
        if watcher.changed():
            await reload()


async def control_worker(
    conn: Connection,
    app: QuartTrio,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A worker of ``serve --workers N``: each step of a reload the parent sends, answered."""
    pending: Generation | None = None
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            try:
                kind, seq, payload = await trio.to_thread.run_sync(
                    conn.recv, abandon_on_cancel=True
                )
            except (EOFError, OSError):  # the parent is gone: it stops the workers, or has
                return
            if kind == "prepare":
                try:
                    pending = prepare(app, payload)
                    answer: tuple[str, int, str] = ("ready", seq, "")
                except Exception as exc:
                    log.exception("could not build the reloaded configuration")
                    answer = ("error", seq, f"worker {os.getpid()}: {exc}")
                conn.send(answer)
            elif kind == "commit":
                if pending is None:  # its build was refused, or came too late
                    conn.send(("error", seq, f"worker {os.getpid()}: nothing built to install"))
                    continue
                for task in commit(app, pending):
                    nursery.start_soon(task)
                pending = None
                conn.send(("done", seq, ""))
            elif kind == "abort" and pending is not None:
                await discard(app, pending)
                pending = None
            elif kind == "count":
                count(app, payload)


# --- proxycast reload ---------------------------------------------------------------------------


def status_path() -> Path:
    return data_dir() / STATUS_FILE


def read_status() -> dict[str, Any] | None:
    """``serve.json``, None when there is none (no server of this data directory is running)."""
    try:
        found = json.loads(status_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def request_reload(config_file: str | None, wait: float) -> tuple[int, str]:
    """``proxycast reload``: signal the server of this data directory and wait for its outcome.
    Returns the exit status and what to print (on stdout when 0, else on stderr)."""
    status = read_status()
    where = status_path()
    if status is None or not _alive(status):
        return 1, f"no proxycast serve is running for the data directory {where.parent}"
    running = status.get("config", "")
    if config_file is not None and os.path.abspath(config_file) != running:
        return 1, (
            f"the proxycast serve of {where.parent} (pid {status['pid']}) reads {running}, not "
            f"{config_file}: it reloads its own file (edit that one, or restart it with --config)"
        )
    before = status.get("reloads", 0)
    os.kill(status["pid"], signal.SIGHUP)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read_status()
        if now is None:
            return 1, "the server stopped before it reloaded"
        if now.get("reloads", 0) > before and isinstance(now.get("last"), dict):
            last = now["last"]
            return (0 if last.get("result") == "ok" else 1), str(last.get("message", ""))
    return 1, f"the server (pid {status['pid']}) did not report a reload within {wait:g} s"


def _started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: ``/proc/PID/stat``'s clock ticks since boot), None where
    that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _alive(status: dict[str, Any]) -> bool:
    """Whether the server ``serve.json`` names still runs: its pid, and (where it can be told) the
    same process, not another that took the pid of one that crashed (a SIGHUP would end it)."""
    pid = status.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = status.get("started")
    if started is not None and _started(pid) not in (None, started):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
