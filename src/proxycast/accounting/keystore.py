"""Client keys made at run time: ``proxycast keys create|list|revoke|rotate`` and ``/admin/keys``.

A runtime key is a named client like a ``[[clients]]`` entry (models, limits; usage, logs and metrics
under its name) whose key is made by proxycast, shown once, and kept only as its SHA-256 in the state
database (:mod:`proxycast.state.keys`: the machine's SQLite file, the ledger's Postgres database, or
Redis with ``[state] redis_url``).
Its name may not be a ``[[clients]]`` name. It may expire (``--expires 30d`` or a date).

Each worker keeps the keys in its :class:`~proxycast.accounting.clients.Directory` (through one
:class:`~proxycast.accounting.clients.RuntimeClients`) and reads the store's version every
:data:`POLL_SECONDS`: a key created, rotated or revoked anywhere is in effect on every worker and
instance within a second.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import re
import secrets
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from proxycast.accounting.clients import UNNAMED, Client, ClientConfig, RuntimeClients
from proxycast.home import data_dir
from proxycast.ledger import is_postgres
from proxycast.state.keys import (
    KeyExistsError,
    KeyStore,
    KeyStoreUnavailableError,
    PostgresKeys,
    RedisKeys,
    SQLiteKeys,
    StoredKey,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from proxycast.config import Config

log = logging.getLogger("proxycast")

T = TypeVar("T")

POLL_SECONDS = 0.5
"""How often each worker reads the store's version."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FIELDS = ("name", "models", "rpm", "tpm", "max_usd_per_day", "max_usd_per_month", "expires")


class KeyProblemError(Exception):
    """A key operation refused: its message says why, ``status`` the HTTP status of the admin API
    (400 a bad value, 404 no such key, 409 a name taken, 503 the store cannot be reached)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def open_store(config: Config) -> KeyStore:
    """The store ``config`` says: the ledger's Postgres database, else Redis with ``[state]
    redis_url``, else the machine's SQLite file."""
    state = config.state
    if is_postgres(config.ledger.url):
        return PostgresKeys(config.ledger.url)
    if state.redis_url:
        return RedisKeys(state.redis_url, state.redis_prefix, state.redis_cluster)
    return SQLiteKeys(data_dir() / "limits.db")


def new_secret() -> str:
    return "pc-" + secrets.token_urlsafe(32)


SHAPE = re.compile(r"(?<![A-Za-z0-9_-])pc-[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
"""A key :func:`new_secret` makes, found in a text (the gateway keeps only its digest: no redactor
knows the key itself)."""


def digest_of(secret: str) -> str:
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()


def parse_expires(text: str, now: float) -> float:
    """``30d``, ``12h``, ``15m``, ``45s`` from now, or a date (``YYYY-MM-DD``: its first second, UTC)
    or an ISO 8601 time (UTC unless it says otherwise), as Unix seconds."""
    text = text.strip()
    duration = _DURATION.fullmatch(text)
    try:
        if duration:
            seconds = now + int(duration.group(1)) * _UNITS[duration.group(2)]
        else:
            when = datetime.datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            seconds = when.timestamp()
        # past the year 9999 in UTC, no listing could show it (``keys list`` would fail on it)
        datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        if duration:
            raise KeyProblemError(f"expires {text!r} is past the year 9999.") from None
        raise KeyProblemError(
            f"expires {text!r} is neither a duration (30d, 12h, 15m, 45s) nor a date (YYYY-MM-DD) "
            "before the year 10000."
        ) from None
    return seconds


def spec(fields: dict[str, Any], clients: tuple[ClientConfig, ...], now: float) -> StoredKey:
    """A new key's settings from JSON-like ``fields`` (the admin API's body, the CLI's options),
    validated; its digest is filled in by :func:`create`.

    Raises:
        KeyProblemError: a field is unknown, missing or of the wrong kind; the name is a ``[[clients]]``
            name.
    """
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise KeyProblemError(f"Unknown field {unknown[0]!r}; a key takes {', '.join(_FIELDS)}.")
    name = fields.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == UNNAMED:
        raise KeyProblemError(
            "name must be 1 to 64 letters, digits, '.', '_', '@' or '-' (starting with a letter or "
            "digit)."
        )
    if any(c.name == name for c in clients):
        raise KeyProblemError(
            f"The name {name!r} is a [[clients]] name of the configuration: choose another.",
            status=409,
        )
    models = fields.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise KeyProblemError("models must be a list of model names or globs.")
    numbers: dict[str, Any] = {}
    for field in ("rpm", "tpm"):
        value = fields.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise KeyProblemError(f"{field} must be a positive whole number.")
        numbers[field] = value
    for field in ("max_usd_per_day", "max_usd_per_month"):
        value = fields.get(field)
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)  # JSON's NaN and 1e999 (no limit, and not JSON)
                or value < 0
            ):
                raise KeyProblemError(f"{field} must be a number of USD, 0 or more.")
            value = float(value)
        numbers[field] = value
    expires_text = fields.get("expires")
    expires = None
    if expires_text is not None:
        if not isinstance(expires_text, str):
            raise KeyProblemError("expires must be a string: 30d, 12h or YYYY-MM-DD.")
        expires = parse_expires(expires_text, now)
        if expires <= now:
            raise KeyProblemError(f"expires {expires_text!r} is in the past.")
    return StoredKey(
        name=name, digest="", models=tuple(models), created=now, expires=expires, **numbers
    )


def create(store: KeyStore, key: StoredKey) -> tuple[StoredKey, str]:
    """Store ``key`` (from :func:`spec`) with a new secret: the stored key and the secret (shown
    once, never stored)."""
    secret = new_secret()
    key = attrs.evolve(key, digest=digest_of(secret))
    try:
        store.add(key)
    except KeyExistsError:
        raise KeyProblemError(
            f"A key named {key.name!r} exists; revoke or rotate it, or choose another name.",
            status=409,
        ) from None
    return key, secret


def rotate(store: KeyStore, name: str) -> tuple[StoredKey, str]:
    """A new secret for the key ``name`` (its settings kept); the old one stops working."""
    for key in store.load():
        if key.name == name:
            secret = new_secret()
            rotated = attrs.evolve(key, digest=digest_of(secret))
            if store.replace(rotated):
                return rotated, secret
            break
    raise KeyProblemError(f"No runtime key is named {name!r} (proxycast keys list).", status=404)


def revoke(store: KeyStore, name: str) -> None:
    if not store.remove(name):
        raise KeyProblemError(
            f"No runtime key is named {name!r} (proxycast keys list).", status=404
        )


def public(key: StoredKey) -> dict[str, Any]:
    """What is shown of a key (``keys list``, ``GET /admin/keys``, the dashboard): never its secret
    or digest."""
    return {
        "name": key.name,
        "models": list(key.models),
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_usd_per_day": key.max_usd_per_day,
        "max_usd_per_month": key.max_usd_per_month,
        "created": key.created,
        "expires": key.expires,
    }


def client_of(key: StoredKey) -> Client:
    config = ClientConfig(
        name=key.name,
        api_key_sha256=key.digest,
        models=key.models,
        rpm=key.rpm,
        tpm=key.tpm,
        max_usd_per_day=key.max_usd_per_day,
        max_usd_per_month=key.max_usd_per_month,
    )
    return Client(config, expires=key.expires, runtime=True)


async def _reaching(work: Awaitable[T]) -> T:
    """``await work``, a store that cannot be reached as a :class:`KeyProblemError` (503)."""
    try:
        return await work
    except KeyStoreUnavailableError as exc:
        raise KeyProblemError(
            f"The client keys' store cannot be reached ({exc}); retry once it is back.",
            status=503,
        ) from None


class RuntimeKeys:
    """A worker's view of the store: :attr:`clients` (shared by its directories), refreshed when the
    store's version changes (:meth:`run`) or this worker changed it (the admin API).

    Args:
        store: where the keys are.
        on_change: told the names of the keys after each refresh (the metrics' client labels).
    """

    def __init__(self, store: KeyStore, on_change: Callable[[frozenset[str]], None]) -> None:
        self.store = store
        self.clients = RuntimeClients()
        self._on_change = on_change
        self._version: int | None = None
        self._lock = trio.Lock()  # one call on the store at a time (one SQLite connection)
        self._failing = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread, alone on the store; the keys are read again after it.

        Raises:
            KeyProblemError: what ``fn`` raised, or a 503 when the store cannot be reached.
        """
        async with self._lock:
            result = await _reaching(trio.to_thread.run_sync(fn, *args))
        with contextlib.suppress(KeyStoreUnavailableError):  # done: the next poll reads it
            await self.refresh()
        return result

    async def refresh(self) -> None:
        """Read the keys again if their version changed."""
        async with self._lock:
            version, keys = await trio.to_thread.run_sync(self._read, self._version)
        if keys is not None:
            self._version = version
            self.clients.set([client_of(k) for k in keys])
            self._on_change(self.clients.names)

    def _read(self, known: int | None) -> tuple[int, list[StoredKey] | None]:
        version = self.store.version()
        if version == known:
            return version, None
        return version, self.store.load()

    async def list(self) -> list[StoredKey]:
        """Raises :class:`KeyProblemError` (503) when the store cannot be reached."""
        async with self._lock:
            return await _reaching(trio.to_thread.run_sync(self.store.load))

    async def run(self) -> None:
        """Poll the store's version every :data:`POLL_SECONDS` (when it may have changed: a read
        is a thread and a query), until cancelled."""
        while True:
            try:
                # after a failed read, read again: the change the store told of is not read yet
                if self._failing or self.store.changed():
                    await self.refresh()
            except KeyStoreUnavailableError as exc:  # away: keep the keys known, say it once
                if not self._failing:
                    log.warning("could not read the runtime client keys: %s", exc)
                self._failing = True
            except Exception:  # the keys known are kept; what went wrong, once
                if not self._failing:
                    log.exception("could not read the runtime client keys")
                self._failing = True
            else:
                if self._failing:
                    log.warning("the runtime client keys can be read again")
                self._failing = False
            await trio.sleep(POLL_SECONDS)

    async def aclose(self) -> None:
        async with self._lock:
            await trio.to_thread.run_sync(self.store.close)
