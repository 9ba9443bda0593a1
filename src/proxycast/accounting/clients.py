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

    @property
    def name(self) -> str:
        return UNNAMED if self.config is None else self.config.name

    def allows(self, model: str) -> bool:
        """Whether the client may use the client-facing ``model``."""
        if self.config is None or not self.config.models:
            return True
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.config.models)


UNLIMITED = Client()


@attrs.frozen(eq=False)
class Directory:
    """The configured keys, by digest."""

    _entries: tuple[tuple[bytes, Client], ...]

    @classmethod
    def of(cls, server_keys: tuple[str, ...], clients: tuple[ClientConfig, ...]) -> Directory:
        entries = [(hashlib.sha256(k.encode()).digest(), UNLIMITED) for k in server_keys]
        entries += [(c.digest(), Client(c)) for c in clients]
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def find(self, presented: str) -> Client | None:
        """The client whose key ``presented`` is, None if none; every digest is compared."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: Client | None = None
        for candidate, client in self._entries:
            if hmac.compare_digest(digest, candidate) and found is None:
                found = client
        return found
