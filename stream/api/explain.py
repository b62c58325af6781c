"""GET /profiles/{type}/{value}/explain and /profiles/id/{profile_id}/explain
(processors/profile/explain.py)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from faust.web import Request, Response, View

from processors.profile.explain import explain
from stream.api.web import (
    MAX_HOPS,
    ask,
    by_identifier,
    clock_now,
    error,
    hops,
    json_response,
    not_ready,
    owner_of,
)
from stream.runtime import agents
from stream.runtime.app import app, profiles


async def _explain(view: View, pid: str, hop: int) -> Response:
    """Follow redirects to the live profile (asking its owner when another worker has it)."""
    for _ in range(MAX_HOPS):
        owner = owner_of(profiles.name, pid.encode())
        if owner is not None and hop < MAX_HOPS:
            status, body, ctype = await ask(owner, f"/profiles/id/{quote(pid, safe='')}/explain", hop)
            return view.bytes(body, content_type=ctype, status=status)
        raw = agents.STORE.lookup_profile(pid)  # unflushed state too (stream/state/writeback.py)
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
        return await by_identifier(self, request, kind, value, lambda pid, hop: _explain(self, pid, hop))
