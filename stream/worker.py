"""Start one Faust worker with Tusk's agents and views."""

from __future__ import annotations

import logging
import sys

from stream.settings import Settings


def run(settings: Settings) -> None:
    from stream.memory import limit_arenas

    limit_arenas()
    settings.datadir.mkdir(parents=True, exist_ok=True)
    from stream import agents, api_auth, console, explain_web, quarantine_web, web  # noqa: F401 - views
    from stream.app import app
    from stream.outbox import OUTBOX

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
