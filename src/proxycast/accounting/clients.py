"""Who is asking: the gateway's client keys, named (``[[clients]]``) or not (``[server].api_keys``).

A presented key is hashed (SHA-256) and compared, in constant time, with the digest of every
configured key, so that the time taken says nothing about which one matched or how much of it did.
A named client may be limited to some models (``models``: client-facing names or globs); to it, any
other model does not exist (404 ``model_not_found``, the answer for a model no provider serves).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import time

import attrs

UNNAMED = "-"
"""The client name of ``[server].api_keys`` (one unnamed client, unlimited), in usage, logs and metrics."""


@attrs.frozen(kw_only=True)
class ClientConfig:
    """One ``[[clients]]`` entry."""

    name: str
    api_key: str = attrs.field(default="", repr=False)
    api_key_sha256: str = attrs.field(default="", repr=False)
    """The hex SHA-256 of the key, for a configuration that must not hold the key itself."""
    models: tuple[str, ...] = ()
    """Client-facing model names or globs it may use; empty: all."""
    rpm: int | None = None
    """Requests per minute (a sliding window of 60 s)."""
    tpm: int | None = None
    """Tokens (input + output) per minute: admitted on an estimate of the input, settled on usage."""
    max_usd_per_day: float | None = None
    """UTC days."""
    max_usd_per_month: float | None = None
    """UTC calendar months."""

    @property
    def limited(self) -> bool:
        return any(
            v is not None
            for v in (self.rpm, self.tpm, self.max_usd_per_day, self.max_usd_per_month)
        )

    def digest(self) -> bytes:
        if self.api_key_sha256:
            return bytes.fromhex(self.api_key_sha256)
        return hashlib.sha256(self.api_key.encode()).digest()


@attrs.frozen
class Client:
    """An authenticated client: its configuration (None for the unnamed one)."""

    config: ClientConfig | None = None
    expires: float | None = None
    """A runtime key's expiry (Unix seconds); None: never."""
    runtime: bool = False
    """Made at run time (``proxycast keys``), not in the file's ``[[clients]]``."""

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    @property
    def name(self) -> str:
        return UNNAMED if self.config is None else self.config.name

    def allows(self, model: str) -> bool:
        """Whether the client may use the client-facing ``model``."""
        if self.config is None or not self.config.models:
            return True
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.config.models)


UNLIMITED = Client()


class RuntimeClients:
    """The keys made at run time (``proxycast keys``), as the worker last read them from the state
    database: one object shared by every :class:`Directory` of the worker (a reload's too), whose
    entries are replaced in one step when they change."""

    __slots__ = ("entries", "names")

    def __init__(self) -> None:
        self.entries: tuple[tuple[bytes, Client], ...] = ()
        self.names: frozenset[str] = frozenset()

    def set(self, clients: list[Client]) -> None:
        entries = []
        for client in clients:
            assert client.config is not None
            entries.append((client.config.digest(), client))
        self.entries = tuple(entries)
        self.names = frozenset(client.name for client in clients)


@attrs.frozen(eq=False)
class Directory:
    """The configured keys, by digest, and those made at run time (``runtime``)."""

    _entries: tuple[tuple[bytes, Client], ...]
    _runtime: RuntimeClients | None = None
    _file_names: frozenset[str] = frozenset()
    """The ``[[clients]]`` names: a runtime key of one of these names is not used (the file wins)."""

    @classmethod
    def of(
        cls,
        server_keys: tuple[str, ...],
        clients: tuple[ClientConfig, ...],
        runtime: RuntimeClients | None = None,
    ) -> Directory:
        entries = [(hashlib.sha256(k.encode()).digest(), UNLIMITED) for k in server_keys]
        entries += [(c.digest(), Client(c)) for c in clients]
        return cls(tuple(entries), runtime, frozenset(c.name for c in clients))

    def __bool__(self) -> bool:
        return bool(self._entries) or bool(self._runtime and self._runtime.entries)

    def find(self, presented: str) -> Client | None:
        """The client whose key ``presented`` is, None if none (or expired); every digest is
        compared."""
        client = self._match(presented)
        if client is not None and client.expires is not None and client.expired(time.time()):
            return None
        return client

    def expired(self, presented: str) -> Client | None:
        """The runtime client whose key ``presented`` is, if that key has expired (what a refusal
        says)."""
        client = self._match(presented)
        return client if client is not None and client.expired(time.time()) else None

    def _match(self, presented: str) -> Client | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found: Client | None = None
        for candidate, client in self._entries:
            if hmac.compare_digest(digest, candidate) and found is None:
                found = client
        if self._runtime is not None:
            for candidate, client in self._runtime.entries:
                if (
                    hmac.compare_digest(digest, candidate)
                    and found is None
                    and client.name not in self._file_names
                ):
                    found = client
        return found
