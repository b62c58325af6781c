"""HTTP views served by every worker; each request is answered by the key's owner."""

from __future__ import annotations

from typing import Any

import orjson
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processors.identifiers import key_of, normalise
from processors.profile import public_view
from stream.app import app, identities, profiles

HOP_HEADER = "X-Tusk-Routed"


def json_response(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


def error(view: View, status: int, reason: str, message: str) -> Response:
    return json_response(view, {"error": reason, "message": message}, status)


async def forward_to_owner(view: View, request: Request, table_name: str,
                           key: bytes) -> Response | None:
    """The owner's answer, or None when this worker owns `key` (or was already asked)."""
    if request.headers.get(HOP_HEADER):
        return None
    try:
        owner = app.router.key_store(table_name, key)
    except KeyError:
        return error(view, 503, "not_ready", "partitions are being assigned; try again shortly")
    if (owner.host, owner.port) == (app.conf.canonical_url.host, app.conf.canonical_url.port):
        return None
    url = request.url.with_host(owner.host or "127.0.0.1").with_port(owner.port)
    headers = {HOP_HEADER: "1", "Accept": "application/json"}
    async with app.http_client.request(request.method, url, headers=headers,
                                       data=await request.read()) as resp:
        body = await resp.read()
        return view.bytes(body, content_type=resp.content_type, status=resp.status)


def load_profile(pid: bytes) -> dict[str, Any] | None:
    raw = profiles.get(pid)
    return orjson.loads(raw) if raw else None


@app.page("/profiles/id/{profile_id}")
class ProfileById(View):
    async def get(self, request: Request, profile_id: str) -> Response:
        key = profile_id.encode()
        routed = await forward_to_owner(self, request, profiles.name, key)
        if routed is not None:
            return routed
        profile = load_profile(key)
        if profile is None:
            return error(self, 404, "not_found", f"no profile with id {profile_id}")
        return json_response(self, public_view(profile))


@app.page("/profiles/{kind}/{value}")
class ProfileByIdentifier(View):
    async def get(self, request: Request, kind: str, value: str) -> Response:
        normalised = normalise(kind, value)
        if normalised is None:
            return error(self, 400, "invalid_identifier", f"{value!r} is not a valid {kind}")
        key = key_of((kind, normalised)).encode()
        routed = await forward_to_owner(self, request, identities.name, key)
        if routed is not None:
            return routed
        pid = identities.get(key)
        profile = load_profile(pid) if pid else None
        if profile is None:
            return error(self, 404, "not_found", f"no profile has {kind} {normalised!r}")
        return json_response(self, public_view(profile))


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        assigned = sorted(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic.endswith("profiles-changelog"))
        recovering = not app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        status = 503 if recovering else 200
        return json_response(self, {"status": "recovering" if recovering else "ok",
                                    "partitions": assigned}, status)


@app.page("/metrics")
class Metrics(View):
    async def get(self, request: Request) -> Response:
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
