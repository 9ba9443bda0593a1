"""Hints for a provider that is not where its ``base_url`` says."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast import formats
from proxycast.core.redact import without_userinfo

if TYPE_CHECKING:
    from proxycast.config import ProviderConfig


def wrong_path_hint(provider: ProviderConfig, body: bytes) -> str:
    """A hint for a 404 from a provider: an HTML page or a bare "no route" answer usually means
    the ``base_url`` misses its version prefix."""
    text = body.decode("utf-8", "replace").lower()
    default = formats.UPSTREAMS[provider.type].default_base_url
    looks_like_router = (
        "<html" in text or "no such route" in text or "page not found" in text or not text
    )
    if not looks_like_router:
        return ""
    suffix = default.removeprefix("https://").partition("/")[2]
    if suffix and not provider.url.rstrip("/").endswith("/" + suffix):
        return (
            f" The answer looks like a server's 'no such route' page: base_url "
            f"{without_userinfo(provider.url)} may be missing '/{suffix}' (the {provider.type} "
            f"default is {default})."
        )
    return (
        " The answer looks like a server's 'no such route' page: check that base_url "
        f"{without_userinfo(provider.url)} is the API's root."
    )
