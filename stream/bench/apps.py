"""Baseline Faust apps for `make bench`: the same events, the least work.

    python -m stream.bench.apps bare   TOPIC   # count events, nothing else (stock Faust)
    python -m stream.bench.apps bare-patched TOPIC   # the same with Tusk's drain
                                                     #   (stream/runtime/faust_adapter.py)
    python -m stream.bench.apps naive  TOPIC   # one table read + JSON update + write per event

Each writes "<events> <monotonic seconds>" to $BENCH_PROGRESS once a second.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faust
import orjson

from stream.runtime.settings import Settings


def build(mode: str, topic: str, settings: Settings, progress: Path) -> faust.App:
    """The baseline app of `mode` reading `topic`, reporting to `progress`."""
    if mode == "bare-patched":
        from stream.runtime.faust_adapter import install

        assert install(), "the drain adapter did not install"
    app = faust.App(
        settings.app_id, broker=settings.broker_url,
        store="rocksdb://", datadir=str(settings.datadir), web_port=settings.web_port,
        topic_partitions=settings.partitions, consumer_auto_offset_reset="earliest",
        key_serializer="raw", value_serializer="raw", producer_linger_ms=10, autodiscover=False,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    table = app.Table("naive", partitions=settings.partitions, key_type=bytes,
                      value_type=bytes, options={"block_cache_size": 8 << 20, "write_buffer_size": 4 << 20})
    seen = [0]

    @app.agent(source, name="stream.bench.apps.work")
    async def work(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            if mode == "naive":
                msg = orjson.loads(event.value)
                key = str(msg.get("userId") or msg.get("anonymousId") or "?").encode()
                raw = table.get(key)
                profile = orjson.loads(raw) if raw else {"events": 0, "traits": {}}
                profile["events"] += 1
                if isinstance(msg.get("traits"), dict):
                    profile["traits"].update(msg["traits"])
                table[key] = orjson.dumps(profile)
            seen[0] += 1

    @app.timer(1.0, name="stream.bench.apps.report")
    async def report() -> None:
        progress.write_text(f"{seen[0]} {time.monotonic()}")

    return app


def main() -> None:
    settings = Settings.from_env()  # the run's (stream/bench/suite.py sets them for this process)
    app = build(sys.argv[1], sys.argv[2], settings, Path(os.environ["BENCH_PROGRESS"]))
    sys.argv = ["bench", "worker", "--loglevel", "warn", "--web-port", str(settings.web_port)]
    app.main()


if __name__ == "__main__":
    main()
