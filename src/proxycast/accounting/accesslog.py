"""The access log: one line per request on stderr (``[server] access_log``): request id, client,
model, provider, status, tokens, duration, time to first token and attempts. Never a key or a body."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def line(style: str, fields: dict[str, Any]) -> str:
    """The line for ``fields`` in ``style`` (``json`` or ``text``)."""
    if style == "json":
        return json.dumps(fields, separators=(",", ":"))
    tokens = fields["tokens"]
    ttft = fields["ttft"]
    parts = [
        f"rid={fields['request_id']}",
        f"client={fields['client']}",
        f'"{fields["method"]} {fields["path"]}"',
        f"status={fields['status']}",
        f"model={fields['model'] or '-'}",
        f"provider={fields['provider'] or '-'}",
        f"tokens={tokens['input']}/{tokens['output']}",
        f"duration={fields['duration']:.3f}s",
        f"ttft={'-' if ttft is None else f'{ttft:.3f}s'}",
        f"attempts={','.join(fields['attempts']) or '-'}",
    ]
    return " ".join(parts)


def write(style: str, fields: dict[str, Any], redact: Callable[[str], str]) -> None:
    if style == "off":
        return
    sys.stderr.write(redact(line(style, fields)) + "\n")
    sys.stderr.flush()
