"""``GET /`` and ``HEAD /``: the gateway answers, without a key, that it is there (Claude Code, for
one, sends ``HEAD /`` to its base URL before its first request)."""

from __future__ import annotations

from importlib.metadata import version

from quart import Blueprint, Response

from proxycast.http.quart import json_response

blueprint = Blueprint("root", __name__)


@blueprint.route("/", methods=["GET", "HEAD"])
async def root() -> Response:
    return json_response({"name": "proxycast", "version": version("proxycast"), "status": "ok"})
