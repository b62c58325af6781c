"""Processor-level cost of segments: events/s of apply + observe + evaluate + (de)serialise.

    python -m stream.bench.segments     # JSON: events/s with 0, 10, 25 and 50 segments

No Kafka, no Faust: it isolates how the per-event cost grows with the number
of segments (the computed traits of deploy/examples/shop.yaml are active
whenever segments are).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson

from processors.ingest import events as ev
from processors.profile.unified import Profile, apply, new_profile
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"
NAMES = ["Order Completed", "Product Viewed", "Checkout Started", "Product Added"]


def segment_variants(n: int) -> list[dict[str, Any]]:
    """n segments of four shapes: trait+window, absence, any-of, filtered occurrence."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        shape = i % 4
        if shape == 0:
            cond: dict[str, Any] = {"all": [{"computed": "ltv", "gte": 50 * i},
                                            {"performed": NAMES[i % 4], "at_least": 1 + i % 3,
                                             "within": f"{7 + i}d"}]}
        elif shape == 1:
            cond = {"not_performed": NAMES[i % 4], "within": f"{10 + i}d"}
        elif shape == 2:
            cond = {"any": [{"trait": "plan", "eq": "pro"}, {"computed": "orders_30d", "gte": i % 5}]}
        else:
            cond = {"all": [{"subscription": "email"},
                            {"performed": NAMES[(i + 1) % 4],
                             "where": [{"field": "properties.revenue", "gt": i}]}]}
        out.append({"id": f"s{i}", "condition": cond})
    return out


def events(count: int, people: int, seed: int = 1) -> list[ev.Touchpoint]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        stamp = f"2024-01-{1 + i // 1440 % 28:02d}T{(i // 60) % 24:02d}:{i % 60:02d}:00Z"
        raw = orjson.dumps({"type": "track", "event": rng.choice(NAMES), "messageId": f"m{i}",
                            "userId": f"u{rng.randrange(people)}", "timestamp": stamp,
                            "properties": {"revenue": rng.randint(1, 300)}})
        tp = ev.validate(raw, record_ts_ms=0)
        assert isinstance(tp, ev.Touchpoint)
        out.append(tp)
    return out


def rate(catalog: Catalog, evs: list[ev.Touchpoint]) -> float:
    profiles: dict[str, Profile] = {}
    started = time.perf_counter()
    for tp in evs:
        p = profiles.setdefault(tp.identifiers[0][1], new_profile("p"))
        apply(p, tp)
        catalog.evaluate(p, tp.ts, catalog.observe(p, tp, tp.ts), tp.message_id)
        orjson.loads(orjson.dumps(p))  # what the table costs per event: decode + encode
    return len(evs) / (time.perf_counter() - started)


def main() -> None:
    traits, _ = load_file(EXAMPLES)
    evs = events(20_000, 500)
    result = {str(n): round(rate(Catalog.build(traits if n else [], segment_variants(n)), evs))
              for n in (0, 10, 25, 50)}
    print(orjson.dumps({"events": len(evs), "events_per_s_by_segments": result}).decode())


if __name__ == "__main__":
    main()
