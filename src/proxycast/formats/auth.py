"""How a key is presented to an upstream: the credential objects formats hand to the provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Generator


class HeaderAuth(httpx.Auth):
    """A key presented in one header (``Authorization: Bearer …``, ``x-api-key``...)."""

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    def __repr__(self) -> str:
        return f"<HeaderAuth {self._name}>"  # never the key

    @property
    def header(self) -> tuple[str, str]:
        """The header it sets (the provider sets it itself, without httpx's auth flow)."""
        return self._name, self._value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._name] = self._value
        yield request
