"""HTTP views of journeys: definitions and live counts per step, summed over every worker."""

from __future__ import annotations

import asyncio

import orjson
from faust.web import Request, Response, View

from processors.definitions import parse_record
from processors.journeys import funnel
from processors.predicates import DefinitionError
from stream import agents
from stream.app import app
from stream.definitions import produce_definition
from stream.web import cluster_state, error, json_response


@app.page("/journeys")
class Journeys(View):
    async def get(self, request: Request) -> Response:
        book = agents.READER.journeys
        stats = (await cluster_state(request))["journeys"]
        return json_response(self, {"journeys": [funnel(book.specs[j], stats) for j in book.specs],
                                    "skipped": {k: v for k, v in agents.READER.skipped.items()
                                                if k.startswith("journey:")}})


@app.page("/journeys/{ident}")
class Journey(View):
    async def get(self, request: Request, ident: str) -> Response:
        spec = agents.READER.journeys.specs.get(ident)
        if spec is None:
            return error(self, 404, "not_found", f"no journey {ident!r}")
        state = await cluster_state(request)
        return json_response(self, {**funnel(spec, state["journeys"]), "workers": state["workers"]})

    async def put(self, request: Request, ident: str) -> Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error(self, 400, "invalid_json", "the body is not JSON")
        if isinstance(body, dict) and body.get("id", ident) != ident:
            return error(self, 400, "id_mismatch", f"the body's id {body.get('id')!r} is not {ident!r}")
        try:
            spec = parse_record("journey", {**body, "id": ident} if isinstance(body, dict) else body)
            agents.READER.journeys.put(spec, agents.READER.catalog)
        except DefinitionError as e:
            return error(self, 422, "invalid_definition", str(e))
        await asyncio.to_thread(produce_definition, agents.settings, "journey", ident, spec)
        return json_response(self, {"id": ident, "kind": "journey", "status": "applied", "definition": spec})

    async def delete(self, request: Request, ident: str) -> Response:
        reader = agents.READER
        if ident not in reader.journeys.specs:
            return error(self, 404, "not_found", f"no journey {ident!r}")
        try:
            reader.journeys.delete(ident, reader.catalog)
        except DefinitionError as e:
            return error(self, 409, "in_use", f"{ident!r} is still the target of a move: {e}")
        await asyncio.to_thread(produce_definition, agents.settings, "journey", ident, None)
        return json_response(self, {"id": ident, "kind": "journey", "status": "deleted"})
