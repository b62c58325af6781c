"""HTTP views served by every worker; each request is answered by the key's owner.

Registered by `register(built, pipeline)` (stream/api/context.py); the helpers take the worker's
`Served` (its app and pipeline) first, views get theirs with `served(self)`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from processors.common.predicates import DefinitionError
from processors.ingest.identifiers import key_of, normalise
from processors.journeys.engine import sum_stats
from processors.profile.unified import public_view
from processors.segments.definitions import parse_record
from stream.api.context import Served, routes, served
from stream.runtime.app import TuskApp
from stream.runtime.definitions import produce_definition
from stream.runtime.faust_adapter import recovered
from stream.runtime.metrics import TALLY
from stream.runtime.pipeline import Pipeline

HOP_HEADER = "X-Tusk-Hops"
MAX_HOPS = 6


def json_response(view: View, body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status, headers=headers)


def error(view: View, status: int, reason: str, message: str) -> Response:
    return json_response(view, {"error": reason, "message": message}, status)


def clock_now(s: Served) -> int:
    if s.pipeline.time_clock:
        return max(s.pipeline.watermark.values(), default=0)
    return int(time.time() * 1000)


def present(s: Served, profile: dict[str, Any]) -> dict[str, Any]:
    """The public profile, computed traits read at this instant (windows slide with time)."""
    view = public_view(profile)
    view["computed"] = s.reader.catalog.computed_view(profile, clock_now(s))
    view["predictions"] = s.reader.catalog.predictions_view(profile, clock_now(s))
    return view


def owner_of(s: Served, table_name: str, key: bytes) -> URL | None:
    """The owner's URL, or None when this worker owns `key`. KeyError while assigning."""
    app = s.app
    owner = app.router.key_store(table_name, key)
    me = app.conf.canonical_url
    return None if (owner.host, owner.port) == (me.host, me.port) else owner


def hops(request: Request) -> int:
    try:
        return int(request.headers.get(HOP_HEADER, "0"))
    except ValueError:
        return MAX_HOPS


async def ask(s: Served, owner: URL, path: str, hop: int) -> tuple[int, bytes, str]:
    url = owner.with_path(path)
    headers = {HOP_HEADER: str(hop + 1), "Accept": "application/json"}
    async with s.app.http_client.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.content_type


@dataclass(frozen=True)
class PeerAnswer:
    """One other worker's answer to a fanned-out request; `failure` when it did not answer."""

    host: str
    status: int = 0
    body: bytes = b""
    failure: Exception | None = None


async def ask_peers(s: Served, request: Request, path: str) -> AsyncIterator[PeerAnswer]:
    """GET `path` from every other worker of the group, one after the other, as they answer
    (a caller that stops iterating asks no further worker)."""
    me = s.app.conf.canonical_url
    for host in s.app.router.tables_metadata():
        url = URL(host)
        if (url.host, url.port) == (me.host, me.port):
            continue
        try:
            status, body, _ = await ask(s, url, path, hops(request))
        except Exception as e:
            yield PeerAnswer(host, failure=e)
            continue
        yield PeerAnswer(host, status, body)


async def gather_ok(s: Served, request: Request, path: str) -> list[Any]:
    """The JSON answers of the other workers that answered 200 (the others are left out)."""
    return [orjson.loads(a.body) async for a in ask_peers(s, request, path) if a.status == 200]


async def fetch_profile(s: Served, pid: str, hop: int) -> dict[str, Any] | None:
    """The live profile `pid` resolves to, following merge redirects across workers."""
    for _ in range(MAX_HOPS):
        owner = owner_of(s, s.built.profiles.name, pid.encode())
        if owner is not None and hop < MAX_HOPS:
            status, body, _ = await ask(s, owner, f"/profiles/id/{quote(pid, safe='')}", hop)
            return orjson.loads(body) if status == 200 else None
        raw = s.pipeline.state.lookup_profile(pid)  # unflushed state too
        if raw is None:
            return None
        profile: dict[str, Any] = orjson.loads(raw)
        if "redirect" not in profile:
            return present(s, profile)
        pid = profile["redirect"]
    return None


class ProfileById(View):
    async def get(self, request: Request, profile_id: str) -> Response:
        try:
            profile = await fetch_profile(served(self), profile_id, hops(request))
        except KeyError:
            return not_ready(self)
        if profile is None:
            return error(self, 404, "not_found", f"no profile with id {profile_id}")
        return json_response(self, profile)


@dataclass(frozen=True)
class Resolved:
    """An identifier this worker owns: its normalised value and the profile id it points to."""

    normalised: str
    pid: str | None
    hop: int


async def resolve_identifier(view: View, request: Request, kind: str, value: str) -> Response | Resolved:
    """A 400 for an invalid identifier or the owner's answer (forwarded the same request path)
    when another worker owns it; else what it resolves to here. KeyError while assigning."""
    normalised = normalise(kind, value)
    if normalised is None:
        return error(view, 400, "invalid_identifier", f"{value!r} is not a valid {kind}")
    key = key_of((kind, normalised)).encode()
    hop = hops(request)
    s = served(view)
    owner = owner_of(s, s.built.identities.name, key)
    if owner is not None and hop < MAX_HOPS:
        status, body, ctype = await ask(s, owner, request.url.path, hop)
        return view.bytes(body, content_type=ctype, status=status)
    pid = s.pipeline.state.lookup_identity(key.decode())  # unflushed state too (stream/state/writeback.py)
    return Resolved(normalised, pid, hop)


def not_ready(view: View) -> Response:
    return error(view, 503, "not_ready", "partitions are being assigned; try again shortly")


async def by_identifier(view: View, request: Request, kind: str, value: str,
                        answer: Callable[[str, int], Awaitable[Response | None]]) -> Response:
    """`answer(profile id, hop)` for the profile holding kind:value (asked of the worker that owns
    it); 404 when no profile has it (or `answer` finds none), 503 while partitions move."""
    try:
        found = await resolve_identifier(view, request, kind, value)
        if not isinstance(found, Resolved):  # an answer already (faust's Response is no base class)
            return found
        answered = await answer(found.pid, found.hop) if found.pid else None
    except KeyError:
        return not_ready(view)
    if answered is None:
        return error(view, 404, "not_found", f"no profile has {kind} {found.normalised!r}")
    return answered


class ProfileByIdentifier(View):
    async def get(self, request: Request, kind: str, value: str) -> Response:
        async def profile(pid: str, hop: int) -> Response | None:
            found = await fetch_profile(served(self), pid, hop)
            return None if found is None else json_response(self, found)

        return await by_identifier(self, request, kind, value, profile)


class Health(View):
    async def get(self, request: Request) -> Response:
        assigned = sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                          if tp.topic.endswith("profiles-changelog"))
        recovering = not recovered(self.app)
        status = 503 if recovering else 200
        return json_response(self, {"status": "recovering" if recovering else "ok",
                                    "partitions": assigned}, status)


class Metrics(View):
    async def get(self, request: Request) -> Response:
        TALLY.fold()  # the hot path's counts since the last fold
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


# --- definitions: segments and computed traits ----------------------------------------------

def local_state(s: Served) -> dict[str, Any]:
    """Segment sizes and backfill progress of this worker's active partitions."""
    sizes: dict[str, int] = {}
    flows: list[dict[str, Any]] = []
    mine = s.pipeline.active_partitions()
    fp = s.reader.fingerprint
    state = s.pipeline.state
    done = 0
    for p in mine:
        for seg, n in state.peek_segment_sizes(p).items():
            sizes[seg] = sizes.get(seg, 0) + n
        done += state.peek_backfilled(p) == fp
        flows.append(state.peek_journey_stats(p))
    return {"partitions": mine, "sizes": sizes, "backfilled": done, "fingerprint": fp,
            "journeys": sum_stats(flows)}


async def cluster_state(s: Served, request: Request) -> dict[str, Any]:
    """local_state() of every worker in the group, summed."""
    states = [local_state(s), *await gather_ok(s, request, "/internal/state")]
    sizes: dict[str, int] = {}
    for st in states:
        for seg, n in st["sizes"].items():
            sizes[seg] = sizes.get(seg, 0) + n
    partitions = sorted({p for st in states for p in st["partitions"]})
    return {"sizes": sizes, "workers": len(states), "partitions": partitions,
            "journeys": sum_stats([st.get("journeys") or {} for st in states]),
            "backfilled_partitions": sum(st["backfilled"] for st in states
                                         if st["fingerprint"] == s.reader.fingerprint),
            "partitions_total": s.pipeline.n}


class InternalState(View):
    async def get(self, request: Request) -> Response:
        return json_response(self, local_state(served(self)))


def _listing(s: Served) -> dict[str, Any]:
    cat = s.reader.catalog
    return {"segments": [dict(cat.segment_specs[seg]) for seg in sorted(cat.segment_specs)],
            "computed_traits": [dict(cat.trait_specs[t]) for t in sorted(cat.trait_specs)],
            "skipped": s.reader.skipped}


class Segments(View):
    async def get(self, request: Request) -> Response:
        listing = _listing(served(self))
        state = await cluster_state(served(self), request)
        for seg in listing["segments"]:
            seg["size"] = state["sizes"].get(seg["id"], 0)
        return json_response(self, listing)


class ComputedTraits(View):
    async def get(self, request: Request) -> Response:
        return json_response(self, {"computed_traits": _listing(served(self))["computed_traits"]})


async def put_definition(view: View, request: Request, kind: str, ident: str,
                         check: Callable[[dict[str, Any]], object]) -> Response:
    """PUT of a definition: parse the body, `check` it against those in force
    (DefinitionError → 422), write it to the definitions topic."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(view, 400, "invalid_json", "the body is not JSON")
    if isinstance(body, dict) and body.get("id", ident) != ident:
        return error(view, 400, "id_mismatch", f"the body's id {body.get('id')!r} is not {ident!r}")
    try:
        spec = parse_record(kind, {**body, "id": ident} if isinstance(body, dict) else body)
        check(spec)
    except DefinitionError as e:
        return error(view, 422, "invalid_definition", str(e))
    await asyncio.to_thread(produce_definition, served(view).settings, kind, ident, spec)
    return json_response(view, {"id": ident, "kind": kind, "status": "applied", "definition": spec})


async def delete_definition(view: View, kind: str, ident: str, exists: bool,
                            check: Callable[[], object], in_use: str) -> Response:
    """DELETE of a definition: 404 unless it `exists`, 409 (`in_use`) when `check` finds
    others need it, else a tombstone on the definitions topic."""
    if not exists:
        return error(view, 404, "not_found", f"no {kind} {ident!r}")
    try:
        check()
    except DefinitionError as e:
        return error(view, 409, "in_use", f"{ident!r} {in_use}: {e}")
    await asyncio.to_thread(produce_definition, served(view).settings, kind, ident, None)
    return json_response(view, {"id": ident, "kind": kind, "status": "deleted"})


async def _put(view: View, request: Request, kind: str, ident: str) -> Response:
    return await put_definition(view, request, kind, ident,
                                lambda spec: served(view).reader.catalog.put(kind, spec))


async def _delete(view: View, kind: str, ident: str) -> Response:
    cat = served(view).reader.catalog
    specs = cat.segment_specs if kind == "segment" else cat.trait_specs
    return await delete_definition(view, kind, ident, ident in specs,
                                   lambda: cat.delete(kind, ident), "is still used")


async def definition(view: View, request: Request, specs: Mapping[str, Any], kind: str, ident: str,
                     answer: Callable[[Any, dict[str, Any]], Any] | None = None) -> Response:
    """GET of one definition: 404 when `ident` is not among `specs`, else `answer(spec, the
    cluster's state)` (without `answer`: the definition itself)."""
    spec = specs.get(ident)
    if spec is None:
        return error(view, 404, "not_found", f"no {kind} {ident!r}")
    if answer is None:
        return json_response(view, dict(spec))
    return json_response(view, answer(spec, await cluster_state(served(view), request)))


class CatalogDefinition(View):
    """PUT and DELETE of one segment or computed trait (`kind`)."""

    kind = ""

    async def put(self, request: Request, ident: str) -> Response:
        return await _put(self, request, self.kind, ident)

    async def delete(self, request: Request, ident: str) -> Response:
        return await _delete(self, self.kind, ident)


class Segment(CatalogDefinition):
    kind = "segment"

    async def get(self, request: Request, ident: str) -> Response:
        def with_size(spec: Any, state: dict[str, Any]) -> dict[str, Any]:
            return {**spec, "size": state["sizes"].get(ident, 0), "backfill": {
                "partitions_done": state["backfilled_partitions"], "partitions": state["partitions_total"]}}

        specs = served(self).reader.catalog.segment_specs
        return await definition(self, request, specs, "segment", ident, with_size)


class SegmentSize(View):
    async def get(self, request: Request, ident: str) -> Response:
        def size(_spec: Any, state: dict[str, Any]) -> dict[str, Any]:
            complete = state["backfilled_partitions"] >= state["partitions_total"]
            return {"segment": ident, "size": state["sizes"].get(ident, 0), "workers": state["workers"],
                    "complete": complete}

        return await definition(self, request, served(self).reader.catalog.segment_specs, "segment", ident,
                                size)


class ComputedTrait(CatalogDefinition):
    kind = "computed_trait"

    async def get(self, request: Request, ident: str) -> Response:
        return await definition(self, request, served(self).reader.catalog.trait_specs, "computed trait",
                                ident)


# --- privacy -------------------------------------------------------------------------------


class Privacy(View):
    async def post(self, request: Request, action: str) -> Response:
        from processors.privacy.requests import privacy_request
        from stream.privacy.client import submit

        if action not in ("export", "erase"):
            return error(self, 404, "not_found", "POST /privacy/export or /privacy/erase")
        try:
            body = orjson.loads(await request.read())
            ident = body.get("identifier") if isinstance(body, dict) else None
            if ident is None and isinstance(body, dict) and "type" in body and "value" in body:
                ident = f"{body['type']}:{body['value']}"
            req = privacy_request(orjson.dumps({"request_id": "http", "type": action, "identifier": ident}))
        except (orjson.JSONDecodeError, ValueError) as e:
            return error(self, 400, "invalid_request", f"expected {{\"identifier\": \"TYPE:VALUE\"}}: {e}")
        result = await asyncio.to_thread(submit, served(self).settings, action, req["identifier"], 30.0)
        if result is None:
            return error(self, 504, "timeout", "no result within 30 s; it will still be carried out")
        status = 404 if result.get("status") == "not_found" else 200
        return json_response(self, result, status)


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app."""
    routes(built, pipeline, {
        "/profiles/id/{profile_id}": ProfileById,
        "/profiles/{kind}/{value}": ProfileByIdentifier,
        "/health": Health,
        "/metrics": Metrics,
        "/internal/state": InternalState,
        "/segments": Segments,
        "/computed-traits": ComputedTraits,
        "/segments/{ident}": Segment,
        "/segments/{ident}/size": SegmentSize,
        "/computed-traits/{ident}": ComputedTrait,
        "/privacy/{action}": Privacy,
    })
