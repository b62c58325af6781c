"""HTTP views served by every worker; each request is answered by the key's owner."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from processors.identifiers import key_of, normalise
from processors.profile import public_view
from stream.app import app, identities, profiles

HOP_HEADER = "X-Tusk-Hops"
MAX_HOPS = 6


def json_response(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


def error(view: View, status: int, reason: str, message: str) -> Response:
    return json_response(view, {"error": reason, "message": message}, status)


def owner_of(table_name: str, key: bytes) -> URL | None:
    """The owner's URL, or None when this worker owns `key`. KeyError while assigning."""
    owner = app.router.key_store(table_name, key)
    me = app.conf.canonical_url
    return None if (owner.host, owner.port) == (me.host, me.port) else owner


def hops(request: Request) -> int:
    try:
        return int(request.headers.get(HOP_HEADER, "0"))
    except ValueError:
        return MAX_HOPS


async def ask(owner: URL, path: str, hop: int) -> tuple[int, bytes, str]:
    url = owner.with_path(path)
    headers = {HOP_HEADER: str(hop + 1), "Accept": "application/json"}
    async with app.http_client.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.content_type


async def fetch_profile(pid: str, hop: int) -> dict[str, Any] | None:
    """The live profile `pid` resolves to, following merge redirects across workers."""
    for _ in range(MAX_HOPS):
        owner = owner_of(profiles.name, pid.encode())
        if owner is not None and hop < MAX_HOPS:
            status, body, _ = await ask(owner, f"/profiles/id/{quote(pid, safe='')}", hop)
            return orjson.loads(body) if status == 200 else None
        raw = profiles.get(pid.encode())
        if raw is None:
            return None
        profile: dict[str, Any] = orjson.loads(raw)
        if "redirect" not in profile:
            return public_view(profile)
        pid = profile["redirect"]
    return None


@app.page("/profiles/id/{profile_id}")
class ProfileById(View):
    async def get(self, request: Request, profile_id: str) -> Response:
        try:
            profile = await fetch_profile(profile_id, hops(request))
        except KeyError:
            return error(self, 503, "not_ready", "partitions are being assigned; try again shortly")
        if profile is None:
            return error(self, 404, "not_found", f"no profile with id {profile_id}")
        return json_response(self, profile)


@app.page("/profiles/{kind}/{value}")
class ProfileByIdentifier(View):
    async def get(self, request: Request, kind: str, value: str) -> Response:
        normalised = normalise(kind, value)
        if normalised is None:
            return error(self, 400, "invalid_identifier", f"{value!r} is not a valid {kind}")
        key = key_of((kind, normalised)).encode()
        hop = hops(request)
        try:
            owner = owner_of(identities.name, key)
            if owner is not None and hop < MAX_HOPS:
                status, body, ctype = await ask(owner, request.url.path, hop)
                return self.bytes(body, content_type=ctype, status=status)
            pid = identities.get(key)
            profile = await fetch_profile(pid.decode(), hop) if pid else None
        except KeyError:
            return error(self, 503, "not_ready", "partitions are being assigned; try again shortly")
        if profile is None:
            return error(self, 404, "not_found", f"no profile has {kind} {normalised!r}")
        return json_response(self, profile)


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
