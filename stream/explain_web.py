"""GET /profiles/{type}/{value}/explain and /profiles/id/{profile_id}/explain (processors/explain.py)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from faust.web import Request, Response, View

from processors.explain import explain
from stream import agents
from stream.app import app, profiles
from stream.web import (
    MAX_HOPS,
    Resolved,
    ask,
    clock_now,
    error,
    hops,
    json_response,
    not_ready,
    owner_of,
    resolve_identifier,
)


async def _explain(view: View, pid: str, hop: int) -> Response:
    """Follow redirects to the live profile (asking its owner when another worker has it)."""
    for _ in range(MAX_HOPS):
        owner = owner_of(profiles.name, pid.encode())
        if owner is not None and hop < MAX_HOPS:
            status, body, ctype = await ask(owner, f"/profiles/id/{quote(pid, safe='')}/explain", hop)
            return view.bytes(body, content_type=ctype, status=status)
        raw = agents.STORE.lookup_profile(pid)  # unflushed state too (stream/state.py)
        if raw is None:
            break
        profile = orjson.loads(raw)
        if "redirect" not in profile:
            return json_response(view, explain(profile, agents.READER.catalog, clock_now()))
        pid = profile["redirect"]
    return error(view, 404, "not_found", f"no profile with id {pid}")


@app.page("/profiles/id/{profile_id}/explain")
class ExplainById(View):
    async def get(self, request: Request, profile_id: str) -> Response:
        try:
            return await _explain(self, profile_id, hops(request))
        except KeyError:
            return not_ready(self)


@app.page("/profiles/{kind}/{value}/explain")
class ExplainByIdentifier(View):
    async def get(self, request: Request, kind: str, value: str) -> Response:
        try:
            found = await resolve_identifier(self, request, kind, value)
            if not isinstance(found, Resolved):  # an answer already (faust's Response is no base class)
                return found
            if not found.pid:
                return error(self, 404, "not_found", f"no profile has {kind} {found.normalised!r}")
            return await _explain(self, found.pid, found.hop)
        except KeyError:
            return not_ready(self)
