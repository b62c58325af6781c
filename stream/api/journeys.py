"""HTTP views of journeys: definitions and live counts per step, summed over every worker."""

from __future__ import annotations

from faust.web import Request, Response, View

from processors.journeys.engine import funnel
from stream.api.context import routes, served
from stream.api.web import cluster_state, definition, delete_definition, json_response, put_definition
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


class Journeys(View):
    async def get(self, request: Request) -> Response:
        s = served(self)
        book = s.reader.journeys
        stats = (await cluster_state(s, request))["journeys"]
        return json_response(self, {"journeys": [funnel(book.specs[j], stats) for j in book.specs],
                                    "skipped": {k: v for k, v in s.reader.skipped.items()
                                                if k.startswith("journey:")}})


class Journey(View):
    async def get(self, request: Request, ident: str) -> Response:
        return await definition(self, request, served(self).reader.journeys.specs, "journey", ident,
                                lambda spec, state: {**funnel(spec, state["journeys"]),
                                                     "workers": state["workers"]})

    async def put(self, request: Request, ident: str) -> Response:
        reader = served(self).reader
        return await put_definition(self, request, "journey", ident,
                                    lambda spec: reader.journeys.put(spec, reader.catalog))

    async def delete(self, request: Request, ident: str) -> Response:
        reader = served(self).reader
        return await delete_definition(self, "journey", ident, ident in reader.journeys.specs,
                                       lambda: reader.journeys.delete(ident, reader.catalog),
                                       "is still the target of a move")


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app."""
    routes(built, pipeline, {"/journeys": Journeys, "/journeys/{ident}": Journey})
