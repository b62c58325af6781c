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

MODE, TOPIC = sys.argv[1], sys.argv[2]
if MODE == "bare-patched":
    from stream.runtime.faust_adapter import install

    assert install(), "the drain adapter did not install"
PROGRESS = Path(os.environ["BENCH_PROGRESS"])
SETTINGS = Settings.from_env()  # the run's (stream/bench/suite.py sets them for this process)
app = faust.App(
    SETTINGS.app_id, broker=SETTINGS.broker_url,
    store="rocksdb://", datadir=str(SETTINGS.datadir), web_port=SETTINGS.web_port,
    topic_partitions=SETTINGS.partitions, consumer_auto_offset_reset="earliest",
    key_serializer="raw", value_serializer="raw", producer_linger_ms=10, autodiscover=False,
)
source = app.topic(TOPIC, key_type=bytes, value_type=bytes)
table = app.Table("naive", partitions=SETTINGS.partitions, key_type=bytes,
                  value_type=bytes, options={"block_cache_size": 8 << 20, "write_buffer_size": 4 << 20})
seen = [0]


@app.agent(source)
async def work(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        if MODE == "naive":
            msg = orjson.loads(event.value)
            key = str(msg.get("userId") or msg.get("anonymousId") or "?").encode()
            raw = table.get(key)
            profile = orjson.loads(raw) if raw else {"events": 0, "traits": {}}
            profile["events"] += 1
            if isinstance(msg.get("traits"), dict):
                profile["traits"].update(msg["traits"])
            table[key] = orjson.dumps(profile)
        seen[0] += 1


@app.timer(1.0)
async def report() -> None:
    PROGRESS.write_text(f"{seen[0]} {time.monotonic()}")


if __name__ == "__main__":
    sys.argv = ["bench", "worker", "--loglevel", "warn", "--web-port", str(SETTINGS.web_port)]
    app.main()
