"""Start one Faust worker with Tusk's agents and views."""

from __future__ import annotations

import sys

from stream.settings import Settings


def run(settings: Settings) -> None:
    settings.datadir.mkdir(parents=True, exist_ok=True)
    from stream import agents, web  # noqa: F401 - registers agents and views
    from stream.app import app

    agents.READER.start()  # every definition known before the first event
    sys.argv = ["tusk", "worker", "--loglevel", settings.log_level,
                "--web-port", str(settings.web_port), "--web-host", settings.web_host]
    app.main()
