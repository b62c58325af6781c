"""Optional bearer token on the worker's HTTP API (an aiohttp middleware on Faust's web app).

Environment:
  TUSK_API_TOKEN   unset or empty: the API is open, as before. Set: every route answers
                   401 {"error": "unauthorized", "message": ...} unless the request carries
                   `Authorization: Bearer <TUSK_API_TOKEN>` (compared in constant time), except
                   GET /health and GET /metrics (probes and scrapers) and the console's page
                   GET /console (static HTML without data: it asks for the token and sends it on
                   its own requests). Give every worker of a group the same token: a worker that
                   routes a lookup to the key's owner sends its own token (a default header on
                   app.http_client, the session Faust's web views use for worker-to-worker calls).

Installed by `register(built, pipeline)` (stream/runtime/worker.py calls it with the views'), before
the web server starts: aiohttp freezes an application's middlewares when its runner is set up.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from aiohttp import web

from stream.runtime import variables
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline

TOKEN_ENV = "TUSK_API_TOKEN"
OPEN_PATHS = frozenset({"/health", "/metrics", "/console"})
"""Paths answered without a token: probes, Prometheus, the console's (data-free) page."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_token(environ: Mapping[str, str] | None = None) -> str | None:
    token = variables.text(TOKEN_ENV, environ).strip()
    return token or None


def authorized(header: str | None, token: str) -> bool:
    """True when `header` is `Bearer <token>` (scheme case-insensitive, constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized(message: str) -> web.Response:
    return web.json_response({"error": "unauthorized", "message": message}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="tusk"'})


def _send_token_to_peers(app: faust.App, token: str) -> None:
    """Make app.http_client (worker-to-worker requests) carry the token as a default header.

    The session is created lazily inside the event loop, so this runs from the middleware: a
    request is always authorized (and so this done) before its handler asks another worker.
    """
    headers = getattr(app.http_client, "headers", None)  # aiohttp.ClientSession: a CIMultiDict
    value = f"Bearer {token}"
    if headers is not None and headers.get("Authorization") != value:
        headers["Authorization"] = value


def middleware(token: str, app: faust.App) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The token check; `app`'s worker-to-worker client sends the token too."""
    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        _send_token_to_peers(app, token)
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            return unauthorized("this API needs `Authorization: Bearer <token>` (TUSK_API_TOKEN)")
        if not authorized(header, token):
            return unauthorized("the bearer token is not valid")
        return await handler(request)

    return require_token


def install(app: faust.App, token: str | None = None) -> bool:
    """Add the middleware to Faust's aiohttp application (once); False when no token is set."""
    token = token if token is not None else api_token()
    if not token:
        return False
    web_app = cast(Any, app.web).web_app  # faust.web.drivers.aiohttp.Web
    if any(getattr(m, "__tusk_auth__", False) for m in web_app.middlewares):
        return True
    mw = middleware(token, app)
    mw.__tusk_auth__ = True  # type: ignore[attr-defined]
    web_app.middlewares.append(mw)  # RuntimeError if the server has started (frozen list)
    return True


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The token check on a worker's app (TUSK_API_TOKEN; nothing when it is unset)."""
    install(built.app)
