"""The processors' bench (stream/bench/processors.py): its stage timers change nothing a stage
does, put the originals back, and account the time of the stages each event goes through."""

from __future__ import annotations

import asyncio

import pytest

from processors.identity import graph
from processors.profile import computed
from processors.segments.catalog import Catalog
from stream.bench import processors
from stream.runtime.pipeline import Pipeline
from stream.state.partition import MemoryState

EVENTS = 600


def _state(pipe: Pipeline) -> dict[str, bytes]:
    state = pipe.state
    assert isinstance(state, MemoryState)
    return dict(state.partitions[0].profiles)


@pytest.mark.parametrize("source", ["cdnow", "shop"])
def test_timed_stages_change_nothing_and_are_put_back(source: str) -> None:
    if source == "cdnow":
        lines, catalog = processors.cdnow(EVENTS)
    else:
        lines, catalog = processors.shop(50, EVENTS, profiles=2_000)
    clock = "event"  # on the wall clock two runs differ by the instants they ran at
    originals = [(owner, name, owner.__dict__[name])
                 for owner, name in (where() for _, where in processors.STAGES)]
    assert {(owner, name) for owner, name, _ in originals} >= {
        (Pipeline, "ingest"), (graph, "handle"), (graph, "_catch_up"), (computed, "first_flip"),
        (Catalog, "evaluate"), (Catalog, "observe"), (MemoryState, "profile")}

    plain = processors.pipeline(catalog, clock)
    asyncio.run(processors.drain(plain, lines, []))
    spent: dict[str, float] = {}
    with processors.timed(spent):
        timed = processors.pipeline(catalog, clock)
        asyncio.run(processors.drain(timed, lines, []))

    assert _state(timed) == _state(plain) and len(_state(plain)) > 50
    assert timed.outbox.records == plain.outbox.records > 0  # type: ignore[attr-defined]
    for owner, name, original in originals:
        assert owner.__dict__[name] is original, name
    assert set(spent) == {label for label, _ in processors.STAGES}
    per_event = processors.stages(lines[:100], catalog, clock)
    assert set(per_event) == set(spent) | {processors.WHOLE}
    assert per_event[processors.WHOLE] >= per_event["identity stage (all of a record's handling)"] > 0
    for label in ("ingest (validation, routing)", "identity stage (all of a record's handling)",
                  "profile decode", "profile encode", "computed traits observe", "segment evaluation"):
        assert spent[label] > 0, label
    # outermost calls only: what the identity stage calls is inside its time
    inner = spent["profile encode"] + spent["computed traits observe"] + spent["segment evaluation"]
    assert spent["identity stage (all of a record's handling)"] > inner


def test_run_reports_each_fifth_of_the_input() -> None:
    lines, catalog = processors.cdnow(EVENTS)
    out = processors.run(lines, catalog, "event")
    assert out["events"] == EVENTS and out["events_per_s"] > 0
    assert len(out["us_per_event_by_fifth"]) == processors.PARTS
    assert all(us > 0 for us in out["us_per_event_by_fifth"])
    mean = sum(out["us_per_event_by_fifth"]) / processors.PARTS
    assert mean == pytest.approx(out["us_per_event"], rel=0.02)
