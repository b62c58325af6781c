"""What a worker's HTTP views serve from, and how a view module registers its routes.

Each view module of stream/api/ (and any new one) has one function, called by the worker
(stream/runtime/worker.py: `register_views`) after the app and its pipeline are built:

    def register(built: TuskApp, pipeline: Pipeline) -> None:
        routes(built, pipeline, {"/path/{param}": ViewClass, ...})

A view reaches the worker's objects through its own app, `served(self)`: the built app (`.app`,
`.built.profiles`, ...) and the pipeline (`.pipeline.state`, `.reader`, `.settings`, ...);
nothing is read from module globals, so two apps built in one process keep apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.web import View

from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline

ATTRIBUTE = "tusk_served"
"""The attribute of the Faust app that holds its `Served` (set by `routes`)."""


@dataclass(frozen=True)
class Served:
    """A worker's built app and pipeline, as its views see them."""

    built: TuskApp
    pipeline: Pipeline
    parts: dict[str, Any] = field(default_factory=dict)
    """What a view module keeps per app, by the module's name (the console's trigger tail)."""

    @property
    def app(self) -> faust.App:
        return self.built.app

    @property
    def reader(self) -> Any:
        return self.pipeline.reader

    @property
    def settings(self) -> Any:
        return self.pipeline.settings


def attach(built: TuskApp, pipeline: Pipeline) -> Served:
    """The `Served` of this app (made once: every module's views see the same one)."""
    current = getattr(built.app, ATTRIBUTE, None)
    if isinstance(current, Served) and current.built is built and current.pipeline is pipeline:
        return current
    if current is not None:
        raise RuntimeError(f"app {built.app.conf.id} already serves another pipeline")
    here = Served(built, pipeline)
    setattr(built.app, ATTRIBUTE, here)
    return here


def routes(built: TuskApp, pipeline: Pipeline, views: Mapping[str, type[View]]) -> Served:
    """Register `views` (path → View class) on the app's web server (Faust's `app.page(path)`,
    applied after the fact)."""
    here = attach(built, pipeline)
    for path, view in views.items():
        built.app.page(path)(view)
    return here


def served(where: View | faust.App) -> Served:
    """The worker's objects behind a view (or its app); RuntimeError before `routes` ran."""
    app = where.app if isinstance(where, View) else where
    here = getattr(app, ATTRIBUTE, None)
    if not isinstance(here, Served):
        raise RuntimeError("the views of this app are not registered (stream/api/context.py: routes)")
    return here
