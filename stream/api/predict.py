"""Gathering every customer's purchase summary from the workers that own them (tusk predict fit).

Each worker reads the profiles of its active partitions from RocksDB
(GET /internal/rfm/{day}); any worker gathers them all (GET /predict/summaries) and
refuses to answer when some partition is not covered (a fit on part of the
customers would be silently wrong). GET /predict/model answers the fitted model in force.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from faust.web import Request, Response, View

from processors.common.errors import PlatformError
from processors.predict import rfm
from stream.api.context import Served, routes, served
from stream.api.web import ask_peers, clock_now, error, json_response
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline


def _scan(worker: Served, partitions: list[int], as_of_day: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    for p in partitions:
        for pid, raw in worker.pipeline.state.stored_profiles(p):
            if b'"_rfm"' not in raw:
                continue
            profile = orjson.loads(raw)
            if "redirect" in profile:
                continue
            s = rfm.summary(profile.get("_rfm"), as_of_day)
            if s is not None:
                out.append([pid, s.first_day, s.frequency, s.recency_days, s.age_days, s.monetary])
    return out


def as_of(s: Served, until: str | None) -> int:
    if until:
        return rfm.parse_day(until)
    return rfm.day_of(clock_now(s))


async def local_summaries(s: Served, until: str | None) -> dict[str, Any]:
    """This worker's customers: [profile id, first day, frequency, recency days, age days, monetary]."""
    day = as_of(s, until)
    mine = s.pipeline.active_partitions()
    rows = await asyncio.to_thread(_scan, s, mine, day)
    return {"partitions": mine, "as_of_day": day, "summaries": rows}


class Incomplete(PlatformError, RuntimeError):
    """Some partition has no worker able to answer for it right now."""


async def cluster_summaries(s: Served, request: Request, until: str | None) -> dict[str, Any]:
    """Every customer's summary as of one day (ValueError: bad date; Incomplete: not all there)."""
    day = as_of(s, until)  # one as-of day for every worker; a bad date is refused before asking
    parts = [await local_summaries(s, _iso_day(day))]
    async for answer in ask_peers(s, request, f"/internal/rfm/{_iso_day(day)}"):
        if answer.failure is not None:
            raise Incomplete(f"worker {answer.host} does not answer ({answer.failure})") from answer.failure
        if answer.status != 200:
            raise Incomplete(f"worker {answer.host} answered {answer.status}")
        parts.append(orjson.loads(answer.body))
    covered = {p for part in parts for p in part["partitions"]}
    missing = sorted(set(range(s.pipeline.n)) - covered)
    if missing:
        raise Incomplete(f"partitions {missing} have no active worker yet; try again shortly")
    rows = [row for part in parts for row in part["summaries"]]
    return {"as_of": _iso_day(day), "as_of_day": day, "customers": len(rows), "summaries": rows}


def _iso_day(day: int) -> str:
    from datetime import date, timedelta

    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


# --- predictions: every customer's purchase summary, for `tusk predict fit` ------------------


class InternalRfm(View):
    async def get(self, request: Request, until: str) -> Response:
        try:
            return json_response(self, await local_summaries(served(self), until))
        except ValueError as e:
            return error(self, 400, "invalid_request", str(e))


class PredictSummaries(View):
    """Every customer's summary as of ?until=DATE (default: now), gathered from every worker."""

    async def get(self, request: Request) -> Response:
        try:
            summaries = await cluster_summaries(served(self), request, request.query.get("until"))
            return json_response(self, summaries)
        except ValueError as e:
            return error(self, 400, "invalid_request", str(e))
        except Incomplete as e:
            return error(self, 503, "not_ready", str(e))


class PredictModel(View):
    """The fitted model in force (as `tusk predict fit` published it), 404 before any fit."""

    async def get(self, request: Request) -> Response:
        reader = served(self).reader
        record = reader.records.get("predict:model")
        if record is None or reader.catalog.predict.model is None:
            return error(self, 404, "not_found", "no model yet: run `tusk predict fit`")
        return json_response(self, record)


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The routes of this module on a worker's app."""
    routes(built, pipeline, {"/internal/rfm/{until}": InternalRfm,
                             "/predict/summaries": PredictSummaries,
                             "/predict/model": PredictModel})
