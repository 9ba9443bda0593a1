"""``GET /ui``: the dashboard's page and its assets, every one from the package (``ui/static/``), so it
works offline. The page holds no data and needs no key; what it shows comes from ``/ui/api/`` with the
key the user pasted (kept in the tab's session storage, sent as ``Authorization``: no cookies).

A strict Content Security Policy goes with every asset: scripts, styles, images and connections from
this origin only, no inline script or style, no framing.
"""

from __future__ import annotations

from importlib import resources

from quart import Blueprint, Response

from proxycast.errors import RouteNotFoundError

blueprint = Blueprint("ui_pages", __name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_ASSETS = frozenset({"index.html", "app.js", "charts.js", "app.css", "favicon.svg"})


def _asset(name: str) -> Response:
    if name not in _ASSETS:  # a fixed list: no path ever reaches the file system from a request
        raise RouteNotFoundError(f"Unknown route: GET /ui/static/{name}.")
    data = resources.files("proxycast.ui").joinpath("static").joinpath(name).read_bytes()
    response = Response(data, content_type=_TYPES[name[name.rindex(".") :]])
    response.headers.update(
        {
            "content-security-policy": CSP,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
            "cache-control": "no-cache",
        }
    )
    return response


@blueprint.get("/ui")
@blueprint.get("/ui/")
async def index() -> Response:
    return _asset("index.html")


@blueprint.get("/ui/static/<name>")
async def static(name: str) -> Response:
    return _asset(name)
