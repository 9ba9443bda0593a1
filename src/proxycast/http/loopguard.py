"""The loop guard: the gateway never becomes its own upstream.

A shell where ``ANTHROPIC_BASE_URL`` points at the gateway (as ``docs/clients.md`` tells Claude Code users to
set it) also configures env-only mode: the gateway's ``anthropic`` provider is then the gateway itself,
and each request sends another, without end. Two defences:

- every upstream request carries ``x-proxycast-hop``: the marks of the gateways the request went
  through (those that came with the client's request, then this gateway's own: its listening address,
  host name and client keys, hashed; the same in every worker, different for another gateway). A
  request that arrives carrying the gateway's own mark is answered 508 (Loop Detected, RFC 5842) with
  a message that names the likely cause; a loop through two gateways is caught the same way;
- ``proxycast serve`` refuses at start-up a provider whose base URL is its own listening address.
"""

from __future__ import annotations

import contextvars
import hashlib
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxycast import formats
from proxycast.core.redact import without_userinfo
from proxycast.errors import ConfigError, LoopDetectedError

if TYPE_CHECKING:
    import httpx

    from proxycast.config import Config

log = logging.getLogger("proxycast")

HOP_HEADER = "x-proxycast-hop"
MAX_HOPS = 16
"""Marks kept from an arriving request (a longer chain is cut: the header stays bounded)."""

_arrived: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "proxycast_hops", default=()
)


def hop_mark(listening: str, keys: tuple[str, ...]) -> str:
    """This gateway's mark: the same for every worker of one ``serve``, another for another gateway.
    A hash, so that it says nothing about the keys."""
    material = "\0".join(["proxycast-hop", listening, socket.gethostname(), *sorted(keys)])
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def arrive(header: str | None, mark: str, url: str) -> None:
    """Note the marks a request arrived with (sent on with its upstream requests); 508 when this
    gateway's own is among them."""
    marks = tuple(m.strip() for m in (header or "").split(",") if m.strip())[-MAX_HOPS:]
    if mark in marks:
        log.warning("loop detected: a request came back to this gateway (%s); answered 508", url)
        raise loop_error(url)
    _arrived.set(marks)


def stamp(client: httpx.AsyncClient, mark: str) -> None:
    """Make ``client`` send ``mark`` in the hop header of every upstream request (a default header,
    set once); a request that arrived with marks sends those first (``proxycast.upstream.provider``)."""
    client.headers[HOP_HEADER] = mark


def arrived() -> tuple[str, ...]:
    """The marks the request being handled arrived with (none outside a request)."""
    return _arrived.get()


def likely_cause(url: str) -> str:
    """What usually makes a gateway its own upstream, and the fix."""
    variables = ", ".join(u.env.base_url_variable for u in formats.UPSTREAMS.values())
    return (
        f"The usual cause is a client's variable (such as ANTHROPIC_BASE_URL={url}) set in the "
        f"shell that started proxycast: with no configuration file, proxycast reads {variables} as "
        "its providers' URLs. Unset it there, or give the provider its real base_url in "
        "proxycast.toml."
    )


def loop_error(url: str) -> LoopDetectedError:
    return LoopDetectedError(
        f"Loop detected: this request came from this gateway itself ({url}): a provider's "
        f"base_url points at the gateway. {likely_cause(url)}"
    )


def _is_local(host: str) -> bool:
    if host in ("localhost", "ip6-localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_not_self(config: Config, host: str, port: int) -> None:
    """Raise :class:`ConfigError` for a provider whose base URL is the listening address itself."""
    wildcard = host in ("0.0.0.0", "::", "")
    for index, provider in enumerate(config.providers):
        parts = urlsplit(provider.url)
        target = (parts.hostname or "").strip("[]")
        target_port = parts.port or (443 if parts.scheme == "https" else 80)
        if target_port != port:
            continue
        same = target == host or (_is_local(target) and (wildcard or _is_local(host)))
        if same:
            raise ConfigError(
                f"{config.source}: providers[{index}].base_url: "
                f"{without_userinfo(provider.url)} is this gateway's own address "
                f"({host}:{port}): the gateway would send every request of provider "
                f"{provider.name!r} to itself. {likely_cause(f'http://{host}:{port}')}"
            )
