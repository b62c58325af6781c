"""The API token check (stream/api/auth.py) on a bare aiohttp application: no Kafka, no worker."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from stream.api import auth as api_auth
from stream.runtime.app import build_app
from stream.runtime.settings import Settings


def test_authorized_needs_the_exact_bearer_token() -> None:
    assert api_auth.authorized("Bearer s3cret", "s3cret")
    assert api_auth.authorized("bearer  s3cret ", "s3cret")
    for header in (None, "", "s3cret", "Basic s3cret", "Bearer", "Bearer s3cre", "Bearer s3cret2",
                   "Bearer S3CRET"):
        assert not api_auth.authorized(header, "s3cret"), header


def test_token_from_the_environment() -> None:
    assert api_auth.api_token({}) is None
    assert api_auth.api_token({"TUSK_API_TOKEN": "  "}) is None
    assert api_auth.api_token({"TUSK_API_TOKEN": " t0k "}) == "t0k"


def test_middleware_guards_every_route_but_probes_and_the_console_page() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def run() -> None:
        app = build_app(Settings()).app  # a worker's app, built (nothing connects)
        web_app = web.Application(middlewares=[api_auth.middleware("s3cret", app)])
        for path in ("/health", "/metrics", "/console", "/console/triggers", "/segments"):
            web_app.router.add_get(path, ok)
        try:
            async with TestClient(TestServer(web_app)) as client:
                for path in ("/health", "/metrics", "/console"):
                    assert (await client.get(path)).status == 200, path
                for path in ("/segments", "/console/triggers", "/nowhere"):
                    resp = await client.get(path)
                    assert resp.status == 401, path
                    assert (await resp.json())["error"] == "unauthorized"
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                    wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
                    assert wrong.status == 401, path
                good = await client.get("/segments", headers={"Authorization": "Bearer s3cret"})
                assert good.status == 200
                # the worker's own client (lookups routed to the key's owner) sends the token
                assert app.http_client.headers["Authorization"] == "Bearer s3cret"  # type: ignore[attr-defined]
        finally:
            await app.http_client.close()  # type: ignore[attr-defined]
            app.http_client = None  # type: ignore[assignment]

    asyncio.run(run())
