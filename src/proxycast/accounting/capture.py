"""Request capture (``[capture]``): the bodies of model calls, kept for inspection in the ledger's
database (``proxycast requests``, the dashboard's Requests page).

What a request does when capture is on is cheap and bounded: it keeps a reference to the body the
client sent, to each request sent upstream (with its status and timings), and a copy of the
answer's bytes as they go out to the client, up to ``max_body_bytes``. Everything else, redacting
the secrets, cutting the bodies, making the JSON, happens in the ledger writer's thread
(:meth:`~proxycast.ledger.writer.LedgerWriter.record_capture`). When capture is off, the request
path pays one ``None`` check at each hook.

Whether a request is kept is drawn when it starts (``sample``); with ``errors = true`` one that was
not drawn is followed anyway and kept only if it fails.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast.accounting.keystore import SHAPE
from proxycast.core.redact import MASK
from proxycast.errors import ProxycastError
from proxycast.formats.contracts import UpstreamRequest
from proxycast.ledger.rows import CaptureRow

if TYPE_CHECKING:
    import httpx

    from proxycast.accounting.records import Record
    from proxycast.config import CaptureConfig
    from proxycast.core.attempts import Attempt
    from proxycast.formats.contracts import InboundRequest
    from proxycast.ledger.writer import LedgerWriter

SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "api_key",
        "apikey",
        "x-goog-api-key",
        "password",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
    }
)
"""JSON fields and headers whose value is a credential, whatever it is (lower case)."""
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")


SPLIT_SECRET = "[proxycast: a secret was split across the frames; the reply is kept, redacted]"
"""What is kept of a stream's frames that held a secret in pieces (:meth:`_Pending._assembled`)."""


def cut_marker(size: int, limit: int) -> str:
    """What ends a body cut at ``limit`` bytes (of ``size``)."""
    return f"\n[proxycast: cut at {limit:,} of {size:,} bytes]"


@attrs.define(eq=False, kw_only=True)
class UpstreamAttempt:
    """One request sent upstream (the converted or forwarded request), and how it went."""

    provider: str
    key: str
    request: UpstreamRequest
    started: float
    """Seconds from the client's request's arrival."""
    seconds: float | None = None
    """Seconds to the upstream's answer (its headers), or to its failure."""
    status: int = 0
    error: str = ""


@attrs.define(eq=False, kw_only=True)
class Capture:
    """What one request keeps for its capture (on its :class:`~proxycast.accounting.records.Record`)."""

    request: str
    """The body the client sent (a reference: nothing is copied on the request path)."""
    sampled: bool
    """Drawn by ``sample``: kept however it ends (else kept only if it fails)."""
    limit: int
    started: float
    """``trio.current_time()`` at the request's arrival."""
    answer: bytearray = attrs.field(factory=bytearray)
    """The answer's bytes as the client got them, up to :attr:`limit`."""
    answer_size: int = 0
    attempts: list[UpstreamAttempt] = attrs.field(factory=list)

    def answered(self, body: bytes) -> None:
        """A piece of the answer went out to the client."""
        self.answer_size += len(body)
        room = self.limit - len(self.answer)
        if room > 0:
            self.answer += body[:room]

    async def open(
        self,
        chosen: Attempt,
        request: UpstreamRequest,
        now: Callable[[], float] = trio.current_time,
    ) -> httpx.Response:
        """``chosen.provider.open(request, chosen.key)``, noting the attempt, its status and time."""
        entry = UpstreamAttempt(
            provider=chosen.provider.name,
            key=chosen.label,
            request=request,
            started=now() - self.started,
        )
        self.attempts.append(entry)
        try:
            response = await chosen.provider.open(request, chosen.key)
        except ProxycastError as error:
            entry.seconds = now() - self.started - entry.started
            entry.status, entry.error = error.status, error.message
            raise
        entry.seconds = now() - self.started - entry.started
        entry.status = response.status_code
        return response


class Capturer:
    """The capture of one worker: draws which requests are kept and hands them to the writer.

    Args:
        config: ``[capture]``.
        redact: hides the configured secrets.
        writer: the ledger's writer (the captures go to its database).
    """

    def __init__(
        self, config: CaptureConfig, redact: Callable[[str], str], writer: LedgerWriter
    ) -> None:
        self.config = config
        self.redact = redact
        self.writer = writer

    def start(self, request: InboundRequest) -> Capture | None:
        """A model call's capture (None when it is not drawn and errors are not kept)."""
        sample = self.config.sample
        sampled = sample >= 1 or random.random() < sample
        if not sampled and not self.config.errors:
            return None
        return Capture(
            request=request.text,
            sampled=sampled,
            limit=self.config.max_body_bytes,
            started=trio.current_time(),
        )

    def finish(self, record: Record, capture: Capture, status: int) -> None:
        """The request is over: its capture goes to the writer if it is kept."""
        if not capture.sampled and not (self.config.errors and status >= 400):
            return
        self.writer.record_capture(
            _Pending(
                capture=capture,
                redact=self.redact,
                time=record.at,
                request_id=record.request_id,
                client=record.client.name,
                api=record.api,
                model=record.model,
                status=status,
                summary={
                    "provider": record.provider,
                    "upstream_model": record.upstream_model,
                    "key": record.key,
                    "error_type": record.error_type,
                    "streamed": record.streamed,
                    "duration": round(trio.current_time() - record.started, 6),
                    "ttft": None if record.ttft is None else round(record.ttft, 6),
                    "route": record.route,
                },
            )
        )


@attrs.define(eq=False, kw_only=True)
class _Pending:
    """A kept capture, made into its row (redacted, cut, JSON) in the writer's thread."""

    capture: Capture
    redact: Callable[[str], str]
    time: float
    request_id: str
    client: str
    api: str
    model: str
    status: int
    summary: dict[str, Any]

    def __call__(self) -> CaptureRow:
        capture, limit = self.capture, self.capture.limit
        request, request_cut = self._body(capture.request, limit)
        answer_text = bytes(capture.answer).decode("utf-8", "replace")
        answer, _ = self._body(answer_text, limit, parse=False)
        answer_cut = capture.answer_size > len(capture.answer)
        if answer_cut:
            answer += cut_marker(capture.answer_size, limit)
        reply = None
        if self.summary["streamed"] and not answer_cut and self.status < 400:
            answer, reply = self._assembled(answer)
        attempts = []
        for attempt in capture.attempts:
            sent, raw = attempt.request, attempt.request.raw
            if raw is not None and not isinstance(raw, bytes):  # a large body's pieces
                raw = b"".join(raw)
            body = (
                raw.decode("utf-8", "replace")
                if raw is not None
                else json.dumps(sent.body, ensure_ascii=False)
            )
            upstream, upstream_cut = self._body(body, limit)
            attempts.append(
                {
                    "provider": attempt.provider,
                    "key": attempt.key,
                    "status": attempt.status,
                    "error": self._text(attempt.error),
                    "started": round(attempt.started, 6),
                    "seconds": None if attempt.seconds is None else round(attempt.seconds, 6),
                    "path": sent.path,
                    "stream": sent.stream,
                    "headers": {
                        k: MASK if k.lower() in SECRET_FIELDS else self._text(v)
                        for k, v in sent.headers.items()
                    },
                    "request": upstream,
                    "request_cut": upstream_cut,
                }
            )
        data = {
            **self.summary,
            "request": request,
            "request_cut": request_cut,
            "answer": answer,
            "answer_cut": answer_cut,
            "answer_bytes": capture.answer_size,
            "attempts": attempts,
        }
        if reply is not None:
            data["reply"] = reply
        return CaptureRow(
            time=self.time,
            request_id=self.request_id,
            client=self.client,
            api=self.api,
            model=self.model,
            status=self.status,
            data=json.dumps(data, ensure_ascii=False),
        )

    def _assembled(self, answer: str) -> tuple[str, dict[str, Any] | None]:
        """A stream's frames, and its reply when a secret is in it: a stream may carry a key in
        pieces too short to be told (one delta each) that its reply, assembled when it is read,
        holds whole. Then the reply is kept redacted, and the frames not at all."""
        from proxycast.ledger.captures import reply_of

        reply = reply_of(self.api, True, answer)
        if reply is None:
            return answer, None
        hidden = self._hidden(reply)
        if hidden == reply:
            return answer, None
        return SPLIT_SECRET, hidden

    def _hidden(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string redacted."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {k: self._hidden(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._hidden(v) for v in value]
        return value

    def _text(self, text: str) -> str:
        return self.redact(SHAPE.sub(MASK, _BEARER.sub(rf"\1{MASK}", text)))

    def _body(self, text: str, limit: int, *, parse: bool = True) -> tuple[str, bool]:
        """``text`` redacted (credential fields of a JSON body too), cut past ``limit`` bytes with
        the marker; and whether it was cut."""
        if parse:
            try:
                value = json.loads(text)
            except ValueError:
                pass
            else:
                if _hide_fields(value):
                    text = json.dumps(value, ensure_ascii=False)
        text = self._text(text)
        data = text.encode("utf-8", "replace")
        if len(data) <= limit:
            return text, False
        kept = data[:limit].decode("utf-8", "ignore")
        return kept + cut_marker(len(data), limit), True


def _hide_fields(value: Any) -> bool:
    """Mask, in place, the value of every credential field (:data:`SECRET_FIELDS`); whether any."""
    found = False
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in SECRET_FIELDS and isinstance(item, str):
                value[key] = MASK
                found = True
            else:
                found = _hide_fields(item) or found
    elif isinstance(value, list):
        for item in value:
            found = _hide_fields(item) or found
    return found
