"""Event-time evaluation: when ticks arrive does not change a profile's transitions.

A tick may fire a profile's deadlines up to the low watermark (never past an event
still to come); the profile's next event catches up the deadlines a tick has not
reached. Either way each deadline is judged at its own instant with the same state,
so the transitions and trigger ids are those of a run with no ticks in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity.graph import Env, IdentityConfig, event_message, recheck, runs_inline
from processors.ingest import events as ev
from processors.ingest.identifiers import routing_key
from processors.profile.unified import iso
from processors.protocol import handle
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file
from tests.unit.test_identity_protocol import Partition

SHOP = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01
NAMES = ["Order Completed", "Checkout Started", "Order Refunded", "Product Viewed"]
CFG = IdentityConfig(partitions=1)


def catalog() -> Catalog:
    traits, segments = load_file(SHOP)
    return Catalog.build(traits, segments)


CATALOG = catalog()

events_st = st.lists(st.tuples(st.sampled_from(NAMES), st.integers(0, 40 * DAY), st.integers(5, 400)),
                     min_size=1, max_size=25)


def raw_event(i: int, name: str, ts: int, amount: int) -> bytes:
    return orjson.dumps({"type": "track", "event": name, "userId": "u1", "messageId": f"m{i}",
                         "timestamp": iso(ts), "properties": {"revenue": amount, "total": amount},
                         # subscribed and consenting: marketing is opt-in, the triggers must flow
                         "context": {"traits": {"email": "u1@example.com",
                                                "subscriptions": {"email": "subscribed"}},
                                     "consent": {"categoryPreferences": {"Advertising": True}}}})


def encoded(i: int, name: str, ts: int, amount: int) -> dict[str, Any]:
    tp = ev.validate(raw_event(i, name, ts, amount), record_ts_ms=ts)
    assert isinstance(tp, ev.Touchpoint)
    return {"m": tp.msg, "ts": tp.ts, "ids": tp.identifiers}


def run(stream: list[dict[str, Any]], ticks: list[int | None], end: int) -> tuple[list[str], list[str]]:
    """Apply events in order; before event i a tick at watermark ticks[i] (None: no tick)."""
    part = Partition()
    changes: list[str] = []
    triggers: list[str] = []

    def collect(fx: Any) -> None:
        changes.extend(c["transition_id"] for c in fx.changes if c.get("type") == "segment")
        triggers.extend(t["trigger_id"] for _, t in fx.triggers)

    def tick(wm: int) -> None:
        for pid in list(part.profiles):
            collect(recheck(pid, part, Env(wm, CATALOG, event_time=True), f"time:{wm}", cfg=CFG))

    for i, (e, wm) in enumerate(zip(stream, ticks, strict=True)):
        if wm is not None:
            tick(wm)
        stack = [(routing_key(e["ids"]), event_message(e))]
        while stack:
            key, msg = stack.pop(0)
            fx = handle(key, msg, part, CFG, (0, i), Env(None, CATALOG, event_time=True))
            collect(fx)
            stack += [(k, m) for k, m in fx.send if runs_inline(msg, k, m, 0, CFG)]
    tick(end)
    return changes, triggers


@settings(max_examples=120, deadline=None)
@given(events_st, st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=25, max_size=25),
       st.integers(0, 200 * DAY))
def test_ticks_up_to_the_low_watermark_do_not_change_transitions(
        raw: list[tuple[str, int, int]], where: list[float | None], after: int) -> None:
    times = sorted(t for _, t, _ in raw)
    stream = [encoded(i, name, T0 + t, amount) for i, ((name, _, amount), t) in enumerate(zip(raw, times,
                                                                                             strict=True))]
    # a tick before event i reaches at most that event's time (the low watermark cannot pass it)
    ticks = [None if w is None else T0 + int((times[i - 1] if i else 0) + w * (times[i] - (times[i - 1] if i
                                                                                           else 0)))
             for i, w in enumerate(where[:len(stream)])]
    end = T0 + times[-1] + after
    quiet = run(stream, [None] * len(stream), end)
    busy = run(stream, ticks, end)
    assert busy == quiet
