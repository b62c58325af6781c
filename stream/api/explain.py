"""GET /profiles/{type}/{value}/explain and /profiles/id/{profile_id}/explain
(processors/profile/explain.py)."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from faust.web import Request, Response, View

from processors.profile.explain import explain
from stream.api.context import routes, served
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
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


async def _explain(view: View, pid: str, hop: int) -> Response:
    """Follow redirects to the live profile (asking its owner when another worker has it)."""
    s = served(view)
    for _ in range(MAX_HOPS):
        owner = owner_of(s, s.built.profiles.name, pid.encode())
        if owner is not None and hop < MAX_HOPS:
            status, body, ctype = await ask(s, owner, f"/profiles/id/{quote(pid, safe='')}/explain", hop)
            return view.bytes(body, content_type=ctype, status=status)
        raw = s.pipeline.state.lookup_profile(pid)  # unflushed state too (stream/state/writeback.py)
        if raw is None:
            break
        profile = orjson.loads(raw)
        if "redirect" not in profile:
            return json_response(view, explain(profile, s.reader.catalog, clock_now(s)))
        pid = profile["redirect"]
    return error(view, 404, "not_found", f"no profile with id {pid}")


class ExplainById(View):
    async def get(self, request: Request, profile_id: str) -> Response:
        try:
            return await _explain(self, profile_id, hops(request))
        except KeyError:
            return not_ready(self)


class ExplainByIdentifier(View):
    async def get(self, request: Request, kind: str, value: str) -> Response:
        return await by_identifier(self, request, kind, value, lambda pid, hop: _explain(self, pid, hop))


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app."""
    routes(built, pipeline, {"/profiles/id/{profile_id}/explain": ExplainById,
                             "/profiles/{kind}/{value}/explain": ExplainByIdentifier})
