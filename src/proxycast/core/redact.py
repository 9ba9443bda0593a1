"""Keeping secrets out of what proxycast says: any configured key (or a long piece of one) in a text
bound for a client or a log is replaced, and URLs are shown without their userinfo.

The usual leak is an upstream that echoes the request it got (headers included) in an error page; the
message proxycast passes on would then carry the provider's key.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterable

    from proxycast.config import Config

FRAGMENT = 16
"""Characters of a key that, found anywhere in a text, count as the key leaking (shorter keys: whole)."""
MASK = "[redacted]"


def without_userinfo(url: str) -> str:
    """``https://user:secret@host/v1`` -> ``https://host/v1``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def without_password(url: str) -> str:
    """``postgresql://user:secret@host/db?password=secret`` -> ``postgresql://user@host/db``: the
    user stays (it says which account), the password goes, wherever the URL holds it."""
    password = url_password(url)
    if not password:
        return url  # as it was (``urlunsplit`` would rewrite ``sqlite:////abs``)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL urllib can split (a stray "["): cut the userinfo's password
        return _USERINFO_PASSWORD.sub(r"\1@", url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}{at}{host}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*):[^@/]*@")


def url_password(url: str) -> str:
    """The password a URL holds (in its userinfo or a ``password`` parameter), else ``""``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        match = _USERINFO_PASSWORD.match(url)
        return match.group(0)[len(match.group(1)) + 1 : -1] if match else ""
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        return userinfo.partition(":")[2]
    return dict(parse_qsl(parts.query)).get("password", "")


def hide_password(text: str, url: str) -> str:
    """``text`` without the password ``url`` holds, as written or percent-decoded (a driver's
    message may quote the URL it could not reach)."""
    password = url_password(url)
    if password:
        for form in sorted({password, unquote(password)}, key=len, reverse=True):
            text = text.replace(form, MASK)
    return text


def config_secrets(config: Config) -> list[str]:
    """Every secret a configuration holds: client keys, provider keys, passwords in URLs (base
    URLs, the ledger's and Redis's, the OTLP collector's)."""
    secrets = list(config.server.api_keys)
    secrets += [c.api_key for c in config.clients if c.api_key]
    for provider in config.providers:
        secrets += provider.api_keys
        userinfo = urlsplit(provider.base_url).netloc.rpartition("@")[0]
        secrets += [s for s in userinfo.split(":") if s]
    # the ledger's Postgres, Redis, the collector (its exporter's logs may quote the URL)
    for url in (config.ledger.url, config.state.redis_url, config.telemetry.otlp_endpoint):
        password = url_password(url)
        if password:
            secrets += {password, unquote(password)}
    return secrets


class Redactor:
    """Replaces every occurrence of the secrets, or of any :data:`FRAGMENT`-long piece of one."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._pieces: dict[int, set[str]] = {}
        self._blocks: set[str] = set()
        for secret in secrets:
            size = min(len(secret), FRAGMENT)
            if size < 6:
                continue  # too short to tell from ordinary text; config checks keep real keys longer
            pieces = self._pieces.setdefault(size, set())
            pieces.update(secret[i : i + size] for i in range(len(secret) - size + 1))
            # Every piece holds one of these blocks whole (a 16-character window holds an aligned
            # 8-character one): a text with none of them holds no piece, told by a few finds in C
            # instead of a look at every window (most texts: an access log line, say).
            step = FRAGMENT // 2  # a window of FRAGMENT characters holds an aligned block of half
            blocks = range(0, len(secret) - step + 1, step) if size == FRAGMENT else [0]
            self._blocks.update(secret[i : i + step] for i in blocks)

    def __call__(self, text: str) -> str:
        if not self._pieces or not any(block in text for block in self._blocks):
            return text
        hidden = [False] * len(text)
        found = False
        for size, pieces in self._pieces.items():
            for start in range(len(text) - size + 1):
                if text[start : start + size] in pieces:
                    hidden[start : start + size] = [True] * size
                    found = True
        if not found:
            return text
        out: list[str] = []
        for index, char in enumerate(text):
            if not hidden[index]:
                out.append(char)
            elif index == 0 or not hidden[index - 1]:
                out.append(MASK)
        return "".join(out)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message and traceback."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def use(self, redact: Redactor) -> None:
        """Redact with ``redact`` from now on (a reloaded configuration's secrets)."""
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
