"""Start one Faust worker with Tusk's agents and views.

settings → `build_app` (stream/runtime/app.py) → `build_pipeline` → the agents and timers
(stream/runtime/agents.py: `register`) and the views (`register_views`) → the erasure hook and
timers, the outbox → run. Importing a module of `stream` builds nothing.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

from stream.kafka import security as kafka_security
from stream.runtime.app import TuskApp
from stream.runtime.pipeline import Pipeline
from stream.runtime.settings import Settings, SettingsError


def load_views() -> list[ModuleType]:
    """Every module that registers routes (or middleware) on the worker's web app, in the order
    they register (the docs list them). Each has `register(built, pipeline)`."""
    from stream.api import auth, console, explain, journeys, predict, quarantine, unlink, web

    return [web, console, explain, journeys, predict, quarantine, unlink, auth]


def register_views(built: TuskApp, pipeline: Pipeline) -> None:
    """The HTTP API on a built app: every view module's `register`."""
    for module in load_views():
        module.register(built, pipeline)


def build_worker(settings: Settings) -> tuple[TuskApp, Pipeline]:
    """The worker's app of these settings, with its pipeline, agents, timers and views (nothing is
    connected yet)."""
    from stream.runtime import agents
    from stream.runtime.app import build_app

    built = build_app(settings)
    pipeline = agents.build_pipeline(built, settings)
    agents.register(built, pipeline)
    register_views(built, pipeline)
    return built, pipeline


def run(settings: Settings) -> None:
    from stream.runtime.faust_adapter import install

    install()  # Faust's per-record drain cost (stream/runtime/faust_adapter.py)
    settings.datadir.mkdir(parents=True, exist_ok=True)
    from stream.kafka.clients import enforce_topic_configs
    from stream.privacy import erasure
    from stream.runtime import memory

    # Faust's RocksDB store hooked before any table opens (stream/privacy/erasure.py)
    erasure.install()
    built, pipeline = build_worker(settings)
    app = built.app

    problem = kafka_security.faust_login_problem(settings.bootstrap, settings.kafka_extra)
    if problem is not None:  # Faust would retry for ever: say why, once, and stop
        raise SettingsError(f"the worker's Faust consumer (aiokafka) cannot log in to {settings.bootstrap} "
                            f"({kafka_security.login(settings.kafka_extra)}): {problem}; check the "
                            f"TUSK_KAFKA_* settings (docs/kafka-security.md).")
    try:  # topics created before these settings (or by hand) get the erasure deadline too
        enforce_topic_configs(settings)
    except Exception as e:
        raise SystemExit(f"tusk: cannot set the retention configs of Tusk's topics on "
                         f"{settings.bootstrap}: {e}") from e
    erasure.register(app, settings, pipeline.active_partitions, built.outbox)

    pipeline.reader.start()  # every definition known before the first event
    # and the touchpoints' partition count (no event loop yet: read in place), so the first
    # events know whether they can be applied where they are read
    pipeline.host.touchpoint_partitions()
    built.outbox.start(settings)  # the app's producer, connected now
    built.outbox.attach(app)
    # explicit levels on the libraries' loggers: aiokafka logs every send at debug (keys and
    # values: PII, and 5% of a worker's time when a parent logger lets debug through)
    level = logging.getLevelName(settings.log_level.upper())
    for name in ("aiokafka", "faust", "mode", "rocksdict"):
        logging.getLogger(name).setLevel(level if isinstance(level, int) else logging.WARNING)
    memory.freeze_startup_objects()  # last before Faust starts: no partition database open yet
    sys.argv = ["tusk", "worker", "--loglevel", settings.log_level,
                "--web-port", str(settings.web_port), "--web-host", settings.web_host]
    app.main()
