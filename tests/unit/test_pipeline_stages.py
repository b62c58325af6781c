"""The worker's stages (stream/runtime/pipeline.py) without a broker: MemoryState for the tables, a list
for the outbox, a fake consumer group. Routing inline or through the hop, ticks (deadlines, the
low watermark, replayed ticks), backfill chains."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity.partitioning import partition_for
from processors.ingest.identifiers import routing_key
from stream.runtime import pipeline as pipeline_mod
from stream.runtime.definitions import DefinitionsReader
from stream.runtime.pipeline import Pipeline, low_watermark
from stream.runtime.settings import Settings
from stream.state.partition import MemoryState
from tests.unit.test_event_time import CATALOG, CFG, T0, encoded, events_st, raw_event, run

TOPICS = dict(touchpoints="tp", routed="routed", dlq="dlq", changes="changes", results="results")


class Host:
    def __init__(self, touchpoint_partitions: int | None) -> None:
        self.count = touchpoint_partitions
        self.active: dict[str, list[int]] = {}
        self.committed_offsets: dict[int, int] = {}
        self.ends: dict[int, int | None] = {}
        self.topics: list[str] = []
        self.crashed: list[BaseException] = []

    def touchpoint_partitions(self) -> int | None:
        return self.count

    def assigned(self, topic: str) -> list[int]:
        return self.active.get(topic, [])

    def committed(self, topic: str, partition: int) -> int | None:
        return self.committed_offsets.get(partition)

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        return {p: self.ends.get(p) for p in partitions}

    def ensure_topic(self, name: str) -> None:
        self.topics.append(name)

    async def crash(self, e: BaseException) -> None:
        self.crashed.append(e)


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, Any, int | None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             timestamp_ms: int | None = None) -> None:
        self.sent.append((topic, key, None if value is None else orjson.loads(value), partition))

    def to(self, topic: str) -> list[tuple[bytes | None, Any, int | None]]:
        return [(k, v, p) for t, k, v, p in self.sent if t == topic]


def make(partitions: int = 4, touchpoint_partitions: int | None = 4, **kw: Any) -> Pipeline:
    s = dataclasses.replace(Settings(), partitions=partitions, **kw)
    return Pipeline(s, MemoryState(), Outbox(), DefinitionsReader(s), Host(touchpoint_partitions), **TOPICS)


def msg(partition: int, offset: int, topic: str = "tp") -> Any:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=None)


def person(n: int) -> tuple[bytes, int]:
    """An event of person n and the partition its routing identifier resolves on (of 4)."""
    raw = orjson.dumps({"type": "track", "event": "Viewed", "userId": f"u{n}", "messageId": f"m{n}",
                        "timestamp": "2024-01-01T00:00:00Z"})
    return raw, partition_for(routing_key([("user_id", f"u{n}")]), 4)


def test_an_event_on_its_home_partition_is_handled_inline_else_it_takes_the_hop() -> None:
    pipe = make()
    outbox: Outbox = pipe.outbox  # type: ignore[assignment]
    raw, home = person(1)
    inline = pipe.ingest(b"u1", raw, msg(home, 10))
    assert inline is not None
    key, record, source = inline
    assert key == "user_id:u1" and record["k"] == "E" and source == (-(home + 1), 10)
    assert outbox.sent == []  # no hop
    other = (home + 1) % 4
    assert pipe.ingest(b"u1", raw, msg(other, 11)) is None
    [(hop_key, hop, partition)] = outbox.to("routed")
    assert (hop_key, hop, partition) == (b"user_id:u1", record, home)
    asyncio.run(pipe.handle_record(key, record, msg(home, 10), source))  # what the agent does next
    pipe.state.begin(home)
    pid = pipe.state.identity("user_id:u1")
    assert pid is not None and pipe.state.profile(pid) is not None


def test_the_hot_paths_counts_reach_prometheus_at_each_fold() -> None:
    from prometheus_client import REGISTRY

    from stream.runtime import metrics as m

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    m.TALLY.fold()
    before = (value("tusk_events_in_total"), value("tusk_events_routed_total", path="inline"),
              value("tusk_events_processed_total", outcome="applied"))
    pipe = make()
    for n in range(5):
        raw, home = person(100 + n)
        inline = pipe.ingest(raw, raw, msg(home, n))
        assert inline is not None
        asyncio.run(pipe.handle_record(*inline[:2], msg(home, n), inline[2]))
    assert value("tusk_events_in_total") == before[0]  # counted, not yet shown
    m.TALLY.fold()
    after = (value("tusk_events_in_total"), value("tusk_events_routed_total", path="inline"),
             value("tusk_events_processed_total", outcome="applied"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [5, 5, 5]
    assert m.TALLY.counts == {}


def test_without_co_partitioning_every_event_takes_the_hop() -> None:
    for count in (3, None):  # another partition count, or not known yet
        pipe = make(touchpoint_partitions=count)
        for n in range(12):
            raw, home = person(n)
            assert pipe.ingest(None, raw, msg(home, n)) is None
        assert [p for _, _, p in pipe.outbox.to("routed")] == [person(n)[1] for n in range(12)]  # type: ignore[attr-defined]


def test_a_malformed_event_goes_to_the_dlq_with_its_reason() -> None:
    pipe = make()
    assert pipe.ingest(b"k", b"{not json", msg(2, 7)) is None
    [(key, record, _)] = pipe.outbox.to("dlq")  # type: ignore[attr-defined]
    assert key == b"k" and record["reason"] == "invalid_json"
    assert pipe.outbox.to("routed") == []  # type: ignore[attr-defined]


def test_a_platform_failure_crashes_the_worker_and_a_bug_dead_letters_the_record() -> None:
    from faust.exceptions import FaustError

    pipe = make()

    def broken(_key: str) -> str | None:
        raise FaustError("table gone")

    pipe.state.identity = broken  # type: ignore[method-assign,assignment]
    raw, home = person(3)
    inline = pipe.ingest(None, raw, msg(home, 1))
    assert inline is not None
    with pytest.raises(FaustError):
        asyncio.run(pipe.handle_record(*inline[:2], msg(home, 1), inline[2]))
    crashed = pipe.host.crashed  # type: ignore[attr-defined]
    assert crashed and all(isinstance(e, FaustError) for e in crashed)
    before = len(crashed)

    def bug(_key: str) -> str | None:
        raise ZeroDivisionError

    pipe.state.identity = bug  # type: ignore[method-assign,assignment]
    asyncio.run(pipe.handle_record(*inline[:2], msg(home, 2), inline[2]))
    [(_, dead, _)] = pipe.outbox.to("dlq")  # type: ignore[attr-defined]
    assert dead["reason"] == "internal_error" and len(crashed) == before  # a record's bug: no crash


def replay(pipe: Pipeline, stream: list[tuple[str, int, int]], ticks: list[int | None], end: int,
           ) -> tuple[list[str], list[str]]:
    """Events through ingest (inline: one partition) with ticks between them, as the worker runs
    them; the segment transitions and triggers it sent."""
    outbox: Outbox = pipe.outbox  # type: ignore[assignment]
    internal = [0]

    async def tick(wm: int, report: bool = True) -> None:
        internal[0] += 1
        record = {"k": "T", "src": {"0": [wm, False]}, "of": 1} if report else {"k": "T"}
        await pipe.handle_record("tick", record, msg(0, internal[0], "routed"))

    async def go() -> None:
        for i, ((name, ts, amount), wm) in enumerate(zip(stream, ticks, strict=True)):
            if wm is not None:
                await tick(wm)
            inline = pipe.ingest(None, raw_event(i, name, ts, amount), msg(0, i))
            assert inline is not None  # one partition: every event is at home
            key, record, source = inline
            await pipe.handle_record(key, record, msg(0, i), source)
            pipe.read_source(0, i, record["ev"]["ts"])
        await tick(end)
        # a tick replayed after a crash (an offset at or before the stored clock's) changes nothing
        before = len(outbox.sent)
        await pipe.handle_record("tick", {"k": "T", "src": {"0": [end + 10**12, True]}, "of": 1},
                                 msg(0, internal[0], "routed"))
        assert len(outbox.sent) == before and pipe.state.clock() == (end, internal[0])

    asyncio.run(go())
    changes = [v["transition_id"] for _, v, _ in outbox.to("changes") if v.get("type") == "segment"]
    triggers = [v["trigger_id"] for t, _, v, _ in outbox.sent if t.startswith("tusk.activations.")]
    return changes, triggers


@settings(max_examples=40, deadline=None)
@given(events_st, st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=25, max_size=25),
       st.integers(0, 200 * 86_400_000))
def test_ticks_fire_the_deadlines_the_processors_would(
        raw: list[tuple[str, int, int]], where: list[float | None], after: int) -> None:
    """Events and ticks through the pipeline (deadline index, event-time clock from the ticks'
    source reports) give the transitions and triggers the processors give with no tick at all
    and one re-check at the end (tests/unit/test_event_time.py's `run`)."""
    times = sorted(t for _, t, _ in raw)
    stream = [(name, T0 + t, amount) for (name, _, amount), t in zip(raw, times, strict=True)]
    ticks = [None if w is None else T0 + int((times[i - 1] if i else 0) + w * (times[i] - (times[i - 1] if i
                                                                                         else 0)))
             for i, w in enumerate(where[:len(stream)])]
    end = T0 + times[-1] + after
    pipe = make(partitions=1, touchpoint_partitions=1, clock="event")
    pipe.cfg = CFG
    pipe.reader.catalog = CATALOG
    got = replay(pipe, stream, ticks, end)
    expected = run([encoded(i, *e) for i, e in enumerate(stream)], [None] * len(stream), end)
    assert got == expected
    pipe.state.begin(0)
    assert [at for at, _ in pipe.state.due(end, 10**6)] == []  # nothing due is left in the index


def test_a_tick_rechecks_at_most_a_batch_and_continues_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = make(partitions=1, touchpoint_partitions=1, backfill_batch=3)
    state: MemoryState = pipe.state  # type: ignore[assignment]
    state.begin(0)
    for i in range(7):
        state.move_deadline(f"p{i}", None, 1_000 + i)
    state.move_deadline("later", None, 10**15)
    rechecked: list[str] = []

    def recheck(pid: str, _store: Any, env: Any, *_: Any, **__: Any) -> Any:
        rechecked.append(pid)
        return pipeline_mod.identity.Effects(env)

    monkeypatch.setattr(pipeline_mod.identity, "recheck", recheck)
    asyncio.run(pipe.handle_record("tick", {"k": "T"}, msg(0, 1, "routed")))
    assert rechecked == ["p0", "p1", "p2"]
    assert pipe.outbox.to("routed") == [(b"tick", {"k": "T"}, 0)]  # type: ignore[attr-defined]
    asyncio.run(pipe.handle_record("tick", {"k": "T"}, msg(0, 2, "routed")))
    asyncio.run(pipe.handle_record("tick", {"k": "T"}, msg(0, 3, "routed")))
    assert rechecked == [f"p{i}" for i in range(7)]
    assert len(pipe.outbox.to("routed")) == 2  # type: ignore[attr-defined]  # the last batch was not full
    assert state.due(10**16, 10) == [(10**15, "later")]


def test_the_low_watermark_waits_for_every_source_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = make(partitions=2, touchpoint_partitions=2, clock="event")
    host: Host = pipe.host  # type: ignore[assignment]
    host.active = {"tp": [0, 1], "routed": [0, 1]}
    clock = [100.0]
    monkeypatch.setattr(pipeline_mod.time, "monotonic", lambda: clock[0])
    pipe.read_source(0, 4, 5_000)
    pipe.read_source(0, 5, 4_000)  # out of order: the partition's latest time stays
    host.ends = {0: 6, 1: 3}
    host.committed_offsets = {1: 3}  # partition 1 was read to its end by a former owner
    assert pipe.source_report(host.ends) == {"0": [5_000, False], "1": [None, False]}
    clock[0] += pipeline_mod.IDLE_AFTER_S
    report = pipe.source_report(host.ends)
    assert report == {"0": [5_000, True], "1": [None, True]}
    assert low_watermark({"0": [5_000, False], "1": [None, True]}, 2) is None
    assert low_watermark(report, 2) == 5_000  # both idle: the latest time
    assert low_watermark({"0": [5_000, False], "1": [3_000, False]}, 2) == 3_000
    asyncio.run(pipe.tick())
    ticks = pipe.outbox.to("routed")  # type: ignore[attr-defined]
    assert [(k, p) for k, _, p in ticks if k == b"tick"] == [(b"tick", 0), (b"tick", 1)]
    for _, value, p in ticks:
        if value["k"] == "T":
            asyncio.run(pipe.handle_record("tick", value, msg(p, 1, "routed")))
            assert pipe.watermark[p] == 5_000 and pipe.state.clock() == (5_000, 1)


def test_backfill_chains_through_a_partition_once_per_definitions() -> None:
    pipe = make(partitions=2, touchpoint_partitions=2, backfill_batch=2)
    host: Host = pipe.host  # type: ignore[assignment]
    outbox: Outbox = pipe.outbox  # type: ignore[assignment]
    host.active = {"routed": [1]}
    state: MemoryState = pipe.state  # type: ignore[assignment]
    state.begin(1)
    for i in range(5):
        state.set_profile(f"p{i}", {"id": f"p{i}", "traits": {}, "_seen": []})
    pipe.reader.fingerprint = "fp1"
    asyncio.run(pipe.tick())
    asyncio.run(pipe.tick())  # started once
    chain = [v for k, v, p in outbox.to("routed") if k == b"backfill"]
    assert chain == [{"k": "B", "fp": "fp1", "after": None}]
    steps = 0
    while chain:
        record = chain.pop()
        asyncio.run(pipe.handle_record("backfill", record, msg(1, steps, "routed")))
        steps += 1
        chain = [v for k, v, _ in outbox.to("routed") if k == b"backfill"][steps:]
    assert [v["after"] for k, v, _ in outbox.to("routed") if k == b"backfill"] == [None, "p1", "p3"]
    assert state.peek_backfilled(1) == "fp1"
    outbox.sent.clear()
    pipe.backfills.clear()  # a restarted worker: the partition says it is done
    asyncio.run(pipe.tick())
    assert [v for k, v, _ in outbox.to("routed") if k == b"backfill"] == []
    # a step of an older chain does nothing once the definitions changed again
    pipe.reader.fingerprint = "fp2"
    asyncio.run(pipe.handle_record("backfill", {"k": "B", "fp": "fp1", "after": None}, msg(1, 9, "routed")))
    assert [v for k, v, _ in outbox.to("routed") if k == b"backfill"] == []
    assert state.peek_backfilled(1) == "fp1"


def test_an_app_is_built_from_any_settings_and_its_worker_wired_to_it() -> None:
    from stream.runtime.agents import build_pipeline, register
    from stream.runtime.app import build_app

    s = dataclasses.replace(Settings(), app_id="built-1", topic_prefix="b1.", partitions=3)
    built = build_app(s)
    assert built.app.conf.id == "built-1"
    assert built.touchpoints.get_topic_name() == "b1.touchpoints"
    assert built.routed.get_topic_name() == s.topics.routed
    tables = (built.identities, built.profiles, built.meta)
    assert [t.name for t in tables] == ["identities", "profiles", "meta"]
    pipe = build_pipeline(built, s)
    register(built, pipe)
    assert pipe.n == 3 and pipe.routed == s.topics.routed and pipe.touchpoints == "b1.touchpoints"
    assert sorted(built.app.agents) == ["stream.runtime.agents.identity_stage",
                                        "stream.runtime.agents.ingest",
                                        "stream.runtime.agents.privacy_requests"]
    assert build_app(s).app is not built.app  # nothing shared between two builds
