"""HTTP routes of the over-merge guard: list quarantined identifiers, release one.

GET  /identity/quarantine                      every worker's quarantined identifiers
POST /identity/quarantine/release {"identifier": "TYPE:VALUE"}
                                               an O record to the identifier's partition (202)
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.web import Request, Response, View

from processors.common import records
from processors.identity.partitioning import partition_for
from processors.ingest.identifiers import key_of, normalise, parse_key
from stream.api.context import Served, routes, served
from stream.api.web import error, gather_ok, json_response
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


def local_quarantine(s: Served) -> list[dict[str, Any]]:
    """Quarantined identifiers on this worker's active partitions (meta, changelogged)."""
    out: list[dict[str, Any]] = []
    for p in s.pipeline.active_partitions():
        for key, record in s.pipeline.state.peek_quarantined(p):
            kind, value = parse_key(key)
            out.append({"type": kind, "value": value, "since": record["at"],
                        "distinct_people": record["distinct"], "threshold": record["threshold"],
                        "holder": record.get("holder"),
                        "reason": record.get("reason", "over_merge")})
    return out


def identifier_key(raw: Any) -> str | None:
    """'TYPE:VALUE' normalised like the events' identifiers, or None."""
    if not isinstance(raw, str):
        return None
    try:
        kind, value = parse_key(raw)
    except ValueError:
        return None
    normalised = normalise(kind, value)
    return key_of((kind, normalised)) if normalised else None


class InternalQuarantine(View):
    async def get(self, request: Request) -> Response:
        return json_response(self, local_quarantine(served(self)))


class Quarantine(View):
    async def get(self, request: Request) -> Response:
        s = served(self)
        found = local_quarantine(s)
        for answer in await gather_ok(s, request, "/internal/quarantine"):
            found.extend(answer)
        found.sort(key=lambda r: (r["type"], r["value"]))
        return json_response(self, {"quarantined": found})


async def send_to_identifier(view: View, request: Request, example: str,
                             record: dict[str, Any]) -> str | Response:
    """A POST of {"identifier": "TYPE:VALUE"}: `record` sent to the identifier's partition of the
    internal topic, its key returned; or the 400 answer to a body that names none."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(view, 400, "invalid_json", "expected a JSON body {\"identifier\": \"TYPE:VALUE\"}")
    key = identifier_key(body.get("identifier") if isinstance(body, dict) else None)
    if key is None:
        return error(view, 400, "invalid_identifier", f"expected identifier TYPE:VALUE, e.g. {example}")
    pipeline = served(view).pipeline
    await view.app.producer.send_and_wait(pipeline.routed, key.encode(), orjson.dumps(record),
                                          partition_for(key, pipeline.n), None, None)
    return key


class QuarantineRelease(View):
    async def post(self, request: Request) -> Response:
        key = await send_to_identifier(self, request, "device_id:kiosk-1", records.quarantine_op("release"))
        if not isinstance(key, str):
            return key
        return json_response(self, {"identifier": key, "status": "release_requested"}, status=202)


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app."""
    routes(built, pipeline, {"/internal/quarantine": InternalQuarantine,
                             "/identity/quarantine": Quarantine,
                             "/identity/quarantine/release": QuarantineRelease})
