"""The processors' own speed: a worker's stages on one input in this process, without Kafka,
Faust or RocksDB, so `make bench` can show how near a worker runs to its processors' ceiling.

    python -m stream.bench.processors [--events 69659] [--segments cdnow|N]

The `Pipeline` (stream/runtime/pipeline.py) handles each record as a worker's drain loop does,
on one partition, with `MemoryState` (profiles kept as JSON bytes, as in RocksDB, so the decode
and encode per event are paid) and an outbox that only counts. Two passes over the same input:

- `run`: the processors' CPU time per event, overall and per fifth of the input (a real
  purchase log grows the profiles of returning customers, and their events cost more);
- `stages`: a fresh state again, with the main stages timed at their outermost call, for the
  µs per event a compiled core would have to replace (each timed call adds about a µs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import orjson

from processors.identity import graph
from processors.profile import computed
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file
from stream.bench.purchases import cdnow_events
from stream.bench.segments import EXAMPLES, segment_variants
from stream.demo.synthetic import shop_stream
from stream.runtime.definitions import DefinitionsReader
from stream.runtime.pipeline import Pipeline
from stream.runtime.settings import Settings
from stream.state.partition import MemoryState

PARTS = 5


class _CountingOutbox:
    def __init__(self) -> None:
        self.records = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             timestamp_ms: int | None = None) -> None:
        self.records += 1


class _OnePartition:
    """The consumer group of a worker that holds the only partition (stream/runtime/pipeline.Host)."""

    def touchpoint_partitions(self) -> int | None:
        return 1

    def assigned(self, topic: str) -> list[int]:
        return [0]

    def committed(self, topic: str, partition: int) -> int | None:
        return None

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        return dict.fromkeys(partitions)

    def ensure_topic(self, name: str) -> None:
        return None

    async def crash(self, e: BaseException) -> None:
        raise e


def pipeline(catalog: Catalog, clock: str) -> Pipeline:
    settings = dataclasses.replace(Settings(), partitions=1, clock=clock)
    reader = DefinitionsReader(settings)  # never started: the catalog is given
    reader.catalog = catalog
    return Pipeline(settings, MemoryState(), _CountingOutbox(), reader, _OnePartition(),
                    touchpoints="tp", routed="routed", dlq="dlq", changes="changes", results="results")


async def drain(pipe: Pipeline, lines: list[bytes], marks: list[float]) -> None:
    every = max(1, len(lines) // PARTS)
    for i, raw in enumerate(lines):
        msg = SimpleNamespace(topic="tp", partition=0, offset=i, timestamp=None)
        inline = pipe.ingest(None, raw, msg)
        if inline is not None:
            await pipe.handle_record(inline[0], inline[1], msg, inline[2])
        if (i + 1) % every == 0:
            marks.append(time.process_time())


def run(lines: list[bytes], catalog: Catalog, clock: str = "wall") -> dict[str, Any]:
    """The processors' events/s (CPU time of this process) and µs per event, overall and per fifth."""
    pipe = pipeline(catalog, clock)
    marks = [time.process_time()]
    asyncio.run(drain(pipe, lines, marks))
    spent = time.process_time() - marks[0]
    every = max(1, len(lines) // PARTS)
    outbox = pipe.outbox
    assert isinstance(outbox, _CountingOutbox)
    return {"events": len(lines), "events_per_s": round(len(lines) / spent),
            "us_per_event": round(spent / len(lines) * 1e6, 1),
            "us_per_event_by_fifth": [round((b - a) / every * 1e6, 1) for a, b in pairwise(marks)],
            "records_out": outbox.records}


STAGES: list[tuple[str, Callable[[], tuple[Any, str]]]] = [
    ("ingest (validation, routing)", lambda: (Pipeline, "ingest")),
    ("identity stage (all of a record's handling)", lambda: (graph, "handle")),
    ("profile decode", lambda: (MemoryState, "profile")),
    ("profile encode", lambda: (MemoryState, "set_profile")),
    ("computed traits observe", lambda: (Catalog, "observe")),
    ("segment evaluation", lambda: (Catalog, "evaluate")),
    ("of it: flip instants of time-aware conditions", lambda: (computed, "first_flip")),
    ("deadlines caught up (evaluations included)", lambda: (graph, "_catch_up")),
    ("outputs (transitions, triggers, changes)", lambda: (Pipeline, "settle")),
]
"""What `stages` times: (label, where the function is looked up when called)."""


@contextlib.contextmanager
def timed(spent: dict[str, float]) -> Iterator[None]:
    """Time each stage's function at its outermost call (CPU time of this thread) into `spent`;
    the originals are put back on exit."""
    saved: list[tuple[Any, str, Any]] = []
    for label, where in STAGES:
        owner, name = where()
        original = owner.__dict__[name]
        saved.append((owner, name, original))
        setattr(owner, name, _timer(label, original, spent))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _timer(label: str, f: Callable[..., Any], spent: dict[str, float]) -> Callable[..., Any]:
    depth = [0]
    clock = time.thread_time
    spent.setdefault(label, 0.0)

    if asyncio.iscoroutinefunction(f):
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return await f(*args, **kwargs)
            depth[0] += 1
            started = clock()
            try:
                return await f(*args, **kwargs)
            finally:
                spent[label] += clock() - started
                depth[0] -= 1
        return timed_coroutine

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        if depth[0]:
            return f(*args, **kwargs)
        depth[0] += 1
        started = clock()
        try:
            return f(*args, **kwargs)
        finally:
            spent[label] += clock() - started
            depth[0] -= 1
    return timed_call


def stages(lines: list[bytes], catalog: Catalog, clock: str = "wall") -> dict[str, float]:
    """µs per event inside each stage (nested ones are inside their callers' figures too), and
    in the whole timed pass (`WHOLE`: the timers' own cost included, so shares add up within it)."""
    spent: dict[str, float] = {}
    with timed(spent):
        pipe = pipeline(catalog, clock)
        started = time.process_time()
        asyncio.run(drain(pipe, lines, []))
        spent[WHOLE] = time.process_time() - started
    return {label: round(s / len(lines) * 1e6, 1) for label, s in spent.items()}


WHOLE = "the whole timed pass"


def cdnow(events: int | None = None) -> tuple[list[bytes], Catalog]:
    """CDNOW's purchase log with shop.yaml's traits and segments (suite.purchase_log's input)."""
    traits, segments = load_file(EXAMPLES)
    lines = cdnow_events()
    return lines[:events] if events else lines, Catalog.build(traits, segments)


def shop_definitions(segments: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The traits and `segments` segment variants the bench's shop runs use, the first with a
    webhook destination (so each entry makes a trigger); no traits without segments."""
    traits, _ = load_file(EXAMPLES)
    variants = segment_variants(segments)
    if segments:
        variants[0]["destinations"] = [{"channel": "webhook"}]
    return (traits if segments else []), variants


def shop(segments: int, events: int, profiles: int = 100_000) -> tuple[list[bytes], Catalog]:
    """The first `events` of the bench's shop stream and its definitions (suite.tusk's)."""
    lines = [line for _, line in zip(range(events), shop_stream(profiles, seed=11), strict=False)]
    return lines, Catalog.build(*shop_definitions(segments))


def measure(lines: list[bytes], catalog: Catalog, clock: str) -> dict[str, Any]:
    out = run(lines, catalog, clock)
    out["stages_us_per_event"] = stages(lines, catalog, clock)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m stream.bench.processors")
    ap.add_argument("--input", default="cdnow", help="cdnow, or shop:N (the shop stream with N segments)")
    ap.add_argument("--events", type=int, default=None, help="the first N events (default: all of "
                    "CDNOW, 60,000 of the shop stream)")
    args = ap.parse_args()
    if args.input == "cdnow":
        lines, catalog = cdnow(args.events)
        clock = "event"
    else:
        kind, _, count = args.input.partition(":")
        if kind != "shop" or not count.isdigit():
            ap.error(f"--input: expected cdnow or shop:N, got {args.input!r}")
        lines, catalog = shop(int(count), args.events or 60_000)
        clock = "wall"
    print(orjson.dumps(measure(lines, catalog, clock), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
