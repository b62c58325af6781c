"""HTTP views of journeys: definitions and live counts per step, summed over every worker."""

from __future__ import annotations

from faust.web import Request, Response, View

from processors.journeys.engine import funnel
from stream.api.web import cluster_state, definition, delete_definition, json_response, put_definition
from stream.runtime import agents
from stream.runtime.app import app


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
        return await definition(self, request, agents.READER.journeys.specs, "journey", ident,
                                lambda spec, state: {**funnel(spec, state["journeys"]),
                                                     "workers": state["workers"]})

    async def put(self, request: Request, ident: str) -> Response:
        reader = agents.READER
        return await put_definition(self, request, "journey", ident,
                                    lambda spec: reader.journeys.put(spec, reader.catalog))

    async def delete(self, request: Request, ident: str) -> Response:
        reader = agents.READER
        return await delete_definition(self, "journey", ident, ident in reader.journeys.specs,
                                       lambda: reader.journeys.delete(ident, reader.catalog),
                                       "is still the target of a move")
