"""HTTP route of unlink: take a wrong identifier out of the identity graph (processors/identity/unlink.py).

POST /identity/unlink {"identifier": "TYPE:VALUE"}
    an N record to the identifier's partition (202, with the operation id); the outcome (the
    parts the profile split into, or why no exact split was possible) is the `unlinked` record
    on tusk.profile-changes with that `op`. The value stays blocked until
    POST /identity/quarantine/release lifts it.
"""

from __future__ import annotations

import uuid

from faust.web import Request, Response, View

from processors.common import records
from stream.api.context import routes
from stream.api.quarantine import send_to_identifier
from stream.api.web import json_response
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


class Unlink(View):
    async def post(self, request: Request) -> Response:
        op = uuid.uuid4().hex
        key = await send_to_identifier(self, request, "email:test@test.com", records.unlink_request(op))
        if not isinstance(key, str):
            return key
        return json_response(self, {"identifier": key, "op": op, "status": "unlink_requested",
                                    "outcome": "the `unlinked` record with this op on tusk.profile-changes",
                                    "release": "POST /identity/quarantine/release"}, status=202)


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The route of this module on a worker's app."""
    routes(built, pipeline, {"/identity/unlink": Unlink})
