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
from stream.api.web import error, gather_ok, json_response
from stream.runtime import agents
from stream.runtime.app import app


def local_quarantine() -> list[dict[str, Any]]:
    """Quarantined identifiers on this worker's active partitions (meta, changelogged)."""
    out: list[dict[str, Any]] = []
    for p in agents.active_partitions():
        for key, record in agents.STORE.peek_quarantined(p):
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


@app.page("/internal/quarantine")
class InternalQuarantine(View):
    async def get(self, request: Request) -> Response:
        return json_response(self, local_quarantine())


@app.page("/identity/quarantine")
class Quarantine(View):
    async def get(self, request: Request) -> Response:
        found = local_quarantine()
        for answer in await gather_ok(request, "/internal/quarantine"):
            found.extend(answer)
        found.sort(key=lambda r: (r["type"], r["value"]))
        return json_response(self, {"quarantined": found})


@app.page("/identity/quarantine/release")
class QuarantineRelease(View):
    async def post(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(self, 400, "invalid_json", "expected a JSON body {\"identifier\": \"TYPE:VALUE\"}")
        key = identifier_key(body.get("identifier") if isinstance(body, dict) else None)
        if key is None:
            return error(self, 400, "invalid_identifier",
                         "expected identifier TYPE:VALUE, e.g. device_id:kiosk-1")
        record = orjson.dumps(records.quarantine_op("release"))
        await app.producer.send_and_wait(agents.ROUTED, key.encode(), record,
                                         partition_for(key, agents.N), None, None)
        return json_response(self, {"identifier": key, "status": "release_requested"}, status=202)
