"""Reading captured requests (``[capture]``): ``proxycast requests list|show`` and the dashboard's
Requests page.

A capture keeps the answer as the client got it (a stream's frames, as sent). What it means, the
reply whole (its text, its tool calls with their arguments assembled), is worked out here when it is
read, by the upstream format of the client's own API reading those bytes: nothing is spent on it
while the request is served.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from proxycast import formats
from proxycast.formats import internal
from proxycast.formats.contracts import UpstreamRequest
from proxycast.ledger import is_postgres, ledger_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.ledger import LedgerConfig
    from proxycast.ledger.store import Store


def open_reader(config: LedgerConfig, env: Mapping[str, str] | None = None) -> Store:
    """The ledger, to read (a SQLite file read-only: nothing created or migrated).

    Raises:
        ValueError: the ledger is off.
    """
    path = ledger_path(config, env)
    if path is not None:
        from proxycast.ledger.sqlite import SQLiteStore

        return SQLiteStore(path, create=False)
    if is_postgres(config.url):
        from proxycast.ledger.postgres import PostgresStore

        return PostgresStore(config.url, pool_size=1)
    raise ValueError("the ledger is off (ledger.url = 'off')")


def details(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored capture (``Store.captured``) as shown: its columns, its data, and ``reply``: what the
    answer says, assembled (None when it cannot be read: cut, an error, an API not decoded here)."""
    data = json.loads(row["data"])
    shown = {k: v for k, v in row.items() if k != "data"}
    shown.update(data)
    shown["reply"] = data.get("reply")  # kept when it held a secret (redacted: capture.py)
    if shown["reply"] is None and not data.get("answer_cut") and int(row["status"]) < 400:
        shown["reply"] = reply_of(str(row["api"]), bool(data.get("streamed")), data["answer"])
    return shown


def reply_of(api: str, streamed: bool, answer: str) -> dict[str, Any] | None:
    """The reply an answer in ``api``'s format holds (streamed: its frames accumulated)."""
    upstream = formats.UPSTREAMS.get(api)
    if upstream is None:  # the Responses API: no upstream format of the same name decodes it
        return None
    request = UpstreamRequest(path="", stream=streamed)
    try:
        if streamed:
            decoder = upstream.stream_decoder(request)
            events = [*decoder.feed(answer.encode()), *decoder.end()]
            reply = internal.accumulate(events)
        else:
            replies = upstream.reply_to_internal(json.loads(answer), request)
            if not replies:
                return None
            reply = replies[0]
    except Exception:  # an answer its format cannot read back: shown as it is, not assembled
        return None
    return reply_json(reply)


def reply_json(reply: internal.Reply) -> dict[str, Any]:
    """A reply as JSON: its text, reasoning, tool calls, stop and usage."""
    text = "".join(p.text for p in reply.parts if isinstance(p, internal.Text))
    reasoning = "".join(p.text for p in reply.parts if isinstance(p, internal.Reasoning))
    calls = [
        {"id": p.id, "name": p.name, "arguments": p.arguments}
        for p in reply.parts
        if isinstance(p, internal.ToolCall)
    ]
    usage = reply.usage
    return {
        "model": reply.model,
        "text": text,
        "reasoning": reasoning,
        "tool_calls": calls,
        "stop": reply.stop,
        "usage": {"input": usage.input, "output": usage.output},
    }


def render_list(rows: list[dict[str, Any]]) -> str:
    """``proxycast requests list``: one line per capture, newest first."""
    if not rows:
        return "no captured requests"
    lines = []
    for row in rows:
        when = datetime.fromtimestamp(row["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{when}  {row['request_id']}  {row['status']}  {row['client']}  "
            f"{row['api']}  {row['model']}"
        )
    return "\n".join(lines)


def render(shown: Mapping[str, Any]) -> str:
    """``proxycast requests show``: the capture for people (``--json`` has it all)."""
    when = datetime.fromtimestamp(shown["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"request {shown['request_id']}  {when}",
        f"client {shown['client']}  api {shown['api']}  model {shown['model']}  "
        f"status {shown['status']}  provider {shown.get('provider') or '-'}",
        "",
        "request:",
        shown["request"],
        "",
    ]
    for number, attempt in enumerate(shown.get("attempts", ()), 1):
        seconds = attempt["seconds"]
        took = "-" if seconds is None else f"{seconds:.3f} s"
        lines += [
            f"attempt {number}: {attempt['key']}  status {attempt['status']}  "
            f"at +{attempt['started']:.3f} s  answered in {took}  {attempt['error']}".rstrip(),
            f"  {attempt['path']}",
            f"  {attempt['request']}",
            "",
        ]
    reply = shown.get("reply")
    if reply is not None:
        lines.append("reply:")
        if reply["text"]:
            lines.append(reply["text"])
        for call in reply["tool_calls"]:
            lines.append(f"tool call {call['name']}({json.dumps(call['arguments'])})")
        lines.append(f"stop: {reply['stop']}")
    else:
        lines += ["answer:", shown["answer"]]
    return "\n".join(lines)
