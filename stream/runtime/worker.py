"""Start one Faust worker with Tusk's agents and views."""

from __future__ import annotations

import logging
import sys

from stream.kafka import security as kafka_security
from stream.runtime.settings import Settings, SettingsError, start_with


def load_views() -> None:
    """Import every module that registers routes on the worker's web app (the docs list them)."""
    from stream.api import (  # noqa: F401 - the views register themselves; api_auth: TUSK_API_TOKEN
        auth,
        console,
        explain,
        journeys,
        predict,
        quarantine,
        unlink,
        web,
    )


def run(settings: Settings) -> None:
    start_with(settings)  # before anything imports stream.runtime.app, which builds the app from them
    from stream.runtime.faust_adapter import install
    from stream.runtime.memory import limit_arenas

    limit_arenas()
    install()  # Faust's per-record drain cost (stream/runtime/faust_adapter.py)
    settings.datadir.mkdir(parents=True, exist_ok=True)
    load_views()
    from stream.kafka.clients import enforce_topic_configs
    from stream.kafka.outbox import OUTBOX
    from stream.privacy import erasure
    from stream.runtime import agents
    from stream.runtime.app import app

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
    erasure.register(app, settings, agents.active_partitions, OUTBOX)

    agents.READER.start()  # every definition known before the first event
    OUTBOX.start(settings)
    OUTBOX.attach(app)
    # explicit levels on the libraries' loggers: aiokafka logs every send at debug (keys and
    # values: PII, and 5% of a worker's time when a parent logger lets debug through)
    level = logging.getLevelName(settings.log_level.upper())
    for name in ("aiokafka", "faust", "mode", "rocksdict"):
        logging.getLogger(name).setLevel(level if isinstance(level, int) else logging.WARNING)
    sys.argv = ["tusk", "worker", "--loglevel", settings.log_level,
                "--web-port", str(settings.web_port), "--web-host", settings.web_host]
    app.main()
