"""Agent routing rules (``[[routes]]``): the first rule whose ``match`` holds for a request names the
model it goes to, before aliases (``docs/routing.md``). Pure; a trait that needs the request read into
the internal model (thinking, images, tools) is computed only when a rule looks at it, and the
conversion is the one the exchange would make anyway.

Also here: the session a request belongs to (for affinity and the ledger), read from the header
Claude Code sends, else the body's ``prompt_cache_key``, ``metadata.user_id`` or ``user``.
"""

from __future__ import annotations

import hashlib
import json
import re
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from proxycast.formats import internal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from proxycast.config import RouteMatch, RouteRule
    from proxycast.formats.contracts import InboundRequest

SESSION_HEADER = "x-claude-code-session-id"

ROUTE_HEADER = "x-proxycast-route"
"""Names the rule that routed the request (absent when none matched)."""


class Traits:
    """What a request is, as the rules see it; each trait read once, when first asked for."""

    def __init__(
        self,
        api: str,
        request: InboundRequest,
        headers: Mapping[str, str],
        client: str,
        conversation: Callable[[], internal.Conversation],
    ) -> None:
        self.api = api
        self.request = request
        self.headers = headers
        self.client = client
        self._conversation = conversation
        self._offered: frozenset[str] | None = None

    @property
    def conversation(self) -> internal.Conversation:
        return self._conversation()

    def thinking(self) -> bool:
        effort = self.conversation.params.reasoning_effort
        return effort is not None and effort not in ("none", "minimal")

    def has(self, kind: type[internal.Image] | type[internal.Document]) -> bool:
        conversation = self.conversation
        parts: list[internal.Part] = list(conversation.system)
        for message in conversation.messages:
            for part in message.parts:
                parts.append(part)
                if isinstance(part, internal.ToolResult):
                    parts.extend(part.content)
        return any(isinstance(part, kind) for part in parts)

    def offered(self) -> frozenset[str]:
        """The tools offered, by name; ``web_search`` for the upstream's own web search."""
        if self._offered is None:
            conversation = self.conversation
            names = {tool.name for tool in conversation.tools}
            if conversation.params.web_search is not None:
                names.add("web_search")
            self._offered = frozenset(names)
        return self._offered

    def input_tokens(self) -> int:
        """The estimate the rules use: a quarter of the body's characters (of its bytes, for a
        large body held as its bytes)."""
        return len(self.request.text or self.request.raw) // 4


def matches(match: RouteMatch, traits: Traits) -> bool:
    """Whether every key ``match`` sets holds for the request (the cheap ones first)."""
    request = traits.request
    if match.inbound is not None and match.inbound != traits.api:
        return False
    if match.model is not None and not fnmatchcase(request.client_model, match.model):
        return False
    if match.stream is not None and match.stream != request.stream:
        return False
    if match.client is not None and match.client != traits.client:
        return False
    for name, value in match.header.items():
        if traits.headers.get(name.lower()) != value:
            return False
    if match.min_input_tokens is not None and traits.input_tokens() < match.min_input_tokens:
        return False
    if match.thinking is not None and match.thinking != traits.thinking():
        return False
    if match.images is not None and match.images != traits.has(internal.Image):
        return False
    if match.documents is not None and match.documents != traits.has(internal.Document):
        return False
    if match.tools is not None:
        offered = traits.offered()
        if isinstance(match.tools, bool):
            return match.tools == bool(offered)
        return all(name in offered for name in match.tools)
    return True


def choose(rules: Sequence[RouteRule], traits: Traits) -> RouteRule | None:
    """The first rule that matches, None when none does."""
    for rule in rules:
        if matches(rule.match, traits):
            return rule
    return None


def _field(request: InboundRequest, name: str) -> Any:
    span = request.spans.get(name)
    if span is None:
        return None
    body = request.text or request.raw  # a large body's spans are offsets in its bytes
    try:
        return json.loads(body[span[0] : span[1]])
    except ValueError:  # pragma: no cover - the body parsed already
        return None


def session_of(request: InboundRequest, headers: Mapping[str, str]) -> str | None:
    """The session ``request`` belongs to: Claude Code's session header, else the body's
    ``prompt_cache_key`` (Responses), ``metadata.user_id`` (Anthropic) or ``user`` (OpenAI); None
    when it names none."""
    session = headers.get(SESSION_HEADER)
    if session:
        return session
    key = _field(request, "prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    metadata = _field(request, "metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        return str(metadata["user_id"]) or None
    user = _field(request, "user")
    return user if isinstance(user, str) and user else None


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[\d\s().-]{7,}")


def recorded_session(session: str | None) -> str:
    """The session as the ledger keeps it: hashed when it looks like an e-mail address or a phone
    number (personal data has no place in a usage table), else as sent, at most 200 characters."""
    if not session:
        return ""
    if _EMAIL.search(session) or (
        _PHONE.fullmatch(session) and sum(c.isdigit() for c in session) >= 7
    ):
        return "sha256:" + hashlib.sha256(session.encode()).hexdigest()[:16]
    return session[:200]
