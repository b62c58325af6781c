"""HTTP route of unlink: take a wrong identifier out of the identity graph (processors/identity/unlink.py).

POST /identity/unlink {"identifier": "TYPE:VALUE"}
    an N record to the identifier's partition (202, with the operation id); the outcome (the
    parts the profile split into, or why no exact split was possible) is the `unlinked` record
    on tusk.profile-changes with that `op`. The value stays blocked until
    POST /identity/quarantine/release lifts it.
"""

from __future__ import annotations

import uuid

import orjson
from faust.web import Request, Response, View

from processors.common import records
from processors.identity.partitioning import partition_for
from stream.api.context import routes, served
from stream.api.quarantine import identifier_key
from stream.api.web import error, json_response
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


class Unlink(View):
    async def post(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(self, 400, "invalid_json", "expected a JSON body {\"identifier\": \"TYPE:VALUE\"}")
        key = identifier_key(body.get("identifier") if isinstance(body, dict) else None)
        if key is None:
            return error(self, 400, "invalid_identifier",
                         "expected identifier TYPE:VALUE, e.g. email:test@test.com")
        op = uuid.uuid4().hex
        record = orjson.dumps(records.unlink_request(op))
        pipeline = served(self).pipeline
        await self.app.producer.send_and_wait(pipeline.routed, key.encode(), record,
                                              partition_for(key, pipeline.n), None, None)
        return json_response(self, {"identifier": key, "op": op, "status": "unlink_requested",
                                    "outcome": "the `unlinked` record with this op on tusk.profile-changes",
                                    "release": "POST /identity/quarantine/release"}, status=202)


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The route of this module on a worker's app."""
    routes(built, pipeline, {"/identity/unlink": Unlink})
